"""Our self-describing checkpoints: `save_checkpoint` / `load_checkpoint` / `read_checkpoint`.

A contrast_semask checkpoint holds its format tag, the `ModelConfig` (so the model is rebuilt
from the file alone), the weights, the step, the training config and metrics, plus whatever the
trainer adds (optimizer, scaler, contrastive banks, RNG states). Published SeMask/Swin files are
mapped onto the model by `published.py`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .segmentor import ContrastSemask

_logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 'contrast_semask/1'


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the message says why and what to do."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (recorded by conversion and export)."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, Any]:
    """torch.load with weights_only=True; mmcv files whose `meta` holds arbitrary objects need
    `trust_pickle=True` (only for files from a trusted source: pickle can run code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint file not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise CheckpointError(
                f'{path} holds objects beyond tensors and plain containers, so the safe loader '
                f'(weights_only=True) refused it ({str(err).splitlines()[0]}). If the file '
                'comes from a trusted source, pass trust_pickle=True '
                '(--trust-pickle on the command line).') from err
        _logger.warning('loading %s with weights_only=False (trusted by the caller)', path)
        return torch.load(path, map_location='cpu', weights_only=False)


def save_checkpoint(path: str | os.PathLike, model: ContrastSemask, *, step: int = 0,
                    train_config: Mapping[str, Any] | None = None,
                    metrics: Mapping[str, float] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write a self-describing checkpoint atomically (temp file, fsync, rename in the same
    folder): a reader never sees half a checkpoint, an interrupted save leaves the old file.

    `extra` may hold optimizer/scaler states and anything else torch.save handles with
    weights_only loading (tensors, numbers, strings, lists, dicts).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        'format': CHECKPOINT_FORMAT,
        'model_config': model.config.to_dict(),
        'model': model.state_dict(),
        'step': int(step),
        'train_config': dict(train_config or {}),
        'metrics': dict(metrics or {}),
        **dict(extra or {}),
    }
    _atomic_torch_save(payload, path)
    return path


def _atomic_torch_save(payload: Mapping[str, Any], path: Path) -> None:
    """torch.save into a temp file beside `path`, fsync, rename: the protocol of
    `contrast_semask_ros.atomic.atomic_path`, inline because this package imports torch and the
    standard library only. Same temp names ('.<name>.*.tmp') and umask permissions."""
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # mkstemp's 0600 widened, like any other tool's output
        with os.fdopen(fd, 'wb') as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> tuple[ContrastSemask, dict[str, Any]]:
    """Rebuild the model from one of our checkpoints alone. Returns (model in eval mode, the
    checkpoint dict). Uses weights_only=True."""
    payload = read_checkpoint(path)
    if payload.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f'{path} is not a contrast_semask checkpoint (format {payload.get("format")!r}, '
            f'expected {CHECKPOINT_FORMAT!r}); mmseg SeMask files load with '
            'load_semask_checkpoint (model.published) into a model built with build_model')
    model = ContrastSemask(ModelConfig.from_dict(payload['model_config']))
    model.load_state_dict(payload['model'], strict=True)
    return model.eval(), payload
