"""Small building blocks shared by the backbone and the head (torch only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The smallest epsilon this package uses in a denominator guard: a normal float16 number
# (float16's smallest normal is 6.1e-5), so the guard survives wherever the graph runs in
# float16 (TensorRT's FP16 builder flag may run any float32 layer in float16; 1e-12 or 1e-30
# round to 0 there, and 0 / 0 is NaN).
FP16_SAFE_EPS = 1e-4


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016); identity at eval time."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, names `fc1`/`fc2` as in Swin checkpoints."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvBNReLU(nn.Module):
    """3x3 conv (no bias) -> BatchNorm -> ReLU; submodule names `conv`/`bn` match mmcv's
    ConvModule so SeMask checkpoints load 1:1."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Upsample2x(nn.Module):
    """Parameter-free bilinear x2 upsampling (align_corners=False)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to `size`; no-op when it already has that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def pad_hw(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NHWC map on the bottom/right so H and W are multiples of `multiple`."""
    _, H, W, _ = x.shape
    pad_b, pad_r = (-H) % multiple, (-W) % multiple
    if pad_b == 0 and pad_r == 0:
        return x
    return F.pad(x, (0, 0, 0, pad_r, 0, pad_b))


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of `window` -> (B*nW, window*window, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)  # B*nW, w*w, C


def window_reverse(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B*nW, window*window, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)  # B, H, W, C


def l2_normalize(x: torch.Tensor, dim: int = 1, eps: float = FP16_SAFE_EPS) -> torch.Tensor:
    """Unit L2 norm along `dim` (channels for NCHW), returned in float32. The one normalisation
    used by the model outputs, the losses and the deploy wrapper. `eps` bounds the norm from
    below; its default survives float16 (a vector shorter than it is not normalised)."""
    # reason: float32 even in a half-precision network (a sum of D squares overflows fp16),
    # and the contrastive losses get float32 embeddings under autocast
    return F.normalize(at_least_fp32(x), p=2.0, dim=dim, eps=eps)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32 if it is half precision (fp16/bf16); float32 and float64 pass unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def softmax_fp32(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax computed in at least float32, returned in x's dtype: no cast for a float32
    network, the standard mixed-precision rule (fp16 exp overflows) for a half-precision one."""
    return at_least_fp32(x).softmax(dim=dim).to(x.dtype)
