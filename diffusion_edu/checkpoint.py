"""Checkpoints: written atomically, read safely, and holding everything a run needs to resume exactly.

A checkpoint is a dict of tensors and plain values (no pickled classes), saved with ``torch.save``
and read back with ``torch.load(weights_only=True)``: unpickling arbitrary objects can run code, so
a file that holds anything else is refused (:class:`CheckpointError`). It holds the network and EMA
weights, the optimizer state, the step, the random-number states (CPU, CUDA or MPS, and the run's
noise generator), the data-order state (:class:`EpochOrder`) and the config as a plain dict, plus
a SHA-256 checksum of every tensor (``checksum``), verified on load: bits flipped on disk or in a copy
are refused instead of loading as slightly wrong weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .presets import TrainConfig
from .forward import declared_parameterization
from .results import atomic_write_bytes
from .schedules import NoiseSchedule, make_schedule

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "EpochOrder",
    "LoadedModel",
    "build_network",
    "build_process",
    "capture_rng_state",
    "check_finite_weights",
    "require_keys",
    "tensor_checksum",
    "derived_seed",
    "forked_rng",
    "load_checkpoint",
    "load_model",
    "resolve_device",
    "restore_rng_state",
    "save_checkpoint",
    "truncate_log",
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
        raise CheckpointError(f"{path} is not a checkpoint: it is neither a torch.save zip archive nor a pickle "
                              "(empty, truncated at its start, or another kind of file)")
    try:
        with warnings.catch_warnings():  # random bytes make torch warn of an odd pickle protocol first
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln or "WeightsUnpickler" in ln]
        reason = lines[0] if lines else type(e).__name__
        if not any(word in str(e) for word in ("global", "GLOBAL", "reduce", "REDUCE")):  # bytes, not code
            raise CheckpointError(f"{path} is not a checkpoint: torch.load cannot read it (random or damaged "
                                  f"bytes?). (torch said: {reason})") from None
        raise CheckpointError(
            f"refused to load {path}: it holds pickled Python objects other than tensors and plain "
            f"containers, and unpickling those can run arbitrary code. diffusion_edu only loads "
            f"checkpoints with torch.load(weights_only=True). (torch said: {reason})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from e
    except Exception as e:  # damaged bytes can trip the unpickler in many ways (IndexError, struct.error, ...)
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a diffusion_edu checkpoint (expected format "
                              f"{CHECKPOINT_FORMAT!r}, found {found!r})")
    stored = state.get("checksum")
    if stored is not None and stored != tensor_checksum(state):
        raise CheckpointError(f"{path} is damaged: the checksum of its tensors does not match the one written "
                              "with it (bits changed on disk or in a copy); use another copy or train again")
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
            h.update(t.view(torch.uint8).numpy() if t.numel() else b"")  # the buffer itself, no copy
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
        raise CheckpointError(f"{path} lacks {missing}, which {purpose} needs: it was not written by "
                              "diffusion_edu's train() or has been edited; use a checkpoint that train() wrote")


def check_finite_weights(weights: dict[str, Any], where: str) -> None:
    """A :class:`CheckpointError` naming the first floating-point tensor with NaN or infinite values."""
    for name, t in weights.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where} holds non-finite weights (NaN or inf in {name!r}): the run it "
                                  "comes from diverged; use an earlier checkpoint or train again")


# ---------------------------------------------------------------------------------------------
# Random-number and data-order state.
# ---------------------------------------------------------------------------------------------


def derived_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (numpy's SeedSequence), so that the streams
    of one run (network init, noise, data order, sample grids) are independent of each other."""
    words = [seed] + [k if isinstance(k, int) else int.from_bytes(k.encode(), "little") for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def capture_rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The global CPU RNG (dropout on CPU), the accelerator's RNG and the run's noise generator."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


@contextlib.contextmanager
def forked_rng(device: torch.device):
    """Run a block without changing the caller's random state (CPU and the run's accelerator)."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda" if cuda else "cpu"):
        if device.type == "mps":
            mps_state = torch.mps.get_rng_state()
            try:
                yield
            finally:
                torch.mps.set_rng_state(mps_state)
        else:
            yield


def truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint's step (they will be written again), and a damaged
    line (see :func:`diffusion_edu.rundir.repair_log`)."""
    from .rundir import repair_log

    repair_log(Path(log_path), step)


class EpochOrder:
    """Which images form each batch: epoch e visits a permutation drawn from (seed, e) alone, in
    consecutive slices of ``batch_size``; the last incomplete slice is skipped, so every batch has
    ``batch_size`` images. The state is (epoch, position): resuming from it gives the same batches."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} is larger than the dataset ({n} images): lower "
                             "batch_size, or train on more images (subset)")
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, torch.device(device)
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch``: a permutation of 0..n-1 (int64, shape (n,))."""
        g = torch.Generator().manual_seed(derived_seed(self.seed, "data", epoch))
        return torch.randperm(self.n, generator=g)

    def next(self) -> torch.Tensor:
        """The indices (batch_size,) of the next batch."""
        if self.position == self.batches_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        if self._perm is None:
            self._perm = self.permutation(self.epoch).to(self.device)
        start = self.position * self.batch_size
        self.position += 1
        return self._perm[start:start + self.batch_size]

    def state_dict(self) -> dict[str, int]:
        return {"n": self.n, "batch_size": self.batch_size, "seed": self.seed,
                "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        mine = {"n": self.n, "batch_size": self.batch_size, "seed": self.seed}
        theirs = {k: state.get(k) for k in mine}
        if mine != theirs:
            raise CheckpointError(f"the checkpoint's data order was made for {theirs}, but this run has "
                                  f"{mine}: resume with the same dataset, batch size and seed")
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The device to run on: ``auto`` picks CUDA, then Apple's MPS, then the CPU.

    An explicit device that is not available raises ``ValueError`` (no silent fallback).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = spec or "auto"
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu', 'cuda', got {type(spec).__name__}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    kind = spec.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    if kind == "mps" and not mps_ok:
        raise ValueError(f"device={spec!r} was asked for but Apple's MPS is not available; use 'auto' or 'cpu'")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {spec!r}")
    return torch.device(spec)


# ---------------------------------------------------------------------------------------------
# Building a network and its process from a config; loading a trained network.
# ---------------------------------------------------------------------------------------------


def build_network(config: TrainConfig) -> torch.nn.Module:
    """The network named by ``config.model``, imported lazily from :mod:`diffusion_edu.models`: a model
    preset such as ``unet_mnist`` (``build_model_preset(name, **model_kwargs)``, the kwargs overriding the
    preset's) or a model class name such as ``unet`` (``build_model(name, **model_kwargs)``)."""
    try:
        from . import models
    except ModuleNotFoundError as e:
        if e.name not in ("diffusion_edu.models", f"{__package__}.models"):
            raise
        raise ImportError(f"building the network {config.model!r} needs diffusion_edu.models, which is "
                          "not installed here; pass your own network with model=...") from e
    kwargs = {**config.model_kwargs, "parameterization": config.parameterization}  # what it will output
    if config.model_kwargs.get("parameterization", config.parameterization) != config.parameterization:
        raise ValueError(f"model_kwargs['parameterization']={config.model_kwargs['parameterization']!r} contradicts "
                         f"TrainConfig.parameterization={config.parameterization!r}; set only the latter")
    if config.model in getattr(models, "MODEL_PRESETS", {}):
        return models.build_model_preset(config.model, **kwargs)
    return models.build_model(config.model, **kwargs)


def build_process(config: TrainConfig, image_size: int):
    """The forward process: the noise schedule, or for ``process="cold"`` the row/column averaging
    degradation of :mod:`diffusion_edu.cold` (its number of steps must equal ``config.T``)."""
    if config.process == "gaussian":
        try:
            return make_schedule(config.schedule, config.T, **config.schedule_kwargs)
        except TypeError as e:
            raise ValueError(f"TrainConfig.schedule_kwargs={config.schedule_kwargs} do not fit the "
                             f"{config.schedule!r} schedule ({e})") from None
    from .cold import RowColumnAveraging

    degradation = RowColumnAveraging(axis=config.cold_axis, order=config.cold_order, group=config.cold_group,
                                     size=image_size, seed=config.cold_seed)
    check_degradation(degradation, config)
    return degradation


def check_degradation(degradation: Any, config: TrainConfig) -> None:
    """A degradation must have ``.T`` and ``.degrade(x0, t)``, and T must match the config (size / group
    steps for one axis, twice that for ``cold_axis="both"``)."""
    if not hasattr(degradation, "degrade") or not hasattr(degradation, "T"):
        raise TypeError(f"a cold-diffusion degradation needs .T and .degrade(x0, t); got {type(degradation).__name__}")
    if int(degradation.T) != config.T:
        raise ValueError(f"TrainConfig.T={config.T} but the degradation has T={degradation.T} steps "
                         "(image size / cold_group); set T to match")


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns: unpack it as ``model, schedule, config = load_model(path)``."""

    model: torch.nn.Module
    schedule: NoiseSchedule | Any  # the cold degradation for process="cold"
    config: TrainConfig


def load_model(path: str | os.PathLike, ema: bool = True, device: str | torch.device | None = None, *,
               model: torch.nn.Module | None = None, degradation: Any = None) -> LoadedModel:
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
        raise CheckpointError(f"the weights in {path} do not fit the network {type(net).__name__} "
                              f"(config.model={config.model!r}): {e}") from e
    net.to(dev).eval()
    net.trained_T = config.T  # sample() warns for a schedule of another length
    if degradation is not None:
        check_degradation(degradation, config)
        process = degradation
    else:
        process = build_process(config, int(state["image_shape"][-1]))
    if isinstance(process, NoiseSchedule):
        process = process.to(dev)
    return LoadedModel(net, process, config)
