"""Report A (MNIST DDPM design study): the runs it compares and the chapter's parts.

Report A trains at T=400 with eps-prediction and compares denoisers (U-Net, autoencoder, VAE-style),
eps vs mean prediction, four noise schedules, a one-hot label with and without a discriminator term,
fast sampling (DDIM vs sub-sampled steps) and the reverse variance. Every network takes the label
one-hot in its middle, as the report describes; samples are drawn 100 per class.
"""

from __future__ import annotations

from .common import Part
from .training_runs import RunSpec, make_config, train_runs

CHAPTER = "report_a"

_MIDDLE = {"model_kwargs": {"num_classes": 10, "label_at": "middle"}}
RUNS: dict[str, RunSpec] = {
    "unet": ("a_unet", _MIDDLE),                       # linear betas, eps: the reference run
    "unet_mu": ("a_unet_mu", _MIDDLE),                 # predicts the posterior mean instead
    "autoencoder": ("a_autoencoder", {}),
    "vae": ("a_vae", {}),
    "unet_quadratic": ("a_unet", {**_MIDDLE, "schedule": "quadratic"}),
    "unet_cosine": ("a_unet", {**_MIDDLE, "schedule": "cosine"}),
    "unet_sigmoid": ("a_unet", {**_MIDDLE, "schedule": "sigmoid"}),
    "unet_disc": ("a_unet_disc", _MIDDLE),             # + gamma * discriminator term (Eqs. 8-9)
}

# cpu tier: 2,000 steps of 64 (about 7 minutes for the U-Net on 2 cores, measured: ~300 img/s; eight
# runs share one session's machine, so each gets less than the ~10 minutes of quick_mnist).
TIER_OVERRIDES = {
    "cpu": dict(dataset="mnist-embedded", batch_size=64, steps=2000, lr=1e-3, warmup_steps=200,
                lr_schedule="cosine", channels_last=True, log_every=50, checkpoint_every=500),
}


def config(run: str, tier: str):
    """The TrainConfig of one of :data:`RUNS` at ``tier``."""
    return make_config(RUNS[run], tier, TIER_OVERRIDES)


def _train(tier: str, progress: bool):
    return train_runs(CHAPTER, RUNS, tier, TIER_OVERRIDES, progress=progress)


PARTS: dict[str, Part] = {
    "training": Part("training", "train the eight Report A networks (T=400) and record their curves", _train),
}
