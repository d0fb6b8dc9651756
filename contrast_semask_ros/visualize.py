"""Pictures for people (rviz, replay reports): cost overlay and embedding colours. numpy + OpenCV.

The node computes these only when somebody subscribes to `cost_overlay` / `embedding_viz`.
"""

from __future__ import annotations

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
    known = np.isfinite(cost)  # H, W
    level = np.clip(np.nan_to_num(cost, nan=0.0) / max_cost, 0.0, 1.0)
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    blended = cv2.addWeighted(rgb, 1.0 - alpha, np.ascontiguousarray(colours), alpha, 0.0)
    dimmed = (rgb * 0.5).astype(np.uint8)
    return np.where(known[..., None], blended, dimmed)


def embedding_colours(embedding: np.ndarray, seed: int = 0) -> np.ndarray:
    """embedding (D, h, w) unit-norm -> (h, w, 3) uint8 RGB: a fixed random projection onto
    three directions (the same colours for the same embedding, frame after frame)."""
    D = embedding.shape[0]
    basis = np.random.default_rng(seed).normal(size=(3, D)).astype(np.float32)  # 3, D
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    projected = np.tensordot(basis, embedding, axes=(1, 0))  # 3, h, w in [-1, 1]
    rgb = np.clip((projected + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))
