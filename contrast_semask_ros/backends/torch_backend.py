"""PyTorch backend: the deploy wrapper rebuilt from a checkpoint alone (CUDA or CPU).

The only runtime module that imports torch and the model package, lazily at construction, and
only `contrast_semask_train.model` (the deploy wrapper, load_checkpoint, precision helpers):
the spec is built here from the model's config with `EngineSpec.build`.

Precision: 'fp32', 'fp16' or 'bf16' (model/precision.py: half-precision network, LayerNorm,
softmax and L2 normalisation in float32, float32 propagation); 'auto' is fp16 on CUDA and fp32
on CPU. On CUDA the inputs are staged through pinned host buffers into fixed device tensors,
and with `cuda_graph=True` the whole graph is captured once and replayed per frame (no Python
or kernel-launch overhead; the input size is static anyway). `compile=True` runs
`torch.compile` first. Output arrays are reused by the next call (base.py).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from contrast_semask_ros.engine_spec import EngineSpec, EngineSpecError, file_sha256

from .base import Backend, BackendError

_logger = logging.getLogger(__name__)

PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16')


class TorchBackend(Backend):
    name = 'torch'

    def __init__(self, checkpoint: str | os.PathLike, height: int, width: int,
                 bank_size: int = 1024, device: str = 'auto', precision: str = 'auto',
                 cuda_graph: bool = False, compile: bool = False) -> None:
        try:
            import torch

            from contrast_semask_train.model import DeployWrapper, load_checkpoint
            from contrast_semask_train.model.precision import HALF_DTYPES, to_half_precision
        except ImportError as err:
            raise BackendError('the PyTorch backend needs torch and this package\'s training '
                               'extra: pip install .[train]') from err
        if precision not in PRECISIONS:
            raise BackendError(f'precision must be one of {PRECISIONS}, got {precision!r}')
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise BackendError('device cuda requested but torch sees no CUDA GPU '
                               f'(torch {torch.__version__}); use device cpu')
        if cuda_graph and self.device.type != 'cuda':
            raise BackendError('cuda_graph needs a CUDA device')
        if precision == 'auto':
            precision = 'fp16' if self.device.type == 'cuda' else 'fp32'
        self.precision = precision
        model, _ = load_checkpoint(checkpoint)
        wrapper = DeployWrapper(model)
        cfg = model.config
        try:
            spec = EngineSpec.build(
                height=height, width=width, bank_size=bank_size, embedding_dim=cfg.output_dim,
                stride=cfg.output_stride, mean=cfg.mean, std=cfg.std,
                class_names=cfg.class_names, checkpoint_sha256=file_sha256(checkpoint),
                precision=precision, model_config=cfg.to_dict())
        except EngineSpecError as err:
            raise BackendError(f'{checkpoint}: {err}') from err
        super().__init__(spec)
        if wrapper.output_names[:len(self.spec.required_outputs)] != tuple(
                t.name for t in self.spec.required_outputs):
            raise BackendError(f'the deploy wrapper outputs {wrapper.output_names}, the spec '
                               f'{self.spec.output_names}: the model package and the runtime '
                               'disagree; install matching versions')
        if precision in HALF_DTYPES:
            to_half_precision(wrapper.model, HALF_DTYPES[precision])
        self.wrapper = wrapper.to(self.device)
        self._forward = torch.compile(self.wrapper) if compile else self.wrapper
        pin = self.device.type == 'cuda'
        # fixed device inputs in the spec's (= forward's) argument order (graph capture needs
        # fixed addresses) and host outputs
        self._inputs = {t.name: torch.zeros(t.shape, dtype=getattr(torch, t.dtype),
                                            device=self.device) for t in self.spec.inputs}
        self._host_out = [torch.zeros(t.shape, dtype=torch.float32, pin_memory=pin)
                          for t in self.spec.required_outputs]
        self._graph = None
        self._graph_out: tuple = ()
        if cuda_graph:
            self._capture()
        _logger.info('PyTorch %s backend on %s, %s%s%s', torch.__version__, self.device,
                     precision, ', CUDA graph' if cuda_graph else '',
                     ', torch.compile' if compile else '')

    def _capture(self) -> None:
        """Warm up on a side stream, then capture one forward into a CUDA graph."""
        torch = self.torch
        self._inputs['temperature'].fill_(0.1)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self._forward(*self._inputs.values())
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.inference_mode():
            self._graph_out = tuple(self._forward(*self._inputs.values()))

    def _run(self, feeds: dict[str, np.ndarray], embedding_out: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = self.torch
        if self.wrapper is None:
            raise BackendError('the PyTorch backend is closed')
        cuda = self.device.type == 'cuda'
        with torch.inference_mode():
            for name, tensor in self._inputs.items():
                tensor.copy_(torch.from_numpy(feeds[name]), non_blocking=cuda)
            if self._graph is not None:
                self._graph.replay()
                out = self._graph_out
            else:
                out = tuple(self._forward(*self._inputs.values()))
            # DeployOutputs starts with the required outputs, in the spec's order (checked above)
            hosts = list(self._host_out)
            if embedding_out is not None:  # straight into the caller's array (pageable)
                hosts[0] = torch.from_numpy(embedding_out)[None]
            for host, device_out in zip(hosts, out[:len(hosts)], strict=True):
                host.copy_(device_out, non_blocking=cuda)
            if cuda:
                torch.cuda.current_stream().synchronize()
        return tuple(h.numpy() for h in hosts)  # type: ignore[return-value]

    def close(self) -> None:
        self.wrapper = None
        self._forward = None
        self._graph = None
        self._graph_out = ()
