"""A training run's output folder: one writer at a time, nothing finished ever lost, nothing mixed.

- :class:`RunLock`: an exclusive ``flock`` on ``OUT/.lock`` while a run writes the folder; a second
  run into the same folder fails at once, naming the first one's process id. The kernel drops the
  lock when its process dies (even by ``kill -9``), so a stale lock file never blocks.
- :func:`remove_stale_temp_files`: hidden ``.NAME.*.tmp`` files that a killed
  :func:`~diffusion_edu.results.atomic_write_bytes` left behind (each about the size of a checkpoint).
- :func:`set_aside` / :func:`restore_aside` / :func:`drop_aside`: starting afresh moves the previous
  run into ``OUT/.previous`` and deletes it only once the new run has written its first checkpoint; an
  interrupted fresh start is undone by the next resume.
- :func:`repair_log`: drops the damaged (partial) last line a kill can leave in ``log.jsonl``, and the
  lines written after the checkpoint's step.
- :func:`dataset_identity`: name, size and a content hash of the training images and labels, which a
  resume compares like the config.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from .results import _fsync_folder, atomic_write_bytes

__all__ = [
    "RunLock",
    "RunLockedError",
    "RUN_FILES",
    "ASIDE",
    "remove_stale_temp_files",
    "set_aside",
    "restore_aside",
    "drop_aside",
    "repair_log",
    "dataset_identity",
]

RUN_FILES = ("log.jsonl", "config.json", "samples", "checkpoint.pt")  # what a run writes; checkpoint last
ASIDE = ".previous"  # where a fresh start keeps the run it replaces until its own first checkpoint


class RunLockedError(RuntimeError):
    """Another process is writing the output folder."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.lock`` (holding the owner's PID), as a context
    manager. Raises :class:`RunLockedError` naming the PID of the process that holds it."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is being written by another training run (PID {owner}); "
                    "wait for it to finish, stop it, or choose another output folder"
                ) from None
            try:  # the holder may have released and removed the file between our open and flock
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file, then unlock (a process waiting on the old file retries on a new one)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files of interrupted atomic writes in ``folder`` and its ``samples/``
    (call it only while holding the folder's :class:`RunLock`: no other writer can own them)."""
    removed = []
    for sub in (Path(folder), Path(folder) / "samples"):
        if sub.is_dir():
            for p in sub.glob(".*.tmp"):
                if p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


def set_aside(out: Path) -> Path | None:
    """Move the run in ``out`` into ``out/.previous`` before a fresh start (returns that folder, or
    None when ``out`` holds no run). When ``.previous`` already holds a run, an earlier fresh start
    ended before its first checkpoint: what it wrote is discarded and the run kept aside stays."""
    _settle(out)
    aside = out / ASIDE
    present = [out / name for name in RUN_FILES if (out / name).exists()]
    if aside.is_dir() or not (out / "checkpoint.pt").exists():  # nothing finished in out to keep
        for p in present:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return aside if aside.is_dir() else None
    tmp = out / f"{ASIDE}.partial"
    tmp.mkdir()
    for p in present:  # the checkpoint moves last: while it is in out, the run counts as being in out
        os.replace(p, tmp / p.name)
    os.replace(tmp, aside)
    _fsync_folder(out)
    return aside


def restore_aside(out: Path) -> bool:
    """Put back a run that an interrupted fresh start set aside (no checkpoint of its own yet)."""
    _settle(out)
    aside = out / ASIDE
    if not aside.is_dir() or (out / "checkpoint.pt").exists():
        return False
    for name in RUN_FILES:  # what the interrupted fresh start wrote
        p = out / name
        if p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    (aside / ".restoring").touch()  # from here on a kill is finished by the next start (_settle)
    _move_back(out, aside)
    warnings.warn(
        f"a fresh start in {out} was interrupted before its first checkpoint: the run it was "
        "replacing has been restored and is resumed",
        stacklevel=3,
    )
    return True


def drop_aside(out: Path) -> None:
    """The new run has its first checkpoint: the run it replaced is deleted."""
    if (out / ASIDE).exists():
        shutil.rmtree(out / ASIDE)


def _move_back(out: Path, aside: Path) -> None:
    for name in RUN_FILES:  # the checkpoint last
        if (aside / name).exists() and not (out / name).exists():
            os.replace(aside / name, out / name)
    shutil.rmtree(aside)
    _fsync_folder(out)


def _settle(out: Path) -> None:
    """Finish what a kill cut off, so that ``.previous`` exists only while it holds a run whose
    replacement has no checkpoint yet: a set-aside (``.previous.partial``), a restore (marked by
    ``.previous/.restoring``) or a deletion (``.previous`` next to the new run's checkpoint)."""
    _finish_partial(out)
    aside = out / ASIDE
    if not aside.is_dir():
        return
    if (aside / ".restoring").exists():
        _move_back(out, aside)
    elif (out / "checkpoint.pt").exists() or not (aside / "checkpoint.pt").exists():
        shutil.rmtree(aside)


def _finish_partial(out: Path) -> None:
    """Complete or undo a :func:`set_aside` that a kill cut off: with the checkpoint moved (it moves
    last) the run is wholly in ``.previous.partial``, which becomes ``.previous``; otherwise the files
    go back into ``out``."""
    tmp = out / f"{ASIDE}.partial"
    if not tmp.is_dir():
        return
    if (tmp / "checkpoint.pt").exists() and not (out / ASIDE).exists():
        os.replace(tmp, out / ASIDE)
    else:
        for p in tmp.iterdir():
            if not (out / p.name).exists():
                os.replace(p, out / p.name)
        shutil.rmtree(tmp)
    _fsync_folder(out)


def repair_log(log_path: Path, step: int) -> int:
    """Keep the log lines up to ``step`` (those after it will be written again); a line that is not
    valid JSON (the partial last line of a killed append) is dropped. Returns the number dropped."""
    if not log_path.exists():
        return 0
    kept, damaged = [], 0
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ok = isinstance(record, dict) and isinstance(record.get("step"), int)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            damaged += 1
        elif record["step"] <= step:
            kept.append(line)
    if damaged:
        warnings.warn(f"{log_path}: dropped {damaged} damaged line(s) (a write cut off by a kill)", stacklevel=3)
    atomic_write_bytes(log_path, "".join(ln + "\n" for ln in kept).encode())
    return damaged


def dataset_identity(name: str, images: Any, labels: Any) -> dict[str, Any]:
    """``{"name", "n", "sha256"}`` of a dataset's uint8 images and int labels (CPU tensors), so that a
    run cannot resume on other images of the same size."""
    h = hashlib.sha256()
    for t in (images, labels):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return {"name": str(name), "n": int(len(images)), "sha256": h.hexdigest()}
