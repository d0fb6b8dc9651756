"""Decode heads on top of the branch FPN: the vanilla SeMask-FPN head and the seed's contrastive
head (github.com/GerardMaggiolino/SeMask-FPN-Contrast, docs/MODEL.md §2).

Both return HeadOutputs at stride 4. `embeddings` are always L2-normalised over channels by
`layers.l2_normalize`: the contrastive projection Z (D = 64) or, for the vanilla head, the
fused 256-d FPN feature (the seed's `inference_features`, normalised here so both are comparable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .decoder import BranchFPN
from .layers import l2_normalize


class HeadOutputs(NamedTuple):
    logits: torch.Tensor  # B, K, H/4, W/4 segmentation logits
    embeddings: torch.Tensor  # B, D, H/4, W/4 unit L2 norm over D
    sem_logits: torch.Tensor  # B, K, H/4, W/4 aggregated SeMask prior (feeds loss_cate)


class VanillaHead(BranchFPN):
    """FPN -> Dropout2d -> 1x1 `conv_seg` (init N(0, 0.01), bias 0, as mmseg)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__(in_channels, channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, features: Sequence[torch.Tensor],
                semantic: Sequence[torch.Tensor]) -> HeadOutputs:
        fused = self.fuse(features)  # B, 256, H/4, W/4
        logits = self.conv_seg(self.dropout(fused))  # B, K, H/4, W/4
        return HeadOutputs(logits, l2_normalize(fused), self.aggregate_semantic(semantic))


class ContrastiveHead(BranchFPN):
    """FPN -> 1x1 `feature_head` G -> class logits and a 2-layer projection Z to D dims.

    New layers keep PyTorch's default conv init (Kaiming-uniform, a=sqrt(5)): the seed's choice,
    kept deliberately so that results are comparable with it.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 256,
                 embedding_dim: int = 64) -> None:
        super().__init__(in_channels, channels)
        self.feature_head = nn.Conv2d(channels, channels, 1)
        self.projection_head_class = nn.Sequential(nn.Conv2d(channels, num_classes, 1))
        self.projection_head_cluster = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, embedding_dim, 1))

    def forward(self, features: Sequence[torch.Tensor],
                semantic: Sequence[torch.Tensor]) -> HeadOutputs:
        g = self.feature_head(self.fuse(features))  # B, 256, H/4, W/4
        logits = self.projection_head_class(g)  # B, K, H/4, W/4
        z = self.projection_head_cluster(g)  # B, D, H/4, W/4
        return HeadOutputs(logits, l2_normalize(z), self.aggregate_semantic(semantic))
