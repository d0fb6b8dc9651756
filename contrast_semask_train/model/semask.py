"""SeMask semantic layer: one per backbone stage (Jain et al., "SeMask: Semantically Masked
Transformers", arXiv 2112.12782; github.com/Picsart-AI-Research/SeMask-Segmentation, MIT).

Exact semantics that pretrained weights depend on (docs/MODEL.md §1.5):
- attention logits are Q_s K_s^T with NO 1/sqrt(d) scaling;
- in windowed mode the zero padding tokens are NOT masked (their keys equal the k bias);
- the residual adds the LayerNorm'ed input: out = gamma * F + LN(x);
- the semantic prior map is Q_s (K channels), before the softmax.
Tensors are NLC / NHWC inside this module; the semantic map leaves as NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SemanticAttentionMode
from .layers import at_least_fp32, pad_hw, softmax_fp32, window_partition, window_reverse


class SemanticAttention(nn.Module):
    """Class-query attention over tokens. In: (B', N, C). Out: (B', N, C) and Q_s (B', N, K)."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp_cls_q = nn.Linear(dim, num_classes)
        self.mlp_cls_k = nn.Linear(dim, num_classes)
        self.mlp_v = nn.Linear(dim, dim)
        self.mlp_res = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.mlp_cls_q(y)  # B', N, K
        k = self.mlp_cls_k(y)  # B', N, K
        v = self.mlp_v(y)  # B', N, C
        # no 1/sqrt(d) (as SeMask), so the scores are large: computed in float32 in an fp16 network
        attn = softmax_fp32(at_least_fp32(q) @ at_least_fp32(k).transpose(-2, -1)).to(v.dtype)
        f = self.proj_drop(self.mlp_res(attn @ v))  # B', N, C
        return y + self.gamma * f, q


class SemanticLayer(nn.Module):
    """LayerNorm then SemanticAttention, windowed (7x7, unshifted, padding unmasked) or global.

    Parameter names (`norm1`, `class_injection.0.*`) match SeMask checkpoints in both modes.
    """

    def __init__(self, dim: int, num_classes: int, mode: SemanticAttentionMode,
                 window_size: int = 7, dropout: float = 0.1) -> None:
        super().__init__()
        if mode not in ('window', 'global'):
            raise ValueError(f"semantic attention mode must be 'window' or 'global', got {mode!r}")
        self.mode = mode
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim)
        self.class_injection = nn.ModuleList([SemanticAttention(dim, num_classes, dropout)])

    def forward(self, x: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, H*W, C) -> (out (B, H*W, C), semantic map (B, K, H, W))."""
        B, _, C = x.shape
        y = self.norm1(x)
        attention = self.class_injection[0]
        if self.mode == 'global':
            out, q = attention(y)  # B, N, C / B, N, K
            return out, q.transpose(1, 2).reshape(B, -1, H, W)
        w = self.window_size
        y = pad_hw(y.view(B, H, W, C), w)  # B, Hp, Wp, C (zeros after the LayerNorm)
        Hp, Wp = y.shape[1], y.shape[2]
        out, q = attention(window_partition(y, w))  # B*nW, w*w, C / B*nW, w*w, K
        out = window_reverse(out, w, Hp, Wp)[:, :H, :W, :].reshape(B, H * W, C)
        q = window_reverse(q, w, Hp, Wp)[:, :H, :W, :]  # B, H, W, K
        return out, q.permute(0, 3, 1, 2).contiguous()  # B, K, H, W

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}, window_size={self.window_size}'
