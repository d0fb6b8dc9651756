"""The runtime pipeline shared by the node and replay: frame -> backend -> outputs; patch -> bank.

    pipeline = Pipeline(open_backend('model.onnx'), PipelineConfig())
    out = pipeline.process(rgb, stamp_ns)          # FrameResult at camera size (+ timings)
    pipeline.add_patch(mask, stamp_of_its_frame)   # PatchResult: prototypes into the bank

`process` resizes the camera image to the engine size, runs the deployable graph with the
current bank, keeps the stride-4 embedding in the frame buffer (for patches that arrive later),
and returns cost and confidence resized back to the camera size, with cost NaN ("unknown")
where the confidence is under `min_confidence`. `add_patch` finds the frame the mask was drawn
on and turns the mask into prototypes. The bank and the frame buffer are thread-safe, so a
node may call `add_patch` from another thread while `process` runs; `process` itself must be
called from one thread at a time (the backend reuses its buffers).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros.backends import Backend, open_backend
from contrast_semask_ros.bank import AddResult, PrototypeBank
from contrast_semask_ros.frames import FrameBuffer
from contrast_semask_ros.params import ConfigError, PipelineConfig, check
from contrast_semask_ros.preprocess import resize_image

# A checkpoint (.pt) has no exported bank: with bank_size 0 the PyTorch backend gets this many.
DEFAULT_CHECKPOINT_BANK = 256


def check_propagation(temperature: float, min_confidence: float) -> None:
    """The run-time adjustable settings; raises ConfigError."""
    check('temperature', temperature)
    check('min_confidence', min_confidence)


class StageTimings(NamedTuple):
    resize_ms: float  # camera image -> engine size
    infer_ms: float  # the backend call (inputs staged, graph, outputs on the host)
    buffer_ms: float  # embedding copied into the frame buffer
    output_ms: float  # cost/confidence back to camera size, unknown mask
    total_ms: float


class FrameResult(NamedTuple):
    stamp_ns: int
    embedding: np.ndarray  # D, h, w float32 unit-norm at stride 4 of the engine input; read-only
    cost: np.ndarray  # H, W float32 at camera size; NaN = unknown
    confidence: np.ndarray  # H, W float32 in [-1, 1]; -1 with an empty bank
    bank_size: int  # prototypes used for this frame
    timings: StageTimings


class PatchResult(NamedTuple):
    stamp_ns: int
    matched_stamp_ns: int | None  # the frame the mask was applied to; None on a miss
    miss_reason: str | None  # why no frame was found (frames.MISS_*), None on a hit
    added: AddResult | None
    elapsed_ms: float


class Pipeline:
    """Backend + frame buffer + prototype bank; see the module docstring."""

    def __init__(self, backend: Backend, config: PipelineConfig) -> None:
        spec = backend.spec
        config = self.config = config.validate(spec.bank_size)  # bank_size 0 -> Kmax
        self.backend = backend
        self.engine_size = (spec.width, spec.height)
        self.temperature = config.temperature
        self.min_confidence = config.min_confidence
        self.frames = FrameBuffer(config.buffer_frames, config.buffer_age_s)
        self.bank = PrototypeBank(
            spec.embedding_dim, config.bank_size, config.min_patch_pixels,
            config.merge_similarity or None, config.eviction)

    @classmethod
    def open(cls, values: Mapping[str, Any]) -> Pipeline:
        """Open the model named by a resolved parameter dict (params.resolve) and build the
        pipeline on it. The engine decides the input size and, with bank_size 0, the bank
        size; a parameter that contradicts the engine raises ConfigError naming both values
        and the parameter to change. Model files that cannot be opened raise BackendError or
        EngineSpecError with the path."""
        model = Path(str(values['model_path'])).expanduser()
        if not values['model_path'] or not model.is_file():
            raise ConfigError(f"model_path {values['model_path']!r} is not a file: pass the "
                              '.engine, .onnx or .pt to run (model_path:=/path/model.engine)')
        backend = open_backend(model, values['backend'], height=values['input_height'],
                               width=values['input_width'], bank_size=values['bank_size'] or
                               DEFAULT_CHECKPOINT_BANK, device=values['device'],
                               precision=values['precision'])
        try:
            spec = backend.spec
            for name, want in (('input_height', spec.height), ('input_width', spec.width)):
                if values[name] not in (0, want):
                    raise ConfigError(
                        f'{name}={values[name]} but {model.name} was built for '
                        f'{spec.width}x{spec.height} (width x height): set {name} to 0 (= the '
                        f'model size) or to {want}, or export the model for the size you want')
            return cls(backend, PipelineConfig.from_values(values))
        except BaseException:
            backend.close()
            raise

    def close(self) -> None:
        """Release the backend (GPU memory); the pipeline is unusable afterwards."""
        self.backend.close()

    def set_propagation(self, temperature: float, min_confidence: float) -> None:
        """Change the run-time adjustable settings (validated; applies to the next frame)."""
        check_propagation(temperature, min_confidence)
        self.temperature, self.min_confidence = temperature, min_confidence

    def process(self, rgb: np.ndarray, stamp_ns: int) -> FrameResult:
        """rgb (H, W, 3) uint8 camera image -> FrameResult at (H, W)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ConfigError(f'expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} '
                              f'{rgb.shape}')
        start = time.perf_counter()
        height, width = rgb.shape[:2]
        engine_input = resize_image(rgb, self.engine_size)  # h_e, w_e, 3
        resized = time.perf_counter()
        bank = self.bank.as_bank()
        outputs = self.backend.infer(engine_input, bank, self.temperature)
        inferred = time.perf_counter()
        # the buffer keeps a copy (the backend reuses its output arrays); share it read-only
        kept = self.frames.push(stamp_ns, outputs.embedding, (height, width))
        frame = self.frames.lookup(stamp_ns) if kept else None
        if frame is None:  # too old to be kept (an out-of-order stamp): a private copy
            embedding = outputs.embedding[0].copy()  # D, h, w
        else:
            embedding = frame.embedding.view()  # D, h, w
        embedding.flags.writeable = False
        buffered = time.perf_counter()
        confidence = _to_camera(outputs.confidence[0, 0], (width, height))  # H, W
        cost = _to_camera(outputs.cost[0, 0], (width, height))  # H, W
        cost[confidence < self.min_confidence] = np.nan
        done = time.perf_counter()
        timings = StageTimings(*((b - a) * 1e3 for a, b in (
            (start, resized), (resized, inferred), (inferred, buffered), (buffered, done),
            (start, done))))
        return FrameResult(stamp_ns, embedding, cost, confidence, len(bank.costs), timings)

    def add_patch(self, mask: np.ndarray, stamp_ns: int) -> PatchResult:
        """mask (any H, W) float32 measured cost, NaN = none, drawn on the frame at stamp_ns."""
        start = time.perf_counter()
        tolerance_ns = round(self.config.stamp_tolerance_s * 1e9)
        lookup = self.frames.find(stamp_ns, tolerance_ns)
        if lookup.frame is None:
            return PatchResult(stamp_ns, None, lookup.reason, None,
                               (time.perf_counter() - start) * 1e3)
        frame = lookup.frame
        added = self.bank.add_patch(mask, frame.embedding, frame.stamp_ns)
        return PatchResult(stamp_ns, frame.stamp_ns, None, added,
                           (time.perf_counter() - start) * 1e3)

    def reset(self) -> None:
        """Forget every prototype and buffered frame."""
        self.bank.reset()
        self.frames.clear()


def _to_camera(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) engine-size plane -> (H, W) float32 at size = (W, H), always a fresh array."""
    out = resize_image(plane, size)
    return out.copy() if out is plane else out


__all__ = ['ConfigError', 'FrameResult', 'PatchResult', 'Pipeline', 'PipelineConfig',
           'StageTimings', 'check_propagation']
