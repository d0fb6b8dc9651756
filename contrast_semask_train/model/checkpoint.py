"""Our self-describing checkpoints: `save_checkpoint` / `load_checkpoint` / `read_checkpoint`.

A contrast_semask checkpoint holds its format tag, the `ModelConfig` (so the model is rebuilt
from the file alone), the weights, the step, the training config and metrics, plus whatever the
trainer adds (optimizer, scaler, contrastive banks, RNG states). Published SeMask/Swin files are
mapped onto the model by `published.py`.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import tempfile
import zipfile
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


def read_checkpoint(path: str | os.PathLike, trust_pickle: bool = False,
                    trust_option: str | None = None) -> dict[str, Any]:
    """torch.load with weights_only=True; mmcv files whose `meta` holds arbitrary objects need
    `trust_pickle=True` (only for files from a trusted source: pickle can run code).

    Every failure is a one-line CheckpointError naming the file, what is wrong and what to do:
    missing, empty, truncated or damaged, not a PyTorch file, or (with `trust_option`, the
    command's way to pass trust_pickle, e.g. '--trust-pickle') objects that need trust.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint file not found: {path}')
    try:
        size = path.stat().st_size
    except OSError as err:
        raise CheckpointError(f'cannot read checkpoint {path}: {err.strerror or err}') from err
    if size == 0:
        raise CheckpointError(f'{path} is empty (0 bytes): an interrupted copy or write? '
                              'Copy or write it again, or use another checkpoint')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsupported_global(str(err))
        if unsafe is None:
            raise _damaged(path, size, err) from err
        if not trust_pickle:
            if trust_option is None:
                raise CheckpointError(
                    f'{path} holds Python objects beyond tensors ({unsafe}), so it is not a '
                    'contrast_semask checkpoint: convert published SeMask/Swin files first '
                    'with contrast-semask-convert (--trust-pickle there)') from err
            raise CheckpointError(
                f'{path} holds objects beyond tensors and plain containers ({unsafe}), so the '
                'safe loader (weights_only=True) refused it. If the file comes from a trusted '
                f'source, pass {trust_option}') from err
    except (EOFError, RuntimeError, KeyError, ValueError, OSError, UnicodeDecodeError,
            AttributeError, IndexError, TypeError) as err:
        raise _damaged(path, size, err) from err
    _logger.warning('loading %s with weights_only=False (trusted by the caller)', path)
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as err:  # noqa: BLE001 - anything unpickling raises: one clear line
        raise _damaged(path, size, err) from err


def _unsupported_global(message: str) -> str | None:
    """'GLOBAL x.y' from torch's weights-only refusal of a pickled object, else None."""
    for line in message.splitlines():
        if 'Unsupported global' in line:
            after = line.split('Unsupported global:', 1)[-1].strip()
            return after.split(' was not', 1)[0].strip() or 'a Python object'
    return None


def _damaged(path: Path, size: int, err: BaseException) -> CheckpointError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    kind = 'truncated or damaged' if zipfile.is_zipfile(path) or _zip_like(path) else \
        'not a PyTorch checkpoint, or damaged'
    return CheckpointError(
        f'{path} ({size} bytes) is {kind}: torch.load failed with {type(err).__name__}'
        f'{": " + first if first else ""}. Copy or write it again, or use another checkpoint')


def _zip_like(path: Path) -> bool:
    """True when the file starts like a zip archive (torch.save's format) even if its end,
    the central directory, is missing (a truncated file)."""
    try:
        with path.open('rb') as f:
            return f.read(4) == b'PK\x03\x04'
    except OSError:
        return False


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


class DiskFullError(OSError):
    """No space left writing a checkpoint: names the path, the bytes needed and free."""

    def __init__(self, path: Path, needed: int, free: int | None) -> None:
        self.path, self.needed, self.free = path, needed, free
        room = '' if free is None else f', {free / 2**20:.1f} MiB free'
        super().__init__(errno.ENOSPC, f'no space left on the device writing {path} (needs '
                                       f'about {needed / 2**20:.1f} MiB{room}): free some '
                                       'space or write to another disk')

    def __str__(self) -> str:
        return str(self.strerror)


def payload_bytes(obj: Any) -> int:
    """The tensor bytes in a (nested) payload: about the size of its torch.save file."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 0


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _is_disk_full(err: BaseException, needed: int, directory: Path) -> bool:
    """ENOSPC/EDQUOT as an OSError, or torch's RuntimeError for a failed write (its message
    holds no errno) when the disk has less room than the payload needs."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(err, RuntimeError):
        text = str(err)
        if 'No space left' in text:
            return True
        free = _free_bytes(directory)
        return 'write' in text.lower() and free is not None and free < needed
    return False


def _atomic_torch_save(payload: Mapping[str, Any], path: Path) -> None:
    """torch.save into a temp file beside `path`, fsync, rename: the protocol of
    `contrast_semask_ros.atomic.atomic_path`, inline because this package imports torch and the
    standard library only. Same temp names ('.<name>.*.tmp') and umask permissions. A full
    disk raises DiskFullError (errno ENOSPC) naming `path` and the bytes needed."""
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
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        needed = payload_bytes(payload)
        if _is_disk_full(err, needed, path.parent):
            raise DiskFullError(path, needed, _free_bytes(path.parent)) from err
        raise


def load_checkpoint(path: str | os.PathLike) -> tuple[ContrastSemask, dict[str, Any]]:
    """Rebuild the model from one of our checkpoints alone. Returns (model in eval mode, the
    checkpoint dict). Uses weights_only=True."""
    payload = read_checkpoint(path)
    if not isinstance(payload, dict) or payload.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f'{path} is not a contrast_semask checkpoint (format {_format_of(payload)!r}, '
            f'expected {CHECKPOINT_FORMAT!r}): convert a published SeMask/Swin file first with '
            'contrast-semask-convert (in Python: load_semask_checkpoint into build_model)')
    try:
        model = ContrastSemask(ModelConfig.from_dict(payload['model_config']))
        model.load_state_dict(payload['model'], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [''])[0][:200]
        raise CheckpointError(f'{path} is a damaged contrast_semask checkpoint (its model '
                              f'does not load: {type(err).__name__} {first}); write it again '
                              'or use another checkpoint') from err
    return model.eval(), payload


def _format_of(payload: Any) -> Any:
    return payload.get('format') if isinstance(payload, dict) else type(payload).__name__
