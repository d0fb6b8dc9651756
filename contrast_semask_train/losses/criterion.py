"""The composite training loss: CE + semantic prior CE + an optional contrastive term
(docs/MODEL.md §3.4). Torch only; the model outputs are duck-typed, not imported."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import torch
from torch import nn

from .ce import CEReduction, seg_cross_entropy
from .contrastive import PixelContrastConfig, PixelContrastiveLoss
from .reco import RecoConfig, reco_loss

ContrastiveKind = Literal['none', 'seed', 'reco']


class SegmentationOutputs(Protocol):
    """What the criterion reads; `contrast_semask_train.model.ModelOutputs` fits."""

    @property
    def logits(self) -> torch.Tensor: ...  # B, K, h, w

    @property
    def embeddings(self) -> torch.Tensor: ...  # B, D, h, w, unit L2 norm over D

    @property
    def sem_logits(self) -> torch.Tensor: ...  # B, K, h, w


class LossTerms(NamedTuple):
    """All 0-dim. `sem_ce` is the unweighted CE of the semantic prior; `contrastive` is the
    weighted contribution (0 when disabled). total = ce + sem_weight*sem_ce + contrastive."""

    total: torch.Tensor
    ce: torch.Tensor
    sem_ce: torch.Tensor
    contrastive: torch.Tensor


@dataclass(frozen=True)
class LossConfig:
    """Loss recipe; defaults are the seed's vanilla variant (§3.4). For the seed's contrastive
    variant set contrastive='seed' (weight 0.3) and seed.class_weights=SEED_YCOR_CLASS_WEIGHTS."""

    ce_reduction: CEReduction = 'mmseg'  # 'mmseg' = seed (§3.1); 'valid'
    sem_weight: float = 0.4  # cate_w, weight of the semantic-prior CE (§3.2)
    contrastive: ContrastiveKind = 'none'  # 'seed' = §3.3 bank loss, 'reco' = §3.5
    contrastive_weight: float = 0.3  # seed: 0.3; ReCo's own recipe uses 1.0
    seed: PixelContrastConfig = field(default_factory=PixelContrastConfig)
    reco: RecoConfig = field(default_factory=RecoConfig)
    ignore_index: int = 255

    def __post_init__(self) -> None:
        if self.ce_reduction not in typing.get_args(CEReduction):
            raise ValueError(f'ce_reduction must be one of {typing.get_args(CEReduction)}, '
                             f'got {self.ce_reduction!r}')
        if self.contrastive not in typing.get_args(ContrastiveKind):
            raise ValueError(f'contrastive must be one of {typing.get_args(ContrastiveKind)}, '
                             f'got {self.contrastive!r}')
        for name in ('sem_weight', 'contrastive_weight'):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if not self.seed.ignore_index == self.reco.ignore_index == self.ignore_index:
            raise ValueError(f'ignore_index differs: {self.ignore_index} (loss), '
                             f'{self.seed.ignore_index} (seed), {self.reco.ignore_index} (reco)')

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LossConfig:
        """Build from plain (YAML) dicts with strict keys and types. A top-level ignore_index
        is passed down to `seed` and `reco` unless they set their own."""
        if not isinstance(data, Mapping):
            raise ValueError(f'loss: expected a mapping, got {type(data).__name__}')
        data = dict(data)
        if 'ignore_index' in data:
            for key in ('seed', 'reco'):
                sub = data.get(key, {})
                if isinstance(sub, Mapping) and 'ignore_index' not in sub:
                    data[key] = {**sub, 'ignore_index': data['ignore_index']}
        return _build(cls, data, 'loss')


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, checking keys and value types."""
    if not isinstance(data, Mapping):
        raise ValueError(f'{where}: expected a mapping, got {type(data).__name__} {data!r}')
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(key) for key in data if key not in names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"valid keys: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(hints[key], value, f'{where}.{key}') for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise ValueError(f'{where}: {error}') from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted for floats, lists for
    tuples, mappings for nested dataclasses."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return value if isinstance(value, tp) else _build(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise ValueError(f'{where}: expected one of {list(args)}, got {value!r}')
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(inner, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f'{where}: expected a list, got {type(value).__name__} {value!r}')
        return tuple(_coerce(args[0], item, f'{where}[{i}]') for i, item in enumerate(value))
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f'{where}: unsupported annotation {tp!r}')
    if not ok:
        raise ValueError(f'{where}: expected {tp.__name__}, got {type(value).__name__} '
                         f'{value!r}')
    return value


class Criterion(nn.Module):
    """total = CE(logits) + sem_weight*CE(sem_logits) + contrastive_weight*L (docs/MODEL.md §3.4).

    L is the seed's bank loss (§3.3) or ReCo (§3.5, with softmax(logits) detached as the
    probabilities). The bank loss is the submodule `seed_loss`, so `state_dict()` carries its bank
    for an exact resume; it exists only when contrastive='seed'.
    """

    def __init__(self, num_classes: int, config: LossConfig | None = None) -> None:
        super().__init__()
        config = config or LossConfig()
        self.num_classes = num_classes
        self.config = config
        self.seed_loss: PixelContrastiveLoss | None = (
            PixelContrastiveLoss(num_classes, config.seed) if config.contrastive == 'seed'
            else None)

    def forward(self, outputs: SegmentationOutputs, labels: torch.Tensor) -> LossTerms:
        """outputs: logits/sem_logits (B, K, h, w), embeddings (B, D, h, w); labels (B, H, W)."""
        c = self.config
        if outputs.logits.shape[1] != self.num_classes:
            raise ValueError(f'logits have {outputs.logits.shape[1]} classes, the criterion '
                             f'was built for {self.num_classes}')
        ce = seg_cross_entropy(outputs.logits, labels, c.ignore_index, c.ce_reduction)
        sem_ce = seg_cross_entropy(outputs.sem_logits, labels, c.ignore_index, c.ce_reduction)
        if c.contrastive == 'seed':
            assert self.seed_loss is not None
            contrastive = c.contrastive_weight * self.seed_loss(outputs.embeddings, labels)
        elif c.contrastive == 'reco':
            probs = torch.softmax(outputs.logits.detach().float(), dim=1)  # B, K, h, w
            contrastive = c.contrastive_weight * reco_loss(outputs.embeddings, labels, probs,
                                                           c.reco)
        else:
            contrastive = ce.new_zeros(())
        total = ce + c.sem_weight * sem_ce + contrastive
        return LossTerms(total, ce, sem_ce, contrastive)

    def extra_repr(self) -> str:
        c = self.config
        return (f'num_classes={self.num_classes}, ce_reduction={c.ce_reduction!r}, '
                f'sem_weight={c.sem_weight}, contrastive={c.contrastive!r}, '
                f'contrastive_weight={c.contrastive_weight}')
