"""Training runs of the MNIST chapters at each tier, and the part that trains them.

A chapter lists its runs as ``name -> (preset, overrides)``: the preset is the report's configuration
(:mod:`diffusion_edu.presets`) and is used as is at the gpu tier (the report's scale, full MNIST).
The cpu tier keeps every setting that the chapter studies and changes only what the budget forces,
each change stated here and on the chapter's page:

- data: the 8,995 embedded training digits instead of MNIST's 60,000 (offline, and the same for every
  reader); steps: as many as fit in about 10 minutes on 2 CPU cores (measured, see each chapter);
- for the networks the book sizes for this budget (Reports A and E), a higher learning rate (1e-3 with
  200 warm-up steps) decayed to 0 by a half cosine, instead of a constant 1e-4..2e-4 over 20k-100k
  steps: at ~3k steps a constant small rate has not converged and EMA has not caught up.
- Report D keeps the report's own learning rates and batch (its chapter compares exactly those).

The smoke tier trains a few steps on 256 digits: it checks that the code runs, nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..seeding import derived_seed  # noqa: F401  (re-exported for chapter modules)
from ..presets import TrainConfig, training_preset
from .common import ensure_trained, final_loss, runs_root, save_result, training_curve

__all__ = ["RunSpec", "make_config", "snapshot_callback", "train_runs", "snapshot_paths"]

# (preset name, overrides applied at every tier); the overrides may hold "tier_overrides": {tier: {...}},
# applied after the chapter's tier overrides for that one run (never at the smoke tier).
RunSpec = tuple[str, dict[str, Any]]

SMOKE = dict(dataset="mnist-embedded", subset=256, batch_size=16, steps=6, warmup_steps=0, log_every=2,
             checkpoint_every=0, sample_every=0, callback_every=3, device="cpu")


def make_config(spec: RunSpec, tier: str, tier_overrides: Mapping[str, Mapping[str, Any]]) -> TrainConfig:
    """The run's TrainConfig at ``tier``: the preset, the run's own overrides, then the tier's.

    ``tier_overrides`` maps "cpu" / "colab" / "gpu" to overrides (a missing tier uses the preset as is);
    the smoke tier always uses :data:`SMOKE`.
    """
    preset, own = spec
    own = dict(own)
    per_tier = own.pop("tier_overrides", {})
    extra = SMOKE if tier == "smoke" else {**tier_overrides.get(tier, {}), **per_tier.get(tier, {})}
    cfg = training_preset(preset).replace(**own)
    return cfg.replace(**extra)


def snapshot_callback(out_dir: str | Path) -> Callable[[int, torch.nn.Module, Any], None]:
    """A training callback that saves the network's weights at each call as
    ``snapshots/step_NNNNNNN.pt`` (EMA weights when the run keeps an EMA): per-epoch curves (Report D)
    are then measured after training, at any granularity, without slowing the run."""
    folder = Path(out_dir) / "snapshots"

    def save(step: int, model: torch.nn.Module, ema: torch.nn.Module | None) -> None:
        from ..results import atomic_write_bytes
        import io

        net = ema if ema is not None else model
        buf = io.BytesIO()
        torch.save({"step": step, "state_dict": net.state_dict()}, buf)
        atomic_write_bytes(folder / f"step_{step:07d}.pt", buf.getvalue())

    return save


def snapshot_paths(chapter: str, run: str, tier: str) -> list[Path]:
    """The run's saved snapshots, in step order."""
    return sorted((runs_root(tier) / chapter / run / "snapshots").glob("step_*.pt"))


def train_runs(chapter: str, runs: Mapping[str, RunSpec], tier: str,
               tier_overrides: Mapping[str, Mapping[str, Any]], progress: bool = True,
               snapshots: bool = False, only: list[str] | None = None) -> Path:
    """Train (or resume, or load when finished) every run, then write ``results/<chapter>/training.json``
    with each run's config, parameter count, steps, wall time, throughput and loss curve."""
    from ..models import count_parameters

    t0 = time.perf_counter()
    summary: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    for name in (only or list(runs)):
        cfg = make_config(runs[name], tier, tier_overrides)
        out = runs_root(tier) / chapter / name
        kwargs = {"callbacks": snapshot_callback(out)} if snapshots and cfg.callback_every else {}
        result = ensure_trained(chapter, name, cfg, tier, progress=progress, **kwargs)
        curve = training_curve(out)
        summary[name] = {
            "preset": runs[name][0],
            "params": count_parameters(result.model),
            "steps": result.step,
            "epochs": curve["epoch"][-1] if curve["epoch"] else 0,
            "batch_size": cfg.batch_size,
            "precision": result.precision,  # what "auto" resolved to on this device
            "train_wall_time_s": round(result.wall_time_s, 1),
            "img_per_s": round(result.step * cfg.batch_size / max(result.wall_time_s, 1e-9), 1),
            "final_loss": final_loss(curve),
            "curve": {k: curve[k] for k in ("step", "epoch", "loss", "elapsed_s")},
        }
        configs[name] = cfg.to_dict()
    return save_result(chapter, "training", summary, {"runs": configs}, tier, time.perf_counter() - t0)
