"""Checkpoints: written atomically, read safely, and holding everything a run needs to resume exactly.

A checkpoint is a dict of tensors and plain values (no pickled classes), saved with ``torch.save``
and read back with ``torch.load(weights_only=True)``: unpickling arbitrary objects can run code, so
a file that holds anything else is refused (:class:`CheckpointError`). It holds the network and EMA
weights, the optimizer state, the step, the random-number states (CPU, CUDA or MPS, and the run's
noise generator), the data-order state (:class:`~diffusion_edu.seeding.EpochOrder`) and the config as a plain dict, plus
a SHA-256 checksum of every tensor (``checksum``), verified on load: bits flipped on disk or in a copy
are refused instead of loading as slightly wrong weights.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .builders import build_network, build_process, check_degradation
from .devices import resolve_device
from .forward import declared_parameterization
from .presets import TrainConfig
from .results import atomic_write_bytes
from .schedules import NoiseSchedule

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "LoadedModel",
    "check_finite_weights",
    "require_keys",
    "tensor_checksum",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "diffusion_edu.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unsafe, corrupt, or from a different run."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Serialise ``state`` with ``torch.save`` and write it atomically (a temporary file renamed over
    the target), so that a crash or a kill during the save leaves the previous checkpoint intact."""
    buffer = io.BytesIO()
    state = {**state, "checksum": tensor_checksum(state)}
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain containers only.

    Raises :class:`CheckpointError` for a file that holds pickled code (refused, never run), for a
    truncated or corrupt file, and for a file that is not a diffusion_edu checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not _looks_like_torch_save(path):
        raise CheckpointError(
            f"{path} is not a checkpoint: it is neither a torch.save zip archive nor a pickle "
            "(empty, truncated at its start, or another kind of file)"
        )
    try:
        with warnings.catch_warnings():  # random bytes make torch warn of an odd pickle protocol first
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln or "WeightsUnpickler" in ln]
        reason = lines[0] if lines else type(e).__name__
        if not any(word in str(e) for word in ("global", "GLOBAL", "reduce", "REDUCE")):  # bytes, not code
            raise CheckpointError(
                f"{path} is not a checkpoint: torch.load cannot read it (random or damaged "
                f"bytes?). (torch said: {reason})"
            ) from None
        raise CheckpointError(
            f"refused to load {path}: it holds pickled Python objects other than tensors and plain "
            f"containers, and unpickling those can run arbitrary code. diffusion_edu only loads "
            f"checkpoints with torch.load(weights_only=True). (torch said: {reason})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from e
    except Exception as e:  # damaged bytes can trip the unpickler in many ways (IndexError, struct.error, ...)
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a diffusion_edu checkpoint (expected format {CHECKPOINT_FORMAT!r}, found {found!r})"
        )
    stored = state.get("checksum")
    if stored is not None and stored != tensor_checksum(state):
        raise CheckpointError(
            f"{path} is damaged: the checksum of its tensors does not match the one written "
            "with it (bits changed on disk or in a copy); use another copy or train again"
        )
    return state


def _looks_like_torch_save(path: Path) -> bool:
    """A zip archive (torch.save's format) or a pickle (protocol 2 to 5: 0x80 and the protocol number)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] == b"PK" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def tensor_checksum(state: Any) -> str:
    """SHA-256 over every tensor in ``state`` (dtype, shape and bytes, in key order; the ``checksum``
    entry itself left out), so that changed tensor data is detected on load."""
    h = hashlib.sha256()

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{key}|{obj.dtype}|{tuple(obj.shape)}|".encode())
            # the buffer itself, no copy; numpy's stubs declare ndarray.__buffer__ only for Python >= 3.12
            h.update(t.view(torch.uint8).numpy() if t.numel() else b"")  # type: ignore[arg-type]
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                if not (key == "" and k == "checksum"):
                    walk(obj[k], f"{key}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{key}/{i}")

    walk(state, "")
    return h.hexdigest()


def require_keys(state: dict[str, Any], keys: tuple[str, ...], path: str | os.PathLike, purpose: str) -> None:
    """A :class:`CheckpointError` naming the entries ``purpose`` needs that ``state`` lacks."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks {missing}, which {purpose} needs: it was not written by "
            "diffusion_edu's train() or has been edited; use a checkpoint that train() wrote"
        )


def check_finite_weights(weights: dict[str, Any], where: str) -> None:
    """A :class:`CheckpointError` naming the first floating-point tensor with NaN or infinite values."""
    for name, t in weights.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"{where} holds non-finite weights (NaN or inf in {name!r}): the run it "
                "comes from diverged; use an earlier checkpoint or train again"
            )


# ---------------------------------------------------------------------------------------------
# Loading a trained network from its checkpoint.
# ---------------------------------------------------------------------------------------------


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns: unpack it as ``model, schedule, config = load_model(path)``."""

    model: torch.nn.Module
    schedule: NoiseSchedule | Any  # the cold degradation for process="cold"
    config: TrainConfig


def load_model(
    path: str | os.PathLike,
    ema: bool = True,
    device: str | torch.device | None = None,
    *,
    model: torch.nn.Module | None = None,
    degradation: Any = None,
) -> LoadedModel:
    """Load a trained network from a checkpoint, in eval mode (a network rebuilt from the config declares
    ``config.parameterization``; a network passed in must not declare another one).

    ema: use the EMA weights (falls back to the raw weights, with a warning, when the run kept no
    EMA). device: None picks CUDA, MPS or the CPU. model: a network to load the weights into (needed
    when the run trained a network passed to ``train(model=...)``); by default it is rebuilt from the
    config. Returns (model, schedule or cold degradation, config).
    """
    state = load_checkpoint(path)
    require_keys(state, ("config", "model", "image_shape"), path, "loading its network")
    config = TrainConfig.from_dict(state["config"])
    dev = resolve_device(device)
    net = model if model is not None else build_network(config)
    declared_parameterization(net, config.parameterization)
    weights = state["model"]
    if ema and state.get("ema") is not None:
        weights = state["ema"]
    elif ema:
        warnings.warn(f"{path} holds no EMA weights (ema_decay was None): loading the trained weights", stacklevel=2)
    check_finite_weights(weights, str(path))
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"the weights in {path} do not fit the network {type(net).__name__} (config.model={config.model!r}): {e}"
        ) from e
    net.to(dev).eval()
    # sample() warns for a schedule of another length; torch's __setattr__ stub admits only Tensor / Module values
    net.trained_T = config.T  # type: ignore[assignment]
    if degradation is not None:
        check_degradation(degradation, config)
        process = degradation
    else:
        process = build_process(config, int(state["image_shape"][-1]))
    if isinstance(process, NoiseSchedule):
        process = process.to(dev)
    return LoadedModel(net, process, config)
