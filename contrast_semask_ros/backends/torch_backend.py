"""PyTorch backend: the deploy wrapper rebuilt from a checkpoint alone (CUDA or CPU).

The only runtime module that imports torch and the model package, lazily at construction.
"""

from __future__ import annotations

import os

import numpy as np

from .base import Backend, BackendError


class TorchBackend(Backend):
    name = 'torch'

    def __init__(self, checkpoint: str | os.PathLike, height: int, width: int,
                 bank_size: int = 1024, device: str = 'auto', fp16: bool = False) -> None:
        try:
            import torch

            from contrast_semask_train.export import deploy_spec
            from contrast_semask_train.model import DeployWrapper, load_checkpoint
            from contrast_semask_train.model.checkpoint import file_sha256
        except ImportError as err:
            raise BackendError('the PyTorch backend needs torch and this package\'s training '
                               'extra: pip install .[train]') from err
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.torch = torch
        self.device = torch.device(device)
        model, _ = load_checkpoint(checkpoint)
        wrapper = DeployWrapper(model)
        super().__init__(deploy_spec(wrapper, height, width, bank_size,
                                     file_sha256(checkpoint), 'fp16' if fp16 else 'fp32'))
        self.dtype = torch.float16 if fp16 and self.device.type == 'cuda' else torch.float32
        self.wrapper = wrapper.to(self.device)
        self.wrapper.model.to(self.dtype)

    @property
    def _autocast(self):
        return self.torch.autocast(self.device.type, dtype=self.dtype,
                                   enabled=self.dtype != self.torch.float32)

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = self.torch
        inputs = [torch.from_numpy(feeds[n]).to(self.device) for n in (
            'image', 'prototypes', 'prototype_costs', 'prototype_valid', 'temperature')]
        with torch.inference_mode(), self._autocast:
            out = self.wrapper(*inputs)
        return tuple(t.float().cpu().numpy() for t in out[:3])  # type: ignore[return-value]

    def close(self) -> None:
        self.wrapper = None
