"""The cost node's world outputs, cost_cloud (sensor_msgs/PointCloud2) and cost_grid
(nav_msgs/OccupancyGrid), with the real cost_map_node (texture model, ONNX Runtime) and a real
rclpy probe (ros_driver.py, scenario `world`) that decodes them with the real message classes.

The node runs with drive_sim's camera_pose and cloud_frame odom; the probe plays a simulated
drive (drive_sim.SimDrive over ros_driver.RingTerrain, 96x160 at 10 Hz, 4 s) in real time:
odometry, camera_info, images and the oracle patch masks of the first frames (so the bank has
prototypes and the cost is known). Nobody subscribes to cost_cloud or cost_grid for the first
second: the node must compute nothing for them. Each cloud is checked against the simulator's
exact geometry (points on the ground, in front of the camera, on the sampled pixels with their
cost), each grid against the robot's position and the cloud of the same frame. Then a node
without extrinsics (no camera_pose, no tf2_ros here) must go on publishing its cost image.
Every run is sealed in a private network namespace (ros_harness.py).

The glue's own decisions (which depth image, when a grid is due, a bad camera_info, parameters
that do not work together) are checked in process on a stand-in node (`FakeNode`), with the
real message classes and no DDS."""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import TextureModel
from ros_harness import require_sealed_dds, run_sealed

from contrast_semask_ros import codec, params
from contrast_semask_ros.stats import RuntimeStats
from contrast_semask_ros.world.cloud import CLOUD_FIELDS, FLOAT32, POINT_STEP, cloud_array

pytestmark = pytest.mark.ros
pytest.importorskip('rclpy', reason='the node glue needs rclpy (requirements/ros-jazzy.txt)')

from geometry_msgs.msg import TransformStamped  # noqa: E402  (after the importorskip)
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from contrast_semask_ros.world_node import WorldOutputs, check_values  # noqa: E402

HERE = Path(__file__).resolve().parent
DRIVE_S = 4.0
_NS = 1_000_000_000
H, W = 32, 48  # the stand-in node's camera
POSE = [0.3, 0.0, 1.0, 0.0, 0.35, 0.0]  # drive_sim's camera_pose: 1 m up, 20 degrees down


# --- in process: the glue on a stand-in node ------------------------------------------------


class FakePublisher:
    def __init__(self, node: FakeNode, topic: str) -> None:
        self.node, self.topic = node, topic
        self.subscribers = 1

    def get_subscription_count(self) -> int:
        return self.subscribers

    def publish(self, msg: Any) -> None:  # the node reuses its messages: keep what they say
        if self.topic == 'cost_cloud':
            self.node.published[self.topic].append((msg.header.frame_id, codec.header_stamp_ns(
                msg.header), cloud_array(msg).reshape(-1).copy()))
        else:
            self.node.published[self.topic].append((msg.header.frame_id, codec.header_stamp_ns(
                msg.header), np.asarray(msg.data, np.int8).copy()))


class FakeNode:
    """What WorldOutputs uses of an rclpy node: stats, entities, a logger."""

    def __init__(self) -> None:
        self.stats = RuntimeStats()
        self.callbacks: dict[str, Any] = {}
        self.publishers: dict[str, FakePublisher] = {}
        self.published: dict[str, list[Any]] = defaultdict(list)
        self.warnings: list[str] = []
        self.infos: list[str] = []
        self.errors: list[str] = []

    def create_subscription(self, msg_type: Any, topic: str, callback: Any, qos: Any) -> str:
        inspect.signature(callback)  # as rclpy does: ValueError for deque.append and the like
        self.callbacks[topic] = callback
        return topic

    def create_publisher(self, msg_type: Any, topic: str, qos: Any) -> FakePublisher:
        self.publishers[topic] = FakePublisher(self, topic)
        return self.publishers[topic]

    def create_timer(self, period: float, callback: Any) -> Any:
        self.timer = SimpleNamespace(callback=callback, cancelled=False)
        self.timer.cancel = lambda: setattr(self.timer, 'cancelled', True)
        return self.timer

    def get_logger(self) -> Any:
        return SimpleNamespace(warn=self.warnings.append, info=self.infos.append,
                               error=self.errors.append)

    def resolve_topic_name(self, name: str) -> str:
        return f'/{name}'

    destroy_subscription = destroy_publisher = destroy_timer = print  # never called here


def _world(**overrides: Any) -> tuple[FakeNode, WorldOutputs]:
    values = check_values(params.resolve({'camera_pose': POSE} | overrides))
    node = FakeNode()
    return node, WorldOutputs(node, values, None, lambda destroy, entity: entity)


def _camera_info(width: int = W, height: int = H, fx: float = 30.0) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model='plumb_bob', d=[0.0] * 5,
                     k=[fx, 0.0, (width - 1) / 2, 0.0, fx, (height - 1) / 2, 0.0, 0.0, 1.0])
    msg.header.frame_id = 'camera_optical'
    return msg


def _header(stamp_ns: int) -> Header:
    header = Header(frame_id='camera_optical')
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, _NS)
    return header


def _frame(world: WorldOutputs, stamp_ns: int, cost: float = 0.25) -> None:
    """One frame of a constant cost, full confidence, through WorldOutputs.process."""
    result = SimpleNamespace(stamp_ns=stamp_ns, cost=np.full((H, W), cost, np.float32),
                             confidence=np.ones((H, W), np.float32))
    wanted = world.wanted()
    if wanted is not None:
        world.process(_header(stamp_ns), result, wanted)


def _depth(stamp_ns: int, metres: float, encoding: str = '32FC1', size: tuple = (H, W)
           ) -> Image:
    value = {'32FC1': metres, '16UC1': round(metres * 1000)}.get(encoding, 2)
    dtype = {'32FC1': np.float32, '16UC1': np.uint16, 'mono8': np.uint8}[encoding]
    return codec.fill_image(Image(), np.full(size, value, dtype), encoding, _header(stamp_ns))


def _odometry(stamp_ns: int, x: float, frame_id: str = 'odom') -> Odometry:
    msg = Odometry(child_frame_id='base_link')
    msg.header = _header(stamp_ns)
    msg.header.frame_id = frame_id
    msg.pose.pose.position.x = x
    msg.pose.pose.orientation.w = 1.0
    return msg


def test_a_depth_image_of_the_frame_places_the_cloud_else_the_ground_plane() -> None:
    node, world = _world(use_depth=True, cloud_stride=8)
    node.publishers['cost_grid'].subscribers = 0
    node.callbacks['camera_info'](_camera_info())
    node.callbacks['depth/camera_info'](_camera_info())
    cases = [  # (depth messages, optical z of the cloud's points: 2 m = the depth image's)
        ([_depth(1_000 * _NS, 2.0)], 2.0),
        ([_depth(2_000 * _NS + 60_000_000, 3.0), _depth(2_000 * _NS + 300_000_000, 2.5)],
         3.0),  # none of the stamp: the latest within 0.1 s
        ([_depth(3_000 * _NS, 2.0, '16UC1')], 2.0),  # millimetres
        ([_depth(4_000 * _NS + 200_000_000, 2.0)], None),  # too far off: the ground plane
        ([_depth(5_000 * _NS, 2.0, 'mono8')], None),  # not a depth image
        ([_depth(6_000 * _NS, 2.0, size=(20, 30))], None),  # not aligned to the camera
    ]
    for depths, z in cases:
        stamp = codec.header_stamp_ns(depths[0].header) // _NS * _NS
        for depth in depths:
            node.callbacks['depth'](depth)
        _frame(world, stamp)
        frame_id, published, points = node.published['cost_cloud'][-1]
        assert (frame_id, published) == ('camera_optical', stamp)
        if z is not None:
            assert np.allclose(points['z'], z)
        else:  # the ground plane z = 0 of base_link: 1 m below a camera 20 degrees down
            assert not np.allclose(points['z'], points['z'][0]) and points['z'].min() > 1.0
    counts = node.stats.counts()
    assert counts['depth_used'] == 3 and counts['depth_missing'] == 1
    assert counts['depth_rejected'] == 2 and counts['cloud_published'] == 6
    assert sum('depth image not used' in w for w in node.warnings) == 1  # throttled


def _fake_tf2_ros(poses: dict[int, float], lookups: list[tuple[str, str, int, int]]
                  ) -> ModuleType:
    """A stand-in tf2_ros (the real one is not on PyPI) with the documented Buffer /
    TransformListener / lookup_transform API: TF knows the base at x = poses[stamp] (y 0,
    facing +x) at exactly those stamps and raises TransformException at any other."""
    module = ModuleType('tf2_ros')

    class TransformException(Exception):  # noqa: N818  (tf2_ros names it so)
        pass

    class Buffer:
        def lookup_transform(self, target: str, source: str, time: Any, timeout: Any = None
                             ) -> TransformStamped:
            lookups.append((target, source, time.nanoseconds, timeout.nanoseconds))
            if time.nanoseconds not in poses:
                raise TransformException('Lookup would require extrapolation into the future')
            msg = TransformStamped(child_frame_id=source)
            msg.header.frame_id = target
            msg.transform.translation.x = poses[time.nanoseconds]
            msg.transform.rotation.w = 1.0
            return msg

    module.TransformException = TransformException
    module.Buffer = Buffer
    module.TransformListener = lambda buffer, node, *args, **kwargs: SimpleNamespace()
    return module


def test_grid_pose_source_tf_places_the_grid_by_tf_at_the_frame_stamp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """grid_pose_source tf: each frame's base pose is looked up in TF, grid_frame <-
    base_frame at the frame's stamp, waiting up to 50 ms; the odom topic is not used; a frame
    TF has no pose for is skipped and counted."""
    start = 100 * _NS
    poses = {start: 5.0, start + _NS // 10: 5.3}
    lookups: list[tuple[str, str, int, int]] = []
    monkeypatch.setitem(sys.modules, 'tf2_ros', _fake_tf2_ros(poses, lookups))
    node, world = _world(grid_pose_source='tf', grid_rate_hz=0.0)
    node.publishers['cost_cloud'].subscribers = 0
    node.callbacks['camera_info'](_camera_info())
    _frame(world, start)  # engages the outputs: odometry would be kept from here
    world.add_odometry(_odometry(start + _NS // 20, -50.0))  # not used: the pose is TF's
    _frame(world, start + _NS // 10)
    _frame(world, start + 2 * _NS // 10)  # TF has nothing at this stamp
    assert lookups == [('odom', 'base_link', start + k * _NS // 10, 50_000_000)
                       for k in range(3)]
    assert [stamp for _, stamp, _ in node.published['cost_grid']] == [start, start + _NS // 10]
    projector = world.projector
    assert len(projector.poses) == 2  # TF's two poses, no odometry
    assert projector.poses.at(start + _NS // 20)[0, 3] == pytest.approx(5.15)
    assert projector.grid.info.origin_x == pytest.approx(5.0 - 10.0)  # centred on the robot
    counts = node.stats.counts()
    assert counts['world_tf_pose_missing'] == 1 and counts['world_skipped_no_pose'] == 1
    assert sum('no TF odom -> base_link at the frame stamp' in w for w in node.warnings) == 1
    world.close()


def test_grid_pose_source_tf_without_tf2_ros_refuses_the_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'tf2_ros', None)  # import tf2_ros raises ImportError
    with pytest.raises(params.ConfigError, match='grid_pose_source is tf but tf2_ros cannot be '
                       'imported.*grid_pose_source:=odom'):
        _world(grid_pose_source='tf')


def _fake_sensor_msgs_py(point_step: int) -> dict[str, ModuleType]:
    """A stand-in sensor_msgs_py (not on PyPI) whose point_cloud2.create_cloud behaves as
    documented (fields -> a structured dtype of `point_step` bytes a point, is_dense false),
    for the glue's decision; the real one is compared in test_world_cloud.py where it is
    installed."""
    from numpy.lib import recfunctions
    from sensor_msgs.msg import PointCloud2

    def create_cloud(header: Any, fields: list[Any], points: Any) -> PointCloud2:
        dtype = np.dtype({'names': [f.name for f in fields], 'formats': ['<f4'] * len(fields),
                          'offsets': [f.offset for f in fields], 'itemsize': point_step})
        if isinstance(points, np.ndarray):
            array = recfunctions.unstructured_to_structured(points, dtype=dtype)
        else:
            array = np.array([tuple(p) for p in points], dtype=dtype)
        msg = PointCloud2(header=header, height=1, width=len(array), is_dense=False,
                          is_bigendian=False, fields=fields, point_step=point_step,
                          row_step=point_step * len(array))
        msg.data = array.tobytes()
        return msg

    package, module = ModuleType('sensor_msgs_py'), ModuleType('sensor_msgs_py.point_cloud2')
    module.create_cloud = create_cloud
    package.point_cloud2 = module
    return {'sensor_msgs_py': package, 'sensor_msgs_py.point_cloud2': module}


@pytest.mark.parametrize('case', ['identical', 'different', 'not_installed', 'failing'])
def test_cloud_layout_is_checked_against_sensor_msgs_py_at_start(
        monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """At start the node builds a small cloud its own way and with sensor_msgs_py's
    create_cloud: byte-identical, it keeps its own (reused message, no copy); different, it
    says so once and publishes through create_cloud; without sensor_msgs_py, or when the
    check itself fails, it says so and keeps its own."""
    failing = _fake_sensor_msgs_py(20)
    failing['sensor_msgs_py.point_cloud2'].create_cloud = lambda *args: 1 / 0
    modules = {'identical': _fake_sensor_msgs_py(20), 'different': _fake_sensor_msgs_py(24),
               'not_installed': {'sensor_msgs_py': None, 'sensor_msgs_py.point_cloud2': None},
               'failing': failing}
    for name, module in modules[case].items():
        monkeypatch.setitem(sys.modules, name, module)
    node, world = _world(cloud_stride=8)
    node.publishers['cost_grid'].subscribers = 0
    node.callbacks['camera_info'](_camera_info())
    _frame(world, 7 * _NS)
    _, stamp, points = node.published['cost_cloud'][-1]
    assert stamp == 7 * _NS and len(points) > 5 and np.allclose(points['cost'], 0.25)
    layout = [text for text in node.infos + node.errors if 'cost_cloud layout' in text]
    assert len(layout) == 1
    if case == 'different':
        assert node.errors == layout and 'point_step 20 vs 24' in layout[0]
        assert points.dtype.itemsize == 24  # made by create_cloud
    else:
        assert not node.errors and points.dtype.itemsize == 20  # the node's own
        assert {'identical': 'byte-identical', 'not_installed': 'cannot be imported',
                'failing': 'the check against sensor_msgs_py failed'}[case] in layout[0]


def test_the_grid_is_published_on_a_schedule_of_sensor_time() -> None:
    node, world = _world(grid_rate_hz=2.0)
    node.publishers['cost_cloud'].subscribers = 0
    node.callbacks['camera_info'](_camera_info())
    start = 100 * _NS
    _frame(world, start - _NS)  # the first wanted frame: odometry is kept from now on
    assert node.stats.counts()['world_skipped_no_pose'] == 1
    for k in range(-5, 50):
        world.add_odometry(_odometry(start + k * _NS // 20, 0.05 * k))
    for k in range(21):  # 10 Hz with 1 ms of jitter; frame 5 dropped (a busy worker)
        if k != 5:
            _frame(world, start + k * _NS // 10 + (1_000_000 if k % 3 else -1_000_000))
    stamps = [(s - start) / _NS for _, s, _ in node.published['cost_grid']]
    # 2 Hz: a frame a little early is on time, the next frame stands in for a dropped one,
    # and the schedule keeps its phase
    assert stamps == pytest.approx([-0.001, 0.599, 1.001, 1.499, 2.001], abs=1e-9)
    frame_id, _, data = node.published['cost_grid'][-1]
    assert frame_id == 'odom' and data.size == 200 * 200
    assert set(np.unique(data)) == {-1, 25}  # cost 0.25 of grid_max_cost 1 where known
    _frame(world, start + _NS)  # back in time (a bag loop): published, the schedule restarts
    assert (node.published['cost_grid'][-1][1] - start) / _NS == pytest.approx(1.0)
    node, world = _world(grid_rate_hz=0.0, publish_grid=True)
    node.publishers['cost_cloud'].subscribers = node.publishers['cost_grid'].subscribers = 0
    node.callbacks['camera_info'](_camera_info())
    _frame(world, start - _NS)
    for k in range(-5, 20):
        world.add_odometry(_odometry(start + k * _NS // 20, 0.0, frame_id='map'))
    for k in range(5):
        _frame(world, start + k * _NS // 10)
    assert len(node.published['cost_grid']) == 5  # 0: every frame; publish_grid: unsubscribed
    assert sum("odometry is in 'map'" in w for w in node.warnings) == 1  # warned once


def test_nothing_is_made_while_unwanted_and_bad_inputs_are_counted() -> None:
    node, world = _world()
    node.publishers['cost_cloud'].subscribers = node.publishers['cost_grid'].subscribers = 0
    assert world.wanted() is None
    node.publishers['cost_cloud'].subscribers = 1
    _frame(world, 10 * _NS)  # no camera_info yet
    node.callbacks['camera_info'](_camera_info())
    _frame(world, 11 * _NS)
    bad = _camera_info()
    bad.k = [0.0] * 9
    node.callbacks['camera_info'](bad)
    for k in range(3):  # the bad one is counted once; the previous camera stays
        _frame(world, (12 + k) * _NS)
    node.callbacks['camera_info'](_camera_info(width=2 * W, height=2 * H))  # not the image's
    _frame(world, 20 * _NS)
    counts = node.stats.counts()
    assert counts['world_skipped_no_camera_info'] == 1 and counts['camera_info_invalid'] == 1
    assert counts['cloud_published'] == 4 and counts['world_errors'] == 1
    assert counts['world_frames'] == 6


class FakeTf2Ros:
    """tf2_ros's Buffer / TransformListener / lookup_transform as the extrinsics use them: TF
    knows base_link <- camera_optical (drive_sim's camera) from the second lookup on."""

    class TransformException(Exception):  # noqa: N818  (tf2_ros's own name)
        pass

    def __init__(self) -> None:
        self.lookups: list[tuple[str, str]] = []
        self.listeners: list[Any] = []
        fake = self

        class Buffer:
            def lookup_transform(self, target: str, source: str, when: Any) -> Any:
                fake.lookups.append((target, source))
                if len(fake.lookups) < 2 or (target, source) != ('base_link', 'camera_optical'):
                    raise fake.TransformException(f'{source} does not exist')
                from scipy.spatial.transform import Rotation

                from contrast_semask_ros.supervision.geometry import camera_pose_to_optical

                T = camera_pose_to_optical(*POSE)
                x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
                return SimpleNamespace(transform=SimpleNamespace(
                    translation=SimpleNamespace(x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                    rotation=SimpleNamespace(x=x, y=y, z=z, w=w)))

        class TransformListener:
            def __init__(self, buffer: Any, node: Any) -> None:
                self.unregistered = False
                fake.listeners.append(self)

            def unregister(self) -> None:
                self.unregistered = True

        self.Buffer, self.TransformListener = Buffer, TransformListener


def test_extrinsics_from_tf_once_a_frame_wants_an_output(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tf2_ros = FakeTf2Ros()
    monkeypatch.setitem(sys.modules, 'tf2_ros', tf2_ros)
    node, world = _world(camera_pose=[], cloud_frame='base')
    node.publishers['cost_grid'].subscribers = 0
    node.callbacks['camera_info'](_camera_info())
    node.timer.callback()  # no frame wanted an output yet: no TF listener
    assert not tf2_ros.listeners and world.projector is None
    _frame(world, 10 * _NS)
    node.timer.callback()  # the first lookup fails (warned), the second finds it
    assert world.projector is None and not node.timer.cancelled
    node.timer.callback()
    assert world.extrinsics == 'TF base_link -> camera_optical' and node.timer.cancelled
    assert tf2_ros.lookups == [('base_link', 'camera_optical')] * 2
    assert tf2_ros.listeners[0].unregistered  # static extrinsics: /tf no longer listened to
    _frame(world, 11 * _NS)
    frame_id, _, points = node.published['cost_cloud'][-1]
    assert frame_id == 'base_link' and np.abs(points['z']).max() < 1e-5  # the ground, z = 0
    assert node.stats.counts()['world_skipped_no_extrinsics'] == 1
    assert sum('no TF base_link -> camera_optical yet' in w for w in node.warnings) == 1
    monkeypatch.setitem(sys.modules, 'tf2_ros', None)  # not installed: a warning, no outputs
    node, world = _world(camera_pose=[])
    for k in range(3):
        _frame(world, k * _NS)
        node.timer.callback()
    assert node.timer.cancelled and world.projector is None
    assert node.stats.counts()['world_skipped_no_extrinsics'] == 3
    assert sum('tf2_ros cannot be imported' in w for w in node.warnings) == 1


@pytest.mark.parametrize(('overrides', 'message'), [
    ({'grid_size_m': 20.05}, 'whole number of cells'),
    ({'base_frame': ''}, 'base_frame must name'),
    ({'grid_frame': ''}, 'frame_id must be a non-empty'),
])
def test_world_parameters_that_do_not_work_together_refuse_the_start(
        overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(params.ConfigError, match=message):
        check_values(params.resolve(overrides))


def test_world_parameters_are_checked_one_by_one() -> None:
    for name, value in (('camera_pose', [0.3, 0.0, 1.0]), ('cloud_frame', 'map'),
                        ('cloud_stride', 0), ('grid_rate_hz', -1.0), ('grid_resolution_m', 0.0),
                        ('cloud_max_range_m', math.inf)):
        with pytest.raises(params.ConfigError, match=name):
            params.check(name, value)


# --- the real node over DDS ---------------------------------------------------------------


@pytest.fixture(scope='module')
def run(texture_model: TextureModel, tmp_path_factory: pytest.TempPathFactory
        ) -> dict[str, Any]:
    require_sealed_dds()  # skips here without a namespace; fails under CI=true
    out_dir = tmp_path_factory.mktemp('world_node')
    out = out_dir / 'world.json'
    proc = run_sealed([sys.executable, str(HERE / 'ros_driver.py'), 'world', '--model',
                       str(texture_model.onnx), '--seconds', str(DRIVE_S), '--out', str(out)],
                      timeout=180, domain_id=71, cwd=out_dir)
    assert proc.returncode == 0 and out.is_file(), (
        f'driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}')
    return json.loads(out.read_text())


@pytest.mark.slow
def test_nothing_is_computed_without_subscribers(run: dict[str, Any]) -> None:
    before = run['before_subscribing']
    assert before.get('frames_out', 0) >= 5, before  # the cost image went on meanwhile
    assert before.get('world_frames', 0) == 0 and before.get('cloud_published', 0) == 0
    assert before.get('grid_published', 0) == 0 and 'world_ms median' not in before
    after = run['diagnostics']
    assert after['world_frames'] >= 15 and after['cloud_published'] >= 15, after
    assert after['world_frames'] < after['frames_out']


@pytest.mark.slow
def test_cloud_layout_frame_and_stamps(run: dict[str, Any]) -> None:
    clouds = run['clouds']
    assert len(clouds) >= 15
    images = set(run['image_stamps'])
    expected_fields = [[f.name, f.offset, FLOAT32, 1] for f in CLOUD_FIELDS]
    assert [f[0] for f in expected_fields] == ['x', 'y', 'z', 'cost', 'confidence']
    for cloud in clouds:
        assert cloud['stamp_ns'] in images and cloud['frame_index'] is not None
        assert cloud['frame_id'] == 'odom'  # cloud_frame odom: grid_frame's id
        assert cloud['fields'] == expected_fields
        assert cloud['height'] == 1 and cloud['point_step'] == POINT_STEP == 20
        assert cloud['row_step'] == 20 * cloud['width'] == cloud['data_bytes']
        assert cloud['is_dense'] and not cloud['is_bigendian']
    assert len({c['stamp_ns'] for c in clouds}) == len(clouds)  # one per frame


@pytest.mark.slow
def test_cloud_points_lie_on_the_ground_in_front_of_the_camera(run: dict[str, Any]) -> None:
    for cloud in run['clouds']:
        assert cloud['points'] > 50, cloud
        assert cloud['max_abs_z'] < 1e-3, cloud  # the ground plane z = 0 of odom
        assert cloud['min_depth'] > 0.5 and cloud['max_range'] <= 20.0 + 1e-3, cloud
        # each point is the ground under a sampled pixel centre (stride 4) of its frame, with
        # that pixel's cost: extrinsics, intrinsics and the odometry pose all agree
        assert cloud['outside_image'] == 0 and cloud['max_pixel_error'] < 0.05, cloud
        assert cloud['cost_mismatch'] == 0, cloud
        assert cloud['got_pixels'] == cloud['points'], cloud
        assert cloud['missing_pixels'] <= 2 and cloud['extra_pixels'] <= 2, cloud  # at 20 m
        assert 0.0 <= cloud['cost_min'] and cloud['cost_max'] <= 1.0
        assert cloud['confidence_min'] >= 0.5 - 1e-6  # min_confidence: known cost only


@pytest.mark.slow
def test_grid_info_frame_stamps_rate_and_qos(run: dict[str, Any]) -> None:
    grids = run['grids']
    assert len(grids) >= 3, grids
    images = set(run['image_stamps'])
    stamps = [g['stamp_ns'] for g in grids]
    assert stamps == sorted(stamps) and all(s in images for s in stamps)
    # grid_rate_hz 2 on a schedule of sensor time: a frame the node dropped (a busy worker)
    # moves one grid to the next frame, the schedule stays
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    assert 0.45 * _NS <= gaps[len(gaps) // 2] <= 0.55 * _NS and gaps[0] >= 0.25 * _NS, gaps
    for grid in grids:
        assert grid['frame_id'] == 'odom' and grid['map_load_time_ns'] == grid['stamp_ns']
        assert grid['resolution'] == pytest.approx(0.1)
        assert grid['width'] == grid['height'] == 200  # 20 m
        assert grid['orientation'] == [0.0, 0.0, 0.0, 1.0] and grid['origin'][2] == 0.0
        dx, dy = grid['robot_from_centre']  # re-centred within 1 m (5 % of 20 m) + a cell
        assert abs(dx) <= 1.1 and abs(dy) <= 1.1, grid
        assert -1 <= grid['min'] and grid['max'] <= 100 and grid['known'] > 100, grid
        assert set(grid['values']) <= set(range(-1, 101))
    # (DDS discovery does not carry the history depth: 1, see world_node.GRID_QOS)
    assert [(q['reliability'], q['durability']) for q in run['grid_qos']] == [
        ('RELIABLE', 'TRANSIENT_LOCAL')]
    # a subscriber that joins late gets the newest grid at once (transient local)
    assert run['late_grids'] and run['late_grids'][-1] == stamps[-1]


@pytest.mark.slow
def test_grid_cells_are_known_where_the_cloud_points_are(run: dict[str, Any]) -> None:
    paired = [g for g in run['grids'] if 'cloud' in g]
    assert len(paired) >= 3
    for grid in paired:
        cloud = grid['cloud']
        assert cloud['in_window'] > 0, grid  # the cloud reaches 20 m, the window 10 m
        assert cloud['on_known_cells'] == cloud['in_window'], grid


@pytest.mark.slow
def test_diagnostics_report_the_world_outputs(run: dict[str, Any]) -> None:
    diag = run['diagnostics']
    assert diag['cloud_points'] > 50 and diag['grid_cells_known'] > 1000
    assert diag['grid_memory_bytes'] >= 960_017  # the 200 x 200 grid's arrays, 24 B a cell
    assert diag['grid_published'] >= 3 and diag.get('world_errors', 0) == 0
    assert diag.get('camera_info_invalid', 0) == 0
    assert diag.get('world_skipped_no_pose', 0) <= 2  # the first frame(s): odometry kept since
    assert 0 < diag['world_ms median'] < 1000
    assert diag['patches_added'] >= 3 and diag['bank_size'] > 0
    assert run['node']['exit_code'] == 0 and 'Traceback' not in run['node']['node_log']


@pytest.mark.slow
def test_without_extrinsics_the_cost_image_goes_on(run: dict[str, Any]) -> None:
    out = run['no_extrinsics']
    assert out['exit_code'] == 0 and 'Traceback' not in out['node_log'], out['node_log']
    assert out['costs'] >= 5 and out['clouds'] == 0
    diag = out['diagnostics']
    assert diag['world_skipped_no_extrinsics'] >= 5 and diag.get('cloud_published', 0) == 0
    log = out['node_log']
    assert log.count('counted as world_skipped_no_extrinsics') == 1, log  # one warning
    if not run['tf2_ros_installed']:
        assert log.count('tf2_ros cannot be imported') == 1, log


@pytest.mark.slow
def test_depth_images_over_dds_place_the_cloud(run: dict[str, Any]) -> None:
    """use_depth: aligned depth images of a wall 3 m away (32FC1 metres and 16UC1 millimetres
    in turn, no depth in the top rows) on depth and depth/camera_info. Every cloud is in the
    camera's optical frame at the depth, not on the ground plane, each point on a sampled
    pixel (stride 8) with its cost, and no pixel of known depth and cost left out."""
    depth = run['depth']
    assert depth['exit_code'] == 0 and 'Traceback' not in depth['node_log'], depth['node_log']
    clouds = [c for c in depth['clouds'] if 'max_z_error' in c]
    assert len(clouds) >= 8, depth['clouds']
    assert {c['frame_index'] % 2 for c in clouds} == {0, 1}  # both encodings
    for cloud in clouds:
        assert cloud['frame_id'] == 'camera_optical_frame' and cloud['is_dense'], cloud
        assert cloud['max_z_error'] < 1e-4, cloud  # 3 m, 3000 mm
        assert cloud['max_pixel_error'] < 0.01 and cloud['cost_mismatch'] == 0, cloud
        assert cloud['missing_pixels'] == 0 and cloud['extra_pixels'] == 0, cloud
        assert cloud['got_pixels'] == cloud['points'] > 50, cloud
    diag = depth['diagnostics']
    assert diag['depth_used'] >= len(clouds) and diag.get('depth_rejected', 0) == 0, diag
    assert diag.get('world_errors', 0) == 0


@pytest.mark.slow
def test_wall_time(run: dict[str, Any]) -> None:
    assert run['wall_s'] < 40, run['wall_s']
