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
from a killed process are easy to recognise (`stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = '.tmp'


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
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_free(out: Path, overwrite: bool) -> None:
    if overwrite or not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    raise FileExistsError(f'{out} exists: choose another output path or pass --overwrite')


def stale_temp_files(directory: str | os.PathLike, name: str) -> list[Path]:
    """Temp files/directories that an interrupted atomic write of `name` left in `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f'.{name}.*{TEMP_SUFFIX}'))
