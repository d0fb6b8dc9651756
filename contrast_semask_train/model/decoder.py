"""Semantic-FPN branch (Kirillov et al., "Panoptic FPN", arXiv 1901.02446) as used by SeMask-FPN.

There is no top-down FPN neck: each backbone map goes through its own scale head (3x3 conv-BN-ReLU
and x2 upsampling until stride 4) and the results are summed (docs/MODEL.md §2.1). The
parameter-free semantic-prior aggregation (§2.2) brings the per-stage SeMask maps to stride 4 the
same way.
Module indices inside `scale_heads` match the SeMask checkpoint keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConvBNReLU, Upsample2x, resize_to


def _scale_head(in_channels: int, channels: int, num_upsamples: int) -> nn.Sequential:
    """Stage at stride 4*2^n: n x (CBR, Up2), or one CBR for n = 0. Conv indices 0, 2, 4."""
    layers: list[nn.Module] = []
    for k in range(max(1, num_upsamples)):
        layers.append(ConvBNReLU(in_channels if k == 0 else channels, channels))
        if num_upsamples > 0:
            layers.append(Upsample2x())
    return nn.Sequential(*layers)


class BranchFPN(nn.Module):
    """Fuse multi-scale maps into one stride-4 map; aggregate semantic maps to stride 4."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.channels = channels
        self.scale_heads = nn.ModuleList(
            [_scale_head(c, channels, i) for i, c in enumerate(self.in_channels)])
        self.upsample = Upsample2x()
        self._init_fpn()

    def _init_fpn(self) -> None:
        """mmcv ConvModule init: Kaiming-normal (fan_out, relu) convs, BN 1/0."""
        for m in self.scale_heads.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def fuse(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-stage (B, C_i, h_i, w_i) -> (B, channels, h_0, w_0)."""
        fused = self.scale_heads[0](features[0])
        size = tuple(fused.shape[-2:])
        for head, feature in zip(self.scale_heads[1:], features[1:], strict=True):
            # reason: odd sizes (e.g. 241 -> 121 -> 242) need a final resize to stride 4
            fused = fused + resize_to(head(feature), size)
        return fused

    def aggregate_semantic(self, semantic: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-stage semantic maps (B, K, h_i, w_i) -> summed prior logits (B, K, h_0, w_0)."""
        prior = semantic[0]
        size = tuple(prior.shape[-2:])
        for i, sem in enumerate(semantic[1:], start=1):
            for _ in range(i):
                sem = self.upsample(sem)
            prior = prior + resize_to(sem, size)
        return prior
