"""The command line's error contract: which exception means bad input (exit 2) and which a failure of
the environment or of the run (exit 1), the one-line message each prints, and argument checks that
run before any work starts.

Bad input (exit 2): ``ValueError`` / ``TypeError`` (every check in the package raises one naming the
argument), a missing or unusable file (``FileNotFoundError``, ``IsADirectoryError``,
``NotADirectoryError``), an unusable checkpoint (:class:`~diffusion_edu.checkpoint.CheckpointError`).
Environment or run failure (exit 1): data not available offline, a missing optional package, disk
full, a read-only or unwritable folder, a folder in use by another run, a training run that diverged
or became NaN. Ctrl-C exits 130 after saying where the run stopped and how to continue.
"""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "exit_code",
    "message",
    "int_at_least",
    "check_output_file",
    "check_output_folder",
    "IMAGE_SUFFIXES",
    "INTERRUPTED",
]

INTERRUPTED = 130  # the shell's code for a process ended by SIGINT
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".tiff")  # what matplotlib.image.imsave writes
_INPUT_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}
_HINTS = {
    errno.ENOSPC: "the disk is full: free some space (or write elsewhere) and run the same command again",
    errno.EDQUOT: "the disk quota is exhausted: free some space and run the same command again",
    errno.EROFS: "the file system is read-only: choose a folder on a writable disk",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "permission denied: choose a folder you can write to",
}


def _environment_types() -> tuple[type, ...]:
    import torch

    from .data import DatasetNotAvailableError
    from .rundir import RunLockedError

    # FloatingPointError: a run whose loss became NaN or diverged, samples that are not finite
    return (
        DatasetNotAvailableError,
        RunLockedError,
        FloatingPointError,
        ImportError,
        MemoryError,
        torch.OutOfMemoryError,
    )


def exit_code(exc: BaseException) -> int | None:
    """2 for bad input, 1 for the environment or a failed run, None for an unanticipated error (a bug)."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, _environment_types()):
        return 1
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return 2
    if isinstance(exc, OSError):
        return 2 if exc.errno in _INPUT_ERRNOS else 1
    if isinstance(exc, (ValueError, TypeError)):
        return 2
    return None


def message(exc: BaseException) -> str:
    """The one-line ``error: ...`` text for an anticipated error."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        hint = _HINTS.get(exc.errno)
        text = f"{where}{exc.strerror}" + (f"; {hint}" if hint else "")
    else:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            text = f"out of memory ({text}); lower batch_size (--set batch_size=N) or the number of images per batch"
        if isinstance(exc, KeyError):  # str(KeyError) is the repr of the key alone
            text = f"missing key {text}"
    return " ".join(text.split())  # one line


def int_at_least(low: int, what: str = "") -> Callable[[str], int]:
    """An argparse ``type=`` for an int >= ``low`` (argparse then names the option in its error)."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {raw!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}{what}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _writable_ancestor(folder: Path, arg: str, path: str | os.PathLike) -> None:
    anc = folder
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"{arg} {path}: {anc} is a file, not a folder; choose another path", None
        )
    if not os.access(anc, os.W_OK):
        raise PermissionError(errno.EACCES, f"{arg} {path}: cannot create files in {anc}", None)


def check_output_file(path: str | os.PathLike, arg: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Check, before any work, that ``path`` (given as option ``arg``) can be written: the right file
    name ending, not a folder, and a parent folder that exists (or can be made) and is writable."""
    p = Path(path).expanduser()
    if suffixes is not None and p.suffix.lower() not in suffixes:
        got = f"{p.suffix!r}" if p.suffix else "no extension"
        raise ValueError(
            f"{arg} {path}: expected a file name ending in {', '.join(suffixes)}, got {got} (e.g. {arg} samples.png)"
        )
    if p.is_dir():
        raise IsADirectoryError(
            errno.EISDIR,
            f"{arg} {path} is a folder; expected a file name (e.g. "
            f"{p / ('samples' + (suffixes[0] if suffixes else '.pt'))})",
            None,
        )
    _writable_ancestor(p.absolute().parent, arg, path)
    return p


def check_output_folder(path: str | os.PathLike, arg: str) -> Path:
    """Check, before any work, that ``path`` is a folder or can be made as one, and is writable."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"{arg} {path} is a file; expected a folder (an existing one, or one to create)", None
        )
    _writable_ancestor(p.absolute(), arg, path)
    return p
