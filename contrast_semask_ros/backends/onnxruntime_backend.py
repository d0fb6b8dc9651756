"""ONNX Runtime backend: the exported ONNX graph with its EngineSpec (imports no torch)."""

from __future__ import annotations

import logging
import os

import numpy as np

from contrast_semask_ros.engine_spec import read_spec

from .base import Backend, BackendError

_logger = logging.getLogger(__name__)

# Preferred order, as available: TensorRT, then CUDA, then CPU. ONNX Runtime assigns each node
# to the first provider in the list that takes it, so TensorRT must come first or CUDA takes the
# whole graph; CUDA runs what TensorRT does not take, and CPU the rest.
PROVIDER_ORDER = ('TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider')


class OnnxRuntimeBackend(Backend):
    name = 'onnxruntime'

    def __init__(self, model_path: str | os.PathLike,
                 providers: tuple[str, ...] | None = None) -> None:
        super().__init__(read_spec(model_path))
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendError('the ONNX backend needs onnxruntime: pip install onnxruntime '
                               '(or onnxruntime-gpu)') from err
        available = ort.get_available_providers()
        chosen = list(providers or [p for p in PROVIDER_ORDER if p in available])
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; our own logger reports the providers
        self.session = ort.InferenceSession(str(model_path), options, providers=chosen)
        self.providers = self.session.get_providers()
        inputs = {i.name: tuple(i.shape) for i in self.session.get_inputs()}
        expected = {t.name: t.shape for t in self.spec.inputs}
        if inputs != expected:
            raise BackendError(f'{model_path} does not match its spec: graph inputs {inputs}, '
                               f'spec {expected}; re-export both together')
        self._outputs = [t.name for t in self.spec.required_outputs]
        self._planes: tuple[np.ndarray, ...] | None = None  # cost, confidence (io binding)
        _logger.info('ONNX Runtime %s on %s', ort.__version__, self.providers)

    def _run(self, feeds: dict[str, np.ndarray], embedding_out: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if embedding_out is None or 'CPUExecutionProvider' != self.providers[0]:
            embedding, cost, confidence = self.session.run(self._outputs, feeds)
            return embedding, cost, confidence
        # CPU: bind the outputs to host arrays, the embedding to the caller's (no copy after)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        if self._planes is None:
            self._planes = tuple(np.empty(t.shape, np.float32)
                                 for t in self.spec.required_outputs[1:])  # cost, confidence
        arrays = (embedding_out[None], *self._planes)
        for name, array in zip(self._outputs, arrays, strict=True):
            binding.bind_output(name, 'cpu', 0, np.float32, array.shape, array.ctypes.data)
        self.session.run_with_iobinding(binding)
        return arrays

    def close(self) -> None:
        self.session = None
