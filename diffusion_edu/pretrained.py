"""Small pretrained networks shipped with the package: one per chapter, so a reader can sample at once.

Each file under ``diffusion_edu/assets/pretrained/`` is a checkpoint stripped to the weights (no
optimizer state), written by :func:`export_pretrained` from a finished training run, and loaded with
``torch.load(weights_only=True)`` like every checkpoint. Its ``source`` says which run (tier, chapter,
run name, steps, wall time) produced it.
"""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CHECKPOINT_FORMAT, LoadedModel, load_checkpoint, load_model, tensor_checksum
from .results import atomic_write_bytes

__all__ = ["PRETRAINED_DIR", "available_pretrained", "export_pretrained", "load_pretrained"]

PRETRAINED_DIR = Path(str(resources.files("diffusion_edu").joinpath("assets/pretrained")))


def available_pretrained() -> list[str]:
    """Names of the shipped networks (file names without ``.pt``)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


def export_pretrained(
    checkpoint: str | os.PathLike,
    name: str,
    source: dict[str, Any] | None = None,
    ema: bool = True,
    folder: str | os.PathLike | None = None,
) -> Path:
    """Write the weights of a training checkpoint (EMA weights when it has them and ``ema``) as
    ``<folder>/<name>.pt`` (default: the package's pretrained folder). ``source`` is stored with it."""
    if not name or any(c in name for c in "/\\ ."):
        raise ValueError(f"name must be a plain file stem such as 'report_e', got {name!r}")
    state = load_checkpoint(checkpoint)
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    out = {
        "format": CHECKPOINT_FORMAT,
        "config": state["config"],
        "model": weights,
        "ema": None,
        "image_shape": state["image_shape"],
        "step": state["step"],
        "source": dict(source or {}, step=int(state["step"]), wall_time_s=float(state.get("wall_time_s", 0.0))),
    }
    out["checksum"] = tensor_checksum(out)  # verified by load_checkpoint
    buf = io.BytesIO()
    torch.save(out, buf)
    path = Path(folder) if folder is not None else PRETRAINED_DIR
    dest = path / f"{name}.pt"
    atomic_write_bytes(dest, buf.getvalue())
    return dest


def load_pretrained(name: str, device: str | torch.device | None = None) -> LoadedModel:
    """A shipped network, ready to sample: ``model, schedule, config = load_pretrained("report_e")``."""
    path = PRETRAINED_DIR / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no pretrained network {name!r}; available: {available_pretrained()}")
    return load_model(path, ema=False, device=device)


def pretrained_source(name: str) -> dict[str, Any]:
    """Where a shipped network came from (tier, chapter, run, steps, wall time)."""
    return dict(load_checkpoint(PRETRAINED_DIR / f"{name}.pt").get("source", {}))
