"""contrast-semask-replay --supervision (contrast_semask_ros/replay_supervision.py): the
static-transform chain, then the whole loop on a simulated raw-sensor drive."""

from __future__ import annotations

import math

import numpy as np

from contrast_semask_ros.replay_supervision import chain_static
from contrast_semask_ros.supervision.geometry import (
    T_BODY_OPTICAL,
    camera_pose_to_optical,
    pose_from_xyz_rpy,
)


def test_static_chain_goes_through_camera_link_to_the_optical_frame():
    T_base_link = pose_from_xyz_rpy((0.3, 0.0, 1.0), (0.0, 0.35, 0.0))
    edges = {'camera_link': ('base_link', T_base_link),
             'camera_optical_frame': ('camera_link', T_BODY_OPTICAL),
             'imu_link': ('base_link', np.eye(4))}
    T = chain_static(edges, 'base_link', 'camera_optical_frame')
    np.testing.assert_allclose(T, camera_pose_to_optical(0.3, 0.0, 1.0, 0.0, 0.35, 0.0),
                               atol=1e-12)
    assert chain_static(edges, 'base_link', 'base_link') is not None
    assert chain_static(edges, 'base_link', 'lidar') is None  # not connected
    cyclic = {'a': ('b', np.eye(4)), 'b': ('a', np.eye(4))}
    assert chain_static(cyclic, 'base_link', 'a') is None
    assert math.isclose(T[2, 3], 1.0)
