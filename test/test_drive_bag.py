"""Synthetic drive bags: written with rosbags in both storages and both metadata versions, read
back with rosbags' AnyReader and (marker `ros`) the real rclpy deserializer; no rclpy.init, no
node, no DDS."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bag_messages import read_messages, stamp_ns

from contrast_semask_ros import codec
from contrast_semask_train.data import drive_bag
from contrast_semask_train.data.cli import main as data_main
from contrast_semask_train.data.drive_bag import (
    DEFAULT_TOPICS,
    DriveBagSpec,
    class_costs,
    footprint,
    ground_truth_cost,
    patch_mask,
    write_drive_bag,
)
from contrast_semask_train.data.synth import render_scene
from contrast_semask_train.data.ycor import YCOR_CLASSES, YCOR_COST_TABLE

rosbags_highlevel = pytest.importorskip(
    'rosbags.highlevel', reason='needs rosbags (requirements/dev.txt)')

ROS_REASON = 'needs the ROS 2 Jazzy wheels: pip install -r requirements/ros-jazzy.txt'
H, W, FRAMES, SEED = 64, 96, 4, 3
SPEC = DriveBagSpec(frames=FRAMES, height=H, width=W, seed=SEED)
START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 100_000_000  # 10 fps
DELAY_NS = 500_000_000
LAYOUTS = [(storage, version) for storage in ('mcap', 'sqlite3') for version in (8, 9)]
SUFFIX = {'mcap': '.mcap', 'sqlite3': '.db3'}
TABLE_COSTS = np.array([YCOR_COST_TABLE[name] for name in YCOR_CLASSES], np.float32)


def _reference(seed: int = SEED, frames: int = FRAMES) -> list[tuple[np.ndarray, np.ndarray]]:
    """What render_scene gives for `seed`: successive calls on one generator."""
    rng = np.random.default_rng(seed)
    return [render_scene(rng, H, W) for _ in range(frames)]


def _expected_cost(labels: np.ndarray) -> np.ndarray:
    cost = np.full(labels.shape, np.nan, np.float32)
    known = labels != 255
    cost[known] = TABLE_COSTS[labels[known]]
    return cost


def _no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if '.tmp-' in p.name]


@pytest.fixture(scope='module')
def reference() -> list[tuple[np.ndarray, np.ndarray]]:
    return _reference()


@pytest.fixture(scope='module')
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Any]:
    root = tmp_path_factory.mktemp('drive_bags')
    return {(storage, version): write_drive_bag(
        root / f'{storage}_v{version}', SPEC._replace(storage=storage, version=version),
        progress=False) for storage, version in LAYOUTS}


# ---- pure helpers ----------------------------------------------------------------------------


def test_class_costs_follow_the_label_order() -> None:
    np.testing.assert_array_equal(class_costs(), TABLE_COSTS)
    with pytest.raises(ValueError, match='no cost for'):
        class_costs({'sky': 1.0})


def test_ground_truth_cost_is_the_table_with_nan_on_seams() -> None:
    labels = np.array([[0, 2, 255], [5, 6, 7]], np.uint8)
    cost = ground_truth_cost(labels, class_costs())
    assert cost.dtype == np.float32
    np.testing.assert_array_equal(cost, np.float32([[1.0, 0.0, np.nan], [0.4, 0.7, 0.8]]))
    with pytest.raises(ValueError, match='uint8'):
        ground_truth_cost(labels.astype(np.int64), class_costs())


def test_patch_mask_holds_class_costs_under_the_footprint_only() -> None:
    labels = np.full((H, W), 2, np.uint8)  # smooth trail, cost 0.0
    labels[:, W // 2:] = 5  # rough trail, cost 0.4
    labels[H - 5] = 255  # a seam across the footprint
    mask = patch_mask(labels, class_costs(), np.random.default_rng(0))
    assert mask.dtype == np.float32 and mask.shape == (H, W)
    inside = footprint(H, W, np.random.default_rng(0))  # the same jitter
    np.testing.assert_array_equal(np.isfinite(mask), inside & (labels != 255))
    np.testing.assert_array_equal(np.unique(mask[np.isfinite(mask)]), np.float32([0.0, 0.4]))
    rows, cols = np.nonzero(inside)
    assert rows.min() > 0.65 * H and rows.max() == H - 1  # the bottom quarter or so
    assert cols.min() > 0.2 * W and cols.max() < 0.8 * W  # around the centre
    assert inside[-1, W // 2] and inside[rows.min(), W // 2]
    # the footprint is a trapezoid: wider at the bottom than at its top
    assert inside[-1].sum() > inside[rows.min()].sum()
    # deterministic per generator state, jittered between frames
    rng = np.random.default_rng(1)
    assert not np.array_equal(footprint(H, W, rng), footprint(H, W, rng))


@pytest.mark.parametrize(('change', 'message'), [
    ({'frames': 0}, 'frames must be >= 1'), ({'height': 8}, 'at least 16x16'),
    ({'fps': 0.0}, 'fps must be positive'), ({'patch_delay_s': -0.1}, 'patch_delay_s'),
    ({'storage': 'rosbag1'}, 'storage must be one of'), ({'version': 5}, 'version must be'),
    ({'jpeg_quality': 0}, 'jpeg_quality'),
    ({'topics': DEFAULT_TOPICS._replace(patch_cost='/ground_truth/cost')}, 'topics must differ'),
])
def test_invalid_spec_is_refused_before_anything_is_written(tmp_path: Path, change: dict,
                                                            message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_drive_bag(tmp_path / 'bag', SPEC._replace(**change), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_frame_stamps_are_exact_nanoseconds() -> None:
    assert drive_bag.frame_stamp_ns(SPEC, 3) == START_NS + 3 * PERIOD_NS
    spec = SPEC._replace(start_stamp_s=1_700_000_000.25, fps=30.0)
    assert drive_bag.frame_stamp_ns(spec, 1) == START_NS + 250_000_000 + 33_333_333


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(('storage', 'version'), LAYOUTS)
def test_metadata_and_topics(written: dict, storage: str, version: int) -> None:
    import yaml

    summary = written[storage, version]
    path = summary.path
    assert (summary.frames, summary.patches, summary.storage, summary.version) == (
        FRAMES, FRAMES, storage, version)
    assert summary.bytes == sum(p.stat().st_size for p in path.iterdir())
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ['metadata.yaml', path.name + SUFFIX[storage]])
    _no_leftovers(path.parent)
    info = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == version
    assert info['storage_identifier'] == storage
    assert info['relative_file_paths'] == [path.name + SUFFIX[storage]]
    assert info['message_count'] == 3 * FRAMES
    assert info['starting_time']['nanoseconds_since_epoch'] == START_NS
    assert info['duration']['nanoseconds'] == (FRAMES - 1) * PERIOD_NS + DELAY_NS
    qos = {t['topic_metadata']['name']: t['topic_metadata']['offered_qos_profiles']
           for t in info['topics_with_message_count']}
    for profiles in qos.values():  # v8: a YAML string with enum numbers; v9: a list with names
        profile = (yaml.safe_load(profiles) if version == 8 else profiles)[0]
        assert profile['reliability'] == (1 if version == 8 else 'reliable')
        assert profile['durability'] == (2 if version == 8 else 'volatile')
        assert profile['depth'] == 10

    expected = {DEFAULT_TOPICS.image: 'sensor_msgs/msg/Image',
                DEFAULT_TOPICS.ground_truth: 'sensor_msgs/msg/Image',
                DEFAULT_TOPICS.patch_cost: 'sensor_msgs/msg/Image'}
    assert summary.topics == expected
    with rosbags_highlevel.AnyReader([path]) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == expected
        assert {c.topic: c.msgcount for c in reader.connections} == dict.fromkeys(expected, FRAMES)
        assert reader.start_time == START_NS


@pytest.mark.parametrize(('storage', 'version'), LAYOUTS)
def test_frames_costs_and_patches_round_trip(written: dict, reference: list, storage: str,
                                             version: int) -> None:
    messages = read_messages(written[storage, version].path)
    by_topic = {topic: [m for m in messages if m.topic == topic] for topic in (
        DEFAULT_TOPICS.image, DEFAULT_TOPICS.ground_truth, DEFAULT_TOPICS.patch_cost)}
    camera, truth, patches = by_topic.values()
    assert len(camera) == len(truth) == len(patches) == FRAMES
    table = set(TABLE_COSTS.tolist())
    for i, (rgb, labels) in enumerate(reference):
        stamp = START_NS + i * PERIOD_NS
        for m in (camera[i], truth[i], patches[i]):
            assert stamp_ns(m.msg) == stamp
            assert m.msg.header.frame_id == 'camera_optical'
        assert camera[i].log_ns == truth[i].log_ns == stamp
        assert patches[i].log_ns == stamp + DELAY_NS  # arrives half a second later

        assert camera[i].msg.encoding == 'rgb8'
        np.testing.assert_array_equal(codec.image_to_rgb(camera[i].msg), rgb)

        assert truth[i].msg.encoding == '32FC1'
        cost = codec.image_to_array(truth[i].msg)
        np.testing.assert_array_equal(cost, _expected_cost(labels))  # NaN == NaN here
        assert np.isnan(cost[labels == 255]).all()

        assert patches[i].msg.encoding == '32FC1'
        patch = codec.image_to_array(patches[i].msg)
        finite = np.isfinite(patch)
        assert set(np.unique(patch[finite]).tolist()) <= table
        np.testing.assert_array_equal(patch[finite], cost[finite])  # the class cost there
        assert finite[int(0.8 * H):, int(0.4 * W):int(0.6 * W)].any()  # bottom centre
        assert not finite[:int(0.65 * H)].any() and not finite[:, :int(0.2 * W)].any()
        assert not finite[:, int(0.8 * W):].any()


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_messages_are_written_in_log_time_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                storage: str) -> None:
    from rosbags.rosbag2 import Writer

    calls: list[tuple[str, int]] = []
    original = Writer.write

    def spy(self: Any, connection: Any, timestamp: int, data: Any) -> None:
        calls.append((connection.topic, timestamp))
        original(self, connection, timestamp, data)

    monkeypatch.setattr(Writer, 'write', spy)
    spec = SPEC._replace(frames=8, storage=storage, patch_delay_s=0.25)
    path = write_drive_bag(tmp_path / 'bag', spec, progress=False).path
    times = [t for _, t in calls]
    assert times == sorted(times) and len(times) == 3 * 8
    # the patch of frame 0 (log 0.25 s) comes after frame 2 (0.2 s) and before frame 3 (0.3 s)
    first_patch = [topic for topic, _ in calls].index(DEFAULT_TOPICS.patch_cost)
    assert calls[first_patch - 1] == (DEFAULT_TOPICS.ground_truth, START_NS + 2 * PERIOD_NS)
    if storage == 'sqlite3':  # the storage order, independent of the reader's sorting
        with sqlite3.connect(path / 'bag.db3') as db:
            stored = [t for (t,) in db.execute('SELECT timestamp FROM messages ORDER BY id')]
        assert stored == times


@pytest.mark.ros
def test_real_rclpy_deserializes_the_messages(written: dict, reference: list) -> None:
    serialization = pytest.importorskip('rclpy.serialization', reason=ROS_REASON)
    sensor_msgs = pytest.importorskip('sensor_msgs.msg', reason=ROS_REASON)
    from rosbags.rosbag2 import Reader

    for storage, version in (('mcap', 9), ('sqlite3', 8)):
        with Reader(written[storage, version].path) as reader:
            raw = [(conn.topic, log_ns, bytes(data)) for conn, log_ns, data in reader.messages()]
        camera = [r for r in raw if r[0] == DEFAULT_TOPICS.image]
        patches = [r for r in raw if r[0] == DEFAULT_TOPICS.patch_cost]
        for i in (0, FRAMES - 1):
            image = serialization.deserialize_message(camera[i][2], sensor_msgs.Image)
            assert (image.encoding, image.height, image.width) == ('rgb8', H, W)
            assert stamp_ns(image) == START_NS + i * PERIOD_NS
            np.testing.assert_array_equal(codec.image_to_rgb(image), reference[i][0])
            patch = serialization.deserialize_message(patches[i][2], sensor_msgs.Image)
            assert patch.encoding == '32FC1' and stamp_ns(patch) == patches[i][1] - DELAY_NS
            values = codec.image_to_array(patch)
            assert np.isfinite(values).any() and np.isnan(values).any()


def test_compressed_camera(tmp_path: Path, reference: list) -> None:
    summary = write_drive_bag(tmp_path / 'bag', SPEC._replace(compressed=True), progress=False)
    assert summary.topics[DEFAULT_TOPICS.compressed_image] == 'sensor_msgs/msg/CompressedImage'
    assert DEFAULT_TOPICS.image not in summary.topics
    camera = [m for m in read_messages(summary.path) if m.topic == DEFAULT_TOPICS.compressed_image]
    assert len(camera) == FRAMES
    for i, (rgb, _) in enumerate(reference):
        msg = camera[i].msg
        assert msg.format == 'rgb8; jpeg compressed bgr8'
        assert stamp_ns(msg) == camera[i].log_ns == START_NS + i * PERIOD_NS
        decoded = codec.compressed_to_rgb(msg)
        assert decoded.shape == rgb.shape
        error = np.abs(decoded.astype(np.float32) - rgb).mean()
        assert error < 6.0, f'frame {i}: jpeg mean abs error {error:.2f}'


# ---- writing safely --------------------------------------------------------------------------


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / 'bag'
    write_drive_bag(out, SPEC._replace(frames=2), progress=False)
    before = (out / 'bag.mcap').read_bytes()
    with pytest.raises(FileExistsError, match='exists'):
        write_drive_bag(out, SPEC._replace(frames=3), progress=False)
    assert (out / 'bag.mcap').read_bytes() == before
    summary = write_drive_bag(out, SPEC._replace(frames=3, storage='sqlite3'), overwrite=True,
                              progress=False)
    assert summary.frames == 3
    assert sorted(p.name for p in out.iterdir()) == ['bag.db3', 'metadata.yaml']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']  # no temporary directory


def test_overwrite_only_replaces_a_bag(tmp_path: Path) -> None:
    precious = tmp_path / 'notes'
    precious.mkdir()
    (precious / 'todo.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not a rosbag2 directory'):
        write_drive_bag(precious, SPEC._replace(frames=1), overwrite=True, progress=False)
    (tmp_path / 'file').write_text('x')
    with pytest.raises(FileExistsError):
        write_drive_bag(tmp_path / 'file', SPEC._replace(frames=1), overwrite=True,
                        progress=False)
    assert (precious / 'todo.txt').read_text() == 'keep me'
    empty = tmp_path / 'empty'
    empty.mkdir()  # an empty directory is taken, like a new path
    assert write_drive_bag(empty, SPEC._replace(frames=1), progress=False).frames == 1
    _no_leftovers(tmp_path)


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / 'bag'
    write_drive_bag(out, SPEC._replace(frames=2), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def failing_render(rng: np.random.Generator, height: int, width: int) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError('renderer crashed')
        return render_scene(rng, height, width)

    monkeypatch.setattr(drive_bag, 'render_scene', failing_render)
    with pytest.raises(RuntimeError, match='renderer crashed'):
        write_drive_bag(tmp_path / 'new', SPEC, progress=False)
    calls.clear()
    with pytest.raises(RuntimeError, match='renderer crashed'):
        write_drive_bag(out, SPEC, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']  # no 'new', no temporaries
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old bag is intact


# ---- command line ----------------------------------------------------------------------------


def test_cli_writes_a_bag(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / 'cli_bag'
    args = [str(out), '--mode', 'patches', '--frames', '2', '--size', '32x48', '--fps', '5',
            '--patch-delay', '0.3', '--seed', '1', '--storage', 'sqlite3', '--version', '8',
            '--compressed', '--no-progress']
    with caplog.at_level('INFO'):
        assert data_main(['drive-bag', *args]) == 0
    assert 'wrote' in caplog.text and '2 frames' in caplog.text
    messages = read_messages(out)
    camera = [m for m in messages if m.topic == DEFAULT_TOPICS.compressed_image]
    patches = [m for m in messages if m.topic == DEFAULT_TOPICS.patch_cost]
    assert codec.compressed_to_rgb(camera[1].msg).shape == (32, 48, 3)
    assert stamp_ns(camera[1].msg) == START_NS + 200_000_000  # 5 fps
    assert patches[1].log_ns == START_NS + 500_000_000  # 0.2 s + 0.3 s
    assert data_main(['drive-bag', *args]) == 2  # exists: an error, not a traceback
    assert 'exists' in caplog.text


def test_cli_help_and_bad_size(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        data_main(['drive-bag', '--help'])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith('usage: contrast-semask-data drive-bag')
    with pytest.raises(SystemExit) as exit_info:
        data_main(['drive-bag', 'out', '--size', '64'])
    assert exit_info.value.code == 2
    assert 'HEIGHTxWIDTH' in capsys.readouterr().err
