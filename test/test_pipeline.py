"""The ROS-free pipeline (node and replay share it): outputs, unknown pixels, learning from
patches, frame lookup misses, settings validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TextureModel
from scenes import two_texture_scene

from contrast_semask_ros.backends import open_backend
from contrast_semask_ros.frames import MISS_EVICTED, MISS_FUTURE
from contrast_semask_ros.pipeline import (
    PATCH_ADDED,
    PATCH_EMPTY,
    PATCH_MISS,
    PATCH_REJECTED,
    ConfigError,
    Pipeline,
    PipelineConfig,
)

H, W = 120, 200  # camera size, deliberately not the engine's 96x128


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
