"""Atomic file and directory writes: the one helper every writer in this package uses.

    with atomic_path('runs/x/last.pt') as tmp:      # a temp path in the same directory
        torch.save(payload, tmp)                     # fsync'd, then renamed onto the target
    atomic_write_bytes('bank.npz', data)
    with atomic_directory('runs/replay', overwrite=True) as tmp:   # a whole output directory
        ...

A reader never sees a half-written file: the data goes into a temp file next to the target
(same filesystem, so the rename is atomic), is flushed to disk, and replaces the target in one
`os.replace`. On any exception (KeyboardInterrupt included) the temp file is removed and the
target is left as it was. Files get the permissions the user's umask gives (mkstemp's 0600 is
widened), like any other tool's output. Temp names start with '.' and end in '.tmp', so stale ones
from a killed process are easy to recognise (`stale_temp_files`) and remove (`clean_stale`).
A full disk raises `DiskFullError` (an OSError with errno ENOSPC) naming the target path, the
bytes written so far and the bytes free, instead of a bare "[Errno 28]".
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = '.tmp'

_logger = logging.getLogger(__name__)


class DiskFullError(OSError):
    """No space left while writing `path`: says where, how much was needed and what was free."""

    def __init__(self, path: str | os.PathLike, needed: int, free: int | None = None,
                 at_least: bool = True) -> None:
        self.path, self.needed, self.free = Path(path), int(needed), free
        amount = f'{"at least " if at_least else ""}{_human(self.needed)}'
        room = '' if free is None else f', {_human(free)} free'
        message = (f'no space left on the device writing {self.path} (needs {amount}{room}): '
                   'free some space or write to another disk')
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def _human(size: int) -> str:
    value = float(size)
    for unit in ('bytes', 'KiB', 'MiB', 'GiB'):
        if value < 1024 or unit == 'GiB':
            return f'{int(value)} bytes' if unit == 'bytes' else f'{value:.1f} {unit}'
        value /= 1024
    return f'{size} bytes'  # pragma: no cover


def free_bytes(directory: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem of `directory`, or None when it cannot be asked."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC (and EDQUOT, a full quota) however it was raised."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        written = _size(tmp)
        tmp.unlink(missing_ok=True)
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise DiskFullError(path, max(written, 1), free_bytes(path.parent)) from err
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode('utf-8'))


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temp directory beside `out`; on success it becomes `out`.

    An existing `out` is refused (FileExistsError) unless it is an empty directory or
    `overwrite` is true; with `overwrite` the old directory is swapped out and removed only
    after the new one is in place, so `out` is always either the old or the new whole.
    """
    out = Path(out)
    _check_free(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix=TEMP_SUFFIX, dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _check_free(out, overwrite)
        if out.exists() and overwrite and (out.is_file() or any(out.iterdir())):
            old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old.', suffix=TEMP_SUFFIX,
                                        dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)  # an empty directory at `out` is replaced atomically too
    except BaseException as err:
        written = _size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise DiskFullError(out, max(written, 1), free_bytes(out.parent)) from err
        raise


def _check_free(out: Path, overwrite: bool) -> None:
    if overwrite or not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    raise FileExistsError(f'{out} exists: choose another output path or pass --overwrite')


def stale_temp_files(directory: str | os.PathLike, name: str) -> list[Path]:
    """Temp files/directories that an interrupted atomic write of `name` left in `directory`:
    ours ('.<name>.*.tmp') and the older '<name>.tmp-*' kind."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    name = glob.escape(name)
    return sorted({*directory.glob(f'.{name}.*{TEMP_SUFFIX}'), *directory.glob(f'{name}.tmp-*')})


def clean_stale(directory: str | os.PathLike, name: str) -> list[Path]:
    """Remove what an interrupted (killed) atomic write of `name` left in `directory`: temp
    files and temp directories. Logs one line per removal; returns the removed paths.

    Call it at the start of a command that writes `name`, before its own write begins.
    """
    removed = []
    for path in stale_temp_files(directory, name):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as err:
            _logger.warning('cannot remove the stale temp %s (%s)', path, err)
            continue
        _logger.info('removed %s, left by an interrupted write of %s', path,
                     Path(directory) / name)
        removed.append(path)
    return removed


def is_temp_name(name: str) -> bool:
    """True for names of temp files/directories (ours '.x.*.tmp', older 'x.tmp-*')."""
    return name.endswith(TEMP_SUFFIX) or '.tmp-' in name or '.tmp.' in name
