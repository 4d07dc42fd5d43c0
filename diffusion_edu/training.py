"""The training loop: one loop for every preset, resumable exactly from its checkpoints.

(Longer than the package's usual ~400 lines, and ``_loop`` longer than ~60: the loop, resuming,
the run directory's claim and the checkpoint state are one contract, that a resumed run is the run
that never stopped; its steps stay in one place to be read in order.)

``train(config, out_dir)`` runs Ho et al.'s Algorithm 1 (or Bansal et al.'s cold-diffusion
objective) with the options of :class:`~diffusion_edu.presets.TrainConfig` and writes, under
``out_dir``: ``config.json``, ``log.jsonl`` (one JSON line per log interval: step, mean loss, learning
rate, gradient norm, images per second), ``checkpoint.pt`` (atomic; see :mod:`diffusion_edu.checkpoint`)
and ``samples/step_NNNNNNN.png``. Run it again with ``resume=True`` (the default) and it continues
from the checkpoint as if it had never stopped: same batches, same noise, same weights.

Under ``torchrun`` the same loop trains on several processes with DistributedDataParallel:
``TrainConfig.batch_size`` is then the global batch, every process draws it and trains on its slice,
and process 0 alone writes files (see :mod:`diffusion_edu.distributed` for the conventions and the
resume rule). Without torchrun there is no process group and nothing changes.

The loop reads values back from the device only at log, checkpoint, sample and callback steps.

Safety of the output folder (see :mod:`diffusion_edu.rundir`): one run writes it at a time (a lock
naming the writer's PID); a fresh start keeps the run it replaces aside until its own first
checkpoint; a resume checks the config, the dataset's identity (name, size, content hash) and the
checkpoint's integrity (tensor checksum, finite weights) and repairs a log line cut off by a kill. A
resume is bit-identical to an uninterrupted run on the same hardware with the same number of CPU
threads (the checkpoint records it and a different count gives a warning). A loss that becomes NaN,
or stays far above its running median (:class:`~diffusion_edu.guards.DivergenceGuard`), stops the run
and keeps the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from .builders import build_network, build_process, check_degradation
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    LoadedModel,
    check_finite_weights,
    load_checkpoint,
    load_model,
    require_keys,
    save_checkpoint,
)
from .data import ImageDataset, load_dataset
from .data_fit import data_options, fit_to_data
from .devices import resolve_device
from .distributed import DistributedContext, check_global_batch, current, dropout_seed, launch
from .forward import declared_parameterization
from .guards import DivergenceError, DivergenceGuard, TrainingInterrupted
from .losses import DiffusionTables, augment_batch, cold_loss, discriminator_term, gaussian_loss, sample_timesteps
from .precision import grad_scaler, resolve_precision
from .presets import TRAINING_PRESETS, TrainConfig, training_preset
from .results import atomic_write_bytes
from .rundir import (
    ASIDE,
    RunLock,
    RunLockedError,
    dataset_identity,
    drop_aside,
    remove_stale_temp_files,
    repair_log,
    restore_aside,
    set_aside,
)
from .schedules import NoiseSchedule
from .seeding import EpochOrder, capture_rng_state, derived_seed, forked_rng, restore_rng_state

__all__ = [
    "TrainConfig",
    "TRAINING_PRESETS",
    "training_preset",
    "TrainingRun",
    "TrainResult",
    "NonFiniteLossError",
    "DivergenceError",
    "TrainingInterrupted",
    "train",
    "steps_for_budget",
    "ema_update",
    "load_model",
    "LoadedModel",
]

Callback = Callable[[int, torch.nn.Module, "torch.nn.Module | None"], Any]
# Fields that may change between a run and its resumption (they do not change the trained state).
_RESUMABLE = {
    "steps",
    "sample_defaults",
    "budget_fixed_at",
    "log_every",
    "checkpoint_every",
    "sample_every",
    "sample_n",
    "sample_steps",
    "callback_every",
    "device",
    "precision",
    "channels_last",
    "compile",
}
# What resuming a checkpoint needs (a file without them was not written by train()).
_RESUME_KEYS = ("step", "config", "model", "optimizer", "rng", "data_order", "image_shape")
_OVERWRITE_HINT = "start afresh with --overwrite (overwrite=True in Python)"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta for every parameter (an exponential moving
    average of the weights; Ho et al. Sec. 4 use decay 0.9999); buffers are copied."""
    ema_params: list[torch.Tensor] = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    if decay == 0.0:
        torch._foreach_copy_(ema_params, params)
    else:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # e + (1 - decay) (p - e)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


class TrainingRun:
    """Everything one run holds (data, network, EMA, optimizer, noise generator, data order) and its
    optimisation step :meth:`train_step`. ``state_dict()`` is the checkpoint."""

    def __init__(
        self,
        config: TrainConfig,
        device: str | torch.device | None = None,
        *,
        model: torch.nn.Module | None = None,
        discriminator: torch.nn.Module | None = None,
        degradation: Any = None,
        dataset: ImageDataset | None = None,
    ):
        cfg = self.config = config
        dev = self.device = resolve_device(device or config.device)
        self.dist: DistributedContext | None = current()  # None: a plain single-process run
        if self.dist is not None:
            check_global_batch(cfg.batch_size, self.dist.world_size)
        ds = dataset if dataset is not None else load_dataset(cfg.dataset, cfg.split, **data_options(cfg))
        if cfg.subset is not None:
            ds = ds.subset(cfg.subset)
        self.image_shape = tuple(ds.image_shape)  # (C, H, W)
        self.dataset_id = dataset_identity(ds.name, ds.images, ds.labels)  # checked on resume
        self.data = ImageDataset(ds.images.to(dev), ds.labels.to(dev), ds.name, ds.num_classes)
        self.custom_model = model is not None
        if model is None:
            torch.manual_seed(derived_seed(cfg.seed, "init"))
            model = build_network(cfg)
        # The global RNG (dropout masks): one stream per process, process 0's is the single-process one.
        torch.manual_seed(dropout_seed(cfg.seed, self.dist.rank if self.dist is not None else 0))
        self.model = model.to(dev).train()  # the raw module: checkpoints hold its state_dict
        self._check_network(ds)
        self.num_classes: int | None = getattr(model, "num_classes", None)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda"
        if self.channels_last:
            # Module.to accepts memory_format (torch docs); torch's overload stubs omit it.
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.precision = resolve_precision(cfg.precision, dev)  # bf16 / fp16 + scaler / fp32 by capability
        self.amp_dtype = self.precision.dtype
        self.scaler = grad_scaler(dev, self.precision)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval() if cfg.ema_decay is not None else None
        net, self.shard = self.model, None
        if self.dist is not None:
            net = self.dist.wrap(self.model, dev)  # DDP: process 0's weights are broadcast to all
            if self.ema is not None:
                ema_update(self.ema, self.model, 0.0)  # the EMA starts from the broadcast weights
            if self.dist.world_size > 1:
                self.shard = self.dist.shard(cfg.batch_size)  # this process's part of each global batch
        # torch.compile of a Module returns an OptimizedModule (a Module); its stub says Callable.
        self.forward: torch.nn.Module = cast(torch.nn.Module, torch.compile(net)) if cfg.compile else net
        opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.schedule: NoiseSchedule | None = None
        self.tables: DiffusionTables | None = None
        self.degradation: Any = None  # duck-typed: .T and .degrade(x0, t) (see check_degradation)
        self.discriminator: torch.nn.Module | None = None
        if cfg.process == "gaussian":
            self.schedule = build_process(cfg, self.image_shape[-1])
            self.tables = DiffusionTables.from_schedule(self.schedule, dev)
        elif degradation is not None:
            check_degradation(degradation, cfg)
            self.degradation = degradation
        else:
            self.degradation = build_process(cfg, self.image_shape[-1])
        if cfg.disc_weight > 0:
            self.discriminator = self._frozen_discriminator(discriminator)
        self.generator = torch.Generator(dev).manual_seed(derived_seed(cfg.seed, "noise"))
        self.order = EpochOrder(len(ds), cfg.batch_size, cfg.seed, dev)
        self.step = 0
        self.last_grad_norm: torch.Tensor | None = None

    def _check_network(self, ds: ImageDataset) -> None:
        declared_parameterization(
            self.model, self.config.parameterization
        )  # a network declaring another output is refused
        c, h, _ = ds.image_shape
        want_c, want_h = getattr(self.model, "in_channels", c), getattr(self.model, "image_size", h)
        if (want_c, want_h) != (c, h):
            raise ValueError(
                f"the network takes {want_c}-channel {want_h}x{want_h} images but the dataset "
                f"{ds.name!r} has shape {tuple(ds.image_shape)}"
            )
        nc = getattr(self.model, "num_classes", None)
        if self.config.p_uncond > 0 and nc is None:
            raise ValueError(
                "TrainConfig.p_uncond > 0 (label dropout) needs a class-conditional network, "
                "but the network has num_classes=None; set model_kwargs={'num_classes': 10}"
            )
        if nc is not None and nc < int(ds.labels.max()) + 1:
            raise ValueError(f"the network has num_classes={nc} but the dataset's labels reach {int(ds.labels.max())}")

    def _frozen_discriminator(self, discriminator: torch.nn.Module | None) -> torch.nn.Module:
        if self.num_classes is None:
            raise ValueError(
                "TrainConfig.disc_weight > 0 (Report A's discriminator term) compares D's answer "
                "with the label, so it needs a class-conditional network (num_classes set)"
            )
        if discriminator is None:
            from .metrics import load_mnist_classifier

            discriminator = load_mnist_classifier(device=self.device)
        return discriminator.to(self.device).eval().requires_grad_(False)

    def _discriminator_classes(self) -> int:
        """The network's num_classes (the null label), which the discriminator term needs (checked in
        :meth:`_frozen_discriminator`)."""
        if self.num_classes is None:
            raise ValueError("the discriminator term needs a class-conditional network (num_classes set)")
        return self.num_classes

    @property
    def process(self):
        """The schedule (Gaussian diffusion) or the degradation (cold diffusion)."""
        return self.schedule if self.schedule is not None else self.degradation

    def lr_at(self, step: int) -> float:
        """Linear warm-up, lr * min(1, step / warmup_steps) (Ho et al. App. B: 5000 steps on CIFAR-10),
        then constant, or with ``lr_schedule="cosine"`` a half-cosine decay to 0 at ``config.steps``:
        lr * (1 + cos(pi * (step - warmup) / (steps - warmup))) / 2."""
        cfg = self.config
        warm = cfg.warmup_steps
        if warm and step < warm:
            return cfg.lr * step / warm
        if cfg.lr_schedule == "cosine" and cfg.steps > warm:
            progress = min(1.0, (step - warm) / (cfg.steps - warm))
            return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.lr

    def train_step(self) -> torch.Tensor:
        """One optimisation step (Ho et al. Algorithm 1 on one batch); returns the detached loss
        without reading it back from the device. Random draws, in order: flips, label drops, t, eps,
        all for the global batch; under DDP this process then keeps its slice (``self.shard``) and the
        loss is the mean over that slice (DDP averages the gradients over the processes)."""
        cfg, dev, gen = self.config, self.device, self.generator
        step = self.step + 1
        x0, y = self.data.batch(self.order.next())
        x0, y = augment_batch(x0, y, hflip=cfg.hflip, p_uncond=cfg.p_uncond, null_label=self.num_classes, generator=gen)
        T = self.tables.T if self.tables is not None else int(self.degradation.T)
        t = sample_timesteps(x0.shape[0], T, gen, dev)
        eps = torch.randn(x0.shape, generator=gen, device=dev) if self.tables is not None else None
        kept = None  # the discriminator term's denominator: None = this batch's count of real labels
        if self.shard is not None:
            assert self.dist is not None  # a shard is set only under DDP
            if self.discriminator is not None:  # the global batch's count, shared out over the processes
                kept = (y != self._discriminator_classes()).sum().clamp(min=1) / self.dist.world_size
            x0, y, t = x0[self.shard], y[self.shard], t[self.shard]
            eps = eps[self.shard] if eps is not None else None
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        labels = y if self.num_classes is not None else None
        with torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            if self.tables is not None:
                assert eps is not None  # drawn above whenever tables is set
                loss, output, xt = gaussian_loss(
                    self.forward,
                    x0,
                    t,
                    eps,
                    self.tables,
                    cfg.parameterization,
                    cfg.loss,
                    labels,
                    cfg.loss_weighting,
                    cfg.min_snr_gamma,
                )
                if self.discriminator is not None:
                    tab, p = self.tables, cfg.parameterization
                    x_pred = (
                        tab.x0_from_output(output, xt, t, p)
                        if cfg.disc_input == "x0"
                        else tab.mu_from_output(output, xt, t, p)
                    )
                    x_pred = x_pred.float().clamp(-1.0, 1.0)
                    loss = loss + cfg.disc_weight * discriminator_term(
                        self.discriminator, x_pred, y, self._discriminator_classes(), kept
                    )
            else:
                loss, _ = cold_loss(self.forward, x0, t, self.degradation, cfg.loss, labels)
            aux = getattr(self.model, "aux_loss", None)
            if aux is not None and cfg.aux_weight:
                loss = loss + cfg.aux_weight * aux.float()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # fp16: scale the loss so small gradients do not underflow
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip is not None:
            self.last_grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            assert cfg.ema_decay is not None  # the EMA exists only when ema_decay is set
            ema_update(self.ema, self.model, 0.0 if step <= cfg.ema_start else cfg.ema_decay)
        self.step = step
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: weights, EMA, optimizer, step, RNG and data-order state, config (plain data).
        Under DDP every process must call it (it gathers each process's dropout RNG state into
        ``rng_per_process``, with ``world_size``); process 0 saves it."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng_state(self.generator, self.device),
            "data_order": self.order.state_dict(),
            "image_shape": list(self.image_shape),
            "model_class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "torch_version": str(torch.__version__),  # TorchVersion is a class: keep plain str
            "dataset": self.dataset_id,
            "threads": torch.get_num_threads(),
            "precision": self.precision.name,
        }
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        if self.dist is not None:
            state["world_size"] = self.dist.world_size
            state["rng_per_process"] = self.dist.gather_rng(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint made by :meth:`state_dict` (the next step continues exactly)."""
        require_keys(state, _RESUME_KEYS, "the checkpoint", "resuming a run")
        theirs = state.get("dataset")
        if theirs is not None and theirs != self.dataset_id:
            mine = self.dataset_id
            raise CheckpointError(
                f"the checkpoint was trained on {theirs['name']!r} ({theirs['n']} images, content sha256 "
                f"{theirs['sha256'][:12]}...) but this run's data is {mine['name']!r} ({mine['n']} images, "
                f"sha256 {mine['sha256'][:12]}...): resume with the same data, or {_OVERWRITE_HINT}"
            )
        threads = state.get("threads")
        more = int(state["step"]) < self.config.steps  # a finished run that is only loaded trains nothing
        if more and threads is not None and int(threads) != torch.get_num_threads():
            warnings.warn(
                f"resuming with {torch.get_num_threads()} CPU threads, but the checkpoint was written "
                f"with {threads}: the run continues, but is exactly the uninterrupted run only with the "
                f"same thread count and hardware (--threads {threads})",
                stacklevel=3,
            )
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"the checkpoint does not fit this run's network or optimizer: {e}") from e
        if self.scaler is not None and state.get("grad_scaler") is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.order.load_state_dict(state["data_order"])
        restore_rng_state(state["rng"], self.generator, self.device)
        if self.dist is not None:
            self.dist.restore_rng(state, self.device, self.config.seed)
        self.step = int(state["step"])


@dataclass
class TrainResult:
    """What :func:`train` returns: the networks in eval mode (``ema`` is None without EMA), the schedule
    (or degradation), the config, the last step, the output folder and the total wall time."""

    model: torch.nn.Module
    ema: torch.nn.Module | None
    schedule: Any
    config: TrainConfig
    step: int
    out_dir: Path
    wall_time_s: float
    precision: str = "fp32"  # what the run computed in on its device (diffusion_edu.precision)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "checkpoint.pt"


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    model.eval()
    try:
        yield
    finally:
        model.train()


def train(
    config: TrainConfig | dict,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    callbacks: Callback | Sequence[Callback] | None = None,
    *,
    model: torch.nn.Module | None = None,
    discriminator: torch.nn.Module | None = None,
    degradation: Any = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train (or resume training) the network described by ``config``; write everything to ``out_dir``.

    resume: continue from ``out_dir/checkpoint.pt`` when it exists (only the fields in ``_RESUMABLE``,
    such as ``steps``, may differ from the checkpoint's config, and the dataset must be the same);
    False starts over in a folder that holds no run (a folder with a checkpoint is refused).
    overwrite: start afresh even when ``out_dir`` holds a run; that run is moved to
    ``out_dir/.previous`` and deleted once the new run has written its first checkpoint (a resume
    before then restores it). A second run into a folder that a run is writing fails at once.
    callbacks: functions ``f(step, model, ema_model)`` called every ``config.callback_every`` steps
    (e.g. an FID curve), with both networks in eval mode and the training RNG untouched.
    model / discriminator / degradation: use these objects instead of building them from the config
    (your own network; a stand-in classifier; a stand-in degradation).
    A NaN or infinite loss raises :class:`NonFiniteLossError` naming the step; the checkpoint on disk
    is then the last good one. The caller's global random state is left as it was.

    Under ``torchrun`` (or in a process group the caller set up) every process calls ``train`` with
    the same arguments and ``out_dir`` (on a file system they all see); ``config.batch_size`` is the
    global batch. Process 0 writes the files and runs the callbacks; when ``train`` returns, on any
    process, the files are written. See :mod:`diffusion_edu.distributed`.
    """
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    # The data first: bad data, or a network that cannot fit it, stops here, before out_dir is touched.
    dataset = load_dataset(config.dataset, config.split, **data_options(config))
    if model is None:
        config = fit_to_data(config, dataset, check_discriminator=discriminator is None)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"out_dir {out} is a file; expected a folder", None)
    log_path = out / "log.jsonl"
    callbacks = [callbacks] if callable(callbacks) else list(callbacks or [])
    if callbacks and not config.callback_every:
        raise ValueError("callbacks were given but TrainConfig.callback_every is 0, so they would never run")
    resume = resume and not overwrite
    with (
        launch(config.device, config.batch_size) as (ctx, device),
        _claim(out, ctx, config, resume) as main,
    ):  # ctx None: no torchrun; main: this process writes out
        previous = _previous_run(out, config, resume, overwrite, main)
        if ctx is not None:  # every process has read the same checkpoint before process 0 changes out_dir
            ctx.agree(-1 if previous is None else int(previous["step"]), "the checkpoint's step")
        with forked_rng(device):
            run = TrainingRun(
                config, device, model=model, discriminator=discriminator, degradation=degradation, dataset=dataset
            )
            wall = 0.0
            if previous is not None and config.minutes is not None:
                config = _budget_of(previous["config"], config)
                run.config = config
            if previous is not None:
                run.load_state_dict(previous)
                wall = float(previous.get("wall_time_s", 0.0))
                if main:
                    repair_log(log_path, run.step)
            elif main:  # a fresh start: the run it replaces waits in .previous for the first checkpoint
                set_aside(out)
            if main:
                atomic_write_bytes(out / "config.json", (json.dumps(config.to_dict(), indent=1) + "\n").encode())
            return _loop(run, out, progress, callbacks, wall, has_checkpoint=previous is not None)


@contextlib.contextmanager
def _claim(out: Path, ctx: DistributedContext | None, config: TrainConfig, resume: bool):
    """Process 0 creates ``out``, locks it for this run and removes stale temporary files; a folder it
    created and left empty (the run failed before writing anything) is removed again. Yields whether
    this process writes ``out``: False on the other processes of a torchrun launch, and on process 0
    when another process holds the lock but the folder holds this run finished (it is only loaded)."""
    if ctx is not None and not ctx.is_main:
        yield False
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(out).acquire()
    except RunLockedError:
        if resume and _finished(out / "checkpoint.pt", config):
            yield False
            return
        raise
    try:
        remove_stale_temp_files(out)
        yield True
    finally:
        lock.release()
        if created and not any(p.name != ".lock" for p in out.iterdir()):
            (out / ".lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()


def _finished(ckpt_path: Path, config: TrainConfig) -> bool:
    try:
        return int(load_checkpoint(ckpt_path)["step"]) >= config.steps
    except (CheckpointError, OSError, KeyError, ValueError):
        return False


def _previous_run(out: Path, config: TrainConfig, resume: bool, overwrite: bool, main: bool) -> dict | None:
    """The checkpoint to resume (checked: readable, intact, finite, same config), or None for a fresh
    start; a fresh start without ``overwrite`` into a folder holding a run is refused."""
    ckpt_path = out / "checkpoint.pt"
    if resume and main:
        restore_aside(out)
    if not ckpt_path.exists():
        return None
    if not resume:
        if overwrite:
            return None
        raise ValueError(
            f"{out} already holds a run ({ckpt_path}); resume=False (--no-resume) would replace it: "
            f"{_OVERWRITE_HINT}, which keeps the old run in {out / ASIDE} until the new run's first "
            "checkpoint, or choose another output folder"
        )
    previous = load_checkpoint(ckpt_path)
    require_keys(previous, _RESUME_KEYS, ckpt_path, "resuming a run")
    for key in ("model", "ema"):
        if previous.get(key) is not None:
            check_finite_weights(previous[key], f"{ckpt_path} (its {key!r} weights)")
    now = config.to_dict()
    changed = sorted(k for k, v in previous["config"].items() if now.get(k) != v and k not in _RESUMABLE)
    if changed:
        raise CheckpointError(
            f"{ckpt_path} belongs to a run with a different config (fields {changed} "
            f"differ); choose another output folder, or {_OVERWRITE_HINT}"
        )
    return previous


def steps_for_budget(minutes: float, elapsed_s: float, step: int, seconds_per_step: float) -> int:
    """The number of steps a run with a wall-clock budget of ``minutes`` ends at: after ``step`` steps and
    ``elapsed_s`` seconds, the remaining time at ``seconds_per_step`` (measured over the timed steps),
    ``step + floor((60 minutes - elapsed_s) / seconds_per_step)``, and never fewer than ``step``."""
    if not minutes > 0:
        raise ValueError(f"minutes must be a positive budget, got {minutes!r}")
    if not seconds_per_step > 0:
        raise ValueError(f"seconds_per_step must be positive, got {seconds_per_step!r}")
    return step + max(0, math.floor((60.0 * minutes - elapsed_s) / seconds_per_step))


def _budget_of(previous: dict[str, Any], config: TrainConfig) -> TrainConfig:
    """Resuming a budgeted run: the steps its budget fixed stay fixed (the budget itself may not change)."""
    if previous.get("budget_fixed_at") is None:
        return config  # stopped before its steps were fixed: the resumed run times its steps again
    return config.replace(steps=int(previous["steps"]), budget_fixed_at=int(previous["budget_fixed_at"]))


class _BudgetProbe:
    """Times the first steps of a run with a wall-clock budget and fixes its step count, twice.

    First from ``budget_probe_steps`` steps (after two untimed ones: first-call allocations and
    compilation); then once more a tenth of the way to that count, from the mean time per step since the
    probe, which by then includes the run's periodic costs (logs, checkpoints, sample grids) and any
    slowdown of the machine. Each fix is :func:`steps_for_budget`; the second is final."""

    def __init__(self, cfg: TrainConfig, first_step: int):
        self.minutes, self.start = float(cfg.minutes or 0.0), first_step + 2
        self.end = self.start + cfg.budget_probe_steps
        self.t_start = self.t_end = 0.0
        self.refine_at: int | None = None  # the step of the second fix, once the first is made
        self.final = False

    def observe(self, step: int, loss: torch.Tensor, elapsed: Callable[[], float]) -> int | None:
        """The new step count when ``step`` is a fixing point, else None."""
        if step not in (self.start, self.end, self.refine_at):
            return None
        float(loss)  # a read-back: the device has finished the step
        now = time.perf_counter()
        if step == self.start:
            self.t_start = now
            return None
        if step == self.end:
            self.t_end = now
            steps = steps_for_budget(self.minutes, elapsed(), step, (now - self.t_start) / (self.end - self.start))
            self.refine_at = step + (steps - step) // 10 if steps - step >= 10 else None
            self.final = self.refine_at is None
            return steps
        self.final = True
        return steps_for_budget(self.minutes, elapsed(), step, (now - self.t_end) / (step - self.end))


def _loop(
    run: TrainingRun, out: Path, progress: bool, callbacks: list[Callback], wall: float, has_checkpoint: bool
) -> TrainResult:
    from tqdm.auto import tqdm

    cfg, dev, ctx = run.config, run.device, run.dist
    main = ctx is None or ctx.is_main  # only process 0 writes files, shows progress and runs callbacks
    ckpt_path = out / "checkpoint.pt"
    last_good = run.step if has_checkpoint else None
    guard = DivergenceGuard()
    loss_sum = torch.zeros((), device=dev)
    bad_step = torch.full((), -1, dtype=torch.int64, device=dev)  # first step with a non-finite loss
    bad_loss = torch.zeros((), device=dev)
    n_acc, t0 = 0, time.perf_counter()
    t_interval = t0

    def kept() -> str:
        return (
            f"the last good checkpoint (step {last_good}) is kept at {ckpt_path}"
            if last_good is not None
            else "no checkpoint had been written yet"
        )

    def check_finite() -> None:
        first, value = (bad_step, bad_loss) if ctx is None else ctx.first_bad_step(bad_step, bad_loss)
        step = int(first)  # one read-back
        if step >= 0:
            raise NonFiniteLossError(f"the loss became {float(value)} at step {step}: training stopped; {kept()}")

    run.model.train()
    # a wall-clock budget whose steps are not fixed yet: the loop runs until the probe fixes them
    probe = _BudgetProbe(cfg, run.step) if cfg.minutes is not None and cfg.budget_fixed_at is None else None
    bar = tqdm(
        total=cfg.steps if probe is None else None,
        initial=run.step,
        disable=not (progress and main),
        unit="step",
        dynamic_ncols=True,
        desc=f"train {type(run.model).__name__ if run.custom_model else cfg.model}",
    )
    step = run.step
    try:
        while step < cfg.steps or (probe is not None and probe.refine_at is None):
            step += 1
            loss = run.train_step()
            loss_sum += loss
            first = (bad_step < 0) & ~torch.isfinite(loss)
            bad_step = torch.where(first, step, bad_step)
            bad_loss = torch.where(first, loss, bad_loss)
            n_acc += 1
            bar.update(1)
            if probe is not None:
                fixed = probe.observe(step, loss, lambda: wall + time.perf_counter() - t0)
                if fixed is not None:
                    fixed = fixed if ctx is None else ctx.broadcast_int(fixed)  # process 0's clock decides
                    cfg = run.config = cfg.replace(steps=max(fixed, step), budget_fixed_at=step)
                    probe = None if probe.final else probe
                    bar.total = cfg.steps
                    bar.refresh()
                    if main:
                        atomic_write_bytes(out / "config.json", (json.dumps(cfg.to_dict(), indent=1) + "\n").encode())
            last = step == cfg.steps and (probe is None or probe.refine_at is not None)
            do_log = step % cfg.log_every == 0 or last
            do_ckpt = last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            do_samples = cfg.sample_every and step % cfg.sample_every == 0
            do_callbacks = callbacks and cfg.callback_every and step % cfg.callback_every == 0
            if not (do_log or do_ckpt or do_samples or do_callbacks):
                continue
            check_finite()
            now = time.perf_counter()
            if do_log:
                mean = float(loss_sum if ctx is None else ctx.mean(loss_sum)) / n_acc  # global batch's loss
                record = {
                    "step": step,
                    "epoch": run.order.epoch,
                    "loss": mean,
                    "lr": run.lr_at(step),
                    "img_per_s": round(n_acc * cfg.batch_size / max(now - t_interval, 1e-9), 2),
                    "elapsed_s": round(wall + now - t0, 3),
                }
                if run.last_grad_norm is not None:
                    record["grad_norm"] = float(run.last_grad_norm)
                if main:
                    with open(out / "log.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{mean:.4g}")
                loss_sum.zero_()
                n_acc, t_interval = 0, time.perf_counter()
                diverged = guard.update(step, mean)
                if diverged:
                    raise DivergenceError(f"{diverged}: training stopped; {kept()}; lower lr or set grad_clip")
            if do_ckpt and not (guard.suspect and not last):  # no checkpoint while the loss is out of range
                _check_finite_weights(run, step, kept)
                state = run.state_dict()  # under DDP a collective: every process takes part
                if main:
                    state["wall_time_s"] = wall + time.perf_counter() - t0
                    save_checkpoint(ckpt_path, state)
                    drop_aside(out)  # the new run has its own checkpoint: the run it replaced goes
                last_good = step
            if do_samples and main:
                _save_samples(run, out / "samples" / f"step_{step:07d}.png")
            if do_callbacks and main:
                with forked_rng(dev), _eval_mode(run.model):
                    for callback in callbacks:
                        callback(step, run.model, run.ema)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"training stopped at step {run.step}; {kept()}; run the same command again "
            "(or train() with resume=True) to continue from it"
        ) from None
    finally:
        bar.close()
    if ctx is not None:
        ctx.barrier()  # process 0's last files are on disk before train() returns anywhere
    run.model.eval()
    return TrainResult(
        run.model, run.ema, run.process, cfg, run.step, out, wall + time.perf_counter() - t0, run.precision.name
    )


def _check_finite_weights(run: TrainingRun, step: int, kept: Callable[[], str]) -> None:
    """Before a checkpoint: weights with NaN or inf are never saved (one read-back per checkpoint)."""
    params = [p.detach() for p in run.model.parameters() if p.is_floating_point()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise NonFiniteLossError(
            f"the weights became non-finite (NaN or inf) by step {step}: training stopped; {kept()}"
        )


@torch.no_grad()
def _save_samples(run: TrainingRun, path: Path) -> None:
    """A grid of ``sample_n`` images from the EMA network (else the trained one), with fixed noise so
    that grids at different steps are comparable: DDIM with ``sample_steps`` steps for Gaussian
    diffusion; Bansal et al.'s Algorithm 2 from fully degraded training images for cold diffusion."""
    from .viz import save_image_grid

    cfg, dev, n = run.config, run.device, run.config.sample_n
    net = run.ema if run.ema is not None else run.model
    with forked_rng(dev), _eval_mode(run.model):
        if run.schedule is not None:
            from .samplers import sample

            y = torch.arange(n, device=dev) % run.num_classes if run.num_classes is not None else None
            gen = torch.Generator(dev).manual_seed(derived_seed(cfg.seed, "samples"))
            images = sample(
                net,
                run.schedule.to(dev),
                n,
                method="ddim",
                steps=min(cfg.sample_steps, cfg.T),
                y=y,
                generator=gen,
                parameterization=cfg.parameterization,
            )
        else:
            from .cold import cold_sample

            x0, _ = run.data.batch(torch.arange(n) % len(run.data))
            x_T = run.degradation.degrade(x0, torch.full((n,), int(run.degradation.T), dtype=torch.int64, device=dev))
            images = cold_sample(net, run.degradation, x_T, algorithm=2)
    assert isinstance(images, torch.Tensor)  # sample() without trajectory_every: images only
    save_image_grid(images, path, nrow=math.ceil(math.sqrt(n)))
