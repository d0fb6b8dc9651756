"""The encoder-decoder: SeMask Swin backbone + branch-FPN decode head -> ModelOutputs."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from .config import (
    NORMALIZATIONS,
    VARIANTS,
    HeadKind,
    ModelConfig,
    make_config,
    parse_semantic_attention,
)
from .heads import ContrastiveHead, VanillaHead
from .swin import BackboneOutputs, SwinBackbone


class ModelOutputs(NamedTuple):
    """All at stride 4: (B, ., ceil(H/4), ceil(W/4)) for an input of (B, 3, H, W)."""

    logits: torch.Tensor  # B, K segmentation logits
    embeddings: torch.Tensor  # B, D per-pixel embeddings, unit L2 norm over D
    sem_logits: torch.Tensor  # B, K aggregated semantic-prior logits


class ContrastSemask(nn.Module):
    """SeMask-FPN with a vanilla or contrastive head. Input: normalised (B, 3, H, W) float.

    Attribute names `backbone` and `decode_head` match mmseg, so SeMask checkpoints load 1:1.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = SwinBackbone(
            num_classes=config.num_classes, embed_dim=config.embed_dim, depths=config.depths,
            num_heads=config.num_heads, window_size=config.window_size,
            patch_size=config.patch_size, mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias,
            drop_path_rate=config.drop_path_rate, semantic_attention=config.semantic_attention,
            semantic_window_size=config.semantic_window_size,
            semantic_dropout=config.semantic_dropout)
        self.decode_head: VanillaHead | ContrastiveHead
        if config.head == 'vanilla':
            self.decode_head = VanillaHead(self.backbone.out_channels, config.num_classes,
                                           config.fpn_channels, config.head_dropout)
        else:
            self.decode_head = ContrastiveHead(self.backbone.out_channels, config.num_classes,
                                               config.fpn_channels, config.embedding_dim)
        assert self.decode_head.in_channels == self.backbone.out_channels

    def forward_features(self, images: torch.Tensor) -> BackboneOutputs:
        return self.backbone(images)

    def forward_head(self, features: BackboneOutputs) -> ModelOutputs:
        return ModelOutputs(*self.decode_head(features.features, features.semantic))

    def forward(self, images: torch.Tensor) -> ModelOutputs:
        """images: (B, 3, H, W) normalised with config.mean/std -> ModelOutputs at stride 4."""
        return self.forward_head(self.forward_features(images))


def build_model(variant: str, num_classes: int, head: HeadKind = 'contrastive',
                **overrides: Any) -> ContrastSemask:
    """Build a preset ('micro', 'tiny', 'small', 'base') with any ModelConfig field overridden.

    Example: `build_model('small', 150, 'vanilla', semantic_attention=ADE20K_SEMANTIC_ATTENTION)`
    is the published ADE20K SeMask-S FPN.
    """
    return ContrastSemask(make_config(variant, num_classes, head, **overrides))


def build_configured_model(variant: str, num_classes: int, head: HeadKind,
                           semantic_attention: str, normalization: str,
                           class_names: tuple[str, ...] = (), **overrides: Any) -> ContrastSemask:
    """build_model from the settings a user writes (config files and command lines): the
    semantic-attention spec string and the normalisation name are parsed here."""
    if variant not in VARIANTS:
        raise ValueError(f'variant must be one of {sorted(VARIANTS)}, got {variant!r}')
    if normalization not in NORMALIZATIONS:
        raise ValueError(f'normalization must be one of {sorted(NORMALIZATIONS)}, got '
                         f'{normalization!r}')
    attention = parse_semantic_attention(semantic_attention, VARIANTS[variant]['embed_dim'],
                                         num_classes)
    mean, std = NORMALIZATIONS[normalization]
    return build_model(variant, num_classes, head, semantic_attention=attention, mean=mean,
                       std=std, class_names=class_names, **overrides)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
