"""ONNX Runtime backend: the exported ONNX graph with its EngineSpec (imports no torch)."""

from __future__ import annotations

import logging
import os

import numpy as np

from contrast_semask_ros.engine_spec import read_spec

from .base import Backend, BackendError

_logger = logging.getLogger(__name__)

# Preferred order (issue 4): CUDA, then TensorRT, then CPU, as available.
PROVIDER_ORDER = ('CUDAExecutionProvider', 'TensorrtExecutionProvider', 'CPUExecutionProvider')


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
        _logger.info('ONNX Runtime %s on %s', ort.__version__, self.providers)

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        embedding, cost, confidence = self.session.run(self._outputs, feeds)
        return embedding, cost, confidence

    def close(self) -> None:
        self.session = None
