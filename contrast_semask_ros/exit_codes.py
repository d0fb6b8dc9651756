"""Exit codes of every command of both packages: one meaning each (README, "Exit codes").

Standard library only, so every tool uses it: the torch-free ones (`contrast-semask-export trt`,
replay, the node) and the training ones alike.
"""

from __future__ import annotations

import errno
import logging

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a parity or quality check failed (the run itself worked)
EXIT_BAD_INPUT = 2  # bad usage or input: missing, unreadable or malformed file, bad option
EXIT_ENVIRONMENT = 3  # this machine: no GPU, TensorRT or optional package, disk full


class MissingEnvironmentError(RuntimeError):
    """Something this machine lacks (a GPU, TensorRT, an optional package, disk space)."""


def is_environment_problem(err: BaseException) -> bool:
    """A missing GPU/package/library, or a full disk (ENOSPC/EDQUOT): exit code 3."""
    if isinstance(err, (MissingEnvironmentError, ImportError)):
        return True
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def one_line(err: BaseException | str) -> str:
    """The message of `err` on one line (stderr gets one line per failure, no traceback)."""
    text = str(err).strip() or type(err).__name__
    return '; '.join(line.strip() for line in text.splitlines() if line.strip())


def fail(logger: logging.Logger, err: BaseException | str, code: int | None = None) -> int:
    """Log `err` as one error line and return its exit code (`code`, or 3 for an environment
    problem and 2 for anything else)."""
    logger.error('%s', one_line(err))
    if code is not None:
        return code
    if isinstance(err, BaseException) and is_environment_problem(err):
        return EXIT_ENVIRONMENT
    return EXIT_BAD_INPUT
