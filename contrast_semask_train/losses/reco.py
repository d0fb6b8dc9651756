"""The real ReCo loss (Liu et al., ICLR 2022), supervised mode (docs/MODEL.md §3.5). Torch only.

Kept apart from the seed's bank loss (`contrastive.py`), which the seed's README mislabels as
ReCo (docs/MODEL.md §3.3). Sampling (`sample_reco`) is separate from the math
(`reco_from_samples`) so the two can be tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .ce import nearest_labels


@dataclass(frozen=True)
class RecoConfig:
    """ReCo defaults from its semi-supervised scripts (docs/MODEL.md §3.5)."""

    temperature: float = 0.5  # tau for both the logits and the negative-class distribution
    num_queries: int = 256  # hard anchors per class, drawn with replacement
    num_negatives: int = 512  # negative keys per anchor
    strong_threshold: float = 0.97  # a pixel is a hard query when prob of its class < this
    ignore_index: int = 255

    def __post_init__(self) -> None:
        if not self.temperature > 0.0:
            raise ValueError(f'temperature must be > 0, got {self.temperature}')
        for name in ('num_queries', 'num_negatives'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')


class RecoSamples(NamedTuple):
    """Sampled indices for one ReCo evaluation; indices point into the flat (N, D) features."""

    num_present: int  # classes present among valid pixels (the divisor, §3.5 step 4)
    prototypes: torch.Tensor  # P, D class means of the present classes (detached)
    query_classes: torch.Tensor  # C' positions into `prototypes` of classes with hard queries
    queries: torch.Tensor  # C', Q anchor pixel indices (hard pixels of that class)
    negatives: torch.Tensor  # C', Q, M negative key pixel indices (other present classes)


def sample_reco(feats: torch.Tensor, labels: torch.Tensor, label_probs: torch.Tensor,
                config: RecoConfig) -> RecoSamples:
    """Prototypes, hard queries and negative keys (docs/MODEL.md §3.5 steps 1-3), without grad.

    Args:
        feats: (N, D) per-pixel representation (flattened over B, h, w).
        labels: (N,) int64 class ids or `ignore_index`.
        label_probs: (N,) predicted probability of each pixel's own label (ignored pixels: any).

    Randomness comes from torch's global generator on the features' device.
    """
    device = feats.device
    D = feats.shape[1]
    Q, M = config.num_queries, config.num_negatives
    with torch.no_grad():
        feats = feats.detach().to(torch.promote_types(feats.dtype, torch.float32))
        valid_idx = torch.nonzero(labels != config.ignore_index).squeeze(1)  # V
        valid_labels = labels[valid_idx]  # V
        present, position, counts = torch.unique(
            valid_labels, return_inverse=True, return_counts=True)  # P; V; P
        P = present.numel()
        empty = RecoSamples(P, feats.new_zeros(P, D), torch.zeros(0, dtype=torch.long,
                                                                  device=device),
                            torch.zeros(0, Q, dtype=torch.long, device=device),
                            torch.zeros(0, Q, M, dtype=torch.long, device=device))
        if P <= 1:
            return empty
        prototypes = feats.new_zeros(P, D).index_add_(0, position, feats[valid_idx])
        prototypes = prototypes / counts[:, None]  # P, D
        unit = F.normalize(prototypes, dim=1)
        proto_sim = unit @ unit.T  # P, P cosine similarity between prototypes
        # Valid pixels grouped by class: class p occupies by_class[starts[p]:starts[p]+counts[p]].
        by_class = valid_idx[torch.argsort(position, stable=True)]  # V
        starts = torch.cumsum(counts, 0) - counts  # P
        hard = label_probs[valid_idx] < config.strong_threshold  # V

        query_classes, queries, negatives = [], [], []
        for p in range(P):
            pool = valid_idx[(position == p) & hard]  # hard queries of class p
            if pool.numel() == 0:  # still counted in the divisor (§3.5 step 4)
                continue
            queries.append(pool[torch.randint(pool.numel(), (Q,), device=device)])  # Q
            others = torch.cat([torch.arange(p, device=device),
                                torch.arange(p + 1, P, device=device)])  # P-1
            class_probs = torch.softmax(proto_sim[p, others] / config.temperature, dim=0)
            drawn = others[torch.multinomial(class_probs, Q * M, replacement=True)].view(Q, M)
            offset = (torch.rand(Q, M, device=device) * counts[drawn]).long()
            offset = torch.minimum(offset, counts[drawn] - 1)  # guard float rounding
            negatives.append(by_class[starts[drawn] + offset])  # Q, M
            query_classes.append(p)
        if not query_classes:
            return empty._replace(prototypes=prototypes)
        return RecoSamples(P, prototypes, torch.tensor(query_classes, device=device),
                           torch.stack(queries), torch.stack(negatives))


def reco_from_samples(feats: torch.Tensor, samples: RecoSamples,
                      temperature: float) -> torch.Tensor:
    """The ReCo value for given samples (docs/MODEL.md §3.5 steps 3-4).

    For each sampled class: logits = cos(anchor, [mu_c; negatives]) / tau, CE with target 0
    averaged over the queries; the sum over classes is divided by the number of present classes.
    Only the anchors carry gradient: mu_c and the negative keys are detached, as in ReCo where
    they are built under no_grad. Returns a 0-dim tensor with a grad_fn even when it is 0.
    """
    zero = feats.sum() * 0.0
    if samples.num_present <= 1 or samples.query_classes.numel() == 0:
        return zero
    dtype = torch.promote_types(feats.dtype, torch.float32)
    unit = F.normalize(feats.to(dtype), dim=1)  # N, D
    keys = unit.detach()  # N, D
    positives = F.normalize(samples.prototypes.detach().to(dtype), dim=1)  # P, D
    total = zero
    for i in range(samples.query_classes.numel()):
        anchors = unit[samples.queries[i]]  # Q, D
        pos_logit = anchors @ positives[samples.query_classes[i]]  # Q
        neg_logits = torch.einsum('qd,qmd->qm', anchors, keys[samples.negatives[i]])  # Q, M
        logits = torch.cat([pos_logit[:, None], neg_logits], dim=1) / temperature  # Q, 1+M
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        total = total + F.cross_entropy(logits, target)
    return total / samples.num_present


def reco_loss(embeddings: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor,
              config: RecoConfig | None = None) -> torch.Tensor:
    """Supervised ReCo (docs/MODEL.md §3.5) on stride-4 model outputs.

    Args:
        embeddings: (B, D, h, w) representation.
        labels: (B, H, W) int64, nearest-resized to (h, w).
        probs: (B, K, h, w) class probabilities (softmax of the logits, no grad needed).

    Returns:
        0-dim loss (unweighted); a zero with a grad_fn when at most one class is present.
    """
    config = config or RecoConfig()
    B, D, h, w = embeddings.shape
    if probs.shape[0] != B or tuple(probs.shape[-2:]) != (h, w):
        raise ValueError(f'probs {tuple(probs.shape)} must be (B, K, h, w) like the embeddings '
                         f'{tuple(embeddings.shape)}')
    small = nearest_labels(labels.to(embeddings.device), (h, w)).reshape(-1)  # B*h*w
    feats = embeddings.permute(0, 2, 3, 1).reshape(-1, D)  # B*h*w, D
    flat_probs = probs.detach().permute(0, 2, 3, 1).reshape(-1, probs.shape[1])  # B*h*w, K
    own = torch.where(small == config.ignore_index, 0, small)  # B*h*w
    label_probs = flat_probs.gather(1, own[:, None])[:, 0]  # B*h*w
    samples = sample_reco(feats, small, label_probs, config)
    return reco_from_samples(feats, samples, config.temperature)
