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

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..presets import TrainConfig, training_preset
from ..seeding import derived_seed  # noqa: F401  (re-exported for chapter modules)

__all__ = [
    "RunSpec",
    "TRAINING_SEEDS",
    "make_config",
    "seed_run_name",
    "seed_runs_of",
    "snapshot_callback",
    "train_runs",
]

# (preset name, overrides applied at every tier); the overrides may hold "tier_overrides": {tier: {...}},
# applied after the chapter's tier overrides for that one run (never at the smoke tier).
RunSpec = tuple[str, dict[str, Any]]

# The training seeds over which the chapters judge the rankings their conclusions rest on: seed 0 is a run
# itself, seeds 1 and 2 the same run trained again with only ``seed`` changed (initialisation, data order, noise).
TRAINING_SEEDS = (0, 1, 2)


def seed_run_name(base: str, seed: int, bases: Iterable[str], what: str = "base") -> str:
    """The run of ``base`` (one of ``bases``) from training seed ``seed``: seed 0 is ``base`` itself, seed s
    ``<base>_seed<s>``. ``what`` names ``base`` in the error for a name outside ``bases``."""
    bases = tuple(bases)
    if base not in bases:
        raise ValueError(f"{what} must be one of {bases}, got {base!r}")
    if seed not in TRAINING_SEEDS:
        raise ValueError(f"seed must be one of {TRAINING_SEEDS}, got {seed!r}")
    return base if seed == 0 else f"{base}_seed{seed}"


def seed_runs_of(runs: Mapping[str, RunSpec], bases: Iterable[str]) -> dict[str, RunSpec]:
    """The seed runs of each of ``bases`` (runs of ``runs``) for seeds 1, 2, ...: the base's spec with ``seed``
    set, named by :func:`seed_run_name`, seed by seed."""
    bases = tuple(bases)
    return {
        seed_run_name(b, s, bases): (runs[b][0], {**runs[b][1], "seed": s}) for s in TRAINING_SEEDS[1:] for b in bases
    }


SMOKE = dict(
    dataset="mnist-embedded",
    subset=256,
    batch_size=16,
    steps=6,
    warmup_steps=0,
    log_every=2,
    checkpoint_every=0,
    sample_every=0,
    callback_every=3,
    device="cpu",
)


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
        import io

        from ..results import atomic_write_bytes

        net = ema if ema is not None else model
        buf = io.BytesIO()
        torch.save({"step": step, "state_dict": net.state_dict()}, buf)
        atomic_write_bytes(folder / f"step_{step:07d}.pt", buf.getvalue())

    return save


def train_runs(
    chapter: str,
    runs: Mapping[str, RunSpec],
    tier: str,
    tier_overrides: Mapping[str, Mapping[str, Any]],
    progress: bool = True,
    snapshots: bool = False,
    only: list[str] | None = None,
) -> Path:
    """A chapter's training part: :func:`~.store.record_training` of its :class:`~.store.RunStore`."""
    from .store import RunStore, record_training

    return record_training(RunStore(chapter, runs, tier_overrides, tier), progress, snapshots, only)
