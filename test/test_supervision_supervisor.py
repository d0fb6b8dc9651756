"""The supervision loop (contrast_semask_ros/supervision/supervisor.py): a straight drive over
smooth then rough ground, IMU at 200 Hz, odometry at 50 Hz, camera at 10 Hz."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contrast_semask_ros.supervision.geometry import (
    PLUMB_BOB,
    CameraModel,
    camera_pose_to_optical,
    pose_from_xyz_rpy,
)
from contrast_semask_ros.supervision.supervisor import SupervisionConfig, Supervisor

NS = 1_000_000_000
W, H = 320, 240
CAMERA = CameraModel(W, H, np.array([[250.0, 0.0, 159.5], [0.0, 250.0, 119.5], [0, 0, 1.0]]),
                     np.zeros(5), PLUMB_BOB)
T_BASE_OPTICAL = camera_pose_to_optical(0.3, 0.0, 1.0, 0.0, 0.35, 0.0)
ROUGH_FROM_X = 6.0  # metres: smooth ground before, rough after
SMOOTH_STD, ROUGH_STD = 0.1, 2.0  # m/s^2 of vertical vibration


def _drive(supervisor: Supervisor, seconds: float, speed: float = 1.0, cmd: float = 1.0,
           announce: bool = False, seed: int = 0) -> list:
    """Feed a straight drive along odom x; returns every LabelUpdate made."""
    rng = np.random.default_rng(seed)
    updates = []
    for k in range(int(seconds * 200) + 1):
        t = k * NS // 200
        x = speed * k / 200
        if k % 4 == 0:
            supervisor.add_odometry(t, pose_from_xyz_rpy((x, 0, 0), (0, 0, 0)), speed)
        if k % 10 == 0:
            supervisor.add_cmd_vel(t, cmd)
        if k % 20 == 0:
            supervisor.add_frame(t, CAMERA, announced=announce)
        std = ROUGH_STD if x >= ROUGH_FROM_X else SMOOTH_STD
        supervisor.add_imu(t, (0.0, 0.0, 9.80665 + std * rng.standard_normal()),
                           (0.0, 0.0, 0.0, 1.0))
        update = supervisor.update(t)
        if update is not None:
            updates.append(update)
    return updates


def test_labels_follow_the_ground_under_the_footprint():
    supervisor = Supervisor(SupervisionConfig(signal='imu'), T_BASE_OPTICAL)
    updates = _drive(supervisor, 12.0)
    scale = supervisor.config.mask_scale
    assert len(updates) == pytest.approx(12.0 / 0.1, abs=2)  # one every label_period_s
    labelled = [u for u in updates if u.labels]
    assert len(labelled) > 60
    assert max(len(u.labels) for u in labelled) == supervisor.config.max_labels_per_update
    smooth = [u.cost for u in labelled if u.window_end_ns / NS < ROUGH_FROM_X - 0.05]
    rough = [u.cost for u in labelled if u.start_stamp_ns / NS > ROUGH_FROM_X + 0.05]
    assert max(smooth) < 0.3 and min(rough) > 0.7, (max(smooth), min(rough))
    for update in labelled:
        # the label is the ground swept over the 1 s window ending at the newest IMU sample
        # (its end capped at the newest odometry pose, at most one 50 Hz period older)
        assert update.window_end_ns - update.start_stamp_ns == NS
        assert 0 <= update.window_end_ns - update.pose_stamp_ns < NS // 50
        for label in update.labels:
            assert label.keyframe_stamp_ns < update.start_stamp_ns
            assert label.mask.shape == (H // scale, W // scale) and label.pixels > 0
            values = label.mask[np.isfinite(label.mask)]
            assert values.size == label.pixels and np.all(values == np.float32(update.cost))
    # the first updates come before a full IMU window: no cost, and they say why
    assert updates[0].reason.startswith('no_cost') and 'imu' in updates[0].reason


def test_velocity_signal_reads_slip():
    supervisor = Supervisor(SupervisionConfig(signal='velocity'), T_BASE_OPTICAL)
    updates = [u for u in _drive(supervisor, 6.0, speed=0.6, cmd=1.5) if u.labels]
    assert updates and all(u.cost == pytest.approx(1 - 0.6 / 1.5) for u in updates)
    # a command below min_cmd_speed gives no label
    idle = Supervisor(SupervisionConfig(signal='velocity'), T_BASE_OPTICAL)
    updates = _drive(idle, 4.0, speed=0.05, cmd=0.05)
    assert updates and not any(u.labels for u in updates)
    assert all('velocity' in u.reason for u in updates)


def test_both_signals_take_the_max():
    supervisor = Supervisor(SupervisionConfig(signal='both'), T_BASE_OPTICAL)
    for update in _drive(supervisor, 5.0, speed=0.5, cmd=1.0):
        if update.labels:
            assert update.cost == pytest.approx(max(update.imu_cost, update.velocity_cost))


def test_announced_frames_are_the_only_keyframes():
    supervisor = Supervisor(SupervisionConfig(keyframe_distance_m=5.0), T_BASE_OPTICAL)
    announced = Supervisor(SupervisionConfig(keyframe_distance_m=5.0), T_BASE_OPTICAL)
    own = {lab.keyframe_stamp_ns for u in _drive(supervisor, 8.0) for lab in u.labels}
    assert own
    every = {lab.keyframe_stamp_ns for u in _drive(announced, 8.0, announce=True)
             for lab in u.labels}
    assert len(every) > 3 * len(own) > 0  # announced: every frame given, not one per 5 m
    assert all(stamp % (NS // 10) == 0 for stamp in every)


def test_no_pose_gives_no_labels_and_counts():
    supervisor = Supervisor(SupervisionConfig(), T_BASE_OPTICAL)
    rng = np.random.default_rng(1)
    for k in range(400):
        supervisor.add_imu(k * NS // 200, (0, 0, 9.8 + rng.standard_normal()), None)
        supervisor.update(k * NS // 200)
    counters = supervisor.all_counters()
    assert counters['supervisor.no_pose'] > 0 and counters.get('supervisor.labels', 0) == 0


def test_config_rejects_unknown_signal():
    with pytest.raises(ValueError, match='signal must be one of imu, velocity, both'):
        SupervisionConfig(signal='lidar')
    with pytest.raises(ValueError, match='label_period_s'):
        SupervisionConfig(label_period_s=math.nan)
