"""contrast-semask-replay on the bags robots record and on bad input: Humble sqlite3 bags, metadata
whose QoS differs from the storage's, every way of naming a bag, replays that read no frames,
patches held until their frame, the exit codes (0 ok, 2 bad input, 3 environment) and an
--overwrite that a crash cannot half-do."""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TextureModel

from contrast_semask_ros import atomic
from contrast_semask_ros import replay as replay_module
from contrast_semask_ros.replay import main as replay_main
from contrast_semask_train.data.cli import main as data_main

pytest.importorskip('rosbags', reason='replay reads bags with rosbags (requirements/dev.txt)')
pytestmark = pytest.mark.slow

TOPICS = ['--image-topic', '/camera/image_raw', '--patch-cost-topic', '/traversal/patch_cost']
FRAMES = 4

# what rosbag2 Humble's sqlite3 storage (schema 3) creates: no message_definitions table and no
# type_description_hash column; `schema` names the distro
HUMBLE_SCHEMA = """
CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL,
                      metadata TEXT NOT NULL);
CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                    serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL,
                      timestamp INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX timestamp_idx ON messages (timestamp ASC);
INSERT INTO schema(schema_version, ros_distro) VALUES (3, 'humble');
"""
INFINITE = {'sec': 9223372036, 'nsec': 854775807}  # how Humble writes an unset duration
HUMBLE_QOS = [{'history': 3, 'depth': 0, 'reliability': 1, 'durability': 2,
               'deadline': INFINITE, 'lifespan': INFINITE, 'liveliness': 1,
               'liveliness_lease_duration': INFINITE,
               'avoid_ros_namespace_conventions': False}]


def _make_bag(path: Path, *extra: str, frames: int = FRAMES) -> Path:
    assert data_main(['drive-bag', str(path), '--mode', 'patches',
                      '--frames', str(frames), '--size', '96x128',
                      '--no-progress', *extra]) == 0
    return path


@pytest.fixture(scope='module')
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-frame mcap (metadata 9) drive bag; tests copy it before changing anything."""
    return _make_bag(tmp_path_factory.mktemp('bags') / 'drive')


def _dump_yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False)


def _humble_bag(source: Path, dst: Path) -> Path:
    """`source`'s messages as rosbag2 Humble records them: sqlite3 schema 3 and metadata.yaml
    version 5 (no ros_distro, no type hashes, QoS as a YAML string)."""
    from rosbags.highlevel import AnyReader

    dst.mkdir()
    db = dst / f'{dst.name}_0.db3'
    con = sqlite3.connect(db)
    con.executescript(HUMBLE_SCHEMA)
    qos = _dump_yaml(HUMBLE_QOS).strip()
    topics, stamps = [], []
    with AnyReader([source]) as reader:
        ids = {}
        for conn in reader.connections:
            ids[conn.topic] = len(ids) + 1
            con.execute('INSERT INTO topics VALUES (?, ?, ?, ?, ?)',
                        (ids[conn.topic], conn.topic, conn.msgtype, 'cdr', qos))
            topics.append({'topic_metadata': {
                'name': conn.topic, 'type': conn.msgtype, 'serialization_format': 'cdr',
                'offered_qos_profiles': qos}, 'message_count': conn.msgcount})
        for conn, log_ns, raw in reader.messages():
            con.execute('INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)',
                        (ids[conn.topic], log_ns, bytes(raw)))
            stamps.append(log_ns)
    start, duration = min(stamps), max(stamps) - min(stamps)
    info = {'version': 5, 'storage_identifier': 'sqlite3',
            'duration': {'nanoseconds': duration},
            'starting_time': {'nanoseconds_since_epoch': start},
            'message_count': len(stamps), 'topics_with_message_count': topics,
            'compression_format': '', 'compression_mode': '',
            'relative_file_paths': [db.name],
            'files': [{'path': db.name, 'starting_time': {'nanoseconds_since_epoch': start},
                       'duration': {'nanoseconds': duration}, 'message_count': len(stamps)}]}
    con.execute('INSERT INTO metadata (metadata_version, metadata) VALUES (5, ?)',
                (_dump_yaml(info),))
    con.commit()
    con.close()
    (dst / 'metadata.yaml').write_text(_dump_yaml({'rosbag2_bagfile_information': info}))
    return dst


def _replay(bag: Path, model: TextureModel, out: Path, *extra: str,
            topics: list[str] = TOPICS) -> int:
    return replay_main([str(bag), '--model', str(model.onnx), *topics, '--out', str(out),
                        '--no-progress', *extra])


def _report(out: Path) -> dict[str, Any]:
    return json.loads((out / 'report.json').read_text())


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_humble_sqlite3_bags_are_read(texture_model: TextureModel, drive: Path,
                                      tmp_path: Path) -> None:
    """Sqlite schema 3 and metadata version 5 carry no message definitions: the typestore comes
    from the bag's ROS distro (the `schema` table says humble)."""
    bag = _humble_bag(drive, tmp_path / 'humble')
    out = tmp_path / 'out'
    assert _replay(bag, texture_model, out, '--hold-out-every', '2') == 0
    report = _report(out)
    assert report['frames'] == FRAMES and report['skipped'] == {}
    assert report['patches_used'] + report['patches_held_out'] == FRAMES
    assert report['bag_format']['storage'] == 'sqlite3'
    assert report['bag_format']['version'] == 5
    assert report['bag_format']['typestore'] == 'ros2_humble'
    # the storage file alone (no metadata.yaml next to it) is read too
    alone = tmp_path / 'alone'
    alone.mkdir()
    (bag / 'humble_0.db3').rename(alone / 'humble_0.db3')
    assert _replay(alone / 'humble_0.db3', texture_model, tmp_path / 'out2') == 0
    report = _report(tmp_path / 'out2')
    assert report['frames'] == FRAMES
    assert report['bag_format']['typestore'] == 'ros2_humble'


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_metadata_qos_that_differs_from_the_storage_still_replays(
        texture_model: TextureModel, tmp_path: Path, storage: str) -> None:
    """A metadata.yaml edited or rewritten by another tool (here: best effort, depth 1) while
    the storage file keeps the recorded QoS: every message is still read."""
    import yaml

    bag = _make_bag(tmp_path / 'drive', '--storage', storage, '--version',
                    '9' if storage == 'mcap' else '8')
    path = bag / 'metadata.yaml'
    metadata = yaml.safe_load(path.read_text())
    for topic in metadata['rosbag2_bagfile_information']['topics_with_message_count']:
        profiles = topic['topic_metadata']['offered_qos_profiles']
        if isinstance(profiles, str):  # metadata 8: a YAML string of integer enums
            profiles = yaml.safe_load(profiles)
            for p in profiles:
                p.update(reliability=2, depth=1)
            topic['topic_metadata']['offered_qos_profiles'] = _dump_yaml(profiles).strip()
        else:
            for p in profiles:
                p.update(reliability='best_effort', depth=1)
    path.write_text(_dump_yaml(metadata))
    out = tmp_path / 'out'
    assert _replay(bag, texture_model, out) == 0
    report = _report(out)
    assert report['frames'] == FRAMES and report['patches_used'] == FRAMES
    assert report['skipped'] == {}


@pytest.mark.parametrize('name', ['dir', 'metadata.yaml', 'drive.mcap'])
def test_a_bag_file_or_its_directory(texture_model: TextureModel, drive: Path,
                                     tmp_path: Path, name: str) -> None:
    path = drive if name == 'dir' else drive / name
    out = tmp_path / 'out'
    assert _replay(path, texture_model, out) == 0
    assert _report(out)['frames'] == FRAMES


def test_a_sqlite3_storage_file_with_its_metadata(texture_model: TextureModel,
                                                  tmp_path: Path) -> None:
    bag = _make_bag(tmp_path / 'drive', '--storage', 'sqlite3', '--version', '8')
    out = tmp_path / 'out'
    assert _replay(bag / 'drive.db3', texture_model, out) == 0
    assert _report(out)['frames'] == FRAMES


@pytest.mark.parametrize('name,message', [
    ('notes.txt', 'a rosbag2 directory'),
    ('missing', 'does not exist'),
    ('empty_dir', 'no metadata.yaml'),
])
def test_anything_else_is_a_clear_error(texture_model: TextureModel, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture, name: str,
                                        message: str) -> None:
    path = tmp_path / name
    if name == 'notes.txt':
        path.write_text('not a bag\n')
    elif name == 'empty_dir':
        path.mkdir()
    out = tmp_path / 'out'
    assert _replay(path, texture_model, out) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and message in errors[0] and str(path) in errors[0], errors
    assert not out.exists() and not atomic.stale_temp_files(tmp_path, 'out')


def test_zero_frames_is_an_error_that_lists_the_bag(texture_model: TextureModel, drive: Path,
                                                     tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A 32FC1 topic as the camera: every image is skipped, so nothing was evaluated."""
    out = tmp_path / 'out'
    assert _replay(drive, texture_model, out, topics=[
        '--image-topic', '/ground_truth/cost', '--patch-cost-topic',
        '/traversal/patch_cost']) == 2
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    line = errors[0]
    assert '0 image frames' in line and "'32FC1'" in line
    assert f'/camera/image_raw (sensor_msgs/msg/Image, {FRAMES} messages)' in line
    assert f'/traversal/patch_cost (sensor_msgs/msg/Image, {FRAMES} messages)' in line
    assert not out.exists() and not atomic.stale_temp_files(tmp_path, 'out')


def test_a_missing_topic_lists_the_topics_with_counts(texture_model: TextureModel, drive: Path,
                                                      tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    assert _replay(drive, texture_model, tmp_path / 'out', topics=[
        '--image-topic', '/camera', '--patch-cost-topic', '/traversal/patch_cost']) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "no image topic '/camera'" in errors[0], errors
    assert f'/ground_truth/cost (sensor_msgs/msg/Image, {FRAMES} messages)' in errors[0]


def _rewrite(source: Path, dst: Path, change: Any) -> Path:
    """Copy `source` into a new mcap bag; change(topic, log_ns, raw, index) -> (log_ns, raw)
    or None to drop the message."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    kept = []
    with AnyReader([source]) as reader:
        conns = list(reader.connections)
        for i, (conn, log_ns, raw) in enumerate(reader.messages()):
            new = change(conn.topic, log_ns, bytes(raw), i)
            if new is not None:
                kept.append((conn.topic, *new))
    with Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        out = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=ts) for c in conns}
        for topic, log_ns, raw in sorted(kept, key=lambda m: m[1]):
            writer.write(out[topic], log_ns, raw)
    return dst


def test_patches_wait_for_their_frame_and_frameless_ones_are_counted(
        texture_model: TextureModel, drive: Path, tmp_path: Path) -> None:
    """Each patch logged 1 ms before its frame (a recorder that wrote them out of order), and
    frame 1 corrupt: the patches are held until their frame and used; frame 1's patch has no
    frame, so it is neither used nor held out nor in `patches`, but in `patches_unmatched`."""
    stamps: list[int] = []

    def change(topic: str, log_ns: int, raw: bytes, index: int) -> tuple[int, bytes]:
        if topic == '/camera/image_raw':
            stamps.append(log_ns)
            if len(stamps) == 2:
                raw = raw[:40]  # truncated CDR: undecodable
        elif topic == '/traversal/patch_cost':
            log_ns -= 500_000_000 + 1_000_000  # 0.5 s late in the drive bag: 1 ms early here
        return log_ns, raw

    bag = _rewrite(drive, tmp_path / 'early', change)
    out = tmp_path / 'out'
    assert _replay(bag, texture_model, out) == 0
    report = _report(out)
    assert report['frames'] == FRAMES - 1
    assert report['patches'] == FRAMES - 1 and report['patches_used'] == FRAMES - 1
    assert report['patches_unmatched'] == 1
    assert report['skipped'] == {'undecodable /camera/image_raw': 1,
                                 'patch without its frame (dropped or not in the bag)': 1}
    # held out: every 2nd patch of those with a frame, so 1 of the 3
    held = tmp_path / 'held'
    assert _replay(bag, texture_model, held, '--hold-out-every', '2') == 0
    report = _report(held)
    assert report['patches_held_out'] == 1 and report['patches_used'] == 2
    assert report['patches_unmatched'] == 1 and report['held_out']['regions'] > 0


def test_skipped_messages_are_summarised_at_warning(texture_model: TextureModel, drive: Path,
                                                    tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    def change(topic: str, log_ns: int, raw: bytes, index: int) -> tuple[int, bytes]:
        return log_ns, raw[:40] if index == 0 else raw

    bag = _rewrite(drive, tmp_path / 'broken', change)
    caplog.set_level(logging.INFO)
    assert _replay(bag, texture_model, tmp_path / 'out') == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any('skipped 2 message(s)' in w and 'undecodable /camera/image_raw: 1' in w
               for w in warnings), warnings


def test_environment_problems_exit_3(texture_model: TextureModel, drive: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    """Exit code 3: a missing optional package (rosbags, onnxruntime) or a full disk; one line
    that says what to install or free, and no output left behind."""
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, 'rosbags.highlevel', None)  # import fails like a missing one
        assert _replay(drive, texture_model, tmp_path / 'out') == 3
    assert 'pip install rosbags' in _errors(caplog)[-1]
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, 'onnxruntime', None)
        assert _replay(drive, texture_model, tmp_path / 'out') == 3
    assert 'onnxruntime' in _errors(caplog)[-1]

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, 'No space left on device')

    with monkeypatch.context() as patch:
        patch.setattr(replay_module, 'write_report', full)
        assert _replay(drive, texture_model, tmp_path / 'out') == 3
    assert 'no space left' in _errors(caplog)[-1].lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_crash_mid_replay_leaves_the_old_output(texture_model: TextureModel, drive: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--overwrite over an earlier replay, then an exception in the third frame: the earlier
    output is still there, whole and unchanged, and no temporary directory is left; the temp
    directory of a killed replay is removed by the next one."""
    out = tmp_path / 'out'
    assert _replay(drive, texture_model, out) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob('*') if p.is_file()}
    frame = replay_module._Run.frame
    calls = []

    def crash(self: Any, *args: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as from Ctrl-C, or any bug
        frame(self, *args)

    monkeypatch.setattr(replay_module._Run, 'frame', crash)
    with pytest.raises(KeyboardInterrupt):
        _replay(drive, texture_model, out, '--overwrite', '--hold-out-every', '2')
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob('*') if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']  # no temp directories
    # a killed replay cannot clean up: the next one removes what it left
    killed = tmp_path / '.out.x1y2z3.tmp'
    (killed / 'replay_bag').mkdir(parents=True)
    monkeypatch.undo()
    assert _replay(drive, texture_model, out, '--overwrite') == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def _to_uyvy(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 2) UYVY bytes (yuv422): U and V of each pixel pair
    averaged, BT.601 as OpenCV's RGB2YUV."""
    import cv2

    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.float32)  # H, W, 3
    out = np.empty(rgb.shape[:2] + (2,), np.uint8)
    out[:, :, 1] = yuv[:, :, 0]  # Y of every pixel
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
    out[:, 0::2, 0] = np.round(u)  # U Y0 V Y1
    out[:, 1::2, 0] = np.round(v)
    return out


def test_a_yuv422_camera_bag_replays_from_the_cli(texture_model: TextureModel, drive: Path,
                                                  tmp_path: Path) -> None:
    """A bag whose camera publishes yuv422 (UYVY, as many USB cameras do) replays like the
    rgb8 original: same frames, costs within the chroma subsampling's error."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    image_type = 'sensor_msgs/msg/Image'

    def change(topic: str, log_ns: int, raw: bytes, index: int) -> tuple[int, bytes]:
        if topic != '/camera/image_raw':
            return log_ns, raw
        msg = ts.deserialize_cdr(raw, image_type)
        rgb = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        uyvy = _to_uyvy(rgb)
        yuv = ts.types[image_type](header=msg.header, height=msg.height, width=msg.width,
                                   encoding='yuv422', is_bigendian=0, step=2 * msg.width,
                                   data=uyvy.reshape(-1))
        return log_ns, bytes(ts.serialize_cdr(yuv, image_type))

    bag = _rewrite(drive, tmp_path / 'yuv', change)
    assert _replay(bag, texture_model, tmp_path / 'yuv_out') == 0
    assert _replay(drive, texture_model, tmp_path / 'rgb_out') == 0
    yuv, rgb = _report(tmp_path / 'yuv_out'), _report(tmp_path / 'rgb_out')
    assert yuv['frames'] == rgb['frames'] == FRAMES and yuv['skipped'] == {}
    assert yuv['patches_used'] == rgb['patches_used']
    assert abs(yuv['coverage']['final'] - rgb['coverage']['final']) < 0.1


def test_frames_over_max_image_pixels_are_refused(texture_model: TextureModel, drive: Path,
                                                  tmp_path: Path) -> None:
    """--max-image-pixels (the node's max_image_pixels) applies to replay too: 96x128 frames
    over a 10,000-pixel limit are all refused, so the run reads 0 frames and says so."""
    assert _replay(drive, texture_model, tmp_path / 'out', '--max-image-pixels', '10000') == 2
    assert not (tmp_path / 'out').exists()
