"""The one backend interface: a context manager with `infer(image, bank) -> BackendOutputs`.

Every backend runs the same deployable graph (contrast_semask_train.model.DeployWrapper) and is
validated against its EngineSpec once at load. The host pads the bank to the graph's Kmax with
`valid = 0` rows, so the node can hold fewer prototypes than the engine was built for.
Output arrays may be reused by the next `infer` call (TensorRT writes into fixed buffers): copy
them if they must outlive it.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from contrast_semask_ros.engine_spec import EngineSpec


class BackendError(RuntimeError):
    """A model that cannot be loaded or an input that does not fit it; says how to fix it."""


class Bank(NamedTuple):
    prototypes: np.ndarray  # K, D float32 unit-norm
    costs: np.ndarray  # K float32
    valid: np.ndarray | None = None  # K 0/1; None = all valid


class BackendOutputs(NamedTuple):
    embedding: np.ndarray  # 1, D, ceil(H/4), ceil(W/4) float32 unit-norm
    cost: np.ndarray  # 1, 1, H, W float32
    confidence: np.ndarray  # 1, 1, H, W float32
    infer_ms: float  # wall time of this call (inputs staged, graph run, outputs on the host)


class Backend:
    """Base class: spec, input validation and bank padding; subclasses implement `_run`."""

    name = 'base'

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        K, D = spec.bank_size, spec.embedding_dim
        self._prototypes = np.zeros((K, D), np.float32)
        self._costs = np.zeros(K, np.float32)
        self._valid = np.zeros(K, np.float32)
        self._temperature = np.zeros(1, np.float32)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the session, engine or device memory."""

    def infer(self, image: np.ndarray, bank: Bank, temperature: float,
              embedding_out: np.ndarray | None = None) -> BackendOutputs:
        """image (H, W, 3) or (1, H, W, 3) uint8 RGB at the spec size; bank with K <= Kmax.

        embedding_out: a C-contiguous (D, h, w) float32 array (the frame buffer's next slot)
        that receives the embedding: the backend's own output transfer writes it there
        (ONNX Runtime's output binding, TensorRT's device-to-host copy, PyTorch's copy to the
        host) instead of into a buffer of its own that the caller copies again. The returned
        embedding is then `embedding_out[None]`.
        """
        start = time.perf_counter()
        feeds = self._stage(image, bank, temperature)
        if embedding_out is not None:
            want = self.spec.output(self.spec.output_names[0]).shape[1:]
            if (embedding_out.shape != want or embedding_out.dtype != np.float32
                    or not embedding_out.flags.c_contiguous):
                raise BackendError(f'embedding_out must be a C-contiguous float32 {want} '
                                   f'array, got {embedding_out.dtype} {embedding_out.shape}')
        embedding, cost, confidence = self._run(feeds, embedding_out)
        if embedding_out is not None and not np.shares_memory(embedding, embedding_out):
            np.copyto(embedding_out, embedding[0])  # a backend without a direct path
            embedding = embedding_out[None]
        return BackendOutputs(embedding, cost, confidence, (time.perf_counter() - start) * 1e3)

    def _stage(self, image: np.ndarray, bank: Bank, temperature: float) -> dict[str, np.ndarray]:
        spec = self.spec
        want = (spec.height, spec.width, 3)
        if image.dtype != np.uint8 or image.shape[-3:] != want or image.ndim not in (3, 4):
            raise BackendError(f'image must be uint8 {want} RGB (the size the {self.name} '
                               f'model was exported for), got {image.dtype} {image.shape}; '
                               'resize it first or export for this size')
        K = len(bank.costs)
        if K > spec.bank_size or bank.prototypes.shape != (K, spec.embedding_dim):
            raise BackendError(f'bank must hold at most {spec.bank_size} prototypes of '
                               f'{spec.embedding_dim} dims with one cost each, got prototypes '
                               f'{bank.prototypes.shape} and {K} costs')
        if not temperature > 0:
            raise BackendError(f'temperature must be > 0, got {temperature}')
        self._prototypes[:K] = bank.prototypes
        self._prototypes[K:] = 0.0
        self._costs[:K] = bank.costs
        self._costs[K:] = 0.0
        self._valid[:K] = 1.0 if bank.valid is None else bank.valid
        self._valid[K:] = 0.0
        self._temperature[0] = temperature
        values = (np.ascontiguousarray(image.reshape(1, *want)), self._prototypes, self._costs,
                  self._valid, self._temperature)
        # keyed by the spec's names, in its input order (EngineSpec.validate fixes the order)
        return dict(zip(spec.input_names, values, strict=True))

    def _run(self, feeds: dict[str, np.ndarray], embedding_out: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the graph on `feeds` (keyed by spec.input_names) and return the arrays of
        spec.required_outputs (embedding, cost, confidence), in that order; the embedding
        written into `embedding_out` (D, h, w) when given and the backend can."""
        raise NotImplementedError
