"""contrast-semask-replay --supervision (contrast_semask_ros/replay_supervision.py): the
static-transform chain, then the whole loop on a simulated raw-sensor drive."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bag_messages import write_sim_drive
from conftest import TextureModel

from contrast_semask_ros.replay import main as replay_main
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


def test_ground_area_is_uniform_looking_down_and_grows_with_range():
    from contrast_semask_ros.replay_supervision import ground_area
    from contrast_semask_ros.supervision.geometry import PLUMB_BOB, CameraModel

    camera = CameraModel(64, 48, np.array([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1.0]]),
                         np.zeros(5), PLUMB_BOB)
    pixels = np.array([[0.0, 0.0], [31.5, 23.5], [63.0, 47.0], [10.0, 40.0]])
    # 2 m above the ground looking straight down: every pixel sees h^2 / f^2 of ground
    down = pose_from_xyz_rpy((0.0, 0.0, 2.0), (math.pi, 0.0, 0.0))  # optical z = -odom z
    np.testing.assert_allclose(ground_area(camera, down, pixels), 4.0, rtol=1e-9)
    # looking ahead, pitched down: a pixel higher in the image (farther ground) sees more
    ahead = camera_pose_to_optical(0.0, 0.0, 1.0, 0.0, 0.4, 0.0)
    far, near = ground_area(camera, ahead, np.array([[31.5, 10.0], [31.5, 47.0]]))
    assert far > 3 * near > 0
    assert np.isnan(ground_area(camera, ahead, np.array([[31.5, -40.0]]))).all()  # the sky


# --- the whole loop on a simulated raw-sensor drive --------------------------------------

SUPERVISED = ['--image-topic', '/camera/image_raw', '--ground-truth-topic', '/ground_truth/cost',
              '--footprint-truth-topic', '/ground_truth/patch_cost', '--hold-out-every', '5',
              '--no-progress']


@pytest.fixture(scope='module')
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip('rosbags', reason='replay reads bags with rosbags')
    return write_sim_drive(tmp_path_factory.mktemp('sim'), 60, '96x160', seed=3)


def _replay(bag: Path, model: TextureModel, out: Path, *extra: str) -> dict[str, Any]:
    assert replay_main([str(bag), '--model', str(model.onnx), *SUPERVISED, *extra,
                        '--out', str(out)]) == 0
    return json.loads((out / 'report.json').read_text())


def test_supervision_labels_the_drive_from_its_imu_and_odometry(
        sim_bag: Path, texture_model: TextureModel, tmp_path: Path):
    from rosbags.highlevel import AnyReader

    report = _replay(sim_bag, texture_model, tmp_path / 'out', '--supervision', 'imu')
    sup = report['supervision']
    assert sup['extrinsics'] == 'tf_static'  # base_link -> camera_link -> optical, chained
    assert sup['labels'] > 50 and sup['frames_labelled'] > 10
    assert sup['frames_labelled'] <= sup['keyframes']
    assert 0 < sup['latency_s']['median'] < sup['config']['max_age_s']
    assert sup['footprint_iou'] > 0.8, sup['footprint_iou_detail']  # 96x160: coarse pixels
    assert sup['spearman_vs_truth'] > 0.5
    assert report['patches_used'] > 0 and report['bank_size_final'] > 0
    assert report['patches'] == sup['labels']  # every label went to the bank or was held out
    assert 'cost_mae' in report['held_out']
    assert report['config']['keyframe_distance_m'] == 0.2  # the launch file's overrides
    assert report['config']['buffer_frames'] == 60
    with AnyReader([tmp_path / 'out' / 'replay_bag']) as reader:  # the masks it made
        conns = [c for c in reader.connections if c.topic == '/cost_map/patch_cost']
        assert sum(c.msgcount for c in conns) == sup['labels']
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            assert msg.encoding == '32FC1' and (msg.height, msg.width) == (24, 40)  # scale 4
            assert msg.header.frame_id == 'camera_optical_frame'
            break


def test_camera_pose_option_gives_the_same_labels_as_tf_static(
        sim_bag: Path, texture_model: TextureModel, tmp_path: Path):
    tf = _replay(sim_bag, texture_model, tmp_path / 'tf', '--supervision', 'imu')
    pose = _replay(sim_bag, texture_model, tmp_path / 'pose', '--supervision', 'imu',
                   '--camera-pose', '0.3', '0', '1.0', '0', '0.35', '0')
    assert pose['supervision']['extrinsics'] == 'camera_pose'
    # the same geometry; with TF the supervisor starts at the first camera_info (it names the
    # camera frame), a few odometry messages later than with --camera-pose
    assert pose['supervision']['labels'] == pytest.approx(tf['supervision']['labels'], rel=0.02)
    assert pose['supervision']['footprint_iou'] == pytest.approx(
        tf['supervision']['footprint_iou'], abs=0.01)
    wrong = _replay(sim_bag, texture_model, tmp_path / 'wrong', '--supervision', 'imu',
                    '--camera-pose', '0.3', '0', '1.5', '0', '0.2', '0')  # higher, less pitch
    assert wrong['supervision']['footprint_iou'] < pose['supervision']['footprint_iou'] - 0.2


def test_velocity_signal_and_bad_requests(sim_bag: Path, texture_model: TextureModel,
                                          tmp_path: Path, caplog: pytest.LogCaptureFixture):
    report = _replay(sim_bag, texture_model, tmp_path / 'v', '--supervision', 'velocity',
                     '--cmd-vel-topic', '/cmd_vel')
    assert report['supervision']['signal'] == 'velocity' and report['supervision']['labels']
    base = [str(sim_bag), '--model', str(texture_model.onnx), *SUPERVISED]
    assert replay_main([*base, '--supervision', 'both', '--out', str(tmp_path / 'b')]) == 2
    assert 'needs --cmd-vel-topic' in caplog.text
    assert replay_main([*base, '--supervision', 'imu', '--odom-topic', '/nope',
                        '--out', str(tmp_path / 'n')]) == 2
    assert "no odometry topic '/nope'" in caplog.text and '/odom (nav_msgs' in caplog.text
    assert replay_main([*base, '--out', str(tmp_path / 'none')]) == 2  # no patch source
    assert 'either a patch-cost topic or --supervision' in caplog.text
    assert not any((tmp_path / name).exists() for name in ('b', 'n', 'none'))


def test_truth_costs_keep_the_footprints_and_take_the_ground_truth(
        sim_bag: Path, texture_model: TextureModel, tmp_path: Path):
    from rosbags.highlevel import AnyReader

    from contrast_semask_ros import codec

    report = _replay(sim_bag, texture_model, tmp_path / 't', '--supervision', 'imu',
                     '--truth-costs')
    assert report['supervision']['label_costs'] == 'ground_truth'
    masks, truths = {}, {}
    with AnyReader([tmp_path / 't' / 'replay_bag']) as reader:
        conns = [c for c in reader.connections if c.topic == '/cost_map/patch_cost']
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            masks.setdefault(codec.header_stamp_ns(msg.header), codec.image_to_array(msg))
    with AnyReader([sim_bag]) as reader:
        conns = [c for c in reader.connections if c.topic == '/ground_truth/cost']
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            truths[codec.header_stamp_ns(msg.header)] = codec.image_to_array(msg)
    assert len(masks) > 10
    for stamp, mask in masks.items():  # the ground truth at the mask pixels' centres (x4)
        sampled = truths[stamp][2::4, 2::4]
        known = np.isfinite(mask)
        np.testing.assert_array_equal(mask[known], sampled[known])
