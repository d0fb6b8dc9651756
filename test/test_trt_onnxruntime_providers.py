"""ONNX Runtime execution providers in the order TensorRT, CUDA, CPU (ONNX Runtime gives each
node to the first listed provider that takes it, so TensorRT must be listed first)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from contrast_semask_ros.engine_spec import EngineSpec, write_spec

ort = pytest.importorskip('onnxruntime', reason='onnxruntime is an export extra')

TENSORRT, CUDA, CPU = ('TensorrtExecutionProvider', 'CUDAExecutionProvider',
                       'CPUExecutionProvider')


def test_provider_order_constant() -> None:
    from contrast_semask_ros.backends.onnxruntime_backend import PROVIDER_ORDER

    assert PROVIDER_ORDER == (TENSORRT, CUDA, CPU)


@pytest.mark.parametrize('available, chosen', [
    ([CPU, CUDA, TENSORRT], [TENSORRT, CUDA, CPU]),
    (['AzureExecutionProvider', CPU, CUDA], [CUDA, CPU]),
    ([CPU], [CPU]),
])
def test_backend_asks_for_available_providers_in_order(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, available: list[str],
        chosen: list[str]) -> None:
    from contrast_semask_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    spec = EngineSpec.build(height=24, width=32, bank_size=4, embedding_dim=8, stride=4,
                            mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), class_names=('a', 'b'),
                            checkpoint_sha256='0' * 64, precision='fp32')
    model = tmp_path / 'm.onnx'
    model.write_bytes(b'not parsed by the fake session')
    write_spec(spec, model)
    asked: list[list[str]] = []

    class Session:
        def __init__(self, path: str, options: object, providers: list[str]) -> None:
            asked.append(list(providers))
            self.providers = list(providers)

        def get_providers(self) -> list[str]:
            return self.providers

        def get_inputs(self) -> list[types.SimpleNamespace]:
            return [types.SimpleNamespace(name=t.name, shape=list(t.shape))
                    for t in spec.inputs]

    monkeypatch.setattr(ort, 'get_available_providers', lambda: list(available))
    monkeypatch.setattr(ort, 'InferenceSession', Session)
    backend = OnnxRuntimeBackend(model)
    assert asked == [chosen] and backend.providers == chosen
    backend.close()
