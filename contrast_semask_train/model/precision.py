"""Half-precision deployment: the network in fp16 (or bf16), its numerically fragile parts in fp32.

`to_half_precision(model)` casts a ContrastSemask in place for inference: convolutions, linear
layers, attention matmuls and BatchNorm run in half precision; every LayerNorm keeps float32
weights and computes in float32 (`Float32LayerNorm`); the attention softmaxes and the L2
normalisation compute in float32 by construction (`layers.softmax_fp32`, `layers.l2_normalize`).
This is the precision policy of the `--fp16` ONNX export (LayerNormalization, Softmax and
ReduceL2 in fp32: in fp16 they overflow or lose the normalisation, so TensorRT's own
guidance for strongly typed networks is to keep them in fp32) and of the PyTorch backend on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HALF_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}


class Float32LayerNorm(nn.LayerNorm):
    """A LayerNorm that computes in float32 with float32 weights and returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)
        return out.to(x.dtype)


def to_half_precision(model: nn.Module, dtype: torch.dtype = torch.float16) -> nn.Module:
    """Cast `model` to `dtype` in place, except its LayerNorms (float32). Returns `model`."""
    if dtype not in HALF_DTYPES.values():
        raise ValueError(f'dtype must be torch.float16 or torch.bfloat16, got {dtype}')
    norms = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if isinstance(child, nn.LayerNorm)]
    # reason: detach the norms while casting, so their weights never round-trip through fp16
    for parent, name, _ in norms:
        setattr(parent, name, nn.Identity())
    model.to(dtype)
    for parent, name, norm in norms:
        fp32 = Float32LayerNorm(norm.normalized_shape, norm.eps, norm.elementwise_affine,
                                device=next(norm.parameters(), torch.empty(0)).device)
        fp32.load_state_dict(norm.state_dict())
        setattr(parent, name, fp32)
    return model


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype most of `model` computes in (its first floating parameter outside LayerNorms)."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                return param.dtype
    return torch.float32
