"""Model configuration: one frozen dataclass and a small table of presets.

The SeMask-T/S/B numbers follow the SeMask-FPN configs (Jain et al., arXiv 2112.12782,
github.com/Picsart-AI-Research/SeMask-Segmentation, MIT). `micro` is a CPU test variant with the
same structure (every stage has a shifted block) and a few hundred thousand parameters.
This module is torch-free so configs can be read and validated anywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

SemanticAttentionMode = Literal['window', 'global']
HeadKind = Literal['vanilla', 'contrastive']

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)
# The seed's YCOR input statistics, selectable as the named normalisation 'seed-ycor' that a
# checkpoint then carries in ModelConfig.mean/std (they stay here, not in data/ycor.py, because
# this package may not import data/ and build_configured_model resolves names from
# NORMALIZATIONS). Their std is the spread of per-image mean colours, not the pixel std, so
# inputs are ~3x larger than pretraining saw (docs/MODEL.md §6). Kept to reproduce the seed.
SEED_YCOR_MEAN = (109.6286, 114.4169, 108.3678)
SEED_YCOR_STD = (18.9286, 18.3765, 17.6692)

WINDOWED: tuple[SemanticAttentionMode, ...] = ('window', 'window', 'window', 'window')
# ADE20K SeMask-T/S checkpoints were trained with global semantic attention in stages 2-3.
ADE20K_SEMANTIC_ATTENTION: tuple[SemanticAttentionMode, ...] = (
    'window', 'window', 'global', 'global')


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved in every checkpoint and exported spec."""

    num_classes: int
    head: HeadKind = 'contrastive'
    # Swin backbone
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.3
    # SeMask semantic layers: one per stage, windowed or global attention, set per stage.
    semantic_attention: tuple[SemanticAttentionMode, ...] = WINDOWED
    semantic_window_size: int = 7
    semantic_dropout: float = 0.1
    # Semantic-FPN branch head
    fpn_channels: int = 256
    head_dropout: float = 0.1  # Dropout2d before conv_seg (vanilla head only, as in the seed)
    embedding_dim: int = 64  # contrastive projection output D
    # Input normalisation (RGB, 0-255 scale); travels with the model to export and runtime.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        problems = []
        if self.num_classes < 1:
            problems.append(f'num_classes must be >= 1, got {self.num_classes}')
        if self.head not in ('vanilla', 'contrastive'):
            problems.append(f"head must be 'vanilla' or 'contrastive', got {self.head!r}")
        num_stages = len(self.depths)
        for name in ('num_heads', 'semantic_attention'):
            if len(getattr(self, name)) != num_stages:
                problems.append(f'{name} needs one entry per stage ({num_stages}), '
                                f'got {getattr(self, name)!r}')
        for mode in self.semantic_attention:
            if mode not in ('window', 'global'):
                problems.append(f"semantic_attention entries must be 'window' or 'global', "
                                f'got {mode!r}')
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2 ** i) % heads:
                problems.append(f'stage {i}: width {self.embed_dim * 2 ** i} is not divisible '
                                f'by {heads} heads')
        if self.class_names and len(self.class_names) != self.num_classes:
            problems.append(f'class_names has {len(self.class_names)} names for '
                            f'{self.num_classes} classes')
        if problems:
            raise ValueError('invalid ModelConfig: ' + '; '.join(problems))

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2 ** i for i in range(self.num_stages))

    @property
    def output_stride(self) -> int:
        """Stride of logits, embeddings and semantic logits relative to the input."""
        return self.patch_size

    @property
    def output_dim(self) -> int:
        """Channels of the `embeddings` output (the FPN width for the vanilla head)."""
        return self.embedding_dim if self.head == 'contrastive' else self.fpn_channels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Rebuild from `to_dict()` output (lists become tuples); unknown keys raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'unknown ModelConfig keys {unknown}; known keys: {sorted(known)}')
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# Architecture presets. Only structural numbers live here; num_classes and head come from the
# caller. drop_path_rate follows the Swin configs (T 0.2, S/B 0.3).
VARIANTS: dict[str, dict[str, Any]] = {
    'micro': dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7,
                  drop_path_rate=0.1, fpn_channels=32, embedding_dim=16),
    'tiny': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                 drop_path_rate=0.2),
    'small': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7,
                  drop_path_rate=0.3),
    'base': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12,
                 drop_path_rate=0.3),
}


def seed_semantic_attention(embed_dim: int, num_classes: int,
                            num_stages: int = 4) -> tuple[SemanticAttentionMode, ...]:
    """The seed's hidden rule, made explicit: global attention in stages 2-3 iff
    embed_dim is 96 or 192 and K > 19; windowed everywhere otherwise.

    Use it to reproduce a published SeMask checkpoint (e.g. ADE20K SeMask-T/S, K=150).
    """
    if embed_dim in (96, 192) and num_classes > 19:
        return tuple('window' if i < 2 else 'global' for i in range(num_stages))
    return ('window',) * num_stages


def parse_semantic_attention(text: str, embed_dim: int, num_classes: int,
                             num_stages: int = 4) -> tuple[SemanticAttentionMode, ...]:
    """'window' (every stage; what the seed uses on YCOR), 'ade20k' (global in stages 2-3,
    reproduces ADE20K SeMask-T/S), 'seed' (the seed's hidden rule) or one comma-separated
    'window'/'global' entry per stage."""
    if text == 'window':
        return ('window',) * num_stages
    if text == 'ade20k':
        return ADE20K_SEMANTIC_ATTENTION
    if text == 'seed':
        return seed_semantic_attention(embed_dim, num_classes, num_stages)
    modes = tuple(m.strip() for m in text.split(','))
    if len(modes) != num_stages or set(modes) - {'window', 'global'}:
        raise ValueError(
            f"semantic attention must be 'window', 'ade20k', 'seed' or {num_stages} "
            f"comma-separated 'window'/'global' entries, got {text!r}")
    return modes  # type: ignore[return-value]


# Input normalisations selectable by name (RGB, 0-255 scale).
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    'imagenet': (IMAGENET_MEAN, IMAGENET_STD),
    'seed-ycor': (SEED_YCOR_MEAN, SEED_YCOR_STD),
}


def make_config(variant: str, num_classes: int, head: HeadKind = 'contrastive',
                **overrides: Any) -> ModelConfig:
    """Preset `variant` with `num_classes`, `head` and any ModelConfig field overridden."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown model variant {variant!r}; choose one of {sorted(VARIANTS)}')
    values = {**VARIANTS[variant], 'num_classes': num_classes, 'head': head, **overrides}
    return ModelConfig(**values)
