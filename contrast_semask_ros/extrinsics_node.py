"""Camera extrinsics from TF, shared by the nodes (patch_cost_node, the cost node's world outputs),
and the robot's pose from TF for the cost grid (grid_pose_source tf).

T_base_optical, the camera optical frame in the base frame, is what both need: the
`camera_pose` parameter gives it directly (supervision.geometry.camera_pose_to_optical), and
without it `TfExtrinsics` looks it up in TF, base_frame <- the camera's optical frame, until TF
has it. tf2_ros is imported here, when a TfExtrinsics is made: only this path needs it. Named
*_node.py because the import rules (test/test_import_rules.py) let only the rclpy adapters
import rclpy and tf2_ros.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from contrast_semask_ros.exit_codes import one_line
from contrast_semask_ros.params import ConfigError
from contrast_semask_ros.supervision import ros_io


class _TfListener:
    """A tf2_ros Buffer and TransformListener on `node`; ConfigError(`missing` + why) when
    tf2_ros cannot be imported. The import is here: only the TF paths need tf2_ros."""

    def __init__(self, node: Any, missing: str) -> None:
        try:
            import tf2_ros
        except ImportError as err:
            raise ConfigError(missing.format(err=err)) from None
        self.exception = tf2_ros.TransformException
        self.buffer = tf2_ros.Buffer()
        self.listener = tf2_ros.TransformListener(self.buffer, node)

    def close(self) -> None:
        """Stop listening to /tf and /tf_static (tf2_ros's unregister, where it has one)."""
        unregister = getattr(self.listener, 'unregister', None)
        if unregister is not None:
            unregister()


class TfExtrinsics(_TfListener):
    """T_base_optical from TF. ConfigError (saying what to do instead) when tf2_ros cannot be
    imported. `warn(text)` gets each failed lookup (the caller throttles)."""

    def __init__(self, node: Any, base_frame: str, warn: Callable[[str], None]) -> None:
        super().__init__(node, 'camera_pose is not set and tf2_ros cannot be imported ({err}): '
                         'set camera_pose (x, y, z, roll, pitch, yaw of the camera body frame '
                         'in the base frame, e.g. -p camera_pose:=[0.3,0.0,1.0,0.0,0.35,0.0]) '
                         'or install tf2_ros (ros-$ROS_DISTRO-tf2-ros-py) to read the '
                         'extrinsics from TF')
        self.base_frame, self.warn = base_frame, warn

    def lookup(self, camera_frame: str) -> np.ndarray | None:
        """The camera optical frame's pose in the base frame, None (warned) until TF has it."""
        from rclpy.time import Time

        try:
            transform = self.buffer.lookup_transform(self.base_frame, camera_frame, Time())
        except self.exception as err:
            self.warn(f'extrinsics: no TF {self.base_frame} -> {camera_frame} yet '
                      f'({one_line(err)}); retrying. Setting camera_pose instead skips TF')
            return None
        return ros_io.transform_to_pose(transform)


class TfPoses(_TfListener):
    """The robot's pose at a stamp from TF, grid_frame <- base_frame (REP 105: odom ->
    base_link, from the robot's state estimator), listening for as long as the node runs.
    ConfigError when tf2_ros cannot be imported."""

    def __init__(self, node: Any, grid_frame: str, base_frame: str, wait_s: float) -> None:
        super().__init__(node, 'grid_pose_source is tf but tf2_ros cannot be imported ({err}): '
                         'install tf2_ros (ros-$ROS_DISTRO-tf2-ros-py) or set '
                         'grid_pose_source:=odom to take the pose from the odom topic')
        self.grid_frame, self.base_frame, self.wait_s = grid_frame, base_frame, wait_s

    def lookup(self, stamp_ns: int) -> tuple[np.ndarray | None, str]:
        """(T_grid_base (4, 4) at stamp_ns, '') once TF has it, waiting up to wait_s for it to
        arrive; (None, why) when it does not."""
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            transform = self.buffer.lookup_transform(
                self.grid_frame, self.base_frame, Time(nanoseconds=int(stamp_ns)),
                timeout=Duration(nanoseconds=round(self.wait_s * 1e9)))
        except self.exception as err:
            return None, (f'no TF {self.grid_frame} -> {self.base_frame} at the frame stamp '
                          f'({one_line(err)})')
        return ros_io.transform_to_pose(transform), ''


__all__ = ['TfExtrinsics', 'TfPoses']
