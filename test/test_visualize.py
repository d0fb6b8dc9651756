"""Pictures for rviz and reports: unknown pixels never look cheap; colours are stable."""

from __future__ import annotations

import numpy as np
import pytest

from contrast_semask_ros.visualize import cost_overlay, embedding_colours


def test_cost_overlay_blends_known_and_dims_unknown() -> None:
    rgb = np.full((4, 6, 3), 200, np.uint8)
    cost = np.array([[0.0, 1.0, np.nan, 2.0, -1.0, 0.5]] * 4, np.float32)
    out = cost_overlay(rgb, cost, max_cost=1.0, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert (out[:, 2] == 100).all()  # unknown: half brightness, no colour
    assert (out[:, 0] == out[:, 4]).all() and (out[:, 1] == out[:, 3]).all()  # clipped
    low, high = out[0, 0].astype(int), out[0, 1].astype(int)
    assert low[2] > low[0] and high[0] > high[2]  # blue for cheap, red for costly
    with pytest.raises(ValueError, match='must match'):
        cost_overlay(rgb, cost[:, :5])


def test_embedding_colours_are_a_fixed_projection() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(8, 5, 7)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=0, keepdims=True)
    a, b = embedding_colours(emb), embedding_colours(emb.copy())
    assert a.shape == (5, 7, 3) and a.dtype == np.uint8 and (a == b).all()
    assert not (a == embedding_colours(-emb)).all()
