"""Published checkpoints: the pure key mapping of SeMask-FPN (mmseg) and ImageNet Swin files.

`convert_semask_state_dict` and `convert_swin_imagenet_state_dict` are pure functions from a
published checkpoint's state dict and the model's state dict to the state dict to load plus a
`LoadReport`; loading is then `strict=True`. Key layout, transfer rules and the class-row seeding
option: docs/MODEL.md §4. Which new class is seeded from which source class is the caller's
table (e.g. `contrast_semask_train.data.ycor.YCOR_ADE20K_SEEDS`); this module knows no data set.
Our own self-describing checkpoints are in `checkpoint.py`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, read_checkpoint
from .segmentor import ContrastSemask

_logger = logging.getLogger(__name__)

_PREFIXES = ('module.', '_orig_mod.')
# Tensors whose first dimension is the class count K (re-initialised when K changes).
_CLASS_DEPENDENT = re.compile(
    r'(\.semantic_layer\.class_injection\.0\.mlp_cls_[qk]'
    r'|^decode_head\.conv_seg|^decode_head\.projection_head_class\.0)\.(weight|bias)$')
# Layers only one head kind has; the other kind's layers are ignored / freshly initialised.
_HEAD_SPECIFIC = re.compile(
    r'^decode_head\.(conv_seg|feature_head|projection_head_class|projection_head_cluster)\.')
_SEMANTIC_OR_STAGE_NORM = re.compile(r'^backbone\.(layers\.\d+\.semantic_layer\.|norm\d+\.)')
_REL_INDEX = 'relative_position_index'
_REL_TABLE = 'relative_position_bias_table'

# 0-based ADE20K ids (after reduce_zero_label) of the classes useful for off-road seeding
# (docs/MODEL.md §4). Used when a checkpoint carries no meta['CLASSES'].
ADE20K_CLASS_IDS: dict[str, int] = {
    'sky': 2, 'tree': 4, 'road': 6, 'grass': 9, 'earth': 13, 'plant': 17, 'water': 21,
    'rock': 34, 'path': 52, 'dirt track': 91}


class LoadReport(NamedTuple):
    loaded: list[str]  # model keys filled from the checkpoint
    reinitialized: list[str]  # model keys that keep their fresh initialisation
    ignored: list[str]  # checkpoint keys deliberately not used
    seeded: list[str]  # re-initialised class tensors whose rows were seeded from source classes
    notes: list[str]  # things the user should know (e.g. semantic-attention regime change)

    def summary(self) -> str:
        text = (f'loaded {len(self.loaded)} tensors, re-initialised {len(self.reinitialized)}, '
                f'ignored {len(self.ignored)}, seeded {len(self.seeded)}')
        for title, keys in (('re-initialised', self.reinitialized), ('ignored', self.ignored)):
            if keys:
                text += f'\n  {title}: ' + ', '.join(keys)
        return text + ''.join(f'\n  note: {n}' for n in self.notes)


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _listing(keys: Sequence[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def _resolve_seed_rows(sources: Sequence[int | str], source_classes: Sequence[str] | None,
                       num_source: int) -> list[int]:
    rows = []
    for src in sources:
        if isinstance(src, str):
            if source_classes is not None and src in source_classes:
                row = list(source_classes).index(src)
            elif src in ADE20K_CLASS_IDS and num_source == 150:
                row = ADE20K_CLASS_IDS[src]
            else:
                raise CheckpointError(
                    f'cannot seed from source class {src!r}: the checkpoint names no such class '
                    f'and it is not one of the known ADE20K ids {sorted(ADE20K_CLASS_IDS)}; '
                    f'pass an integer row index instead')
        else:
            row = int(src)
        if not 0 <= row < num_source:
            raise CheckpointError(f'seed row {row} is outside the checkpoint\'s {num_source} '
                                  f'classes')
        rows.append(row)
    return rows


def convert_semask_state_dict(
        checkpoint_state: Mapping[str, torch.Tensor],
        model_state: Mapping[str, torch.Tensor],
        class_seeds: Mapping[int, Sequence[int | str]] | None = None,
        source_classes: Sequence[str] | None = None,
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map an mmseg SeMask-FPN state dict onto `model_state` (a model's `state_dict()`).

    - `module.`/`_orig_mod.` prefixes are stripped.
    - A class-count change re-initialises exactly the class-dependent tensors
      (mlp_cls_q/k of every stage, conv_seg or projection_head_class); everything else must match.
    - The other head kind's layers are ignored (checkpoint) or keep their init (model).
    - `relative_position_index` buffers must equal the recomputed ones.
    - `class_seeds` {new class index: [source class names or rows]} fills re-initialised class
      rows with the mean of those source rows (not seed behaviour; docs/MODEL.md §4).
    Raises CheckpointError for any other difference, listing the offending keys.
    Returns (state dict for `load_state_dict(strict=True)`, LoadReport).
    """
    state = _strip_prefixes(checkpoint_state)
    if not any(k.startswith('backbone.') for k in state):
        raise CheckpointError(
            'not an mmseg SeMask-FPN checkpoint: no "backbone.*" keys (first keys: '
            f'{_listing(list(state)[:5])}). For an ImageNet Swin checkpoint use '
            'load_swin_imagenet_checkpoint; for our own checkpoints use load_checkpoint.')
    unexpected = [k for k in state if k not in model_state and not _HEAD_SPECIFIC.match(k)]
    missing = [k for k in model_state if k not in state and not _HEAD_SPECIFIC.match(k)]
    if unexpected or missing:
        raise CheckpointError(
            'checkpoint and model have different architectures (check variant, depths, '
            'head and num_classes).'
            + (f'\n  unexpected checkpoint keys ({len(unexpected)}): {_listing(unexpected)}'
               if unexpected else '')
            + (f'\n  model keys missing from the checkpoint ({len(missing)}): '
               f'{_listing(missing)}' if missing else ''))

    out: dict[str, torch.Tensor] = {}
    loaded, reinit, ignored, seeded, notes = [], [], [], [], []
    wrong_shape = []
    ignored = sorted(k for k in state if k not in model_state)
    for key, target in model_state.items():
        if key not in state:
            out[key] = target
            reinit.append(key)
            continue
        source = state[key]
        if not isinstance(source, torch.Tensor):
            raise CheckpointError(f'checkpoint entry {key!r} is a {type(source).__name__}, '
                                  f'not a tensor')
        if key.endswith(_REL_INDEX):
            if source.shape != target.shape or not torch.equal(source.to(target), target):
                raise CheckpointError(
                    f'{key} differs from the recomputed index: the checkpoint uses another '
                    f'window size or a different relative-position convention')
            out[key] = target
            loaded.append(key)
        elif source.shape == target.shape:
            out[key] = source.to(dtype=target.dtype)
            loaded.append(key)
        elif _CLASS_DEPENDENT.search(key) and source.shape[1:] == target.shape[1:]:
            out[key] = target.clone()
            reinit.append(key)
            if class_seeds:
                for new_class, sources in class_seeds.items():
                    rows = _resolve_seed_rows(sources, source_classes, source.shape[0])
                    out[key][new_class] = source[rows].to(target.dtype).mean(dim=0)
                seeded.append(key)
        else:
            wrong_shape.append(f'{key}: checkpoint {tuple(source.shape)} vs model '
                               f'{tuple(target.shape)}')
    if wrong_shape:
        raise CheckpointError('checkpoint tensors have shapes this model cannot take (another '
                              'variant or embedding width?):\n  ' + '\n  '.join(wrong_shape))
    q_key = next((k for k in state if k.endswith('mlp_cls_q.weight')), None)
    if q_key is not None and state[q_key].shape[0] > 19 and state[q_key].shape[1] in (96, 192):
        notes.append(
            f'the checkpoint has K={state[q_key].shape[0]} > 19 with embed_dim '
            f'{state[q_key].shape[1]}: SeMask trained it with global semantic attention in '
            'stages 2-3; the model uses its own ModelConfig.semantic_attention '
            '(ADE20K_SEMANTIC_ATTENTION reproduces the checkpoint)')
    return out, LoadReport(loaded, reinit, ignored, seeded, notes)


def _resize_bias_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a ((2w-1)^2, heads) relative-position table to (size^2, heads)."""
    old = int(round(table.shape[0] ** 0.5))
    grid = table.T.reshape(1, -1, old, old)  # 1, heads, 2w-1, 2w-1
    grid = F.interpolate(grid, size=(size, size), mode='bicubic', align_corners=False)
    return grid.reshape(-1, size * size).T.contiguous()


def convert_swin_imagenet_state_dict(
        checkpoint_state: Mapping[str, torch.Tensor],
        model_state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map an original ImageNet Swin state dict (the checkpoint's 'model' entry) onto a
    ContrastSemask state dict. Semantic layers, norm0-3 and the decode head keep their init;
    relative-position tables are bicubically resized when the window differs."""
    state = {f'backbone.{k}': v for k, v in _strip_prefixes(checkpoint_state).items()}
    ignore = re.compile(r'^backbone\.(norm\.|head\.)|attn_mask$|' + _REL_INDEX + '$')
    ignored = sorted(k for k in state if ignore.search(k))
    state = {k: v for k, v in state.items() if k not in ignored}
    unexpected = [k for k in state if k not in model_state]
    if unexpected:
        raise CheckpointError(f'not an ImageNet Swin checkpoint for this variant; unexpected '
                              f'keys ({len(unexpected)}): {_listing(unexpected)}')
    out, loaded, reinit, notes = {}, [], [], []
    wrong = []
    for key, target in model_state.items():
        if key in state:
            source = state[key]
            if key.endswith(_REL_TABLE) and source.shape != target.shape:
                side = int(round(target.shape[0] ** 0.5))
                source = _resize_bias_table(source.float(), side)
                notes.append(f'{key}: resized to the {(side + 1) // 2}x{(side + 1) // 2} window')
            if source.shape != target.shape:
                wrong.append(f'{key}: checkpoint {tuple(source.shape)} vs model '
                             f'{tuple(target.shape)}')
                continue
            out[key] = source.to(target.dtype)
            loaded.append(key)
        elif (key.startswith('decode_head.') or _SEMANTIC_OR_STAGE_NORM.match(key)
              or key.endswith(_REL_INDEX)):
            out[key] = target
            if not key.endswith(_REL_INDEX):
                reinit.append(key)
        else:
            wrong.append(f'{key}: missing from the checkpoint')
    if wrong:
        raise CheckpointError('ImageNet Swin checkpoint does not fit this backbone (another '
                              'variant?):\n  ' + '\n  '.join(wrong[:20]))
    return out, LoadReport(loaded, reinit, ignored, [], notes)


def _unwrap(checkpoint: Mapping[str, Any], container: str) -> tuple[dict[str, Any], dict]:
    if container in checkpoint and isinstance(checkpoint[container], Mapping):
        return dict(checkpoint[container]), dict(checkpoint.get('meta') or {})
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint), {}
    raise CheckpointError(f'expected a checkpoint dict with a {container!r} entry or a plain '
                          f'state dict, got keys {_listing(list(checkpoint))}')


def load_semask_checkpoint(model: ContrastSemask,
                           checkpoint: str | os.PathLike | Mapping[str, Any],
                           class_seeds: Mapping[int, Sequence[int | str]] | None = None,
                           trust_pickle: bool = False) -> LoadReport:
    """Load an mmseg SeMask-FPN checkpoint (path or loaded dict) into `model` (strict)."""
    raw = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(
        checkpoint, trust_pickle, trust_option='trust_pickle=True')
    state, meta = _unwrap(raw, 'state_dict')
    classes = meta.get('CLASSES')
    converted, report = convert_semask_state_dict(
        state, model.state_dict(), class_seeds, list(classes) if classes else None)
    model.load_state_dict(converted, strict=True)
    _logger.info('SeMask checkpoint: %s', report.summary())
    return report


def load_swin_imagenet_checkpoint(model: ContrastSemask,
                                  checkpoint: str | os.PathLike | Mapping[str, Any],
                                  trust_pickle: bool = False) -> LoadReport:
    """Load an original ImageNet Swin checkpoint ('model' entry) into the backbone (strict)."""
    raw = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(
        checkpoint, trust_pickle, trust_option='trust_pickle=True')
    state, _ = _unwrap(raw, 'model')
    converted, report = convert_swin_imagenet_state_dict(state, model.state_dict())
    model.load_state_dict(converted, strict=True)
    _logger.info('ImageNet Swin checkpoint: %s', report.summary())
    return report
