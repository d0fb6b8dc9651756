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
    A fresh array each call; `OverlayPainter` paints into reused buffers (the node).
    """
    out = np.empty_like(rgb)
    OverlayPainter().paint(rgb, cost, max_cost, out, alpha)
    return out


class OverlayPainter:
    """cost_overlay into a given output with reused scratch buffers: no frame-sized allocation
    per frame once the camera size is steady."""

    def __init__(self) -> None:
        self._shape: tuple[int, int] | None = None

    def _scratch(self, height: int, width: int) -> None:
        if self._shape == (height, width):
            return
        self._shape = (height, width)
        self._scaled = np.empty((height, width), np.float32)
        self._level = np.empty((height, width), np.uint8)
        self._colours = np.empty((height, width, 3), np.uint8)
        self._blended = np.empty((height, width, 3), np.uint8)
        self._known = np.empty((height, width), bool)

    def paint(self, rgb: np.ndarray, cost: np.ndarray, max_cost: float, out: np.ndarray,
              alpha: float = 0.5) -> np.ndarray:
        """Write the overlay of rgb (H, W, 3) uint8 and cost (H, W) into out (H, W, 3) uint8."""
        import cv2

        if cost.shape != rgb.shape[:2] or out.shape != rgb.shape or out.dtype != np.uint8:
            raise ValueError(f'cost {cost.shape} and out {out.shape} must match the image '
                             f'{rgb.shape[:2]}')
        if not max_cost > 0:
            raise ValueError(f'max_cost must be > 0, got {max_cost}')
        self._scratch(*cost.shape)
        np.multiply(cost, np.float32(255.0 / max_cost), out=self._scaled)
        np.clip(self._scaled, 0.0, 255.0, out=self._scaled)
        np.isfinite(cost, out=self._known)
        np.nan_to_num(self._scaled, copy=False, nan=0.0)  # NaN pixels are overwritten below
        np.copyto(self._level, self._scaled, casting='unsafe')  # H, W in 0..255
        # a user colormap is a plain lookup (the built-in TURBO is rebuilt on every call)
        cv2.applyColorMap(self._level, _turbo_rgb().reshape(256, 1, 3), dst=self._colours)
        cv2.addWeighted(rgb, 1.0 - alpha, self._colours, alpha, 0.0, dst=self._blended)
        np.right_shift(rgb, 1, out=out)  # unknown: the camera image at half brightness
        cv2.copyTo(self._blended, self._known.view(np.uint8), out)
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
