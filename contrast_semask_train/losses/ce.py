"""Segmentation cross-entropy with mmseg averaging, and the label resize used by the
contrastive losses (docs/MODEL.md §3.1, §3.2, §3.3 step 1). Imports torch only."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

CEReduction = Literal['mmseg', 'valid']


def seg_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                      reduction: CEReduction = 'mmseg') -> torch.Tensor:
    """Per-pixel softmax cross-entropy at label resolution (docs/MODEL.md §3.1).

    Args:
        logits: (B, K, h, w) scores, upsampled bilinearly (align_corners=False) to (H, W).
        labels: (B, H, W) int64 class ids; `ignore_index` pixels contribute 0.
        reduction: 'mmseg' divides the summed CE by all B*H*W pixels, ignored ones included,
            as the seed does (§3.1); 'valid' averages over valid pixels only (0 if none).

    Returns:
        0-dim tensor.
    """
    if labels.ndim != 3 or logits.ndim != 4 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f'expected logits (B, K, h, w) and labels (B, H, W), got '
                         f'{tuple(logits.shape)} and {tuple(labels.shape)}')
    size = (labels.shape[1], labels.shape[2])
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
    labels = labels.long()
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction='sum')
    if reduction == 'mmseg':
        return total / labels.numel()
    if reduction == 'valid':
        num_valid = (labels != ignore_index).sum().clamp_min(1)
        return total / num_valid
    raise ValueError(f"reduction must be 'mmseg' or 'valid', got {reduction!r}")


def nearest_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PyTorch nearest resize of (B, H, W) labels to (B, h, w) (docs/MODEL.md §3.3 step 1).

    For an exact stride s (H = s*h) this picks labels[:, s*i, s*j]. The labels go through float32,
    which is exact for class ids below 2**24.
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    resized = F.interpolate(labels[:, None].float(), size=size, mode='nearest')  # B, 1, h, w
    return resized[:, 0].long()
