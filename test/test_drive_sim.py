"""The simulated drive with raw sensors (contrast_semask_train/data/drive_sim.py): its geometry
checked against hand formulas, its IMU against the terrain cost, its bag read back with rosbags'
AnyReader (and, marker `ros`, the real rclpy deserializer)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bag_messages import Message, read_messages, stamp_ns

from contrast_semask_ros import codec
from contrast_semask_train.data import drive_sim
from contrast_semask_train.data.cli import main as data_main
from contrast_semask_train.data.drive_sim import (
    CAMERA_POSE,
    DEFAULT_SIM_TOPICS,
    GROUND_CLASSES,
    OPTICAL_QUATERNION,
    ROBOT_LENGTH,
    ROBOT_WIDTH,
    T_BODY_OPTICAL,
    SimDrive,
    SimDriveSpec,
    base_pose,
    footprint_mask,
    quaternion_xyzw,
    rpy_matrix,
    vibration_level,
    write_sim_drive,
)
from contrast_semask_train.data.synth import LOW_VEGETATION, SMOOTH_TRAIL
from contrast_semask_train.data.ycor import YCOR_CLASSES, YCOR_COST_TABLE

rosbags_highlevel = pytest.importorskip(
    'rosbags.highlevel', reason='needs rosbags (requirements/dev.txt)')

ROS_REASON = 'needs the ROS 2 Jazzy wheels: pip install -r requirements/ros-jazzy.txt'
H, W, FRAMES, SEED = 96, 160, 12, 5
SPEC = SimDriveSpec(frames=FRAMES, height=H, width=W, seed=SEED)
START_NS = 1_700_000_000 * 10**9
END_NS = START_NS + (FRAMES - 1) * 100_000_000 + 10 * 10**9  # last frame + horizon_s
T = DEFAULT_SIM_TOPICS
# the hand geometry of CAMERA_POSE: 1.0 m above the ground, pitched down by 0.35 rad
CAM_H, PITCH = 1.0, 0.35
FX = W / 2 / math.tan(math.radians(45.0))  # 90 degrees across the image
CX, CY = (W - 1) / 2, (H - 1) / 2


def _by_topic(messages: list[Message]) -> dict[str, list[Message]]:
    out: dict[str, list[Message]] = {}
    for m in messages:
        out.setdefault(m.topic, []).append(m)
    return out


class Bands:
    """A test terrain: one class before x = `edge` (odom), another from there on."""

    def __init__(self, edge: float, near: int = SMOOTH_TRAIL, far: int = LOW_VEGETATION):
        self.edge, self.near, self.far = edge, near, far

    def classes_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(x) < self.edge, self.near, self.far).astype(np.uint8)


@pytest.fixture(scope='module')
def drive() -> SimDrive:
    return SimDrive(SPEC)


@pytest.fixture(scope='module')
def bag(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return write_sim_drive(tmp_path_factory.mktemp('sim') / 'drive', SPEC, progress=False)


@pytest.fixture(scope='module')
def messages(bag: Any) -> dict[str, list[Message]]:
    return _by_topic(read_messages(bag.path))


# ---- frames and geometry --------------------------------------------------------------------


def test_frame_conventions() -> None:
    assert tuple(CAMERA_POSE) == (0.3, 0.0, 1.0, 0.0, 0.35, 0.0)
    # optical z = body x, optical x = -body y, optical y = -body z
    R = T_BODY_OPTICAL[:3, :3]
    np.testing.assert_array_equal(R @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_array_equal(R @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_array_equal(R @ [0, 1, 0], [0, 0, -1])
    np.testing.assert_allclose(R, rpy_matrix(-math.pi / 2, 0, -math.pi / 2), atol=1e-12)
    np.testing.assert_allclose(quaternion_xyzw(R), OPTICAL_QUATERNION, atol=1e-12)
    # a positive pitch turns the camera's x axis down
    assert (rpy_matrix(0, PITCH, 0) @ [1, 0, 0])[2] < 0
    # quaternion_xyzw round trip on a rotation with all three angles
    q = quaternion_xyzw(rpy_matrix(0.3, -0.2, 2.5))
    x, y, z, w = q
    back = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    np.testing.assert_allclose(back, rpy_matrix(0.3, -0.2, 2.5), atol=1e-12)


def test_camera_model(drive: SimDrive) -> None:
    camera = drive.camera
    assert (camera.height, camera.width) == (H, W)
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == pytest.approx((FX, FX, CX, CY))
    # frame 0: the base at the odom origin, heading along x
    np.testing.assert_allclose(drive.pose_at(drive.frame_stamp_ns(0)), np.eye(4), atol=1e-12)
    T = drive.camera_pose(0)
    np.testing.assert_allclose(T[:3, 3], [0.3, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 2], [math.cos(PITCH), 0, -math.sin(PITCH)], atol=1e-12)


def test_ground_truth_cost_changes_on_the_row_of_a_boundary() -> None:
    """A terrain boundary 5 m straight ahead of the camera of frame 0 (odom x = 0.3 + 5): the
    ground there is atan(h / 5) below the horizontal, atan(h / 5) - pitch below the optical
    axis, so on row v = cy + fy tan(atan(h / 5) - pitch) (docs/SUPERVISION.md 2.5)."""
    sim = SimDrive(SPEC._replace(frames=1), terrain=Bands(0.3 + 5.0))
    frame = sim.render(0)
    v = CY + FX * math.tan(math.atan2(CAM_H, 5.0) - PITCH)
    assert 30 < v < 40 and abs(v - round(v)) > 0.1  # not on a pixel centre
    far, near = YCOR_COST_TABLE[YCOR_CLASSES[LOW_VEGETATION]], 0.0
    last_far = math.floor(v)  # pixel centres above the boundary's row see farther ground
    np.testing.assert_array_equal(frame.cost[last_far], np.full(W, far, np.float32))
    np.testing.assert_array_equal(frame.cost[last_far + 1:], np.float32(near))
    # above the horizon (v = cy - fy tan(pitch)): sky, NaN
    horizon = CY - FX * math.tan(PITCH)
    assert np.isnan(frame.cost[:math.ceil(horizon)]).all()
    assert (frame.labels[:math.ceil(horizon)] == drive_sim.SKY).all()
    # between the horizon and the boundary: the far class up to FAR_M, then sky again
    centre = frame.cost[:last_far + 1, W // 2]
    assert np.isnan(centre[:math.ceil(horizon)]).all() and (centre[-5:] == far).all()


def test_footprint_mask_of_the_pose_3m_ahead(drive: SimDrive) -> None:
    """Frame 0, the footprint at x = 3 m: rows between the ground 2.3 m and 3.1 m ahead of the
    camera; in each row, the columns within +-0.3 m of the centre line at that row's depth."""
    mask = footprint_mask(drive.camera, drive.camera_pose(0), base_pose(3.0, 0.0, 0.0))
    assert mask.shape == (H, W) and mask.dtype == bool
    c, s = math.cos(PITCH), math.sin(PITCH)

    def row(d: float) -> float:  # the row of ground d metres ahead of the camera
        return CY + FX * (c * CAM_H - s * d) / (c * d + s * CAM_H)

    top, bottom = row(3.0 + ROBOT_LENGTH / 2 - 0.3), row(3.0 - ROBOT_LENGTH / 2 - 0.3)
    rows = np.nonzero(mask.any(axis=1))[0]
    np.testing.assert_array_equal(rows, np.arange(math.ceil(top), math.floor(bottom) + 1))
    for r in rows:
        # the ray of row r meets the ground at t = h / (s + c y_n); lateral = -t x_n
        y_n = (r - CY) / FX
        half = FX * (ROBOT_WIDTH / 2) * (s + c * y_n) / CAM_H  # pixels either side of cx
        cols = np.nonzero(mask[r])[0]
        np.testing.assert_array_equal(
            cols, np.arange(math.ceil(CX - half), math.floor(CX + half) + 1))
    # turned by 90 degrees: length and width swap, so the mask is wider and shallower
    turned = footprint_mask(drive.camera, drive.camera_pose(0),
                            base_pose(3.0, 0.0, math.pi / 2))
    assert turned.any(axis=1).sum() < rows.size
    assert turned.sum(axis=1).max() > mask.sum(axis=1).max()
    # behind the camera: nothing
    assert not footprint_mask(drive.camera, drive.camera_pose(0),
                              base_pose(-3.0, 0.0, 0.0)).any()


def test_oracle_patch_is_the_union_of_future_footprints(drive: SimDrive) -> None:
    index = 4
    frame = drive.frame(index)
    poses = drive.oracle_poses(index)
    samples = drive.oracle_samples(index)
    stamps = drive.trajectory.stamp_ns[samples]
    assert len(poses) > 100
    assert (stamps > frame.stamp_ns).all() and (stamps <= frame.stamp_ns + 10 * 10**9).all()
    centre = frame.T_odom_optical[:3, 3]
    assert (np.linalg.norm(np.c_[poses[:, :2], np.zeros(len(poses))] - centre, axis=1)
            <= 8.0 + 1e-9).all()
    union = np.zeros((H, W), dtype=bool)
    for x, y, yaw in poses:
        union |= footprint_mask(drive.camera, frame.T_odom_optical, base_pose(x, y, yaw))
    finite = np.isfinite(frame.patch)
    np.testing.assert_array_equal(finite, union)
    np.testing.assert_array_equal(frame.patch[finite], frame.cost[finite])
    assert 0.02 * H * W < finite.sum() < 0.5 * H * W  # a band, NaN elsewhere
    # from the bottom row up to the ground at most range + half the footprint's diagonal away
    farthest = math.sqrt(8.0 ** 2 - CAM_H ** 2) + math.hypot(ROBOT_LENGTH, ROBOT_WIDTH) / 2
    top = CY + FX * math.tan(math.atan2(CAM_H, farthest) - PITCH)
    assert finite[-1].any() and not finite[:math.ceil(top)].any()
    assert drive.oracle_log_ns(index) == stamps[-1]
    np.testing.assert_array_equal(drive.oracle(index), frame.patch)


def test_frames_are_deterministic_per_seed(drive: SimDrive) -> None:
    again = SimDrive(SPEC)
    a, b = drive.frame(2), again.frame(2)
    for name in ('rgb', 'labels', 'cost', 'patch', 'T_odom_optical'):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(drive.imu.linear_acceleration, again.imu.linear_acceleration)
    other = SimDrive(SPEC._replace(seed=SEED + 1))
    assert not np.array_equal(other.frame(2).rgb, a.rgb)
    assert not np.array_equal(other.trajectory.x, drive.trajectory.x)


def test_rendered_frame_looks_like_ground_and_sky(drive: SimDrive) -> None:
    frame = drive.render(0)
    assert frame.rgb.shape == (H, W, 3) and frame.rgb.dtype == np.uint8 and frame.patch is None
    sky = frame.labels == drive_sim.SKY
    assert sky[0].all() and not sky[-1].any()
    assert set(np.unique(frame.labels[~sky]).tolist()) <= set(GROUND_CLASSES)
    blue = frame.rgb[..., 2].astype(int) - frame.rgb[..., 0]
    assert blue[sky].mean() > 20 > blue[~sky].mean()  # the sky is blue, the ground is not
    assert frame.rgb[~sky].std() > 5  # textured


# ---- motion and IMU -------------------------------------------------------------------------


def test_speed_tracks_command_times_terrain() -> None:
    sim = SimDrive(SPEC._replace(frames=300, height=32, width=48, seed=3))
    traj = sim.trajectory
    assert 0.5 <= traj.speed_cmd.min() and traj.speed_cmd.max() <= 2.0
    assert len(np.unique(traj.cost)) >= 3  # the drive crosses regions of different cost
    # settled (the cost unchanged for the last 1.5 s): 1 - v / v_cmd = 0.5 * cost
    steady = np.array([k >= 300 and np.ptp(traj.cost[k - 300:k + 1]) == 0
                       for k in range(len(traj.cost))])
    assert steady.sum() > 0.3 * steady.size
    np.testing.assert_allclose((1 - traj.speed / traj.speed_cmd)[steady],
                               0.5 * traj.cost[steady], atol=2e-3)
    # flat ground: z = 0 and roll = pitch = 0 for every pose
    pose = sim.pose_at(int(traj.stamp_ns[1234]) + 1_000_000)
    assert pose[2, 3] == 0 and pose[2, 2] == 1


def test_imu_band_power_follows_terrain_cost() -> None:
    """The 1-30 Hz band power of the IMU's vertical acceleration in 1 s windows (Welch) ranks
    like the terrain cost under the robot (Spearman), over a 100 s drive across regions.

    The correlation is limited by ties (most windows lie on one of five terrains) and by the
    windows across a border; over seeds 0-9 it is 0.88-0.97 for all windows against their mean
    cost, 0.91-0.98 for the windows on one terrain."""
    signal = pytest.importorskip('scipy.signal')
    stats = pytest.importorskip('scipy.stats')
    sim = SimDrive(SPEC._replace(frames=900, height=32, width=48, seed=0))
    az = sim.imu.linear_acceleration[:, 2]
    assert abs(az.mean() - 9.81) < 0.05
    n = len(az) // 200
    windows = az[:n * 200].reshape(n, 200)
    costs = sim.trajectory.cost[:n * 200].reshape(n, 200)
    freqs, psd = signal.welch(windows, fs=200, nperseg=64, axis=-1)
    band = (freqs >= 1) & (freqs <= 30)
    power = psd[:, band].sum(axis=-1) * (freqs[1] - freqs[0])  # n
    assert len(np.unique(costs[:, 0])) >= 4
    assert stats.spearmanr(costs.mean(axis=1), power).statistic > 0.9
    pure = np.ptp(costs, axis=1) == 0  # windows on one terrain
    assert stats.spearmanr(costs[pure, 0], power[pure]).statistic > 0.9
    # and the median power per terrain rises with its cost, as the vibration level's square
    levels = sorted(set(costs[pure, 0].tolist()))
    medians = [np.median(power[pure & (costs[:, 0] == c)]) for c in levels]
    assert np.all(np.diff(medians) > 0)
    np.testing.assert_allclose(medians, vibration_level(np.array(levels)) ** 2, rtol=0.35)


def test_vibration_level_rises_strictly_with_cost() -> None:
    costs = np.array(sorted(YCOR_COST_TABLE[YCOR_CLASSES[c]] for c in GROUND_CLASSES))
    assert np.all(np.diff(vibration_level(costs)) > 0)


# ---- the bag --------------------------------------------------------------------------------


def test_bag_topics_types_and_counts(bag: Any, messages: dict[str, list[Message]]) -> None:
    expected = {T.tf_static: 'tf2_msgs/msg/TFMessage', T.odom: 'nav_msgs/msg/Odometry',
                T.imu: 'sensor_msgs/msg/Imu', T.cmd_vel: 'geometry_msgs/msg/TwistStamped',
                T.image: 'sensor_msgs/msg/Image', T.camera_info: 'sensor_msgs/msg/CameraInfo',
                T.ground_truth: 'sensor_msgs/msg/Image', T.patch_cost: 'sensor_msgs/msg/Image',
                T.cost_grid: 'nav_msgs/msg/OccupancyGrid'}
    assert bag.topics == expected
    assert {topic: ms[0].msgtype for topic, ms in messages.items()} == expected
    samples = (END_NS - START_NS) // 5_000_000 + 1  # 200 Hz over the drive
    counts = {T.tf_static: 1, T.odom: -(-samples // 4), T.imu: samples,
              T.cmd_vel: -(-samples // 10), T.image: FRAMES, T.camera_info: FRAMES,
              T.ground_truth: FRAMES, T.patch_cost: FRAMES, T.cost_grid: 1}
    assert {topic: len(ms) for topic, ms in messages.items()} == counts
    assert bag.messages == counts and (bag.frames, bag.patches) == (FRAMES, FRAMES)
    assert bag.duration_s == pytest.approx((END_NS - START_NS) / 1e9)
    periods = {T.odom: 20_000_000, T.imu: 5_000_000, T.cmd_vel: 50_000_000,
               T.image: 100_000_000}
    for topic, period in periods.items():
        stamps = np.array([stamp_ns(m.msg) for m in messages[topic]])
        assert stamps[0] == START_NS and (np.diff(stamps) == period).all(), topic
        assert [m.log_ns for m in messages[topic]] == stamps.tolist()  # logged at the stamp
    assert stamp_ns(messages[T.imu][-1].msg) == END_NS


def test_bag_is_in_log_time_order(bag: Any) -> None:
    everything = read_messages(bag.path)
    times = [m.log_ns for m in everything]
    assert times == sorted(times)
    assert everything[0].topic == T.tf_static and times[0] == START_NS
    # stored order too (the reader's order is the storage's for one mcap file)
    from rosbags.rosbag2 import Reader

    with Reader(bag.path) as reader:
        stored = [t for _, t, _ in reader.messages()]
    assert stored == sorted(stored)


def test_tf_static_and_its_qos(bag: Any, messages: dict[str, list[Message]]) -> None:
    import yaml

    (tf,) = messages[T.tf_static]
    chain = [(t.header.frame_id, t.child_frame_id) for t in tf.msg.transforms]
    assert chain == [('base_link', 'camera_link'), ('camera_link', 'camera_optical_frame')]
    body, optical = tf.msg.transforms
    assert stamp_ns(body) == START_NS
    t, q = body.transform.translation, body.transform.rotation
    assert (t.x, t.y, t.z) == pytest.approx((0.3, 0.0, 1.0))
    assert (q.x, q.y, q.z, q.w) == pytest.approx((0, math.sin(0.175), 0, math.cos(0.175)))
    t, q = optical.transform.translation, optical.transform.rotation
    assert (t.x, t.y, t.z) == (0, 0, 0)
    assert (q.x, q.y, q.z, q.w) == pytest.approx(OPTICAL_QUATERNION)
    info = yaml.safe_load((bag.path / 'metadata.yaml').read_text())
    qos = {t['topic_metadata']['name']: t['topic_metadata']['offered_qos_profiles'][0]
           for t in info['rosbag2_bagfile_information']['topics_with_message_count']}
    for latched in (T.tf_static, T.cost_grid):
        assert qos[latched]['durability'] == 'transient_local' and qos[latched]['depth'] == 1
    assert qos[T.odom]['durability'] == 'volatile'


def test_camera_messages(drive: SimDrive, messages: dict[str, list[Message]]) -> None:
    for i in (0, FRAMES - 1):
        stamp = START_NS + i * 100_000_000
        image, info, truth = (messages[topic][i] for topic in (T.image, T.camera_info,
                                                                 T.ground_truth))
        frame = drive.render(i)
        for m in (image, info, truth):
            assert stamp_ns(m.msg) == m.log_ns == stamp
            assert m.msg.header.frame_id == 'camera_optical_frame'
        assert image.msg.encoding == 'rgb8'
        np.testing.assert_array_equal(codec.image_to_rgb(image.msg), frame.rgb)
        assert truth.msg.encoding == '32FC1'
        np.testing.assert_array_equal(codec.image_to_array(truth.msg), frame.cost)
        msg = info.msg
        assert (msg.height, msg.width, msg.distortion_model) == (H, W, 'plumb_bob')
        np.testing.assert_array_equal(msg.d, np.zeros(5))
        np.testing.assert_allclose(msg.k, [FX, 0, CX, 0, FX, CY, 0, 0, 1])
        np.testing.assert_allclose(msg.p, [FX, 0, CX, 0, 0, FX, CY, 0, 0, 0, 1, 0])
        np.testing.assert_array_equal(msg.r, np.eye(3).reshape(-1))
        assert (msg.binning_x, msg.binning_y, msg.roi.width, msg.roi.height) == (0, 0, 0, 0)


def test_oracle_messages(drive: SimDrive, messages: dict[str, list[Message]]) -> None:
    patches = messages[T.patch_cost]
    assert sorted(stamp_ns(m.msg) for m in patches) == [
        START_NS + i * 100_000_000 for i in range(FRAMES)]
    for m in patches:
        stamp = stamp_ns(m.msg)
        index = (stamp - START_NS) // 100_000_000
        assert m.log_ns == drive.oracle_log_ns(index)  # its last footprint's stamp
        assert stamp < m.log_ns <= stamp + 10 * 10**9
        assert m.msg.header.frame_id == 'camera_optical_frame' and m.msg.encoding == '32FC1'
        patch = codec.image_to_array(m.msg)
        assert np.isfinite(patch).any() and np.isnan(patch).any()
        np.testing.assert_array_equal(patch, drive.oracle(index))


def test_ground_truth_cost_grid_message(drive: SimDrive,
                                        messages: dict[str, list[Message]]) -> None:
    """/ground_truth/cost_grid: one OccupancyGrid in odom at the start, 0.1 m cells on the
    lattice, covering the whole driven path with 15 m to spare, each cell rint(100 * cost) of
    the terrain at its centre, no unknown cell."""
    (grid,) = messages[T.cost_grid]
    msg = grid.msg
    assert grid.log_ns == stamp_ns(msg) == START_NS and msg.header.frame_id == 'odom'
    info = msg.info
    assert info.resolution == pytest.approx(0.1) and info.map_load_time == msg.header.stamp
    o = info.origin
    assert (o.position.z, o.orientation.x, o.orientation.y, o.orientation.z,
            o.orientation.w) == (0, 0, 0, 0, 1)
    x0, y0 = o.position.x, o.position.y
    assert x0 / 0.1 == pytest.approx(round(x0 / 0.1)) and y0 / 0.1 == pytest.approx(round(
        y0 / 0.1))  # on the lattice
    data = np.asarray(msg.data, np.int8).reshape(info.height, info.width)
    expected = drive.cost_grid()
    np.testing.assert_array_equal(data, expected.data)
    assert (expected.origin_x, expected.origin_y) == pytest.approx((x0, y0))
    assert set(np.unique(data).tolist()) <= {0, 30, 40, 70, 80}  # -1 nowhere
    # the whole path inside, at least 15 m from every edge
    traj = drive.trajectory
    x1, y1 = x0 + info.width * 0.1, y0 + info.height * 0.1
    assert x0 <= traj.x.min() - 15 and traj.x.max() + 15 <= x1 + 1e-9
    assert y0 <= traj.y.min() - 15 and traj.y.max() + 15 <= y1 + 1e-9
    assert x1 - x0 < traj.x.max() - traj.x.min() + 30.2  # and not much more
    # the cell under known points holds the terrain's cost there (cell centres: no border)
    rng = np.random.default_rng(0)
    cols = rng.integers(0, info.width, 500)
    rows = rng.integers(0, info.height, 500)
    x, y = x0 + (cols + 0.5) * 0.1, y0 + (rows + 0.5) * 0.1
    cost = drive.cost_lut[drive.terrain.classes_at(x, y)]
    np.testing.assert_array_equal(data[rows, cols], np.rint(100 * cost).astype(np.int8))
    r, c, inside = expected.cell(traj.x, traj.y)
    assert inside.all()
    cell_cost = data[r, c] / 100  # the cells under the path: mostly the path's own cost
    assert np.mean(np.abs(cell_cost - traj.cost) < 1e-6) > 0.95


def test_cost_grid_of_a_known_terrain() -> None:
    """Bands at x = 3.02: every cell centred before it costs 0, every other 80 (low
    vegetation); the cell holding a point is floor((p - origin) / 0.1)."""
    sim = SimDrive(SPEC._replace(frames=2, horizon_s=1.0), terrain=Bands(3.02))
    grid = sim.cost_grid()
    centres = grid.origin_x + (np.arange(grid.data.shape[1]) + 0.5) * grid.resolution
    far = round(100 * YCOR_COST_TABLE[YCOR_CLASSES[LOW_VEGETATION]])
    np.testing.assert_array_equal(grid.data, np.broadcast_to(
        np.where(centres < 3.02, 0, far).astype(np.int8), grid.data.shape))
    row, col, inside = grid.cell(np.array([2.96, 3.04, -1e6]), np.array([0.0, 0.0, 0.0]))
    assert inside.tolist() == [True, True, False]
    assert grid.data[row[:2], col[:2]].tolist() == [0, far]
    assert sim.cost_grid() is grid  # computed once


def test_odometry_twist_matches_pose_differences(messages: dict[str, list[Message]]) -> None:
    odom = messages[T.odom]
    assert {(m.msg.header.frame_id, m.msg.child_frame_id) for m in odom} == {
        ('odom', 'base_link')}
    xy = np.array([[m.msg.pose.pose.position.x, m.msg.pose.pose.position.y] for m in odom])
    z = np.array([m.msg.pose.pose.position.z for m in odom])
    q = np.array([[getattr(m.msg.pose.pose.orientation, k) for k in 'xyzw'] for m in odom])
    yaw = np.unwrap(2 * np.arctan2(q[:, 2], q[:, 3]))
    assert (z == 0).all() and (q[:, :2] == 0).all()
    twist = np.array([[m.msg.twist.twist.linear.x, m.msg.twist.twist.linear.y,
                       m.msg.twist.twist.angular.z] for m in odom])
    dt = 0.02
    velocity = (xy[2:] - xy[:-2]) / (2 * dt)  # odom frame, central differences
    c, s = np.cos(yaw[1:-1]), np.sin(yaw[1:-1])
    forward = velocity[:, 0] * c + velocity[:, 1] * s  # in base_link
    left = -velocity[:, 0] * s + velocity[:, 1] * c
    np.testing.assert_allclose(forward, twist[1:-1, 0], atol=0.01)
    np.testing.assert_allclose(left, 0.0, atol=0.01)
    assert (twist[:, 1] == 0).all()
    np.testing.assert_allclose((yaw[2:] - yaw[:-2]) / (2 * dt), twist[1:-1, 2], atol=0.002)
    assert 0.2 < twist[:, 0].min() and twist[:, 0].max() < 2.0


def test_imu_and_cmd_vel_messages(drive: SimDrive, messages: dict[str, list[Message]]) -> None:
    imu = messages[T.imu]
    assert {m.msg.header.frame_id for m in imu} == {'base_link'}
    acc = np.array([[m.msg.linear_acceleration.x, m.msg.linear_acceleration.y,
                     m.msg.linear_acceleration.z] for m in imu])
    np.testing.assert_array_equal(acc, drive.imu.linear_acceleration)
    gyro_z = np.array([m.msg.angular_velocity.z for m in imu])
    np.testing.assert_allclose(gyro_z, drive.trajectory.yaw_rate, atol=0.01)
    q = np.array([[getattr(m.msg.orientation, k) for k in 'xyzw'] for m in imu])
    np.testing.assert_allclose(np.unwrap(2 * np.arctan2(q[:, 2], q[:, 3])),
                               drive.trajectory.yaw, atol=1e-9)
    cmd = messages[T.cmd_vel]
    assert {m.msg.header.frame_id for m in cmd} == {'base_link'}
    speed = np.array([m.msg.twist.linear.x for m in cmd])
    np.testing.assert_allclose(speed, drive.trajectory.speed_cmd[::10])
    odom_speed = np.array([m.msg.twist.twist.linear.x for m in messages[T.odom]])[::5]
    assert (odom_speed <= speed[::2] + 1e-9).all()  # every 0.1 s: the terrain only slows down


@pytest.mark.ros
def test_real_rclpy_deserializes_the_messages(bag: Any) -> None:
    """rclpy's own CDR reader on the first message of each topic (tf2_msgs, not among the
    pinned ROS wheels, only when installed)."""
    import importlib

    serialization = pytest.importorskip('rclpy.serialization', reason=ROS_REASON)
    sensor_msgs = pytest.importorskip('sensor_msgs.msg', reason=ROS_REASON)
    nav_msgs = pytest.importorskip('nav_msgs.msg', reason=ROS_REASON)
    geometry_msgs = pytest.importorskip('geometry_msgs.msg', reason=ROS_REASON)
    from rosbags.rosbag2 import Reader

    types = {T.odom: nav_msgs.Odometry, T.imu: sensor_msgs.Imu,
             T.cmd_vel: geometry_msgs.TwistStamped, T.image: sensor_msgs.Image,
             T.camera_info: sensor_msgs.CameraInfo, T.ground_truth: sensor_msgs.Image,
             T.patch_cost: sensor_msgs.Image, T.cost_grid: nav_msgs.OccupancyGrid}
    try:
        types[T.tf_static] = importlib.import_module('tf2_msgs.msg').TFMessage
    except ImportError:
        pass
    first: dict[str, bytes] = {}
    with Reader(bag.path) as reader:
        for conn, _, data in reader.messages():
            first.setdefault(conn.topic, bytes(data))
    decoded = {topic: serialization.deserialize_message(first[topic], msgtype)
               for topic, msgtype in types.items()}
    assert decoded[T.odom].child_frame_id == 'base_link'
    assert decoded[T.odom].header.frame_id == 'odom'
    assert decoded[T.imu].linear_acceleration.z == pytest.approx(9.81, abs=3)
    assert decoded[T.cmd_vel].twist.linear.x > 0.5
    info = decoded[T.camera_info]
    assert (info.distortion_model, info.height, info.width) == ('plumb_bob', H, W)
    assert decoded[T.image].encoding == 'rgb8'
    assert np.isfinite(codec.image_to_array(decoded[T.patch_cost])).any()
    grid = decoded[T.cost_grid]
    assert grid.header.frame_id == 'odom' and len(grid.data) == grid.info.width * \
        grid.info.height
    if T.tf_static in decoded:
        assert len(decoded[T.tf_static].transforms) == 2


def test_other_storage_version_and_compressed(tmp_path: Path) -> None:
    spec = SPEC._replace(frames=2, storage='sqlite3', version=8, compressed=True)
    summary = write_sim_drive(tmp_path / 'bag', spec, progress=False)
    assert summary.topics[T.compressed_image] == 'sensor_msgs/msg/CompressedImage'
    assert T.image not in summary.topics
    assert sorted(p.name for p in summary.path.iterdir()) == ['bag.db3', 'metadata.yaml']
    messages = _by_topic(read_messages(summary.path))
    camera = messages[T.compressed_image]
    assert len(camera) == 2 and camera[1].msg.format == 'rgb8; jpeg compressed bgr8'
    decoded = codec.compressed_to_rgb(camera[1].msg)
    expected = SimDrive(spec).render(1).rgb
    assert np.abs(decoded.astype(np.float32) - expected).mean() < 6.0
    assert len(messages[T.odom]) == summary.messages[T.odom] > 500


def test_bag_refuses_to_overwrite(tmp_path: Path, bag: Any) -> None:
    out = tmp_path / 'bag'
    spec = SPEC._replace(frames=1)
    write_sim_drive(out, spec, progress=False)
    with pytest.raises(FileExistsError, match='exists'):
        write_sim_drive(out, spec, progress=False)
    write_sim_drive(out, spec, overwrite=True, progress=False)
    assert not [p.name for p in tmp_path.iterdir() if '.tmp-' in p.name]


@pytest.mark.parametrize(('change', 'message'), [
    ({'frames': 0}, 'frames must be >= 1'), ({'height': 8}, 'at least 16x16'),
    ({'fps': 0.0}, 'fps must be positive'), ({'storage': 'zip'}, 'storage'),
    ({'version': 5}, 'version'), ({'hfov_deg': 180.0}, 'hfov_deg'),
    ({'horizon_s': -1.0}, 'horizon_s'), ({'range_m': 0.0}, 'range_m'),
    ({'camera_pose': CAMERA_POSE._replace(z=-1.0)}, 'above the ground'),
    ({'topics': T._replace(odom=T.imu)}, 'topics must differ')])
def test_invalid_spec(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimDrive(SPEC._replace(**change))


# ---- command line ----------------------------------------------------------------------------


def test_cli_writes_the_sensor_drive_by_default(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / 'cli_bag'
    with caplog.at_level('INFO'):
        assert data_main(['drive-bag', str(out), '--frames', '2', '--size', '48x64',
                          '--seed', '1', '--no-progress']) == 0
    assert 'simulated drive' in caplog.text and '2 frames' in caplog.text
    topics = {m.topic for m in read_messages(out)}
    assert topics == set(DEFAULT_SIM_TOPICS) - {T.compressed_image}
    assert data_main(['drive-bag', str(tmp_path / 'x'), '--frames', '2', '--size', '48x64',
                      '--patch-delay', '0.3', '--no-progress']) == 2
    assert '--patch-delay applies to --mode patches' in caplog.text
    assert data_main(['drive-bag', str(tmp_path / 'p'), '--mode', 'patches', '--frames', '2',
                      '--size', '48x64', '--no-progress']) == 0
    assert {m.topic for m in read_messages(tmp_path / 'p')} == {
        '/camera/image_raw', '/traversal/patch_cost', '/ground_truth/cost'}
