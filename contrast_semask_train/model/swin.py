"""Swin Transformer backbone with SeMask semantic layers, in SeMask/mmseg semantics.

Ported from the description in Liu et al., "Swin Transformer" (arXiv 2103.14030,
github.com/microsoft/Swin-Transformer, MIT) and the SeMask backbone
(github.com/Picsart-AI-Research/SeMask-Segmentation, MIT). Semantics that differ from timm and
matter for pretrained weights (docs/MODEL.md §1.2-1.4):
- pad to a window multiple *then* roll; the shift mask is built on the padded grid;
- every odd block shifts, even when the grid is smaller than the window (no window shrinking);
- PatchMerging concatenates (even,even), (odd,even), (even,odd), (odd,odd).
Attention is an explicit matmul-softmax (SDPA breaks the dynamo ONNX exporter).
Internals are NLC/NHWC; stage outputs are NCHW.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import SemanticAttentionMode
from .layers import DropPath, Mlp, pad_hw, softmax_fp32, window_partition, window_reverse
from .semask import SemanticLayer


class BackboneOutputs(NamedTuple):
    features: list[torch.Tensor]  # per stage (B, C_i, H/2^(i+2), W/2^(i+2)), after norm_i
    semantic: list[torch.Tensor]  # per stage (B, K, H_i, W_i): the semantic prior maps Q_s


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) int64 index into the (2w-1)^2 bias table: (dy + w-1)*(2w-1) + (dx + w-1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing='ij')).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # N, N, 2
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_attention_mask(Hp: int, Wp: int, window: int, shift: int,
                         device: torch.device | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask (nW, w*w, w*w) for shifted windows on a padded (Hp, Wp) grid.

    Each axis splits into bands [0, P-w), [P-w, P-s), [P-s, P); tokens of a window whose band
    labels differ get -100. Built arithmetically (no slice assignment, so no ScatterND in ONNX).
    """
    rows = torch.arange(Hp, device=device)
    cols = torch.arange(Wp, device=device)
    row_band = (rows >= Hp - window).long() + (rows >= Hp - shift).long()  # Hp
    col_band = (cols >= Wp - window).long() + (cols >= Wp - shift).long()  # Wp
    labels = (row_band[:, None] * 3 + col_band[None, :])[None, :, :, None]  # 1, Hp, Wp, 1
    labels = window_partition(labels, window).squeeze(-1)  # nW, w*w
    differ = labels[:, :, None] != labels[:, None, :]  # nW, w*w, w*w
    return differ.to(dtype) * -100.0


class PatchEmbed(nn.Module):
    """Pad to a multiple of the patch size, 4x4/4 conv, LayerNorm. (B,3,H,W) -> (B, h*w, C)."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        p = self.patch_size
        H, W = x.shape[-2:]
        x = F.pad(x, (0, (-W) % p, 0, (-H) % p))
        x = self.proj(x)  # B, C, h, w
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w  # B, h*w, C


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Persistent: SeMask checkpoints carry it; the converter checks it against this one.
        self.register_buffer('relative_position_index', relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) additive or None -> (B*nW, N, C)."""
        Bw, N, C = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(Bw, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each B*nW, heads, N, C/heads
        attn = (q * self.scale) @ k.transpose(-2, -1)  # B*nW, heads, N, N
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(N, N, heads).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(Bw // nW, nW, heads, N, N) + mask[None, :, None]
            attn = attn.view(Bw, heads, N, N)
        x = (softmax_fp32(attn) @ v).transpose(1, 2).reshape(Bw, N, C)  # B*nW, N, C
        return self.proj(x)


class SwinBlock(nn.Module):
    """Pre-norm Swin block: x + DropPath(W-MSA(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, H: int, W: int,
                shift_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H*W, C); shift_mask from `shift_attention_mask` on the padded grid."""
        B, L, C = x.shape
        w, s = self.window_size, self.shift_size
        y = pad_hw(self.norm1(x).view(B, H, W, C), w)  # B, Hp, Wp, C
        Hp, Wp = y.shape[1], y.shape[2]
        mask = None
        if s > 0:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
            mask = shift_mask
        y = self.attn(window_partition(y, w), mask)  # B*nW, w*w, C
        y = window_reverse(y, w, Hp, Wp)  # B, Hp, Wp, C
        if s > 0:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        y = y[:, :H, :W, :].reshape(B, L, C)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 token merge: (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C). Odd sizes are zero-padded."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, int, int]:
        B, _, C = x.shape
        x = pad_hw(x.view(B, H, W, C), 2)  # B, H+H%2, W+W%2, C
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)  # B, H/2, W/2, 4C  (SeMask/Swin channel order)
        h, w = x.shape[1], x.shape[2]
        return self.reduction(self.norm(x.view(B, h * w, 4 * C))), h, w


class SwinStage(nn.Module):
    """Swin blocks, then the SeMask semantic layer, then (except the last stage) PatchMerging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int,
                 num_classes: int, semantic_mode: SemanticAttentionMode,
                 semantic_window_size: int, semantic_dropout: float,
                 drop_path: list[float], mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 downsample: bool = True) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, window_size,
                      shift_size=0 if j % 2 == 0 else window_size // 2,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_path[j])
            for j in range(depth)])
        self.semantic_layer = SemanticLayer(dim, num_classes, semantic_mode,
                                            semantic_window_size, semantic_dropout)
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, H: int, W: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        """x: (B, H*W, C) -> (stage out (B, H*W, C), semantic map (B, K, H, W),
        next-stage tokens, next H, next W)."""
        w = self.window_size
        Hp, Wp = H + (-H) % w, W + (-W) % w
        mask = shift_attention_mask(Hp, Wp, w, self.shift_size, x.device, x.dtype)
        for block in self.blocks:
            x = block(x, H, W, mask)
        out, semantic = self.semantic_layer(x, H, W)
        if self.downsample is None:
            return out, semantic, out, H, W
        nxt, h, w_ = self.downsample(out, H, W)
        return out, semantic, nxt, h, w_


class SwinBackbone(nn.Module):
    """SeMask Swin: any input size; stage i outputs stride 2^(i+2) maps, ceil-divided."""

    def __init__(self, num_classes: int, embed_dim: int = 96,
                 depths: tuple[int, ...] = (2, 2, 18, 2),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24), window_size: int = 7,
                 patch_size: int = 4, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.3,
                 semantic_attention: tuple[SemanticAttentionMode, ...] = ('window',) * 4,
                 semantic_window_size: int = 7, semantic_dropout: float = 0.1) -> None:
        super().__init__()
        self.num_stages = len(depths)
        self.out_channels = tuple(embed_dim * 2 ** i for i in range(self.num_stages))
        self.reductions = tuple(patch_size * 2 ** i for i in range(self.num_stages))
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, dim) in enumerate(zip(depths, self.out_channels, strict=True)):
            start = sum(depths[:i])
            self.layers.append(SwinStage(
                dim, depth, num_heads[i], window_size, num_classes, semantic_attention[i],
                semantic_window_size, semantic_dropout, rates[start:start + depth],
                mlp_ratio, qkv_bias, downsample=i < self.num_stages - 1))
        for i, dim in enumerate(self.out_channels):
            self.add_module(f'norm{i}', nn.LayerNorm(dim))
        self.init_weights()

    def init_weights(self) -> None:
        """SeMask's effective init: every Linear trunc_normal(0.02)/0 (this overrides the semantic
        attention's own Kaiming/zero init, docs/MODEL.md §1.6), every LayerNorm 1/0, gamma 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay_keywords(self) -> tuple[str, ...]:
        """Name fragments the seed excludes from weight decay (mmcv custom_keys)."""
        return ('relative_position_bias_table', 'norm')

    def forward(self, x: torch.Tensor) -> BackboneOutputs:
        """x: (B, 3, H, W) normalised -> BackboneOutputs of num_stages NCHW maps each."""
        tokens, H, W = self.patch_embed(x)  # B, H/4*W/4, C0
        features, semantic = [], []
        for i, stage in enumerate(self.layers):
            out, sem, tokens, H_next, W_next = stage(tokens, H, W)
            out = getattr(self, f'norm{i}')(out)  # B, H*W, C_i
            features.append(out.view(out.shape[0], H, W, -1).permute(0, 3, 1, 2).contiguous())
            semantic.append(sem)
            H, W = H_next, W_next
        return BackboneOutputs(features, semantic)
