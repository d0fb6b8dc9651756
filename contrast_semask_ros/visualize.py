"""Pictures for people (rviz, replay reports): cost overlay and embedding colours. numpy + OpenCV.

The node computes these only when somebody subscribes to `cost_overlay` / `embedding_viz`.
"""

from __future__ import annotations

import functools

import numpy as np


def cost_overlay(rgb: np.ndarray, cost: np.ndarray, max_cost: float = 1.0,
                 alpha: float = 0.5) -> np.ndarray:
    """rgb (H, W, 3) uint8 + cost (H, W) float (NaN = unknown) -> (H, W, 3) uint8 RGB.

    Known pixels are blended with the turbo colour of cost / max_cost (blue low, red high);
    unknown pixels show the camera image, darkened, so "not known" never looks like "cheap".
    """
    import cv2

    if cost.shape != rgb.shape[:2]:
        raise ValueError(f'cost {cost.shape} must match the image {rgb.shape[:2]}')
    if not max_cost > 0:
        raise ValueError(f'max_cost must be > 0, got {max_cost}')
    with np.errstate(invalid='ignore'):  # NaN pixels are overwritten below
        level = (np.clip(cost / max_cost, 0.0, 1.0) * 255).astype(np.uint8)  # H, W
    colours = cv2.LUT(cv2.merge([level, level, level]), _turbo_rgb())  # H, W, 3
    blended = cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)
    out = rgb >> 1  # unknown: the camera image at half brightness
    cv2.copyTo(blended, np.isfinite(cost).view(np.uint8), out)
    return out


@functools.cache
def _turbo_rgb() -> np.ndarray:
    """The turbo colormap as a (1, 256, 3) RGB lookup table (applyColorMap rebuilds it on
    every call, ~15 ms)."""
    import cv2

    ramp = np.arange(256, dtype=np.uint8)[None]
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)


def embedding_colours(embedding: np.ndarray, seed: int = 0) -> np.ndarray:
    """embedding (D, h, w) unit-norm -> (h, w, 3) uint8 RGB: a fixed random projection onto
    three directions (the same colours for the same embedding, frame after frame)."""
    D = embedding.shape[0]
    basis = np.random.default_rng(seed).normal(size=(3, D)).astype(np.float32)  # 3, D
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    projected = np.tensordot(basis, embedding, axes=(1, 0))  # 3, h, w in [-1, 1]
    rgb = np.clip((projected + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))
