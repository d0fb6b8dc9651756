"""Footprint labelling (contrast_semask_ros/supervision/labeller.py, docs/SUPERVISION.md):
pose interpolation, keyframe selection, and labels against hand geometry and a ray-cast oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contrast_semask_ros.supervision.geometry import (
    PLUMB_BOB,
    CameraModel,
    camera_pose_to_optical,
    intersect_ground,
    invert,
    pose_from_xyz_rpy,
    transform_points,
)
from contrast_semask_ros.supervision.labeller import (
    FootprintLabeller,
    Keyframes,
    Label,
    PoseHistory,
    accumulate,
)

NS = 1_000_000_000
W, H = 640, 480
CAMERA = CameraModel(W, H, np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0, 0, 1.0]]),
                     np.zeros(5), PLUMB_BOB)
CAMERA_X = 0.3  # the camera sits 0.3 m ahead of the base origin, 1.0 m high, pitched down 30 deg
T_BASE_OPTICAL = camera_pose_to_optical(CAMERA_X, 0.0, 1.0, 0.0, math.radians(30), 0.0)
LENGTH, WIDTH = 0.6, 0.5


def pose(x: float, y: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    return pose_from_xyz_rpy((x, y, 0.0), (0.0, 0.0, yaw))


def drive(labeller: FootprintLabeller, seconds: float, speed: float = 1.0) -> None:
    """Odometry at 50 Hz and camera frames at 10 Hz of a straight drive along odom x from 0."""
    for k in range(int(seconds * 50) + 1):
        labeller.add_pose(k * NS // 50, pose(speed * k / 50))
        if k % 5 == 0:
            labeller.add_frame(k * NS // 50, CAMERA)


# --- PoseHistory ---------------------------------------------------------------------------


def test_pose_history_interpolates_translation_and_slerps_rotation():
    history = PoseHistory()
    assert history.add(0, pose(0.0, 0.0, 0.0))
    assert history.add(NS // 10, pose(0.1, 0.2, math.pi / 2))
    T = history.at(NS // 20)
    np.testing.assert_allclose(T[:3, 3], (0.05, 0.1, 0.0), atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], pose(0, 0, math.pi / 4)[:3, :3], atol=1e-12)
    np.testing.assert_allclose(history.at(0), pose(0.0))  # exact stamps: the pose itself
    assert history.at(-1) is None and history.at(NS // 10 + 1) is None  # outside the range
    # across a gap longer than max_gap_s: unknown
    assert history.add(2 * NS, pose(1.0))
    assert history.at(NS) is None


def test_pose_history_drops_and_counts_duplicates_and_restarts_on_a_teleport():
    history = PoseHistory(max_speed_mps=5.0)
    for k in range(5):
        assert history.add(k * NS // 10, pose(0.1 * k))
    assert not history.add(4 * NS // 10, pose(0.4))  # duplicate stamp
    assert not history.add(NS // 10, pose(0.1))  # out of order
    assert not history.add(5 * NS // 10, np.diag([2.0, 1.0, 1.0, 1.0]))  # not a pose
    assert history.counters['duplicate'] == 1 and history.counters['out_of_order'] == 1
    assert history.counters['invalid_pose'] == 1 and len(history) == 5
    assert history.add(5 * NS // 10, pose(10.0))  # 96 m/s: a jump, the history restarts
    assert history.counters['jumps'] == 1 and len(history) == 1
    assert history.at(2 * NS // 10) is None


def test_pose_history_is_bounded_by_age():
    history = PoseHistory(max_age_s=1.0)
    for k in range(31):
        history.add(k * NS // 10, pose(0.1 * k))
    assert history.span_ns == (2 * NS, 3 * NS)


# --- Keyframes -----------------------------------------------------------------------------


def test_keyframes_every_0_2_m_on_a_1_m_s_drive_at_10_hz():
    keyframes = Keyframes(T_BASE_OPTICAL, keyframe_distance_m=0.2)
    chosen = [k for k in range(20) if keyframes.add(k * NS // 10, CAMERA, pose(0.1 * k))]
    assert chosen == list(range(0, 20, 2))
    frame = next(iter(keyframes))
    np.testing.assert_allclose(frame.T_odom_optical, T_BASE_OPTICAL)
    assert frame.image_size == (H, W) and frame.camera is CAMERA


def test_keyframes_by_time_without_poses_and_bounded():
    keyframes = Keyframes(T_BASE_OPTICAL, keyframe_period_s=0.5, max_age_s=2.0, max_count=3)
    chosen = [k for k in range(21) if keyframes.add(k * NS // 10, CAMERA, None)]
    assert chosen == [0, 5, 10, 15, 20]
    assert [f.stamp_ns for f in keyframes] == [NS, 3 * NS // 2, 2 * NS]  # max_count 3
    assert keyframes.counters['expired'] + keyframes.counters['evicted'] == 2
    assert not keyframes.add(NS, CAMERA, None)  # older than the newest
    assert keyframes.counters['out_of_order'] == 1
    assert keyframes.add(21 * NS // 10, CAMERA, None, force=True)  # the cost node keeps it


def test_unposed_keyframes_are_resolved_when_odometry_arrives():
    labeller = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH)
    assert labeller.add_frame(0, CAMERA)  # odometry lags: no pose yet
    for k in range(151):
        labeller.add_pose(k * NS // 50, pose(k / 50))
    labels = labeller.label(3 * NS, 0.5)
    assert [label.keyframe_stamp_ns for label in labels] == [0]
    assert labeller.keyframes.counters['resolved'] == 1


# --- labels --------------------------------------------------------------------------------


def ground_row(distance_ahead_of_camera: float) -> float:
    """The image row of the ground point on the optical axis' vertical plane, by hand: the
    ray to it is atan(1.0 / d) below the horizontal, the optical axis 30 degrees."""
    below_axis = math.atan2(1.0, distance_ahead_of_camera) - math.radians(30)
    return 239.5 + 500.0 * math.tan(below_axis)


def test_footprint_is_labelled_into_the_keyframe_it_was_seen_from():
    labeller = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH)
    drive(labeller, 4.0)
    labels = labeller.label(3 * NS, 0.7)  # the robot is at x = 3
    by_stamp = {label.keyframe_stamp_ns: label for label in labels}
    assert 0 in by_stamp and all(0 <= s < 3 * NS for s in by_stamp)
    label = by_stamp[0]
    assert label.mask.shape == (H, W) and label.mask.dtype == np.float32
    covered = np.isfinite(label.mask)
    assert covered.sum() == label.pixels > 500
    assert np.all(label.mask[covered] == np.float32(0.7))
    rows = np.nonzero(covered)[0]
    assert abs(rows.mean() - ground_row(3.0 - CAMERA_X)) < 3.0
    # from the keyframe at x = 2.8 the footprint is below the image: no label
    assert 14 * NS // 5 not in by_stamp and labeller.counters['empty'] >= 1
    # the footprint edges land where the hand geometry puts its front and back edges
    assert abs(rows.min() - ground_row(3.3 - CAMERA_X)) <= 1.5
    assert abs(rows.max() - ground_row(2.7 - CAMERA_X)) <= 1.5


def test_no_labels_into_keyframes_too_old_or_too_far():
    labeller = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH, max_age_s=2.0)
    drive(labeller, 4.0)
    stamps = [label.keyframe_stamp_ns for label in labeller.label(3 * NS, 0.7)]
    assert stamps and min(stamps) >= NS
    labeller = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH, max_range_m=2.0)
    drive(labeller, 4.0)
    stamps = [label.keyframe_stamp_ns for label in labeller.label(3 * NS, 0.7)]
    # camera centre at x = t + 0.3, 1 m high; footprint centre at x = 3 on the ground
    assert stamps and all(math.hypot(3.0 - (s / NS + CAMERA_X), 1.0) <= 2.0 for s in stamps)
    assert labeller.counters['out_of_range'] >= 1


def test_nan_cost_or_unknown_pose_gives_no_labels():
    labeller = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH)
    drive(labeller, 4.0)
    assert labeller.label(3 * NS, math.nan) == [] and labeller.counters['no_cost'] == 1
    assert labeller.label(10 * NS, 0.5) == [] and labeller.counters['no_pose'] == 1


def test_mask_scale_halves_the_mask():
    labeller = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH, mask_scale=2)
    drive(labeller, 4.0)
    full = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH)
    drive(full, 4.0)
    half = {label.keyframe_stamp_ns: label for label in labeller.label(3 * NS, 0.2)}[0]
    whole = {label.keyframe_stamp_ns: label for label in full.label(3 * NS, 0.2)}[0]
    assert half.mask.shape == (H // 2, W // 2)
    assert abs(half.pixels * 4 - whole.pixels) < 0.1 * whole.pixels
    # 7 divides neither 640 nor 480: the largest smaller scale that divides both (5) is used
    odd = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH, mask_scale=7)
    drive(odd, 4.0)
    assert odd.label(3 * NS, 0.2)[0].mask.shape == (H // 5, W // 5)
    assert odd.counters['scale_reduced'] > 0
    with pytest.raises(ValueError, match='mask_scale'):
        FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH, mask_scale=0)


def test_max_labels_spreads_and_rotates_over_the_keyframes():
    every = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH)
    capped = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH, max_labels=3)
    drive(every, 8.0)
    drive(capped, 8.0)
    seen: set[int] = set()
    for k in range(10):
        stamp = 6 * NS + k * NS // 10
        all_labels = every.label(stamp, 0.5)
        some = capped.label(stamp, 0.5)
        assert len(all_labels) > 6 and len(some) == 3
        ages = [label.keyframe_stamp_ns for label in some]
        assert ages == sorted(ages) and ages[-1] - ages[0] > 2 * NS  # near and far frames
        by_stamp = {label.keyframe_stamp_ns: label for label in all_labels}
        for label in some:  # the same masks as without the cap
            np.testing.assert_array_equal(label.mask, by_stamp[label.keyframe_stamp_ns].mask)
        seen.update(ages)
    assert len(seen) > 10  # the choice rotates: most keyframes get labels


def oracle_mask(T_odom_optical: np.ndarray, T_odom_base: np.ndarray) -> np.ndarray:
    """A pixel is labelled when the ray through its centre meets the ground inside the
    footprint of the base at T_odom_base."""
    jj, ii = np.meshgrid(np.arange(W), np.arange(H))
    rays = CAMERA.pixel_rays(np.column_stack([jj.ravel(), ii.ravel()]).astype(float))
    hits = intersect_ground(rays, T_odom_optical)
    inside = np.zeros(len(rays), bool)
    local = transform_points(invert(T_odom_base), hits.points[hits.valid])  # K, 3
    inside[hits.valid] = (np.abs(local[:, 0]) <= LENGTH / 2) & (np.abs(local[:, 1]) <= WIDTH / 2)
    return inside.reshape(H, W)


def test_labels_match_a_ray_cast_oracle():
    T_keyframe = pose(0.0, 0.0, 0.0)
    T_odom_optical = T_keyframe @ T_BASE_OPTICAL
    for x, y, yaw in [(2.0, 0.0, 0.0), (3.0, 0.6, 0.5), (2.5, -0.8, -1.2), (4.0, 0.3, 2.0)]:
        labeller = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH)
        labeller.add_pose(0, T_keyframe)
        labeller.add_frame(0, CAMERA)
        labeller.add_pose(NS, pose(x, y, yaw))  # at most 4.1 m in 1 s: not a jump
        labels = labeller.label(NS, 1.0)
        assert labeller.poses.counters['jumps'] == 0
        assert [label.keyframe_stamp_ns for label in labels] == [0]
        mask = np.isfinite(labels[0].mask)
        oracle = oracle_mask(T_odom_optical, pose(x, y, yaw))
        iou = (mask & oracle).sum() / (mask | oracle).sum()
        assert iou > 0.9, (x, y, yaw, iou)


def test_a_window_labels_the_ground_swept_since_the_last_label():
    """label(stamp, cost, start): the footprint swept from start to stamp, matching the union
    of the ray-cast footprints along the way; a keyframe labelled again within a window gets
    only the ground since its last label; labels a window apart tile one strip."""
    labeller = FootprintLabeller(T_BASE_OPTICAL, LENGTH, WIDTH)
    drive(labeller, 6.0)
    T_odom_optical = pose(0.0) @ T_BASE_OPTICAL
    swept = {label.keyframe_stamp_ns: label for label in labeller.label(3 * NS, 0.5, 2 * NS)}
    covered = np.isfinite(swept[0].mask)
    oracle = np.zeros_like(covered)
    for x in np.arange(2.0, 3.0001, 0.05):
        oracle |= oracle_mask(T_odom_optical, pose(x))
    assert (covered & oracle).sum() / (covered | oracle).sum() > 0.95
    # labelled again 0.1 s later: only the ground swept since its last label (3.0 -> 3.1)
    again = {lb.keyframe_stamp_ns: lb for lb in labeller.label(3 * NS + NS // 10, 0.5,
                                                                 2 * NS + NS // 10)}[0]
    step = np.zeros_like(covered)
    for x in (3.0, 3.05, 3.1):
        step |= oracle_mask(T_odom_optical, pose(x))
    assert (np.isfinite(again.mask) & ~step).sum() < 0.02 * step.sum()
    # labelled next 1.5 s later, over the window 3.5 -> 4.5: the two strips tile x = 2 to 4.5
    later = {lb.keyframe_stamp_ns: lb for lb in labeller.label(4 * NS + NS // 2, 0.5,
                                                                 3 * NS + NS // 2)}[0]
    both = covered | np.isfinite(again.mask) | np.isfinite(later.mask)
    oracle = np.zeros_like(both)
    for x in np.arange(2.0, 4.5001, 0.1):
        oracle |= oracle_mask(T_odom_optical, pose(x))
    assert (both & oracle).sum() / (both | oracle).sum() > 0.95


def test_accumulate_takes_the_per_pixel_mean():
    a = np.full((2, 3), np.nan, np.float32)
    a[0] = 0.2
    b = np.full((2, 3), np.nan, np.float32)
    b[:, 0] = 0.6
    c = np.full((4, 4), np.nan, np.float32)
    c[1, 1] = 0.9
    merged = accumulate([Label(5, b, 2), Label(1, c, 1), Label(5, a, 3)])
    assert [label.keyframe_stamp_ns for label in merged] == [1, 5]
    np.testing.assert_allclose(merged[1].mask,
                               [[0.4, 0.2, 0.2], [0.6, np.nan, np.nan]], rtol=1e-6)
    assert merged[1].pixels == 4 and merged[1].mask.dtype == np.float32
    with pytest.raises(ValueError, match='different shapes'):
        accumulate([Label(1, a, 3), Label(1, c, 1)])


def test_pose_interpolation_is_scipys_slerp():
    from scipy.spatial.transform import Rotation, Slerp

    rng = np.random.default_rng(0)
    for _ in range(20):
        r0, r1 = Rotation.random(2, random_state=rng.integers(1 << 31))
        history = PoseHistory(max_speed_mps=1e6)
        T0, T1 = np.eye(4), np.eye(4)
        T0[:3, :3], T1[:3, :3] = r0.as_matrix(), r1.as_matrix()
        history.add(0, T0)
        history.add(NS // 10, T1)
        a = rng.random()
        expected = Slerp([0.0, 1.0], Rotation.concatenate([r0, r1]))([a]).as_matrix()[0]
        np.testing.assert_allclose(history.at(int(a * NS / 10))[:3, :3], expected, atol=1e-6)
