"""supervision/ros_io.py: ROS messages <-> the supervision core, without rclpy (the messages
are SimpleNamespaces with the fields of nav_msgs/Odometry, sensor_msgs/Imu, ...)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as Msg

import numpy as np
import pytest

from contrast_semask_ros import codec
from contrast_semask_ros.supervision import ros_io
from contrast_semask_ros.supervision.geometry import (
    CameraModel,
    GeometryError,
    camera_pose_to_optical,
)
from contrast_semask_ros.supervision.labeller import Label
from contrast_semask_ros.supervision.supervisor import (
    SupervisionConfig,
    Supervisor,
)

REPO = Path(__file__).resolve().parents[1]


def header(ns: int, frame_id: str = '') -> Msg:
    sec, nanosec = divmod(ns, 1_000_000_000)
    return Msg(stamp=Msg(sec=sec, nanosec=nanosec), frame_id=frame_id)


def vec(x: float, y: float, z: float) -> Msg:
    return Msg(x=x, y=y, z=z)


def quat(x: float, y: float, z: float, w: float) -> Msg:
    return Msg(x=x, y=y, z=z, w=w)


def odometry(ns: int, x: float, speed: float = 1.0, q=(0.0, 0.0, 0.0, 1.0)) -> Msg:
    return Msg(header=header(ns, 'odom'), child_frame_id='base_link',
              pose=Msg(pose=Msg(position=vec(x, 0.0, 0.0), orientation=quat(*q))),
              twist=Msg(twist=Msg(linear=vec(speed, 0.0, 0.0), angular=vec(0.0, 0.0, 0.0))))


def imu(ns: int, az: float, covariance0: float = 0.0) -> Msg:
    return Msg(header=header(ns, 'imu'), linear_acceleration=vec(0.0, 0.0, az),
              orientation=quat(0.0, 0.0, 0.0, 1.0),
              orientation_covariance=np.array([covariance0] + [0.0] * 8))


def camera_info(ns: int = 0, k00: float = 100.0) -> Msg:
    return Msg(header=header(ns, 'camera_optical'), width=160, height=120,
              distortion_model='plumb_bob', d=[0.0] * 5,
              k=[k00, 0.0, 79.5, 0.0, 100.0, 59.5, 0.0, 0.0, 1.0], r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
              p=[100.0, 0.0, 79.5, 0.0, 0.0, 100.0, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0],
              binning_x=0, binning_y=0,
              roi=Msg(x_offset=0, y_offset=0, width=0, height=0, do_rectify=False))


def test_stamps_round_trip_nanoseconds() -> None:
    ns = 1_700_000_123_456_789_012
    assert ros_io.stamp_ns(header(ns)) == ns
    stamp = ros_io.set_stamp(Msg(sec=0, nanosec=0), ns)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_123, 456_789_012)


def test_odometry_gives_the_base_pose_speed_and_frames() -> None:
    half = math.sqrt(0.5)  # 90 degrees about z
    msg = odometry(5_000_000_000, 2.0, q=(0.0, 0.0, half, half))
    msg.twist.twist.linear = vec(0.6, 0.8, 0.0)
    sample = ros_io.odometry_sample(msg)
    assert sample.stamp_ns == 5_000_000_000 and sample.speed_mps == pytest.approx(1.0)
    assert (sample.frame_id, sample.child_frame_id) == ('odom', 'base_link')
    np.testing.assert_allclose(sample.T_odom_base[:3, 3], (2.0, 0.0, 0.0))
    np.testing.assert_allclose(sample.T_odom_base[:3, :3] @ (1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                               atol=1e-12)  # base x points along odom y
    stamp, T, speed = ros_io.odometry_to_pose_speed(msg)
    assert stamp == sample.stamp_ns and speed == sample.speed_mps
    np.testing.assert_array_equal(T, sample.T_odom_base)


def test_odometry_with_a_zero_quaternion_or_nan_is_refused_with_the_reason() -> None:
    with pytest.raises(GeometryError, match='zero norm'):
        ros_io.odometry_sample(odometry(1, 0.0, q=(0.0, 0.0, 0.0, 0.0)))
    with pytest.raises(GeometryError, match='finite'):
        ros_io.odometry_sample(odometry(1, math.nan))
    nan_speed = odometry(1, 0.0, speed=math.nan)
    assert math.isnan(ros_io.odometry_sample(nan_speed).speed_mps)  # the pose still counts


def test_imu_orientation_is_none_when_the_imu_gives_none() -> None:
    sample = ros_io.imu_sample(imu(7, 9.81))
    assert sample == (7, (0.0, 0.0, 9.81), (0.0, 0.0, 0.0, 1.0))
    assert ros_io.imu_sample(imu(7, 9.81, covariance0=-1.0)).orientation_xyzw is None
    bad = ros_io.imu_sample(imu(8, math.nan))  # passed on: the core counts it
    assert math.isnan(bad.acceleration[2])


def test_twist_speed_of_twist_and_twist_stamped() -> None:
    twist = Msg(linear=vec(0.3, 0.4, 0.0), angular=vec(0.0, 0.0, 1.0))
    assert ros_io.twist_speed(twist) == pytest.approx(0.5)
    assert ros_io.twist_speed(Msg(header=header(1), twist=twist)) == pytest.approx(0.5)
    assert math.isnan(ros_io.twist_speed(Msg(linear=vec(math.inf, 0.0, 0.0))))


def test_transform_to_pose_is_the_source_frame_in_the_target() -> None:
    # base_link -> camera optical frame as tf2 gives it (TransformStamped)
    T_expected = camera_pose_to_optical(0.3, 0.0, 1.0, 0.0, 0.35, 0.0)
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(T_expected[:3, :3]).as_quat()
    msg = Msg(header=header(0, 'base_link'), child_frame_id='camera_optical',
             transform=Msg(translation=vec(0.3, 0.0, 1.0), rotation=quat(x, y, z, w)))
    np.testing.assert_allclose(ros_io.transform_to_pose(msg), T_expected, atol=1e-12)
    np.testing.assert_allclose(ros_io.transform_to_pose(msg.transform), T_expected, atol=1e-12)


def test_camera_info_key_changes_only_with_what_makes_the_camera() -> None:
    a, b = camera_info(1), camera_info(2)
    b.header.frame_id = 'other'
    assert ros_io.camera_info_key(a) == ros_io.camera_info_key(b)  # stamps, frames: same
    assert ros_io.camera_info_key(camera_info(1, k00=101.0)) != ros_io.camera_info_key(a)
    c = camera_info(1)
    c.binning_x = 2
    assert ros_io.camera_info_key(c) != ros_io.camera_info_key(a)
    d = camera_info(1)
    d.roi = Msg(x_offset=10, y_offset=0, width=100, height=100)
    assert ros_io.camera_info_key(d) != ros_io.camera_info_key(a)


def test_label_to_image_is_a_32fc1_mask_with_the_keyframe_stamp() -> None:
    mask = np.full((60, 80), np.nan, np.float32)
    mask[40:50, 30:50] = 0.75
    fields = ros_io.label_to_image(Label(1_000_000_123, mask, 200), 'camera_optical')
    assert (fields.height, fields.width, fields.encoding, fields.step) == (60, 80, '32FC1',
                                                                           320)
    assert fields.stamp_ns == 1_000_000_123 and fields.frame_id == 'camera_optical'
    msg = ros_io.fill_image(Msg(header=header(0), data=b''), fields)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 123)
    assert msg.header.frame_id == 'camera_optical' and msg.is_bigendian == 0
    back = codec.image_to_array(msg)  # the node's own decoder reads it back
    np.testing.assert_array_equal(back, mask)
    with pytest.raises(GeometryError, match='2-D'):
        ros_io.label_to_image(Label(1, np.zeros((2, 3, 4), np.float32), 0), 'c')


def test_footprint_marker_is_a_closed_strip_coloured_by_cost() -> None:
    corners = np.array([[1.0, 0.3, 0.0], [0.2, 0.3, 0.0], [0.2, -0.3, 0.0], [1.0, -0.3, 0.0]])
    marker = ros_io.footprint_marker(corners, 0.0, 42, 'odom', 7)
    assert marker.points[0] == marker.points[-1] and len(marker.points) == 5
    assert (marker.stamp_ns, marker.frame_id, marker.marker_id) == (42, 'odom', 7)
    assert marker.color[:3] == (0.0, 1.0, 0.0)  # green
    assert ros_io.footprint_marker(corners, 1.0, 42, 'odom', 7).color[:3] == (1.0, 0.0, 0.0)
    assert ros_io.cost_color(0.5)[:3] == (1.0, 1.0, 0.0)  # yellow halfway
    assert ros_io.cost_color(math.nan)[:3] == (0.5, 0.5, 0.5)
    with pytest.raises(GeometryError):
        ros_io.footprint_marker(corners[:2], 0.5, 0, 'odom', 0)


def test_a_drive_through_the_conversions_labels_past_frames() -> None:
    """The node's loop on SimpleNamespace messages: a smooth then rough drive at 1 m/s gives
    masks of the camera's size whose cost rises, stamped with camera_info stamps."""
    T = camera_pose_to_optical(0.3, 0.0, 1.0, 0.0, 0.35, 0.0)
    config = SupervisionConfig(signal='imu')
    supervisor = Supervisor(config, T)
    scale = config.mask_scale  # divides 120 and 160 (1, 2, 4, 5, 8)
    rng = np.random.default_rng(0)
    camera, key, frame_stamps, labels = None, None, set(), []
    t0 = 1_700_000_000 * 1_000_000_000
    for i in range(int(7.0 * 200)):  # 200 Hz IMU, 50 Hz odometry, 10 Hz camera_info
        ns = t0 + i * 5_000_000
        x = i / 200.0
        if i % 4 == 0:
            supervisor.add_odometry(*ros_io.odometry_to_pose_speed(odometry(ns, x)))
        if i % 20 == 0:
            msg = camera_info(ns)
            if ros_io.camera_info_key(msg) != key:
                camera, key = CameraModel.from_camera_info(msg), ros_io.camera_info_key(msg)
            supervisor.add_frame(ros_io.stamp_ns(msg.header), camera)
            frame_stamps.add(ns)
        sample = ros_io.imu_sample(imu(ns, 9.81 + rng.normal(0.0, 0.1 if x < 4.0 else 2.0)))
        supervisor.add_imu(*sample)
        update = supervisor.update(sample.stamp_ns)
        if update is not None and update.labels:
            labels += [(update.cost, ros_io.label_to_image(label, 'cam'))
                       for label in update.labels]
    assert labels
    for cost, fields in labels:
        assert (fields.height, fields.width) == (120 // scale, 160 // scale)
        assert fields.stamp_ns in frame_stamps
        values = np.frombuffer(fields.data, '<f4')
        np.testing.assert_array_equal(np.unique(values[np.isfinite(values)]),
                                      np.float32(cost))
    assert labels[0][0] < 0.2 and labels[-1][0] > 0.8


def test_ros_io_imports_without_any_ros_package() -> None:
    blocked = ('rclpy', 'sensor_msgs', 'nav_msgs', 'geometry_msgs', 'std_msgs',
               'visualization_msgs', 'tf2_ros', 'rosbags')
    code = (f'import sys\nfor n in {blocked!r}: sys.modules[n] = None\n'
            'import contrast_semask_ros.supervision.ros_io')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_patch_cost_node_status_levels() -> None:
    """/diagnostics of patch_cost_node: ERROR without extrinsics, WARN when the IMU flows but
    no label came for over 5 s (importable without rclpy, like every runtime module)."""
    from contrast_semask_ros.patch_cost_node import NO_LABEL_WARN_S, status_level

    assert NO_LABEL_WARN_S == 5.0
    assert status_level(False, 200.0, 0.0) == 'ERROR'
    assert status_level(True, 200.0, 5.5) == 'WARN'
    assert status_level(True, 0.0, 60.0) == 'OK'  # no IMU: nothing to label, not a fault
    assert status_level(True, 200.0, 4.0) == 'OK'


def test_camera_cache_rebuilds_only_when_the_camera_changes():
    cache = ros_io.CameraCache()
    first = cache.update(camera_info(0))
    assert cache.update(camera_info(1)) is first  # the same intrinsics, another stamp
    other = cache.update(camera_info(2, k00=120.0))
    assert other is not first and other.K[0, 0] == 120.0
    with pytest.raises(ValueError):
        cache.update(camera_info(3, k00=0.0))  # K = 0: refused
    assert cache.camera is other  # the previous camera stays
