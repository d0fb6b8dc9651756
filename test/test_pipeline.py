"""The ROS-free pipeline (node and replay share it): outputs, unknown pixels, learning from
patches, frame lookup misses, settings validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TextureModel
from scenes import two_texture_scene

from contrast_semask_ros.backends import open_backend
from contrast_semask_ros.frames import MISS_EVICTED, MISS_FUTURE
from contrast_semask_ros.pipeline import ConfigError, Pipeline, PipelineConfig

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
