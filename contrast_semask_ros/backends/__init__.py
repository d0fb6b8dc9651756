"""Inference backends behind one interface: TensorRT, ONNX Runtime, PyTorch.

`open_backend(path)` picks by extension: `.engine` -> TensorRT, `.onnx` -> ONNX Runtime,
`.pt` -> PyTorch. Each
backend imports its inference library only when constructed.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Backend, BackendError, BackendOutputs, Bank


def open_backend(model_path: str | os.PathLike, backend: str = 'auto', *, height: int = 0,
                 width: int = 0, bank_size: int = 1024, device: str = 'auto',
                 precision: str = 'auto', cuda_graph: bool = False) -> Backend:
    """Open `model_path` with `backend` ('auto' by extension, 'tensorrt', 'onnxruntime' or
    'torch').

    A checkpoint (.pt) has no fixed input size: pass height and width (and optionally the
    bank size, device, precision and CUDA graphs of the PyTorch backend). An engine or ONNX
    file carries all of that in its EngineSpec.
    """
    path = Path(model_path)
    if not path.is_file():
        raise BackendError(f'model file not found: {path}; pass an existing .engine, .onnx or '
                           '.pt file (contrast-semask-export writes the first two)')
    if path.stat().st_size == 0:
        raise BackendError(f'model file {path} is empty (0 bytes): an interrupted copy or '
                           'export? Copy or export it again')
    kind = backend
    if kind == 'auto':
        kind = {'.engine': 'tensorrt', '.onnx': 'onnxruntime', '.pt': 'torch',
                '.pth': 'torch'}.get(path.suffix, '')
        if not kind:
            raise BackendError(f'cannot tell the backend from {path.name!r}: use a .engine, '
                               '.onnx or .pt file, or set backend explicitly')
    if kind == 'tensorrt':
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path)
    if kind == 'onnxruntime':
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path)
    if kind == 'torch':
        if height < 1 or width < 1:
            raise BackendError('a checkpoint needs the input height and width')
        from .torch_backend import TorchBackend

        return TorchBackend(path, height, width, bank_size, device, precision, cuda_graph)
    raise BackendError(f"unknown backend {backend!r}: 'auto', 'tensorrt', 'onnxruntime' or "
                       "'torch'")


__all__ = ['Backend', 'BackendError', 'BackendOutputs', 'Bank', 'open_backend']
