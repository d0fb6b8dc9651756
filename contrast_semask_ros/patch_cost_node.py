"""`patch_cost_node`: the thin rclpy adapter over the self-supervision core (`Supervisor`).

IMU, odometry (and the commanded speed) measure a traversal cost where the robot drives; the
core paints it into the past camera frames that saw that ground, and this node publishes those
masks on `patch_cost` for the cost_map_node. Parameters are supervision/params.py's table;
the message conversions supervision/ros_io.py (replay uses the same ones on bag messages).
This file only declares, subscribes, publishes and logs.

Topics (relative names; the launch file wires them, cost_map.launch.py supervision:=imu):
  in:  camera_info (sensor_msgs/CameraInfo), odom (nav_msgs/Odometry), imu (sensor_msgs/Imu),
       cmd_vel (geometry_msgs/Twist, or TwistStamped with cmd_vel_stamped; signal velocity or
       both only), keyframes (sensor_msgs/CameraInfo announcements of the cost node, with
       use_keyframes)
  out: patch_cost (sensor_msgs/Image 32FC1, reliable), footprints
       (visualization_msgs/MarkerArray, only while subscribed), /diagnostics
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from contrast_semask_ros.exit_codes import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, one_line
from contrast_semask_ros.extrinsics_node import TfExtrinsics
from contrast_semask_ros.params import ConfigError
from contrast_semask_ros.supervision import ros_io
from contrast_semask_ros.supervision.geometry import (
    CameraModel,
    GeometryError,
    camera_pose_to_optical,
)
from contrast_semask_ros.supervision.params import TABLE, camera_pose, config_from_values
from contrast_semask_ros.supervision.supervisor import LabelUpdate, Supervisor

try:  # rclpy and the messages come from the ROS 2 install; main() says so if they are missing
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import Point, Twist, TwistStamped
    from nav_msgs.msg import Odometry
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterException, ParameterUninitializedException
    from rclpy.executors import ExternalShutdownException

    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, Imu
    from visualization_msgs.msg import Marker, MarkerArray

    _ROS_IMPORT_ERROR: ImportError | None = None
    _ROS_STARTUP_ERRORS: tuple[type[BaseException], ...] = (ParameterException,)
except ImportError as _err:  # pragma: no cover - exercised only without ROS
    _ROS_IMPORT_ERROR = _err
    _ROS_STARTUP_ERRORS = ()
    Node = object  # type: ignore[assignment,misc]

NAME = 'patch_cost'
THROTTLE_S = 5.0  # at most one log line per cause per this many seconds
NO_LABEL_WARN_S = 5.0  # /diagnostics warns when IMU flows but no label came for this long
TF_RETRY_S = 0.5  # TF extrinsics: lookup period until found
FOOTPRINT_MARKERS = 200  # marker ids cycle: the last this many footprints stay in RViz
# what a start with bad parameters raises (ConfigError, GeometryError and the core's own
# checks are ValueErrors; a -p of the wrong type is rclpy's ParameterException); one line each
STARTUP_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ValueError, *_ROS_STARTUP_ERRORS)


def _qos(depth: int, reliable: bool) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT)


class PatchCostNode(Node):
    """`patch_cost_node` (module docstring). Starts working as soon as it is constructed;
    STARTUP_ERRORS (one clear line each) when the parameters cannot work."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NAME, **kwargs)
        self.counters: Counter[str] = Counter()  # the node's own, 'node.' in /diagnostics
        self._logged: dict[str, float] = {}  # cause -> monotonic time of its last log line
        v = self.values = TABLE.resolve(self._declare())
        self.config = config_from_values(v)
        _warm_up(self.config)  # the core's own checks now, not when TF arrives; its imports
        self.supervisor: Supervisor | None = None
        self.extrinsics = 'unknown'
        self._cameras = ros_io.CameraCache()
        self._camera_frame = v['camera_frame']  # '' until a camera_info or keyframe names it
        self._odom_frame = 'odom'
        self._latest: LabelUpdate | None = None
        self._marker_id = 0
        started = time.monotonic()
        self._last_label = started  # monotonic: no label for NO_LABEL_WARN_S -> WARN
        self._diag_mark = (started, 0, 0)  # (time, imu_received, label_updates) at last report
        self._tf: Any = None
        pose = camera_pose(v)
        if pose is not None:
            self._start_supervisor(camera_pose_to_optical(*pose), 'camera_pose parameter')
        else:
            self._tf = TfExtrinsics(self, v['base_frame'],  # ConfigError without tf2_ros
                                    lambda text: self._log('warn', 'tf', text))
            self._tf_timer = self.create_timer(TF_RETRY_S, self._guard('tf', self._lookup_tf))

        # sensors: best effort, which matches every publisher; samples DDS lost are counted
        self.create_subscription(CameraInfo, 'camera_info',
                                 self._guard('camera_info', self._on_camera_info),
                                 _qos(10, reliable=False),
                                 event_callbacks=self._lost('camera_info'))
        self.create_subscription(Odometry, 'odom', self._guard('odom', self._on_odometry),
                                 _qos(50, reliable=False), event_callbacks=self._lost('odom'))
        self.create_subscription(Imu, 'imu', self._guard('imu', self._on_imu),
                                 _qos(200, reliable=False), event_callbacks=self._lost('imu'))
        if self.config.signal in ('velocity', 'both'):
            self.create_subscription(TwistStamped if v['cmd_vel_stamped'] else Twist, 'cmd_vel',
                                     self._guard('cmd_vel', self._on_cmd_vel),
                                     _qos(10, reliable=False),
                                     event_callbacks=self._lost('cmd_vel'))
        if v['use_keyframes']:  # the cost node's announcements: reliable, none may be missed
            self.create_subscription(CameraInfo, 'keyframes',
                                     self._guard('keyframes', self._on_keyframe),
                                     _qos(50, reliable=True))
        # reliable; deep enough for one update's labels (one per keyframe) in a burst
        self.pub_patch = self.create_publisher(Image, 'patch_cost', _qos(
            max(10, self.config.max_keyframes), reliable=True))
        self.pub_footprints = self.create_publisher(MarkerArray, 'footprints', 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        if v['diagnostics_period_s'] > 0:
            self.create_timer(v['diagnostics_period_s'],
                              self._guard('diagnostics', self._publish_diagnostics))
        frames = (f"keyframes announced on {self.resolve_topic_name('keyframes')}"
                  if v['use_keyframes'] else 'own keyframes from camera_info')
        extrinsics = self.extrinsics if self.supervisor is not None else (
            f"TF {v['base_frame']} -> {self._camera_frame or 'the camera_info frame'} (waiting)")
        self.get_logger().info(f'ready: signal {self.config.signal}, extrinsics from '
                               f"{extrinsics}, {frames}; masks on "
                               f"{self.resolve_topic_name('patch_cost')}")

    # --- parameters --------------------------------------------------------------------------

    def _declare(self) -> dict[str, Any]:
        """Declare every parameter of the table (read-only); their values as given."""
        values = {}
        for p in TABLE.params:
            descriptor = ParameterDescriptor(description=p.description, read_only=True)
            if p.type is list:  # typed explicitly: an empty default would be a byte array
                try:
                    self.declare_parameter(p.name, Parameter.Type.DOUBLE_ARRAY, descriptor)
                except ParameterException as err:  # e.g. [0,0,1,0,0,0]: integers
                    raise ConfigError(f'{p.name}: {one_line(err)}; write each number with a '
                                      'decimal point, e.g. [0.3,0.0,1.0,0.0,0.35,0.0]') from None
                try:
                    values[p.name] = list(self.get_parameter(p.name).value)
                except ParameterUninitializedException:  # not given: the (empty) default
                    values[p.name] = list(p.default)
            else:
                self.declare_parameter(p.name, p.default, descriptor)
                values[p.name] = self.get_parameter(p.name).value
        return values

    # --- plumbing ----------------------------------------------------------------------------

    def _log(self, level: str, cause: str, text: str) -> None:
        """One log line per cause per THROTTLE_S."""
        now = time.monotonic()
        if now - self._logged.get(cause, -math.inf) >= THROTTLE_S:
            self._logged[cause] = now
            getattr(self.get_logger(), level)(text)

    def _guard(self, cause: str, callback: Any) -> Any:
        """callback, but an exception is logged (throttled), counted and survived."""

        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as err:  # the node must keep running
                if not self.context.ok():  # shutting down (SIGINT): publishers are gone
                    return
                self.counters[f'{cause}_errors'] += 1
                self._log('error', f'{cause}_errors', f'{cause} callback failed '
                          f'({type(err).__name__}: {one_line(err)}); the node goes on')

        return guarded

    def _lost(self, topic: str) -> Any:
        """Event callbacks that keep `<topic>_lost_in_transport`: DDS's own running total of
        the samples of this subscription it lost."""

        def lost(status: Any) -> None:
            key = f'{topic}_lost_in_transport'
            self.counters[key] = max(self.counters[key], int(status.total_count))

        return SubscriptionEventCallbacks(message_lost=self._guard('events', lost))

    def _start_supervisor(self, T_base_optical: np.ndarray, source: str) -> None:
        self.supervisor = Supervisor(self.config, T_base_optical)
        self.extrinsics = source
        self.get_logger().info(f'extrinsics from {source}: camera optical frame at '
                               f'{np.round(T_base_optical[:3, 3], 3).tolist()} m in the base')

    def _lookup_tf(self) -> None:
        if self.supervisor is not None:
            self._tf_timer.cancel()
            return
        camera = self._camera_frame
        if not camera:
            self._log('warn', 'tf', 'extrinsics: waiting for a camera_info to name the camera '
                      "frame (or set camera_frame, or camera_pose instead of TF)")
            return
        T = self._tf.lookup(camera)
        if T is None:
            return
        self._start_supervisor(T, f"TF {self.values['base_frame']} -> {camera}")
        self._tf_timer.cancel()

    # --- inputs ------------------------------------------------------------------------------

    def _camera_of(self, msg: Any) -> CameraModel | None:
        """The camera of a CameraInfo, cached while K, D, size, binning and ROI stay the same;
        None (counted, logged) when it cannot be used: the previous camera stays."""
        try:
            return self._cameras.update(msg)
        except (GeometryError, TypeError, ValueError) as err:
            self.counters['camera_info_invalid'] += 1
            self._log('warn', 'camera_info_invalid', f'camera_info ignored: {one_line(err)}')
            return None

    def _add_frame(self, msg: Any, camera: CameraModel, announced: bool) -> None:
        if self.supervisor is None:
            self.counters['frames_before_extrinsics'] += 1
            return
        try:
            self.supervisor.add_frame(ros_io.stamp_ns(msg.header), camera, announced=announced)
        except GeometryError as err:  # mask_scale does not divide the image size
            self.counters['frames_rejected'] += 1
            self._log('warn', 'frames_rejected', f'frame not used: {one_line(err)}')

    def _on_camera_info(self, msg: Any) -> None:
        camera = self._camera_of(msg)
        if camera is None:
            return
        if not self.values['camera_frame'] and msg.header.frame_id:
            self._camera_frame = msg.header.frame_id
        if not self.values['use_keyframes']:
            self._add_frame(msg, camera, announced=False)

    def _on_keyframe(self, msg: Any) -> None:
        camera = self._cameras.camera
        if camera is None:  # the announcement may carry its own intrinsics
            try:
                camera = CameraModel.from_camera_info(msg)
            except (GeometryError, TypeError, ValueError):
                self.counters['keyframes_without_camera_info'] += 1
                self._log('warn', 'keyframes_without_camera_info', 'keyframe announced before '
                          f"any valid camera_info on {self.resolve_topic_name('camera_info')}: "
                          'not used')
                return
        if not self.values['camera_frame'] and msg.header.frame_id:
            self._camera_frame = msg.header.frame_id
        self._add_frame(msg, camera, announced=True)

    def _on_odometry(self, msg: Any) -> None:
        try:
            odom = ros_io.odometry_sample(msg)
        except GeometryError as err:
            self.counters['odometry_invalid'] += 1
            self._log('warn', 'odometry_invalid', f'odometry ignored: {one_line(err)}')
            return
        if odom.frame_id:
            self._odom_frame = odom.frame_id
        if self.supervisor is None:
            return
        self.supervisor.add_odometry(odom.stamp_ns, odom.T_odom_base, odom.speed_mps)
        if self.config.signal == 'velocity':  # no IMU needed: odometry paces the labels
            self._update(odom.stamp_ns)

    def _on_imu(self, msg: Any) -> None:
        self.counters['imu_received'] += 1
        if self.supervisor is None:
            return
        imu = ros_io.imu_sample(msg)
        self.supervisor.add_imu(imu.stamp_ns, imu.acceleration, imu.orientation_xyzw)
        if self.config.signal != 'velocity':
            self._update(imu.stamp_ns)

    def _on_cmd_vel(self, msg: Any) -> None:
        if self.supervisor is None:
            return
        stamp = ros_io.stamp_ns(msg.header) if self.values['cmd_vel_stamped'] else \
            self.get_clock().now().nanoseconds  # a Twist has no stamp: the receive time
        self.supervisor.add_cmd_vel(stamp, ros_io.twist_speed(msg))

    # --- outputs -----------------------------------------------------------------------------

    def _update(self, now_ns: int) -> None:
        update = self.supervisor.update(now_ns)
        if update is None:
            return
        self.counters['label_updates'] += 1
        self._latest = update
        if update.labels:
            frame = self._camera_frame or 'camera_optical_frame'
            for label in update.labels:
                self.pub_patch.publish(ros_io.fill_image(
                    Image(), ros_io.label_to_image(label, frame)))
            self.counters['labels_published'] += len(update.labels)
            self._last_label = time.monotonic()
        if (self.values['publish_footprints'] and math.isfinite(update.cost)
                and self.pub_footprints.get_subscription_count() > 0):
            self._publish_footprint(update)

    def _publish_footprint(self, update: LabelUpdate) -> None:
        corners = self.supervisor.footprint_in_odom(update)
        if corners is None:
            return
        data = ros_io.footprint_marker(corners, update.cost, update.pose_stamp_ns,
                                       self._odom_frame, self._marker_id)
        self._marker_id = (self._marker_id + 1) % FOOTPRINT_MARKERS
        marker = Marker(ns='footprints', id=data.marker_id, type=Marker.LINE_STRIP,
                        action=Marker.ADD)
        ros_io.set_stamp(marker.header.stamp, data.stamp_ns)
        marker.header.frame_id = data.frame_id
        marker.pose.orientation.w = 1.0
        marker.scale.x = 0.03  # line width (m)
        marker.color.r, marker.color.g, marker.color.b, marker.color.a = data.color
        marker.points = [Point(x=x, y=y, z=z) for x, y, z in data.points]
        self.pub_footprints.publish(MarkerArray(markers=[marker]))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        then, imu_then, updates_then = self._diag_mark
        elapsed = max(now - then, 1e-9)
        imu_rate = (self.counters['imu_received'] - imu_then) / elapsed
        update_rate = (self.counters['label_updates'] - updates_then) / elapsed
        self._diag_mark = (now, self.counters['imu_received'], self.counters['label_updates'])
        latest = self._latest
        cost = math.nan if latest is None else latest.cost
        reason = 'no update yet' if latest is None else latest.reason
        quiet = now - self._last_label
        health = status_level(self.supervisor is not None, imu_rate, quiet)
        if health == 'ERROR':
            message = (f"extrinsics unknown: no TF {self.values['base_frame']} -> "
                       f"{self._camera_frame or '(camera frame: no camera_info yet)'}; "
                       'set camera_pose to give them directly')
        elif health == 'WARN':
            message = f'IMU flows but no label for {quiet:.0f} s: {reason}'
        else:
            message = (f"{self.counters['labels_published']} labels; latest cost "
                       f'{cost:.3f} ({reason})')
        level = getattr(DiagnosticStatus, health)
        values: dict[str, Any] = {
            'imu_rate_hz': f'{imu_rate:.1f}', 'label_update_rate_hz': f'{update_rate:.2f}',
            'labels_published': self.counters['labels_published'],
            'latest_cost': f'{cost:.4f}', 'latest_reason': reason,
            'seconds_since_label': f'{quiet:.1f}', 'extrinsics': self.extrinsics,
            'signal': self.config.signal}
        values.update({f'node.{k}': n for k, n in sorted(self.counters.items())})
        if self.supervisor is not None:
            values['keyframes'] = len(self.supervisor.labeller.keyframes)
            values.update(self.supervisor.all_counters())
        status = DiagnosticStatus(
            name=f'{self.get_fully_qualified_name()}: patch cost', message=message,
            level=level, hardware_id=self._camera_frame or 'camera',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)


def status_level(extrinsics_known: bool, imu_rate_hz: float, seconds_since_label: float
                 ) -> str:
    """The /diagnostics level: 'ERROR' while the extrinsics are unknown, 'WARN' when the IMU
    flows but no label came for more than NO_LABEL_WARN_S, else 'OK'."""
    if not extrinsics_known:
        return 'ERROR'
    if imu_rate_hz > 0 and seconds_since_label > NO_LABEL_WARN_S:
        return 'WARN'
    return 'OK'


def _warm_up(config: Any) -> None:
    """Run the core once on a synthetic second (a throwaway Supervisor): its settings are
    checked now (ValueError), and its lazy imports (scipy's spline and rotations, OpenCV: about
    a second) happen before the first IMU callback instead of stalling it."""
    T_base_optical = camera_pose_to_optical(0.0, 0.0, 1.0, 0.0, 0.5, 0.0)
    try:
        supervisor = Supervisor(config, T_base_optical)
    except ValueError as err:  # settings each in range that do not work together
        raise ConfigError(f'the supervision parameters do not work together: {err}') from None
    camera = CameraModel(64, 48, [[40.0, 0.0, 31.5], [0.0, 40.0, 23.5], [0.0, 0.0, 1.0]], [])
    camera.pixel_rays(np.zeros((1, 2)))
    seconds, rate = 2.0 * config.imu_window_s + 0.5, 200
    pose = np.eye(4)
    for i in range(int(seconds * rate)):
        stamp = (i + 1) * 1_000_000_000 // rate + (i % 2) * 500_000  # jitter: the spline too
        if i % 4 == 0:
            pose[0, 3] = i / rate
            supervisor.add_odometry(stamp, pose, 1.0)
            supervisor.add_cmd_vel(stamp, 1.0)
        if i % 20 == 0:
            supervisor.add_frame(stamp, camera)
        supervisor.add_imu(stamp, (0.0, 0.0, 9.81 + 0.1 * math.sin(i)), (0.0, 0.0, 0.0, 1.0))
    supervisor.update(int(seconds * 1e9))


def main(argv: list[str] | None = None) -> int:
    """Console script `patch_cost_node`. Exit codes (exit_codes.py): 0 stopped (SIGINT too), 2
    could not start with these parameters (the log says why), 3 no rclpy (or scipy/OpenCV)."""
    if _ROS_IMPORT_ERROR is not None:
        sys.stderr.write(f'patch_cost_node needs ROS 2 (rclpy, sensor_msgs, nav_msgs, '
                         f'geometry_msgs, visualization_msgs, diagnostic_msgs): source your ROS '
                         f'2 setup.bash first ({_ROS_IMPORT_ERROR})\n')
        return EXIT_ENVIRONMENT
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s]: %(message)s')
    rclpy.init(args=argv if argv is not None else sys.argv)
    node, code = None, 0
    try:
        try:
            node = PatchCostNode()
        except STARTUP_ERRORS as err:
            rclpy.logging.get_logger(NAME).fatal(f'not starting: {one_line(err)}')
            code = EXIT_BAD_INPUT
        except ImportError as err:  # scipy (rotations, IMU band power) or cv2 (projection)
            rclpy.logging.get_logger(NAME).fatal(
                f'not starting: {one_line(err)} (pip install contrast_semask_ros[supervision] '
                'or apt python3-scipy python3-opencv)')
            code = EXIT_ENVIRONMENT
        else:
            rclpy.spin(node)  # every callback here, one at a time
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
