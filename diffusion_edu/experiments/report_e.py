"""Report E (conditional MNIST U-Net with classifier-free guidance): the runs and the chapter's parts.

Report E trains a two-level U-Net with time and label in every block, L1 loss, batch 32, label
dropout for classifier-free guidance, and sweeps T in {1000, 4000} x {linear, cosine} and the
guidance weight w.
"""

from __future__ import annotations

from .common import Part
from .training_runs import RunSpec, make_config, train_runs

CHAPTER = "report_e"

RUNS: dict[str, RunSpec] = {
    "T1000_linear": ("e_unet", {}),
    "T4000_linear": ("e_unet_linear_T4000", {}),
    "T1000_cosine": ("e_unet_cosine_T1000", {}),
    "T4000_cosine": ("e_unet_cosine_T4000", {}),
}

# cpu tier: 17,000 steps of 32 (about 10 minutes on 2 cores, measured: ~900 img/s).
TIER_OVERRIDES = {
    "cpu": dict(dataset="mnist-embedded", steps=17_000, lr=1e-3, warmup_steps=200, lr_schedule="cosine",
                channels_last=True, log_every=200, checkpoint_every=2000),
}


def config(run: str, tier: str):
    """The TrainConfig of one of :data:`RUNS` at ``tier``."""
    return make_config(RUNS[run], tier, TIER_OVERRIDES)


def _train(tier: str, progress: bool):
    return train_runs(CHAPTER, RUNS, tier, TIER_OVERRIDES, progress=progress)


PARTS: dict[str, Part] = {
    "training": Part("training", "train the four Report E U-Nets (T x schedule) with label dropout", _train),
}
