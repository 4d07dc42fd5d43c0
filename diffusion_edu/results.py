"""Results files: every number the book shows comes from one of these, written by code.

A results file is JSON with a fixed envelope::

    {
      "name": "report_e/guidance_sweep",     # what was measured
      "tier": "cpu",                          # smoke | cpu | gpu | colab
      "config": {...},                        # the full configuration that produced it
      "hardware": {...},                      # hardware_info()
      "wall_time_s": 612.3,                   # wall time of the measurement itself
      "created": "2026-11-23T10:00:00+00:00",
      "package_version": "0.1.0",
      "git_commit": "abc123..." | null,
      "git_dirty": false | true | null,       # the code (package, benchmarks, tools) differed from that commit
      "data": {...}                           # the numbers
    }

Compute tiers (chosen with the ``DIFFUSION_EDU_TIER`` environment variable, default ``cpu``):

- ``smoke``: tiny sizes so that every notebook runs in under a minute on CPU (CI, nbval). Its numbers
  mean nothing and are never shown as results.
- ``cpu``: what the book shows when no GPU was available: each training run at most about 10 minutes
  on 2 CPU cores, on the embedded MNIST digits.
- ``colab``: a configuration a reader can finish on a free Colab GPU (a T4): about 30 minutes per MNIST
  chapter (estimated in :mod:`diffusion_edu.experiments.colab` until measured), about an hour per
  CIFAR-10 chapter.
- ``gpu``: the reports' own scales, on a GPU machine.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "TIERS",
    "Tier",
    "current_tier",
    "hardware_info",
    "results_dir",
    "packaged_results_dir",
    "write_results",
    "read_results",
    "atomic_write_bytes",
]

Tier = Literal["smoke", "cpu", "colab", "gpu"]
TIERS: tuple[str, ...] = ("smoke", "cpu", "colab", "gpu")


def current_tier(default: str = "cpu") -> str:
    """The compute tier from ``$DIFFUSION_EDU_TIER`` (``smoke`` in CI and tests), else ``default``."""
    tier = os.environ.get("DIFFUSION_EDU_TIER", default)
    if tier not in TIERS:
        raise ValueError(
            f"the environment variable DIFFUSION_EDU_TIER must be one of {list(TIERS)}, got "
            f"{tier!r}: set it to one of them, or unset it for the default {default!r}"
        )
    return tier


def hardware_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """What the measurement ran on: CPU model and cores, torch version and threads, GPU name if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    dev = torch.device(device) if device is not None else None
    if torch.cuda.is_available() and (dev is None or dev.type == "cuda"):
        idx = dev.index if dev is not None and dev.index is not None else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(idx)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
        info["device"] = "cuda"
    elif dev is not None and dev.type == "mps":
        info["device"] = "mps"
    else:
        info["device"] = "cpu"
    return info


def _git(*args: str, cwd: str | os.PathLike | None = None) -> str | None:
    """``git args`` run in ``cwd`` (default: the package's folder): its stripped output, or None when git is
    missing, fails, or ``cwd`` is no checkout (an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(cwd) if cwd is not None else Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> str | None:
    return _git("rev-parse", "HEAD") or None


CODE_PATHS = ("diffusion_edu", "benchmarks", "tools")  # what writes results: a change here is a change of code


def _git_dirty(cwd: str | os.PathLike | None = None) -> bool | None:
    """Whether the tracked code (:data:`CODE_PATHS`, from the checkout's top) of the checkout at ``cwd``
    (default: the package's) differs from its ``HEAD``: a results file then came from code that its
    ``git_commit`` does not hold. None outside a git checkout (an installed wheel) or without git."""
    out = _git("status", "--porcelain", "--untracked-files=no", "--", *(f":/{p}" for p in CODE_PATHS), cwd=cwd)
    return None if out is None else bool(out)


PACKAGED_RESULTS = Path(__file__).resolve().parent / "_results"  # the wheel's copy of the book's results/


def packaged_results_dir() -> Path | None:
    """The book's committed ``results/`` tree as shipped inside the installed package (the wheel maps
    ``results/`` to ``diffusion_edu/_results``), or None where the package runs from a checkout."""
    return PACKAGED_RESULTS if PACKAGED_RESULTS.is_dir() else None


def results_dir() -> Path:
    """Where results files are read and written:

    1. ``$DIFFUSION_EDU_RESULTS`` when set (used as is);
    2. the ``results/`` folder of the book's checkout, found by walking up from the working directory
       to the folder holding ``_toc.yml`` and ``diffusion_edu/``;
    3. else ``./results``. A chapter opened alone (in Colab, or anywhere the package was installed from
       its wheel) finds no checkout: when ``./results`` does not exist yet, it is first filled with a
       copy of the results shipped in the package (:func:`packaged_results_dir`), so the chapter reads
       the book's results, and what it writes lands in that local copy, never inside the installed
       package. ``runs/`` (checkpoints) sits next to it, so working in a folder on Google Drive keeps both.
    """
    env = os.environ.get("DIFFUSION_EDU_RESULTS")
    if env:
        return Path(env).expanduser()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "diffusion_edu").is_dir():
            return folder / "results"
    local = here / "results"
    packaged = packaged_results_dir()
    if packaged is not None and not local.exists():
        _copy_tree(packaged, local)
    return local


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` through a temporary sibling and a rename, so that a reader never sees a
    half-copied folder (and two processes starting at once both end with one whole copy)."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():
            raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash never leaves a partial file: write a temporary file
    in the same folder, flush it to disk, then rename it over the target (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # a read-only or full disk
        if _named(e, path) is e:
            raise
        raise _named(e, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and _named(e, path) is not e:
            raise _named(e, path) from e
        raise
    _fsync_folder(path.parent)  # the rename itself survives a power cut


def _named(e: OSError, path: Path) -> OSError:
    """``e`` with the target file named (a failed write of a temporary file says nothing of it)."""
    if e.errno is not None and e.filename is None:
        return OSError(e.errno, e.strerror or str(e), str(path))
    return e


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder
    finally:
        os.close(fd)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None  # NaN is not JSON
    return obj


def write_results(
    path: str | os.PathLike,
    name: str,
    data: dict[str, Any],
    config: dict[str, Any],
    tier: str,
    wall_time_s: float,
    device: str | torch.device | None = None,
    hardware: dict[str, Any] | None = None,
) -> Path:
    """Write a results file (atomically) with the envelope described in the module docstring.

    ``hardware`` replaces this machine's description (``hardware_info(device)``) for measurements that
    were made on another machine and are written here (a benchmark run cut off on a GPU machine)."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {list(TIERS)}, got {tier!r}")
    from . import __version__

    record = {
        "name": name,
        "tier": tier,
        "config": _jsonable(config),
        "hardware": dict(hardware) if hardware is not None else hardware_info(device),
        "wall_time_s": round(float(wall_time_s), 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),
        "data": _jsonable(data),
    }
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode())
    return path


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results file and check its envelope; a clear error if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no results file at {path}: run the experiment that writes it (see the chapter's "
            f"'Re-running this chapter' section) or set $DIFFUSION_EDU_RESULTS"
        )
    record = json.loads(path.read_text())
    missing = {"name", "tier", "config", "hardware", "wall_time_s", "data"} - set(record)
    if missing:
        raise ValueError(f"{path} is not a results file: missing {sorted(missing)}")
    return record
