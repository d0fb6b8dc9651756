"""The seed's supervised pixel-contrastive bank loss (docs/MODEL.md §3.3). Imports torch only.

This is NOT ReCo: it is the SupCon-form loss that the seed adapted from ContrastiveSeg, with
random pixel sampling, a small FIFO memory bank and per-class weights. The real ReCo loss is in
`reco.py` (§3.5).

The seed materialised about ten dense n x n matrices (n = 16384, ~1 GB each in fp32) and built the
off-diagonal mask on the CPU. Here no n x n tensor and no mask exists: the contrast set is sorted
by class, so for the rows of class y the positives are one contiguous block of columns and the
negatives are the rest. Per block of at most `chunk_size` rows of one class, the
negative term is one fused log-sum-exp over the negative columns, and the log-probabilities are
only formed for the n_y positive columns (about n/K instead of n). Each anchor block is
recomputed in backward (activation checkpointing), so the extra memory is a few
(chunk_size x n) blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .ce import nearest_labels

# Hard-coded in the seed for the 8 YCOR classes, in the order of docs/MODEL.md §5.3 (§3.3 step 9).
# Their provenance cannot be reproduced; treat them as a tunable constant.
SEED_YCOR_CLASS_WEIGHTS = (0.0713, 0.2460, 0.2252, 0.7276, 0.2937, 0.2234, 1.0000, 0.3800)


@dataclass(frozen=True)
class PixelContrastConfig:
    """Knobs of the seed's bank loss; the defaults are the seed's constants (§3.4)."""

    temperature: float = 0.07  # tau in S = X X^T / tau
    num_samples: int = 4096  # size of each random subset R and A per iteration
    bank_depth: int = 3  # iterations of R samples kept (FIFO), the current one included
    class_weights: tuple[float, ...] | None = None  # w[y]; None = all ones; len must be K
    mean_over_bank_rows: bool = True  # seed: the mean includes gradient-free bank rows
    chunk_size: int = 1024  # rows per block of the fused computation
    ignore_index: int = 255

    def __post_init__(self) -> None:
        if not self.temperature > 0.0:
            raise ValueError(f'temperature must be > 0, got {self.temperature}')
        for name in ('num_samples', 'bank_depth', 'chunk_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.class_weights is not None:
            weights = tuple(float(w) for w in self.class_weights)
            if any(not math.isfinite(w) or w < 0.0 for w in weights):
                raise ValueError(f'class_weights must be finite and >= 0, got {weights}')
            object.__setattr__(self, 'class_weights', weights)


def _class_block(rows: torch.Tensor, row_offset: int, positives: torch.Tensor,
                 negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """sum_i sum_{j in P_i} log p_ij for a block of rows that all belong to one class y.

    Args:
        rows: (c, D) rows of class y; row r is column `row_offset + r` of `positives`.
        positives: (n_y, D) every column of class y (the row itself included).
        negatives: (n - n_y, D) every other column (at least one).

    log p_ij = S_ij - log(exp(S_ij) + sum_k N_ik exp(S_ik)) = S_ij - logaddexp(S_ij, eta_i),
    eta_i = logsumexp_k S_ik over the negatives. It is invariant to a per-row shift of S, so the
    seed's subtraction of the detached row max (§3.3 step 6) changes neither value nor gradient;
    the log-sum-exp forms are its numerically stable equivalent.
    """
    scaled = rows / temperature  # c, D; scaling here is cheaper than on the (c, n) products
    eta = torch.logsumexp(scaled @ negatives.T, dim=1)  # c
    sims = scaled @ positives.T  # c, n_y
    log_p = sims - torch.logaddexp(sims, eta[:, None])  # c, n_y
    local = torch.arange(rows.shape[0], device=rows.device)  # c
    return log_p.sum() - log_p[local, row_offset + local].sum()  # drop j == i


def pixel_contrast_from_samples(anchors: torch.Tensor, anchor_labels: torch.Tensor,
                                bank_feats: torch.Tensor, bank_labels: torch.Tensor,
                                temperature: float, class_weights: torch.Tensor | None = None,
                                mean_over_bank_rows: bool = True, chunk_size: int = 1024,
                                *, checkpoint_blocks: bool = True) -> torch.Tensor:
    """The math of docs/MODEL.md §3.3 steps 5-10 on already sampled pixels, without n x n tensors.

    Args:
        anchors: (m, D) unit-norm embeddings Z[A]; the only rows that carry gradient.
        anchor_labels: (m,) int64 class ids.
        bank_feats: (nb, D) gradient-free bank rows (this iteration's R already appended).
        bank_labels: (nb,) int64.
        temperature: tau.
        class_weights: (K,) per-class w, or None for all ones.
        mean_over_bank_rows: True (seed, §3.3 step 10): mean of l_i over every row of
            X = [bank; anchors] that has a positive; False: over anchor rows with a positive.
        chunk_size: rows per block.
        checkpoint_blocks: recompute each anchor block in backward; False lets autograd keep
            about one (chunk_size, n) block per anchor block instead.

    Returns:
        0-dim L_con (without the 0.3 loss weight). It is a zero with a grad_fn when no counted
        row has a positive. Computed in at least float32.
    """
    dtype = torch.promote_types(anchors.dtype, torch.float32)
    anchors = anchors.to(dtype)  # m, D
    bank_feats = bank_feats.detach().to(dtype)  # nb, D
    nb = bank_feats.shape[0]
    labels = torch.cat([bank_labels, anchor_labels]).long()  # n, labels of X = [bank; anchors]
    n = labels.numel()
    # Sort X by class (stable: within a class the bank rows come first, then the anchors).
    order = torch.argsort(labels, stable=True)  # n
    columns = torch.cat([bank_feats, anchors.detach()])[order]  # n, D; never carry gradient
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)  # P, P
    bank_counts = torch.zeros_like(counts).index_add_(
        0, torch.repeat_interleave(torch.arange(classes.numel(), device=counts.device), counts),
        (order < nb).long())  # P, bank rows per class
    weights = (class_weights.to(device=columns.device, dtype=dtype)[classes]
               if class_weights is not None else columns.new_ones(classes.shape))  # P
    # l_i = -w[y_i] / |P_i| * sum_{j in P_i} log p_ij with |P_i| = n_y - 1 for every row of y.
    coeff = torch.where(counts > 1, weights / (counts - 1).clamp_min(1), 0.0)  # P
    with_pos = counts > 1  # P, classes whose rows have a positive
    num_rows = (counts if mean_over_bank_rows else counts - bank_counts)[with_pos].sum()

    total = anchors.sum() * 0.0  # keeps a grad_fn when nothing is counted
    bank_total = columns.new_zeros(())  # gradient-free part; added once, outside no_grad
    start = 0
    for p, (n_y, b_y) in enumerate(zip(counts.tolist(), bank_counts.tolist(), strict=True)):
        stop, class_start = start + n_y, start
        start = stop
        if n_y < 2 or n_y == n:  # no positive, or no negative (then every log p_ij = 0)
            continue
        positives = columns[class_start:stop]  # n_y, D
        negatives = torch.cat([columns[:class_start], columns[stop:]])  # n - n_y, D
        if mean_over_bank_rows:
            with torch.no_grad():  # bank rows add to the value only
                for r0 in range(0, b_y, chunk_size):
                    r1 = min(r0 + chunk_size, b_y)
                    bank_total -= coeff[p] * _class_block(
                        positives[r0:r1], r0, positives, negatives, temperature)
        anchor_index = order[class_start + b_y:stop] - nb  # anchors of class y
        for r0 in range(0, n_y - b_y, chunk_size):
            r1 = min(r0 + chunk_size, n_y - b_y)
            args = (anchors[anchor_index[r0:r1]], b_y + r0, positives, negatives, temperature)
            if checkpoint_blocks and anchors.requires_grad and torch.is_grad_enabled():
                block = checkpoint(_class_block, *args, use_reentrant=False)
            else:
                block = _class_block(*args)
            total = total - coeff[p] * block
    return (total + bank_total) / num_rows.clamp_min(1)


class PixelContrastiveLoss(nn.Module):
    """The seed's supervised pixel-contrastive bank loss L_con (docs/MODEL.md §3.3, not ReCo).

    Per call (training mode): nearest-resize the labels to the embeddings' grid, draw two
    independent random subsets R and A of the valid pixels (each min(num_samples, |V|), without
    replacement), append (Z[R] detached, y[R]) to the FIFO bank, then contrast the anchors Z[A]
    against X = [bank; Z[A]].

    Bank order: §3.3 step 4 appends R and drops the oldest entry before step 5 builds X, so
    the bank used in step 5 already holds this iteration's R. That is the only order consistent
    with the seed's "n = 8192 at iteration 1, 12288 at iteration 2, 16384 afterwards" (one R of
    4096 plus A of 4096 at iteration 1), so it is what we do.

    Differences from the seed, all deliberate: the bank is saved in `state_dict()` through
    `get_extra_state` (the seed lost it on resume; §3.3 step 4); a call with no valid pixel
    returns a zero with a grad_fn and leaves the bank untouched; in eval mode the bank is used
    but not updated (validation must not shift the training bank). Under DDP each rank keeps its
    own bank, as in the seed.
    """

    def __init__(self, num_classes: int, config: PixelContrastConfig | None = None) -> None:
        super().__init__()
        config = config or PixelContrastConfig()
        self.num_classes = num_classes
        self.config = config
        self.class_weights: torch.Tensor | None
        if config.class_weights is None:
            self.class_weights = None
        else:
            if len(config.class_weights) != num_classes:
                raise ValueError(f'class_weights has {len(config.class_weights)} entries but '
                                 f'num_classes is {num_classes}; give one weight per class')
            self.register_buffer('class_weights', torch.tensor(config.class_weights),
                                 persistent=False)
        self._bank: list[tuple[torch.Tensor, torch.Tensor]] = []  # (features (r, D), labels (r,))

    @property
    def bank_rows(self) -> int:
        return sum(labels.numel() for _, labels in self._bank)

    @property
    def bank_entries(self) -> int:
        return len(self._bank)

    def reset_bank(self) -> None:
        self._bank = []

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings (B, D, h, w) unit L2 norm over D; labels (B, H, W) -> 0-dim L_con."""
        B, D, h, w = embeddings.shape
        device = embeddings.device
        small = nearest_labels(labels.to(device), (h, w)).reshape(-1)  # B*h*w
        feats = embeddings.permute(0, 2, 3, 1).reshape(-1, D)  # B*h*w, D
        valid = torch.nonzero(small != self.config.ignore_index).squeeze(1)  # V
        num_valid = valid.numel()
        if num_valid == 0:
            return embeddings.sum() * 0.0
        k = min(self.config.num_samples, num_valid)
        chosen_r = valid[torch.randperm(num_valid, device=device)[:k]]  # k
        chosen_a = valid[torch.randperm(num_valid, device=device)[:k]]  # k, independent of R

        bank_dtype = torch.promote_types(embeddings.dtype, torch.float32)
        entry = (feats[chosen_r].detach().to(bank_dtype), small[chosen_r])
        bank = [(f.to(device=device, dtype=bank_dtype), y.to(device)) for f, y in self._bank]
        for f, _ in bank:
            if f.shape[1] != D:
                raise ValueError(f'bank features have dim {f.shape[1]}, embeddings have {D}; '
                                 'call reset_bank() after changing the embedding size')
        bank = (bank + [entry])[-self.config.bank_depth:]  # step 4: append R, drop the oldest
        if self.training:
            self._bank = bank
        bank_feats = torch.cat([f for f, _ in bank])  # nb, D
        bank_labels = torch.cat([y for _, y in bank])  # nb
        return pixel_contrast_from_samples(
            feats[chosen_a], small[chosen_a], bank_feats, bank_labels,
            temperature=self.config.temperature, class_weights=self.class_weights,
            mean_over_bank_rows=self.config.mean_over_bank_rows,
            chunk_size=self.config.chunk_size)

    def get_extra_state(self) -> dict[str, Any]:
        """The bank, on the CPU, so `state_dict()` carries it for an exact resume."""
        return {
            'bank_features': [f.detach().cpu() for f, _ in self._bank],
            'bank_labels': [y.detach().cpu() for _, y in self._bank],
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore the bank; tensors move to the embeddings' device on the next forward."""
        if not isinstance(state, dict) or set(state) != {'bank_features', 'bank_labels'}:
            raise ValueError("extra state must be a dict with keys 'bank_features' and "
                             f"'bank_labels', got {type(state).__name__}")
        feats, labels = list(state['bank_features']), list(state['bank_labels'])
        if len(feats) != len(labels) or any(
                f.ndim != 2 or y.ndim != 1 or f.shape[0] != y.shape[0]
                for f, y in zip(feats, labels, strict=True)):
            raise ValueError('bank_features (r, D) and bank_labels (r,) must pair up')
        bank = [(f.detach(), y.long()) for f, y in zip(feats, labels, strict=True)]
        self._bank = bank[-self.config.bank_depth:]

    def extra_repr(self) -> str:
        c = self.config
        return (f'num_classes={self.num_classes}, temperature={c.temperature}, '
                f'num_samples={c.num_samples}, bank_depth={c.bank_depth}, '
                f'weighted={c.class_weights is not None}, '
                f'mean_over_bank_rows={c.mean_over_bank_rows}')
