"""The ROS-free pipeline (node and replay share it): outputs, unknown pixels, learning from
patches, frame lookup misses, settings validation, keyframes (by distance, by time, odometry
jumps) and float16 frame storage."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TextureModel
from scenes import two_texture_scene

from contrast_semask_ros.backends import open_backend
from contrast_semask_ros.frames import MISS_EVICTED, MISS_FUTURE
from contrast_semask_ros.keyframes import (
    MISS_NOT_KEYFRAME,
    RULE_DISTANCE,
    RULE_EVERY,
    RULE_PERIOD,
    KeyframeSelector,
)
from contrast_semask_ros.pipeline import (
    PATCH_ADDED,
    PATCH_EMPTY,
    PATCH_MISS,
    PATCH_REJECTED,
    ConfigError,
    Pipeline,
    PipelineConfig,
)
from contrast_semask_ros.stats import RuntimeStats

H, W = 120, 200
S = 1_000_000_000  # ns  # camera size, deliberately not the engine's 96x128


def _pipeline(model: TextureModel, **overrides: object) -> Pipeline:
    config = PipelineConfig(**{'bank_size': model.bank_size, **overrides})
    return Pipeline(open_backend(model.onnx), config)


def _patch(left_cost: float, right_cost: float) -> np.ndarray:
    mask = np.full((H, W), np.nan, np.float32)
    mask[60:110, 10:60] = left_cost  # a patch inside the grass half
    mask[60:110, 130:190] = right_cost  # and one inside the brick half
    return mask


def test_outputs_at_camera_size_and_unknown_without_prototypes(
        texture_model: TextureModel) -> None:
    pipeline = _pipeline(texture_model)
    rgb, _ = two_texture_scene(H, W)
    result = pipeline.process(rgb, 1_000)
    assert result.cost.shape == result.confidence.shape == (H, W)
    D = pipeline.backend.spec.embedding_dim
    assert result.embedding.shape == (D, 24, 32)  # stride 4 of the 96x128 engine input
    assert not result.embedding.flags.writeable
    np.testing.assert_allclose(np.linalg.norm(result.embedding, axis=0), 1.0, atol=1e-4)
    assert np.isnan(result.cost).all() and (result.confidence == -1).all()
    assert result.bank_size == 0 and result.stamp_ns == 1_000
    assert result.timings.total_ms >= result.timings.infer_ms > 0


def test_cost_converges_to_measured_patch_costs(texture_model: TextureModel) -> None:
    pipeline = _pipeline(texture_model)
    rgb, labels = two_texture_scene(H, W)
    pipeline.process(rgb, 1)
    added = pipeline.add_patch(_patch(0.2, 0.9), 1)
    assert added.matched_stamp_ns == 1 and added.added.added == 2
    result = pipeline.process(rgb, 2)
    grass, brick = result.cost[labels == 0], result.cost[labels == 1]
    # away from the boundary (bilinear outputs blend it) every pixel is known and close
    assert abs(np.nanmean(grass) - 0.2) < 0.05 and abs(np.nanmean(brick) - 0.9) < 0.05
    assert np.isfinite(result.cost[:, :80]).all() and np.isfinite(result.cost[:, 120:]).all()
    # a stricter confidence threshold marks pixels unknown, a looser one none
    pipeline.set_propagation(0.1, 0.999)
    assert np.isnan(pipeline.process(rgb, 3).cost).mean() > 0.5
    pipeline.set_propagation(0.1, -1.0)
    assert not np.isnan(pipeline.process(rgb, 4).cost).any()


def test_patches_for_missing_frames_say_why(texture_model: TextureModel) -> None:
    pipeline = _pipeline(texture_model, buffer_frames=2, stamp_tolerance_s=0.01)
    rgb, _ = two_texture_scene(H, W)
    for stamp in (1_000_000_000, 2_000_000_000, 3_000_000_000):
        pipeline.process(rgb, stamp)
    assert pipeline.add_patch(_patch(0.2, 0.9), 1_000_000_000).miss_reason == MISS_EVICTED
    assert pipeline.add_patch(_patch(0.2, 0.9), 4_000_000_000).miss_reason == MISS_FUTURE
    near = pipeline.add_patch(_patch(0.2, 0.9), 3_005_000_000)  # within the 10 ms tolerance
    assert near.matched_stamp_ns == 3_000_000_000 and len(pipeline.bank) == 2
    empty = pipeline.add_patch(np.full((H, W), np.nan, np.float32), 3_000_000_000)
    assert empty.added.added == 0 and empty.added.merged == 0
    pipeline.reset()
    assert len(pipeline.bank) == 0 and len(pipeline.frames) == 0


def test_settings_are_validated(texture_model: TextureModel) -> None:
    with pytest.raises(ConfigError, match=r'bank_size=33 .*Kmax\) 32: set bank_size to 0'):
        _pipeline(texture_model, bank_size=33)
    assert _pipeline(texture_model, bank_size=0).config.bank_size == 32  # 0 = the engine's Kmax
    assert _pipeline(texture_model).bank.capacity == 32  # ... and the default
    with pytest.raises(ConfigError, match='eviction'):
        _pipeline(texture_model, eviction='random')
    pipeline = _pipeline(texture_model)
    with pytest.raises(ConfigError, match='temperature'):
        pipeline.set_propagation(0.0, 0.5)
    with pytest.raises(ConfigError, match='min_confidence'):
        pipeline.set_propagation(0.1, 1.5)
    with pytest.raises(ConfigError, match='uint8 RGB'):
        pipeline.process(np.zeros((H, W), np.uint8), 1)


def test_reused_outputs_equal_fresh_ones_and_carry_their_bytes(
        texture_model: TextureModel) -> None:
    fresh, reused = _pipeline(texture_model), _pipeline(texture_model)
    reused.reuse_outputs = True
    rgb, _ = two_texture_scene(H, W)
    for pipeline in (fresh, reused):
        pipeline.process(rgb, 1)
        assert pipeline.add_patch(_patch(0.2, 0.9), 1).status == PATCH_ADDED
    a, b = fresh.process(rgb, 2), reused.process(rgb, 2)
    np.testing.assert_array_equal(a.cost, b.cost)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    assert a.payloads.cost is None and b.payloads.cost is not None
    assert bytes(b.payloads.cost) == b.cost.astype('<f4').tobytes()
    assert bytes(b.payloads.confidence) == b.confidence.astype('<f4').tobytes()
    cost_data = b.payloads.cost
    c = reused.process(rgb, 3, want_confidence=False)
    assert c.payloads.cost is cost_data  # the same buffer, frame after frame
    assert c.confidence is None and c.payloads.confidence is None
    np.testing.assert_array_equal(c.cost, a.cost)  # unknown mask from the engine confidence


def test_patch_outcomes_are_typed_never_raised(texture_model: TextureModel) -> None:
    pipeline = _pipeline(texture_model)
    rgb, _ = two_texture_scene(H, W)
    pipeline.process(rgb, 1)
    rejected = pipeline.add_patch(np.zeros((H, W, 3), np.float32), 1)
    assert rejected.status == PATCH_REJECTED and '(H, W) float' in rejected.reason
    wrong_size = pipeline.add_patch(np.full((H, W + 1), 0.5, np.float32), 1)
    assert wrong_size.status == PATCH_REJECTED and 'integer downscale' in wrong_size.reason
    half = np.full((H // 2, W // 2), np.nan, np.float32)
    half[30:55, 5:30] = 0.4  # the grass patch at half the camera size
    assert pipeline.add_patch(half, 1).status == PATCH_ADDED
    assert pipeline.add_patch(np.full((H, W), np.nan, np.float32), 1).status == PATCH_EMPTY
    miss = pipeline.add_patch(_patch(0.2, 0.9), 5)
    assert miss.status == PATCH_MISS and miss.reason == MISS_FUTURE and miss.problem()
    assert pipeline.add_patch(_patch(0.2, 0.9), 1).problem() is None


# --- keyframes: the selector alone -------------------------------------------------------------

def _selector_run(selector: KeyframeSelector, stamps_s: list[float],
                  odometry: list[float | None]) -> list[bool]:
    """Offer frames at `stamps_s`, each after odometry at x = `odometry[i]` (None: none) stamped
    5 ms before the frame (odometry lags the camera); returns which became keyframes."""
    kept = []
    for stamp_s, x in zip(stamps_s, odometry, strict=True):
        stamp = round(stamp_s * S)
        if x is not None:
            assert selector.add_odometry(stamp - 5_000_000, (x, 0.0, 0.0)).accepted
        decision = selector.decide(stamp)
        if decision.keep:
            selector.kept(decision)
        else:
            selector.skipped(stamp)
        kept.append(decision.keep)
    return kept


def test_selector_keeps_every_frame_with_both_rules_off() -> None:
    selector = KeyframeSelector()
    assert selector.every_frame
    assert all(_selector_run(selector, [0.1 * i for i in range(10)], [0.0] * 10))
    assert selector.decide(5 * S).rule == RULE_EVERY


def test_selector_by_distance_keeps_every_fourth_frame_at_5_cm_spacing() -> None:
    selector = KeyframeSelector(distance_m=0.2)
    kept = _selector_run(selector, [0.1 * i for i in range(17)], [0.05 * i for i in range(17)])
    assert [i for i, k in enumerate(kept) if k] == [0, 4, 8, 12, 16]  # 0.2 m up to rounding
    assert selector.counts().kept == 5 and selector.counts().skipped == 12
    assert selector.decide(2 * S).rule == RULE_DISTANCE
    # a robot standing still keeps no frame (the distance rule does not fall back to time)
    assert not any(_selector_run(selector, [2.0 + 0.1 * i for i in range(5)], [0.8] * 5))


def test_selector_by_period_without_odometry_and_as_a_fallback(caplog) -> None:
    selector = KeyframeSelector(distance_m=0.2, period_s=0.5)
    with caplog.at_level(logging.WARNING, 'contrast_semask_ros.keyframes'):
        kept = _selector_run(selector, [0.1 * i for i in range(11)], [None] * 11)
    assert [i for i, k in enumerate(kept) if k] == [0, 5, 10]  # every 0.5 s, no odometry yet
    assert selector.decide(S).rule == RULE_PERIOD
    assert 'no odometry received yet' in caplog.text and 'a keyframe every 0.5 s' in caplog.text
    assert selector.counts().without_odometry == 3
    # odometry that stopped (more than ODOMETRY_TIMEOUT_S before the frame) is not fresh
    selector.add_odometry(2 * S, (0.0, 0.0, 0.0))
    assert selector.decide(2 * S + 10_000_000).rule == RULE_DISTANCE
    assert selector.decide(4 * S).rule == RULE_PERIOD
    # the period rule alone (distance off) ignores odometry; a clock jump back keeps a frame
    period = KeyframeSelector(period_s=0.5)
    assert _selector_run(period, [10.0, 10.2, 10.5, 3.0], [0.0, 5.0, 9.0, 9.0]) == [
        True, False, True, True]
    # distance on, no odometry, no period: every frame, so learning goes on without odometry
    assert all(_selector_run(KeyframeSelector(distance_m=0.2), [0.0, 0.1, 0.2], [None] * 3))


def test_selector_odometry_jump_restarts_the_distance_rule() -> None:
    selector = KeyframeSelector(distance_m=0.2)
    assert _selector_run(selector, [0.0, 0.1], [0.0, 0.05]) == [True, False]
    ok = selector.add_odometry(round(0.145 * S), (0.1, 0.0, 0.0))  # 1 m/s: no jump
    assert ok.accepted and not ok.jump and ok.notice is None
    jump = selector.add_odometry(round(0.155 * S), (0.6, 0.0, 0.0))  # 0.5 m in 10 ms: 50 m/s
    assert jump.accepted and jump.jump and 'faster than 10 m/s' in jump.notice
    assert selector.counts().odometry_jumps == 1
    decision = selector.decide(round(0.16 * S))
    assert decision.keep and decision.position == (0.6, 0.0, 0.0)  # restarted: kept at once
    selector.kept(decision)
    assert not selector.decide(round(0.2 * S)).keep  # and measured from there on
    # a reset odometry (back to the origin) is a jump too, also with an earlier stamp
    assert selector.add_odometry(round(0.1 * S), (0.0, 0.0, 0.0)).jump


@pytest.mark.parametrize('position', [(np.nan, 0.0, 0.0), (0.0, np.inf, 0.0), (1.0, 2.0),
                                      'xyz', None])
def test_selector_refuses_malformed_odometry(position: object) -> None:
    selector = KeyframeSelector(distance_m=0.2)
    update = selector.add_odometry(S, position)
    assert not update.accepted and 'odometry' in update.notice
    assert selector.counts().odometry_rejected == 1
    assert selector.decide(S).rule == RULE_EVERY  # nothing fresh was received
    assert not selector.add_odometry(1.5, (0.0, 0.0, 0.0)).accepted  # float stamp


def test_selector_remembers_skipped_frames_within_a_window() -> None:
    selector = KeyframeSelector(distance_m=0.2, remember_s=1.0)
    for stamp in (1 * S, 2 * S, 2 * S + 500_000_000):
        selector.skipped(stamp)
    assert not selector.was_skipped(S)  # more than remember_s before the newest
    assert selector.was_skipped(2 * S) and selector.was_skipped(2 * S + 3, tolerance_ns=5)
    assert not selector.was_skipped(2 * S + 6, tolerance_ns=5)
    selector.skipped(S // 10)  # a clock jump back: stamps of the old time are forgotten
    assert not selector.was_skipped(2 * S) and selector.was_skipped(S // 10)
    selector.reset()
    assert not selector.was_skipped(S // 10)
    with pytest.raises(ValueError, match='distance_m must be finite and >= 0'):
        KeyframeSelector(distance_m=-0.1)
    with pytest.raises(ValueError, match='period_s'):
        KeyframeSelector(period_s=float('nan'))


# --- keyframes and float16 storage in the pipeline ---------------------------------------------

def _odometry(x: float, stamp_ns: int) -> SimpleNamespace:
    """A nav_msgs/Odometry look-alike (the fields add_odometry_message reads)."""
    header = SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // S, nanosec=stamp_ns % S))
    position = SimpleNamespace(x=x, y=0.0, z=0.0)
    return SimpleNamespace(header=header, pose=SimpleNamespace(pose=SimpleNamespace(
        position=position)))


def test_pipeline_keeps_keyframes_by_distance_and_says_why_a_patch_missed(
        texture_model: TextureModel) -> None:
    pipeline = _pipeline(texture_model, keyframe_distance_m=0.2)
    rgb, _ = two_texture_scene(H, W)
    stats, results = RuntimeStats(), []
    for i in range(9):  # 5 cm apart, odometry 3 ms before each frame
        stamp = S + i * 100_000_000
        update = pipeline.add_odometry_message(_odometry(0.05 * i, stamp - 3_000_000))
        stats.record_odometry(update)
        results.append(pipeline.process(rgb, stamp))
        stats.record_frame(results[-1], 0.0, 0.0, 0.0, 0.0, 0)
    assert [r.keyframe for r in results] == [True, False, False, False, True, False, False,
                                             False, True]
    assert pipeline.frames.stamps == (S, S + 400_000_000, S + 800_000_000)
    for result in results:  # every frame is processed and published, keyframe or not
        assert result.cost.shape == (H, W) and result.embedding.dtype == np.float32
    kept = pipeline.add_patch(_patch(0.2, 0.9), S + 400_000_000)
    assert kept.status == PATCH_ADDED and kept.matched_stamp_ns == S + 400_000_000
    skipped = pipeline.add_patch(_patch(0.2, 0.9), S + 500_000_000)
    assert skipped.status == PATCH_MISS and skipped.reason.startswith(MISS_NOT_KEYFRAME)
    assert 'keyframe_distance_m=0.2' in skipped.reason and skipped.problem()
    after_newest = pipeline.add_patch(_patch(0.2, 0.9), S + 700_000_000)  # not "future"
    assert after_newest.reason.startswith(MISS_NOT_KEYFRAME)
    assert pipeline.add_patch(_patch(0.2, 0.9), 5 * S).reason == MISS_FUTURE  # never processed
    assert pipeline.find_frame(S + 500_000_000).reason.startswith(MISS_NOT_KEYFRAME)
    for result in (kept, skipped, after_newest):
        stats.record_patch(result, len(pipeline.bank))
    counts = stats.counts()
    assert counts['keyframes_kept'] == 3 and counts['frames_not_kept'] == 6
    assert counts['odometry_in'] == 9 and counts['odometry_jumps'] == 0
    assert counts['patches_miss'] == 2 and counts['patches_not_keyframe'] == 2
    assert pipeline.keyframes.counts().kept == 3 and pipeline.keyframes.counts().skipped == 6
    # an odometry jump restarts the distance rule: the next frame is a keyframe
    jump = pipeline.add_odometry(S + 850_000_000, (50.0, 0.0, 0.0))
    assert jump.jump
    assert pipeline.process(rgb, S + 900_000_000).keyframe
    bad = pipeline.add_odometry_message(SimpleNamespace(header=None))
    assert not bad.accepted and 'undecodable odometry' in bad.notice
    pipeline.reset()  # nothing buffered: the next frame is a keyframe, wherever the base is
    assert pipeline.process(rgb, S + 950_000_000).keyframe


def test_pipeline_keeps_keyframes_by_period_without_odometry(
        texture_model: TextureModel) -> None:
    pipeline = _pipeline(texture_model, keyframe_distance_m=0.2, keyframe_period_s=0.25)
    rgb, _ = two_texture_scene(H, W)
    keyframes = [pipeline.process(rgb, S + i * 100_000_000).keyframe for i in range(7)]
    assert keyframes == [True, False, False, True, False, False, True]  # 0, 0.3, 0.6 s
    assert len(pipeline.frames) == 3


def test_default_settings_keep_every_frame_in_float16(texture_model: TextureModel) -> None:
    pipeline = _pipeline(texture_model)
    rgb, _ = two_texture_scene(H, W)
    assert all(pipeline.process(rgb, stamp).keyframe for stamp in (1, 2, 3))
    assert pipeline.frames.dtype == np.float16 and len(pipeline.frames) == 3
    assert pipeline.frames.lookup(3).embedding.dtype == np.float16
    assert 'float16 keyframes, keyframe_distance_m=0' in pipeline.describe()


@pytest.mark.parametrize('reuse', [False, True])
def test_float16_storage_gives_the_float32_prototypes_within_1e_3(
        texture_model: TextureModel, reuse: bool) -> None:
    rgb, _ = two_texture_scene(H, W)
    pipelines, results = {}, {}
    for dtype in ('float16', 'float32'):
        pipeline = pipelines[dtype] = _pipeline(texture_model, buffer_dtype=dtype)
        pipeline.reuse_outputs = reuse
        results[dtype] = pipeline.process(rgb, 1)
        assert pipeline.add_patch(_patch(0.2, 0.9), 1).status == PATCH_ADDED
    f16, f32 = results['float16'], results['float32']
    # the published embedding is the backend's float32 output in both storages
    assert f16.embedding.dtype == np.float32 and not f16.embedding.flags.writeable
    np.testing.assert_array_equal(f16.embedding, f32.embedding)
    stored = pipelines['float16'].frames.lookup(1).embedding
    assert stored.dtype == np.float16
    np.testing.assert_allclose(stored.astype(np.float32), f32.embedding, rtol=2**-11,
                               atol=2**-25)
    banks = {dtype: pipeline.bank.as_bank() for dtype, pipeline in pipelines.items()}
    assert len(banks['float16'].costs) == len(banks['float32'].costs) == 2
    np.testing.assert_allclose(banks['float16'].prototypes, banks['float32'].prototypes,
                               atol=1e-3)
    np.testing.assert_array_equal(banks['float16'].costs, banks['float32'].costs)
    # and the propagated costs agree on the next frame
    a, b = (pipelines[dtype].process(rgb, 2).cost for dtype in ('float16', 'float32'))
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_non_keyframe_embedding_stays_valid_as_documented(
        texture_model: TextureModel) -> None:
    rgb, _ = two_texture_scene(H, W)
    fresh = _pipeline(texture_model, keyframe_period_s=1.0)
    first, second = fresh.process(rgb, S), fresh.process(rgb, S + 10)
    assert first.keyframe and not second.keyframe
    assert not np.shares_memory(second.embedding, fresh.frames.spare(
        second.embedding.shape))  # without reuse_outputs: a private copy
    reused = _pipeline(texture_model, keyframe_period_s=1.0, buffer_dtype='float32')
    reused.reuse_outputs = True
    reused.process(rgb, S)
    skipped = reused.process(rgb, S + 10)
    assert not skipped.keyframe and not skipped.embedding.flags.writeable
    assert np.shares_memory(skipped.embedding, reused.frames.spare(skipped.embedding.shape))
