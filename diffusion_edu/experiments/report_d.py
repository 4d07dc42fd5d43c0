"""Report D (small-CNN DDPM and cold diffusion): the runs and the chapter's parts.

Report D trains a plain 7x7 CNN (16, 32, 32, 16; GELU) as a DDPM at T=1000, a harder variant (T=100,
lr 6e-4, SELU), and the same CNN as a cold-diffusion restorer for row/column averaging. It plots FID
and IS per epoch: the runs save their weights every epoch (``snapshots/``) so the curves are measured
after training. The report's learning rates and batch size are kept at every tier.
"""

from __future__ import annotations

from .common import Part
from .training_runs import RunSpec, make_config, train_runs

CHAPTER = "report_d"

RUNS: dict[str, RunSpec] = {
    "cnn": ("d_cnn", {}),
    "cnn_selu": ("d_cnn_selu", {}),
    "cold_columns_random": ("d_cold_columns", {}),
    "cold_columns_outside_in": ("d_cold_columns", {"cold_order": "outside-in"}),
    "cold_columns_inside_out": ("d_cold_columns", {"cold_order": "inside-out"}),
    "cold_columns_random_g4": ("d_cold_columns", {"cold_group": 4, "T": 7}),
    "cold_rows_random": ("d_cold_columns", {"cold_axis": "rows"}),
}

# One epoch of the 8,995 embedded digits is 70 batches of 128. cpu tier: 15 epochs (1,050 steps,
# about 6 minutes for the CNN on 2 cores, measured: ~370 img/s; seven runs share one session's
# machine), a snapshot every epoch.
EPOCH_STEPS = {"cpu": 8995 // 128, "gpu": 60_000 // 128}
TIER_OVERRIDES = {
    "cpu": dict(dataset="mnist-embedded", steps=15 * EPOCH_STEPS["cpu"], callback_every=EPOCH_STEPS["cpu"],
                checkpoint_every=EPOCH_STEPS["cpu"] * 5, log_every=EPOCH_STEPS["cpu"] // 2),
}


def config(run: str, tier: str):
    """The TrainConfig of one of :data:`RUNS` at ``tier``."""
    return make_config(RUNS[run], tier, TIER_OVERRIDES)


def _train(tier: str, progress: bool):
    return train_runs(CHAPTER, RUNS, tier, TIER_OVERRIDES, progress=progress, snapshots=True)


PARTS: dict[str, Part] = {
    "training": Part("training", "train the CNN DDPMs and the cold-diffusion restorers, one snapshot per epoch", _train),
}
