"""The cost node's world outputs, `cost_cloud` and `cost_grid`: rclpy glue over world/.

- cost_cloud (sensor_msgs/PointCloud2; world/cloud.py): each frame's cost image on the ground
  plane z = ground_offset of the base frame, or along an aligned depth image (use_depth), as
  points x, y, z, cost, confidence in `cloud_frame`: optical (the image's frame_id), base
  (base_frame) or odom (grid_frame); stamped with the image's stamp. Made only while
  subscribed.
- cost_grid (nav_msgs/OccupancyGrid; world/grid.py): the rolling cost grid around the robot in
  grid_frame, fused every frame while subscribed or with `publish_grid`, published at
  grid_rate_hz of sensor time (0: after every frame), stamped with the latest fused image's stamp.

Both run in the cost node's worker thread, after its image outputs (`WorldOutputs.process`);
while neither is wanted a frame costs two subscriber counts. Inputs: camera_info (the colour
camera's intrinsics: the latest message is kept and turned into a CameraModel in the worker,
again only when it changes), odom (the base pose in grid_frame, kept once an output was first
wanted; with grid_pose_source tf, TF grid_frame <- base_frame at each frame's stamp instead,
extrinsics_node.TfPoses), depth and depth/camera_info (use_depth). Extrinsics: camera_pose,
else TF base_frame <- the image's frame_id (extrinsics_node), looked up from the first frame
an output is wanted and retried every TF_RETRY_S. Until the extrinsics, a camera_info or
(grid, odom cloud) a pose are there, frames are skipped and counted (`world_skipped_<why>` in
/diagnostics, one warning each) and the node goes on publishing the cost image; the world
outputs are optional.

Named *_node.py: the import rules (test/test_import_rules.py) let only the rclpy adapters
import rclpy and message packages.
"""

from __future__ import annotations

import array
import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from contrast_semask_ros import codec, params
from contrast_semask_ros.exit_codes import one_line
from contrast_semask_ros.extrinsics_node import TfExtrinsics, TfPoses
from contrast_semask_ros.supervision import ros_io
from contrast_semask_ros.supervision.geometry import CameraModel, camera_pose_to_optical
from contrast_semask_ros.world.cloud import (
    DEPTH_ENCODINGS,
    CloudError,
    cloud_fields,
    cloud_from_points,
    fill_cloud_message,
    layout_difference,
)
from contrast_semask_ros.world.projector import WorldConfig, WorldFrame, WorldProjector

try:  # the ROS 2 install; node.run says so if it is missing
    from nav_msgs.msg import OccupancyGrid
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterException, ParameterUninitializedException
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
    from std_msgs.msg import Header
except ImportError:  # pragma: no cover - exercised only without ROS
    pass

THROTTLE_S = 5.0  # at most one log line per cause per this many seconds
TF_RETRY_S = 0.5  # TF extrinsics: lookup period until found
TF_POSE_WAIT_S = 0.05  # grid_pose_source tf: how long a frame waits for TF at its stamp
DEPTH_KEEP = 5  # depth images kept for matching with frames
DEPTH_SLOP_NS = 100_000_000  # without one of the frame's stamp: the latest within 0.1 s
SKIPPED = {  # world_skipped_<why>: what to do about it
    'no_extrinsics': 'no camera extrinsics: set camera_pose, or publish TF {base} <- the '
                     "image's frame (tf2_ros needed)",
    'no_camera_info': 'no valid camera_info on {camera_info} yet: cost_cloud and cost_grid need '
                      'the intrinsics of the image',
    'no_pose': 'no odometry pose at the frame stamp (odom, within its history): cost_grid and a '
               'cost_cloud in odom skip such frames'}


def qos(depth: int, reliability: str, transient_local: bool = False) -> QoSProfile:
    """Keep-last `depth`, reliable or best_effort (params.py), volatile unless transient_local."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy[reliability.upper()],
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local
                      else DurabilityPolicy.VOLATILE)


def declare_parameters(node: Any, table: tuple[params.Param, ...]) -> dict[str, Any]:
    """Declare every parameter of `table` on `node` (described; read-only unless run time);
    their values as given. A list parameter with an empty default (camera_pose) is declared as
    a double array, and is empty while unset (a parameter file's `[]` included)."""
    values = {}
    for p in table:
        descriptor = ParameterDescriptor(description=p.description, read_only=not p.runtime)
        if p.type is not list or p.default:
            node.declare_parameter(p.name, p.default, descriptor)
            values[p.name] = node.get_parameter(p.name).value
            continue
        try:  # typed explicitly: an empty default would be a byte array
            node.declare_parameter(p.name, Parameter.Type.DOUBLE_ARRAY, descriptor)
        except ParameterException as err:  # e.g. [0,0,1,0,0,0]: integers
            raise params.ConfigError(f'{p.name}: {one_line(err)}; write each number with a '
                                     'decimal point, e.g. [0.3,0.0,1.0,0.0,0.35,0.0]') from None
        try:
            values[p.name] = list(node.get_parameter(p.name).value)
        except ParameterUninitializedException:  # not given: the (empty) default
            values[p.name] = list(p.default)
    return values


def world_config(values: dict[str, Any]) -> WorldConfig:
    """The WorldConfig of a resolved parameter dict, checked as a whole (grid_size_m a whole
    number of cells, names that are not empty); ConfigError saying what to change."""
    try:
        config = WorldConfig(**params.world_config_kwargs(values))
        config.grid_params(values['grid_frame'])
        if not values['base_frame']:
            raise ValueError("base_frame must name the robot's base frame, got ''")
    except ValueError as err:
        raise params.ConfigError(f'cost_cloud/cost_grid parameters: {err}') from None
    return config


def check_values(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (params.resolve's), once world_config(values) accepts them."""
    world_config(values)
    return values


# the points of the start-up check against sensor_msgs_py: finite, a NaN cost, far, zero weight
LAYOUT_POINTS = ((0.5, -1.0, 0.0, 0.25, 1.0), (2.0, 0.0, 0.1, math.nan, 0.5),
                 (1e3, 3.5, -0.2, 1.0, 0.0))


def sensor_msgs_py_check() -> tuple[Any, str]:
    """Where sensor_msgs_py is installed (every ROS 2 install), the start-up check of cost_cloud's
    layout: LAYOUT_POINTS through fill_cloud_message (the node's way: numpy, the message reused,
    no copy) and through sensor_msgs_py.point_cloud2.create_cloud with the same fields.
    (None, what was found) when they are byte-identical or sensor_msgs_py is not there;
    (create_cloud, what differs) when they are not: the node then publishes through it."""
    try:
        from sensor_msgs_py import point_cloud2
    except ImportError as err:
        return None, (f'sensor_msgs_py cannot be imported ({err}): the layout is the one this '
                      "package's tests check against it")
    cloud = cloud_from_points(LAYOUT_POINTS)
    ours = fill_cloud_message(PointCloud2(), cloud, PointField, Header(frame_id='check'))
    try:
        theirs = point_cloud2.create_cloud(Header(frame_id='check'), ours.fields,
                                           [tuple(p) for p in cloud.points.tolist()])
        difference = layout_difference(ours, theirs)
    except Exception as err:  # another sensor_msgs_py version: the node must still start
        return None, (f'the check against sensor_msgs_py failed ({one_line(err)}): keeping '
                      "the layout this package's tests check")
    if difference:
        return point_cloud2.create_cloud, difference
    return None, 'byte-identical to sensor_msgs_py.point_cloud2.create_cloud'


# cost_grid: reliable, transient local, depth 1, as a map server publishes a map. A subscriber
# that joins late gets the newest grid at once, and a transient-local publisher matches both
# kinds of subscriber: Nav2's static layer subscribes transient local by default
# (map_subscribe_transient_local), which a volatile publisher would never match, while rviz and
# other volatile subscribers match it too. The grid it holds ages like any other (its stamp
# says when; grid_decay_s bounds the age of its cells), so depth 1: only the newest matters.
GRID_QOS = ('reliable', True)


class WorldOutputs:
    """cost_cloud and cost_grid of a cost node (module docstring). Made by the node's `_start`
    (ConfigError for parameters that cannot work together); every entity goes through `keep`
    (the node destroys them in `_stop`); `close` for the TF listener."""

    def __init__(self, node: Any, values: dict[str, Any], out_qos: Any, keep: Any) -> None:
        v = values
        self.config = world_config(v)
        self.node, self.stats = node, node.stats
        self.grid_frame, self.base_frame = v['grid_frame'], v['base_frame']
        self.publish_grid, self.use_depth = v['publish_grid'], v['use_depth']
        self.pose_source = v['grid_pose_source']
        self.grid_period_ns = round(1e9 / v['grid_rate_hz']) if v['grid_rate_hz'] > 0 else 0
        self.lock = threading.Lock()  # the projector: worker (frames) and executor (odometry)
        self.projector: WorldProjector | None = None
        self.extrinsics = 'unknown'
        self.engaged = False  # an output was wanted once: odometry is kept from then on
        self._cameras = ros_io.CameraCache()
        self._camera_info: Any = None  # the latest camera_info message, converted when used
        self._checked_info: Any = None  # the last message converted (or refused)
        self._depth: deque[Any] = deque(maxlen=DEPTH_KEEP)  # depth Image messages
        self._depth_info: Any = None
        self._depth_cameras = ros_io.CameraCache()
        self._next_grid_ns: int | None = None  # sensor time the next grid is due
        self._last_grid_ns = -1
        self._tf: TfExtrinsics | None = None
        self._tf_frame = ''  # the image's frame_id, once a frame wanted an output
        self._tf_poses = (TfPoses(node, self.grid_frame, self.base_frame, TF_POSE_WAIT_S)
                          if self.pose_source == 'tf' else None)  # ConfigError without tf2_ros
        self._warned: set[str] = set()
        self._logged: dict[str, float] = {}
        sensor = qos(10, 'best_effort')  # matches any publisher
        keep(node.destroy_subscription, node.create_subscription(
            CameraInfo, 'camera_info', self._set_camera_info, sensor))
        if self.use_depth:
            keep(node.destroy_subscription, node.create_subscription(
                Image, 'depth', self._add_depth, qos(DEPTH_KEEP, 'best_effort')))
            keep(node.destroy_subscription, node.create_subscription(
                CameraInfo, 'depth/camera_info', self._set_depth_info, sensor))
        self.pub_cloud = keep(node.destroy_publisher, node.create_publisher(
            PointCloud2, 'cost_cloud', out_qos))
        self.pub_grid = keep(node.destroy_publisher, node.create_publisher(
            OccupancyGrid, 'cost_grid', qos(1, *GRID_QOS)))
        self._cloud_msg = PointCloud2()  # reused: publish() serialises it at once
        self._create_cloud, layout = sensor_msgs_py_check()
        if self._create_cloud is None:
            node.get_logger().info(f'cost_cloud layout: {layout}')
        else:
            node.get_logger().error(
                f'cost_cloud layout differs from sensor_msgs_py.point_cloud2.create_cloud '
                f'({layout}): publishing through create_cloud instead (slower); please report')
        self._grid_msg = OccupancyGrid()
        self._grid_msg.info.origin.orientation.w = 1.0
        cells = self.config.grid_params(self.grid_frame).cells_per_side ** 2
        self._grid_data = array.array('b', bytes(cells))
        self._grid_view = np.frombuffer(self._grid_data, np.int8)  # cells, shares the memory
        pose = params.check('camera_pose', v['camera_pose'] or ())
        if pose:
            self._set_extrinsics(camera_pose_to_optical(*pose), 'camera_pose parameter')
        else:
            self._tf_timer = keep(node.destroy_timer, node.create_timer(
                TF_RETRY_S, self._lookup_tf))

    # --- plumbing --------------------------------------------------------------------------

    def _log(self, cause: str, text: str, once: bool = False) -> None:
        """A warning: once per cause, or at most one per cause per THROTTLE_S."""
        now = time.monotonic()
        if cause in self._warned or now - self._logged.get(cause, -math.inf) < THROTTLE_S:
            return
        if once:
            self._warned.add(cause)
        self._logged[cause] = now
        self.node.get_logger().warn(text)

    def _skip(self, why: str) -> None:
        self.stats.count(f'world_skipped_{why}')
        self._log(f'skipped_{why}', SKIPPED[why].format(
            base=self.base_frame, camera_info=self.node.resolve_topic_name('camera_info')) +
            f' (counted as world_skipped_{why})', once=True)

    def _set_extrinsics(self, T_base_optical: np.ndarray, source: str) -> None:
        projector = WorldProjector(self.config, T_base_optical, self.grid_frame)
        with self.lock:
            self.projector = projector
        self.extrinsics = source
        self.stats.gauge('grid_memory_bytes', projector.memory_bytes)
        self.node.get_logger().info(
            f'cost_cloud/cost_grid: extrinsics from {source}, camera optical frame at '
            f'{np.round(T_base_optical[:3, 3], 3).tolist()} m in {self.base_frame}')

    def _lookup_tf(self) -> None:  # the executor's timer, until the extrinsics are known
        if self.projector is not None:
            self._tf_timer.cancel()
            return
        frame = self._tf_frame
        if not frame:  # no frame has wanted an output yet: no TF listener either
            return
        try:
            if self._tf is None:
                self._tf = TfExtrinsics(self.node, self.base_frame,
                                        lambda text: self._log('tf', text))
            T = self._tf.lookup(frame)
        except params.ConfigError as err:  # no tf2_ros: no world outputs without camera_pose
            self._tf_timer.cancel()
            self._log('tf', f'cost_cloud/cost_grid: {err}', once=True)
            return
        except Exception as err:  # the node must keep running
            self.stats.count('world_errors')
            self._log('tf_errors', f'TF lookup failed: {one_line(err)}')
            return
        if T is not None:
            self._tf_timer.cancel()
            self._tf.close()  # camera extrinsics are static: looked up once
            self._set_extrinsics(T, f'TF {self.base_frame} -> {frame}')

    def close(self) -> None:
        for tf in (self._tf, self._tf_poses):
            if tf is not None:
                tf.close()

    # --- inputs (executor thread) ----------------------------------------------------------

    def _set_camera_info(self, msg: Any) -> None:
        self._camera_info = msg  # converted in the worker, when a frame wants it

    def _set_depth_info(self, msg: Any) -> None:
        self._depth_info = msg

    def _add_depth(self, msg: Any) -> None:
        # a method, not deque.append: rclpy reads the callback's signature, and builtins
        # without one (deque.append) fail create_subscription
        self._depth.append(msg)

    def add_odometry(self, msg: Any) -> None:
        """The base pose of a nav_msgs/Odometry, kept once an output was wanted."""
        projector = self.projector
        if not self.engaged or projector is None or self._tf_poses is not None:
            return  # (grid_pose_source tf: the pose comes from TF)
        if msg.header.frame_id != self.grid_frame:
            self._log('odom_frame', f"odometry is in {msg.header.frame_id!r} but grid_frame is "
                      f'{self.grid_frame!r}: cost_grid (and a cost_cloud in odom) are labelled '
                      f'{self.grid_frame!r}; set grid_frame to the odometry frame', once=True)
        try:
            stamp_ns, T_odom_base, _ = ros_io.odometry_to_pose_speed(msg)
        except (AttributeError, TypeError, ValueError) as err:  # GeometryError is a ValueError
            self.stats.count('world_odometry_invalid')
            self._log('odometry', f'odometry not used for cost_grid: {one_line(err)}')
            return
        with self.lock:
            projector.add_odometry(stamp_ns, T_odom_base)

    # --- per frame (worker thread) ---------------------------------------------------------

    def wanted(self) -> tuple[bool, bool] | None:
        """(cloud, grid) when either is wanted for this frame, else None."""
        cloud = self.pub_cloud.get_subscription_count() > 0
        grid = self.publish_grid or self.pub_grid.get_subscription_count() > 0
        return (cloud, grid) if cloud or grid else None

    def process(self, header: Any, result: Any, wanted: tuple[bool, bool]) -> None:
        """The frame's cost and confidence (pipeline.FrameResult, camera size) -> cost_cloud
        and/or the grid update (and cost_grid when due); `header` is the image's."""
        start = time.perf_counter()
        want_cloud, want_grid = wanted
        self.engaged = True
        self.stats.count('world_frames')
        self._tf_frame = header.frame_id
        projector, camera = self.projector, self._camera_model()
        if projector is None:
            return self._skip('no_extrinsics')
        if camera is None:
            return self._skip('no_camera_info')
        stamp = result.stamp_ns
        if self._tf_poses is not None and (want_grid or self.config.cloud_frame == 'odom'):
            self._tf_pose(projector, stamp)
        depth = self._depth_for(stamp) if want_cloud and self.use_depth else None
        try:
            with self.lock:
                projector.set_camera(camera)
                out = self._project(projector, result, want_cloud, want_grid, depth)
                occupancy = (projector.occupancy(stamp) if want_grid and out.T_odom_base is not
                             None and self._grid_due(stamp) else None)
        except ValueError as err:  # a camera_info of another size, ...
            self.stats.count('world_errors')
            return self._log('world_errors', f'cost_cloud/cost_grid not made: {one_line(err)}')
        if (want_cloud and out.cloud is None) or (want_grid and out.T_odom_base is None):
            self._skip('no_pose')
        if want_cloud and out.cloud is not None:
            frame_id = {'optical': header.frame_id, 'base': self.base_frame}.get(
                self.config.cloud_frame, self.grid_frame)
            self.pub_cloud.publish(self._cloud_message(out.cloud, Header(stamp=header.stamp,
                                                                         frame_id=frame_id)))
            self.stats.count('cloud_published')
            self.stats.gauge('cloud_points', out.cloud.layout.width)
        if occupancy is not None:
            self._publish_grid(header, occupancy, out.T_odom_base)
            self.stats.gauge('grid_memory_bytes', projector.memory_bytes)
        self.stats.latency('world_ms', (time.perf_counter() - start) * 1e3)

    def _tf_pose(self, projector: WorldProjector, stamp_ns: int) -> None:
        """grid_pose_source tf: the base pose at the frame's stamp from TF into the projector's
        pose history (where odometry goes otherwise); missing: counted, logged (throttled),
        and the frame is then skipped as no_pose."""
        T, why = self._tf_poses.lookup(stamp_ns)
        if T is None:
            self.stats.count('world_tf_pose_missing')
            return self._log('tf_pose', f'cost_grid: {why}; frames without it are skipped')
        with self.lock:
            projector.add_odometry(stamp_ns, T)

    def _cloud_message(self, cloud: Any, header: Any) -> Any:
        """The PointCloud2 of `cloud`: the node's reused message, or sensor_msgs_py's
        create_cloud where the start-up check found that they differ."""
        if self._create_cloud is None:
            return fill_cloud_message(self._cloud_msg, cloud, PointField, header)
        msg = self._create_cloud(header, cloud_fields(cloud, PointField)['fields'],
                                 cloud.points)  # N, 5 float32: converted with its own dtype
        msg.is_dense = cloud.layout.is_dense
        return msg

    def _camera_model(self) -> CameraModel | None:
        """The CameraModel of the latest camera_info (cached while it describes the same
        camera); a bad one is counted and logged once, and the previous camera stays."""
        msg = self._camera_info
        if msg is None or msg is self._checked_info:
            return self._cameras.camera
        self._checked_info = msg
        try:
            self._cameras.update(msg)
        except (AttributeError, TypeError, ValueError) as err:  # GeometryError is a ValueError
            self.stats.count('camera_info_invalid')
            self._log('camera_info_invalid', f'camera_info ignored: {one_line(err)}')
        return self._cameras.camera

    def _depth_for(self, stamp_ns: int) -> tuple[np.ndarray, CameraModel] | None:
        """The depth image of the frame's stamp, else the latest within DEPTH_SLOP_NS, with
        its camera; None (counted: depth_missing, depth_rejected) when there is none."""
        stamps = [(codec.header_stamp_ns(m.header), m) for m in list(self._depth)]
        exact = [m for s, m in stamps if s == stamp_ns]
        near = [m for s, m in stamps if abs(s - stamp_ns) <= DEPTH_SLOP_NS]
        msg = exact[-1] if exact else near[-1] if near else None
        if msg is None or self._depth_info is None:
            self.stats.count('depth_missing')
            return None
        try:
            if msg.encoding not in DEPTH_ENCODINGS:
                raise CloudError(f'depth encoding {msg.encoding!r}; expected 16UC1 (mm) or '
                                 '32FC1 (m), aligned to the colour camera')
            return codec.image_to_array(msg), self._depth_cameras.update(self._depth_info)
        except (codec.CodecError, AttributeError, TypeError, ValueError) as err:
            self.stats.count('depth_rejected')
            self._log('depth_rejected', f'depth image not used: {one_line(err)}')
            return None

    def _project(self, projector: WorldProjector, result: Any, want_cloud: bool,
                 want_grid: bool, depth: tuple[np.ndarray, CameraModel] | None) -> WorldFrame:
        """projector.process, along the depth image when there is one; a depth image that
        does not fit (another size, ...) is counted and the ground plane used instead."""
        if depth is not None:
            try:
                out = projector.process(result.stamp_ns, result.cost, result.confidence,
                                        want_cloud, want_grid, depth)
                self.stats.count('depth_used')
                return out
            except CloudError as err:
                self.stats.count('depth_rejected')
                self._log('depth_rejected', f'depth image not used: {one_line(err)}')
        return projector.process(result.stamp_ns, result.cost, result.confidence, want_cloud,
                                 want_grid)

    def _grid_due(self, stamp_ns: int) -> bool:
        """Whether cost_grid is published for the frame of `stamp_ns`: every frame with
        grid_rate_hz 0, else on a schedule of grid_rate_hz in sensor time (a frame a tenth of
        a period early counts as on time; a gap or a stamp going back restarts it)."""
        period = self.grid_period_ns
        due = self._next_grid_ns
        if period and due is not None and self._last_grid_ns <= stamp_ns < due - period // 10:
            return False
        on_time = due is not None and stamp_ns >= self._last_grid_ns and stamp_ns < due + period
        self._next_grid_ns = (due if on_time else stamp_ns) + period
        self._last_grid_ns = stamp_ns
        return True

    def _publish_grid(self, header: Any, occupancy: Any, T_odom_base: np.ndarray) -> None:
        msg, info = self._grid_msg, occupancy.info
        msg.header.stamp = header.stamp
        msg.header.frame_id = info.frame_id
        msg.info.map_load_time = header.stamp
        msg.info.resolution = float(info.resolution)
        msg.info.width, msg.info.height = int(info.width), int(info.height)
        origin = msg.info.origin.position  # the lower-left corner of cell (0, 0), on the ground
        origin.x, origin.y = float(info.origin_x), float(info.origin_y)
        origin.z = float(T_odom_base[2, 3]) + self.config.ground_offset
        self._grid_view[:] = occupancy.data.reshape(-1)
        msg.data = self._grid_data  # rclpy copies it (or keeps it, with field checks)
        self.pub_grid.publish(msg)
        self.stats.count('grid_published')
        self.stats.gauge('grid_cells_known', occupancy.known)


__all__ = ['GRID_QOS', 'LAYOUT_POINTS', 'WorldOutputs', 'check_values', 'declare_parameters',
           'qos', 'sensor_msgs_py_check', 'world_config']
