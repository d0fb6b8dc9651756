"""ROS messages <-> the supervision core (ROS-free: messages are duck-typed).

The patch_cost node hands its rclpy messages to these functions; replay hands rosbags message
objects of the same types (the field names are the same), so both feed the `Supervisor` alike.
Nothing here imports rclpy or a message package.

    odom = odometry_sample(msg)                 # nav_msgs/Odometry
    supervisor.add_odometry(odom.stamp_ns, odom.T_odom_base, odom.speed_mps)
    imu = imu_sample(msg)                       # sensor_msgs/Imu
    supervisor.add_imu(imu.stamp_ns, imu.acceleration, imu.orientation_xyzw)
    fields = label_to_image(label, 'camera_optical')        # a Label -> 32FC1 Image fields
    fill_image(Image(), fields)                 # or any object with Image's fields
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros import codec
from contrast_semask_ros.supervision.geometry import (
    CameraModel,
    GeometryError,
    pose_from_xyz_quat,
)
from contrast_semask_ros.supervision.labeller import Label

_NS = 1_000_000_000
ENCODING = '32FC1'  # patch_cost masks: the cost on the footprint, NaN elsewhere


class OdometrySample(NamedTuple):
    stamp_ns: int
    T_odom_base: np.ndarray  # 4, 4: the child (base) frame in the odometry frame
    speed_mps: float  # |twist.twist.linear|; NaN when not finite
    frame_id: str  # the odometry frame (header.frame_id), e.g. 'odom'
    child_frame_id: str  # the base frame, e.g. 'base_link'


class ImuSample(NamedTuple):
    stamp_ns: int
    acceleration: tuple[float, float, float]  # linear_acceleration, m/s^2 (may be NaN)
    orientation_xyzw: tuple[float, float, float, float] | None  # None: the IMU gives none


class ImageFields(NamedTuple):
    """A sensor_msgs/Image without the message class (fill_image sets them on one)."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    encoding: str
    step: int  # bytes per row
    data: bytes  # little-endian, unpadded rows


class FootprintMarker(NamedTuple):
    """One visualization_msgs/Marker of a footprint (LINE_STRIP, closed)."""

    stamp_ns: int  # the label's pose stamp: where the robot was
    frame_id: str  # the odometry frame
    marker_id: int
    points: list[tuple[float, float, float]]  # the corners in order, the first repeated
    color: tuple[float, float, float, float]  # r, g, b, a: green (cost 0) to red (cost 1)


def stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp (sec, nanosec) as integer nanoseconds."""
    return codec.header_stamp_ns(header)


def set_stamp(stamp: Any, ns: int) -> Any:
    """Set a builtin_interfaces/Time (sec, nanosec) from integer nanoseconds; returns it."""
    sec, nanosec = divmod(int(ns), _NS)
    stamp.sec, stamp.nanosec = int(sec), int(nanosec)
    return stamp


def _xyz(vector: Any) -> tuple[float, float, float]:
    return float(vector.x), float(vector.y), float(vector.z)


def _norm(vector: Any) -> float:
    x, y, z = _xyz(vector)
    speed = math.sqrt(x * x + y * y + z * z)
    return speed if math.isfinite(speed) else math.nan


def odometry_sample(msg: Any) -> OdometrySample:
    """nav_msgs/Odometry -> stamp, T_odom_base (4, 4), |twist.twist.linear|, frames.
    GeometryError for a pose that is not one (non-finite, a zero quaternion)."""
    pose = msg.pose.pose
    q = pose.orientation
    T = pose_from_xyz_quat(_xyz(pose.position), (float(q.x), float(q.y), float(q.z),
                                                   float(q.w)))
    return OdometrySample(stamp_ns(msg.header), T, _norm(msg.twist.twist.linear),
                          str(msg.header.frame_id), str(msg.child_frame_id))


def odometry_to_pose_speed(msg: Any) -> tuple[int, np.ndarray, float]:
    """nav_msgs/Odometry -> (stamp_ns, T_odom_base, speed_mps): Supervisor.add_odometry's
    arguments."""
    sample = odometry_sample(msg)
    return sample.stamp_ns, sample.T_odom_base, sample.speed_mps


def imu_sample(msg: Any) -> ImuSample:
    """sensor_msgs/Imu -> stamp, linear_acceleration and the orientation, which is None when
    orientation_covariance[0] is -1 (REP 145: the IMU estimates no orientation). Non-finite
    accelerations are passed on: the core drops and counts them."""
    acc = _xyz(msg.linear_acceleration)
    covariance = msg.orientation_covariance
    q = msg.orientation
    orientation = None if len(covariance) and covariance[0] == -1 else (
        float(q.x), float(q.y), float(q.z), float(q.w))
    return ImuSample(stamp_ns(msg.header), acc, orientation)


def twist_speed(msg: Any) -> float:
    """|linear| (m/s) of a geometry_msgs/Twist or TwistStamped; NaN when not finite."""
    twist = getattr(msg, 'twist', msg)  # TwistStamped holds a Twist
    return _norm(twist.linear)


def transform_to_pose(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform (or a TransformStamped) -> 4x4 pose. For tf2's
    lookup_transform(target, source, t) that is T_target_source: the source frame in target."""
    transform = getattr(transform, 'transform', transform)
    q = transform.rotation
    return pose_from_xyz_quat(_xyz(transform.translation),
                              (float(q.x), float(q.y), float(q.z), float(q.w)))


def camera_info_key(msg: Any) -> tuple[Any, ...]:
    """What a CameraModel is made of in a sensor_msgs/CameraInfo: size, distortion model, K, D,
    binning and ROI. Equal keys: the cached camera still applies."""
    roi = msg.roi
    return (int(msg.width), int(msg.height), str(msg.distortion_model),
            tuple(float(v) for v in msg.k), tuple(float(v) for v in msg.d),
            int(msg.binning_x), int(msg.binning_y),
            tuple(int(getattr(roi, name, 0)) for name in ('x_offset', 'y_offset', 'width',
                                                         'height')))


class CameraCache:
    """The CameraModel of the latest sensor_msgs/CameraInfo, rebuilt only when what it is made
    of (camera_info_key) changes: cameras publish the same intrinsics with every frame."""

    def __init__(self) -> None:
        self.camera: CameraModel | None = None
        self._key: tuple[Any, ...] | None = None

    def update(self, msg: Any) -> CameraModel:
        """The camera of `msg`. GeometryError (a ValueError), or AttributeError/TypeError for
        a message without CameraInfo's fields, when it cannot be used: the previous camera
        stays."""
        key = camera_info_key(msg)
        if key != self._key:
            self.camera = CameraModel.from_camera_info(msg)
            self._key = key
        return self.camera


def label_to_image(label: Label, frame_id: str) -> ImageFields:
    """A Label -> the fields of its 32FC1 patch_cost Image: the mask (H / mask_scale,
    W / mask_scale), stamped with the keyframe's stamp, in the camera's frame."""
    mask = np.asarray(label.mask)
    if mask.ndim != 2:
        raise GeometryError(f'a label mask is 2-D (h, w), got shape {mask.shape}')
    pixels = np.ascontiguousarray(mask, dtype='<f4')  # h, w little-endian float32
    height, width = pixels.shape
    return ImageFields(int(label.keyframe_stamp_ns), str(frame_id), int(height), int(width),
                       ENCODING, 4 * int(width), pixels.tobytes())


def fill_image(msg: Any, fields: ImageFields) -> Any:
    """Set a sensor_msgs/Image (rclpy, rosbags or any object with its fields and a header)
    from ImageFields; returns msg."""
    codec.set_image_fields(msg, fields.height, fields.width, fields.encoding, fields.data)
    set_stamp(msg.header.stamp, fields.stamp_ns)
    msg.header.frame_id = fields.frame_id
    return msg


def cost_color(cost: float) -> tuple[float, float, float, float]:
    """RGBA for a cost: green (0) to red (1) through yellow; grey when NaN."""
    if not math.isfinite(cost):
        return 0.5, 0.5, 0.5, 0.8
    c = min(max(float(cost), 0.0), 1.0)
    return min(1.0, 2.0 * c), min(1.0, 2.0 * (1.0 - c)), 0.0, 0.8


def footprint_marker(corners: Any, cost: float, stamp: int, frame_id: str,
                     marker_id: int) -> FootprintMarker:
    """The footprint corners (M, 3) in the odometry frame (Supervisor.footprint_in_odom) as a
    closed LINE_STRIP coloured by cost (cost_color)."""
    points = np.asarray(corners, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 3 or \
            not np.isfinite(points).all():
        raise GeometryError(f'footprint corners are (M >= 3, 3) finite, got {points.shape}')
    closed = [tuple(float(v) for v in p) for p in points] + [tuple(float(v) for v in points[0])]
    return FootprintMarker(int(stamp), str(frame_id), int(marker_id), closed, cost_color(cost))


__all__ = ['ENCODING', 'FootprintMarker', 'ImageFields', 'ImuSample', 'OdometrySample',
           'camera_info_key', 'cost_color', 'fill_image', 'footprint_marker', 'imu_sample',
           'label_to_image', 'odometry_sample', 'odometry_to_pose_speed', 'set_stamp',
           'stamp_ns', 'transform_to_pose', 'twist_speed']
