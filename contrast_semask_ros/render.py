"""The node's outputs, encoded: FrameResult -> message payloads, computing only what is asked.

    renderer = OutputRenderer(overlay_max_cost=1.0)
    for name, out in renderer.render(result, rgb, {'cost', 'embedding'}).items():
        codec.set_image_fields(msg[name], *out, header)     # no copy for rclpy messages

The five outputs (`OUTPUTS`): `cost` and `confidence` (32FC1 at camera size), `embedding`
(32FC<D> at stride 4), `cost_overlay` and `embedding_viz` (rgb8). Payloads come without a copy
where the pipeline already holds the bytes in message order (`FrameResult.payloads`: reused
cost/confidence buffers); the embedding is transposed and the overlay painted into reused
buffers.
Every payload is valid until the next `render` / `Pipeline.process` call: publish (or copy) it
before then. ROS-free: the node, replay and bench/bench_node.py all call this.
"""

from __future__ import annotations

import array
from collections.abc import Collection
from typing import NamedTuple

import numpy as np

from contrast_semask_ros import codec
from contrast_semask_ros.params import DEFAULTS
from contrast_semask_ros.pipeline import FrameResult
from contrast_semask_ros.visualize import OverlayPainter, embedding_colours

OUTPUTS = ('cost', 'confidence', 'embedding', 'cost_overlay', 'embedding_viz')


class Encoded(NamedTuple):
    """One output's Image fields: the payload is little-endian with unpadded rows."""

    height: int
    width: int
    encoding: str
    data: array.array | bytes  # array.array('B') when it can go into an rclpy message as is


class OutputRenderer:
    """FrameResult (+ the camera image) -> {output name: Encoded}, only for `wanted` names."""

    def __init__(self, overlay_max_cost: float = DEFAULTS['overlay_max_cost']) -> None:
        self.overlay_max_cost = overlay_max_cost
        self._painter = OverlayPainter()
        self._overlay: codec.MessageBuffer | None = None
        self._embedding_buffer: codec.MessageBuffer | None = None

    def render(self, result: FrameResult, rgb: np.ndarray, wanted: Collection[str]
               ) -> dict[str, Encoded]:
        unknown = set(wanted) - set(OUTPUTS)
        if unknown:
            raise ValueError(f'unknown outputs {sorted(unknown)}; known: {", ".join(OUTPUTS)}')
        out: dict[str, Encoded] = {}
        if 'cost' in wanted:
            out['cost'] = _plane(result.cost, result.payloads.cost)
        if 'confidence' in wanted:
            if result.confidence is None:
                raise ValueError('confidence was not computed for this frame: process it with '
                                 'want_confidence=True')
            out['confidence'] = _plane(result.confidence, result.payloads.confidence)
        if 'embedding' in wanted:
            out['embedding'] = self._embedding(result)
        if 'cost_overlay' in wanted:
            out['cost_overlay'] = self._paint_overlay(rgb, result.cost)
        if 'embedding_viz' in wanted:
            viz = embedding_colours(result.embedding)  # h, w, 3 at stride 4
            out['embedding_viz'] = Encoded(viz.shape[0], viz.shape[1], 'rgb8', viz.tobytes())
        return out

    def _embedding(self, result: FrameResult) -> Encoded:
        """(D, h, w) -> the 32FC<D> payload (h, w, D) by one transposing copy into a reused
        buffer (OpenCV's blocked transpose: several times numpy's)."""
        import cv2

        D, h, w = result.embedding.shape
        if self._embedding_buffer is None or self._embedding_buffer.array.shape != (h, w, D):
            self._embedding_buffer = codec.MessageBuffer((h, w, D), np.float32)
        out = self._embedding_buffer.array  # h, w, D
        if result.embedding.flags.c_contiguous and D <= 512:
            cv2.transpose(result.embedding.reshape(D, h * w), dst=out.reshape(h * w, D))
        else:
            np.copyto(out, result.embedding.transpose(1, 2, 0))
        return Encoded(h, w, f'32FC{D}', self._embedding_buffer.data)

    def _paint_overlay(self, rgb: np.ndarray, cost: np.ndarray) -> Encoded:
        height, width = cost.shape
        if self._overlay is None or self._overlay.array.shape != (height, width, 3):
            self._overlay = codec.MessageBuffer((height, width, 3), np.uint8)
        self._painter.paint(rgb, cost, self.overlay_max_cost, self._overlay.array)
        return Encoded(height, width, 'rgb8', self._overlay.data)


def _plane(plane: np.ndarray, data: array.array | None) -> Encoded:
    """A 32FC1 plane: its reused bytes, else a little-endian copy."""
    height, width = plane.shape
    if data is None:
        data = codec.array_to_fields(plane, '32FC1').data
    return Encoded(height, width, '32FC1', data)
