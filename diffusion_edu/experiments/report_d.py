# Longer than ~400 lines: the chapter holds two kinds of model (Gaussian DDPM and cold diffusion), their
# per-epoch snapshots and Bansal et al.'s two algorithms; the shared pieces live in the kernel. The parts
# curves, cold and comparison run over 60 lines: each builds one results file top to bottom, in the report's order.
"""Report D (small-CNN DDPM and cold diffusion): the runs and the chapter's parts.

Report D trains a plain 7x7 CNN (16, 32, 32, 16; GELU) as a DDPM at T=1000, a harder variant (T=100,
lr 6e-4, SELU), and the same CNN as a cold-diffusion restorer for row/column averaging. It plots FID
and IS per epoch: the runs save their weights every epoch (``snapshots/``) so the curves are measured
after training. The report's network, T, loss and batch size are kept at every tier; below the gpu tier
the two DDPMs, which train a fraction of the report's steps, warm up to a higher learning rate and decay
it on a cosine (:data:`RUNS`), and the cold-diffusion restorers keep the report's constant rate.

Parts, each writing ``results/report_d/<part>.json`` and PNG figures under ``results/report_d/figures/``:

- ``training``: the eight runs (:data:`RUNS`; nine at the cpu tier, :func:`runs_at`), one weight snapshot per epoch.
- ``curves``: FID / IS of every epoch's snapshot for cnn, cnn_selu and cold_columns_random (the same
  noise at every epoch), the loss curves, and the final numbers the report left blank.
- ``samples``: sample grids at the epochs the report shows (1, 20, 40, 60 of 100), scaled to the run.
- ``cold``: the six restorers: original / degraded / restored, Bansal et al.'s Algorithms 1 and 2,
  generation from a fitted prior of fully degraded images, and how much of a digit each direction keeps.
- ``comparison``: the Gaussian DDPMs against cold diffusion under one protocol (the report's Sec. 2.3).
- ``pretrained``: the GELU CNN (T=1000) shipped as ``load_pretrained("report_d")`` (at the cpu tier the
  run trained longest, ``cnn_long``), with what it draws measured: FID, precision and recall with their
  intervals, a grid, and its FID trend over training.

Every evaluation compares unconditional samples with the 1,005 held-out digits (classifier-feature FID,
KID, IS; :func:`~diffusion_edu.experiments.evaluation.measure`). The parts after ``training`` need the
finished runs they evaluate (each part's ``runs``; not all eight: a part can run while the queue trains
the others) and never train: at the cpu and gpu tiers they stop with the command to run when a run is
missing or unfinished (:func:`~.common.ensure_needs`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..cold import RowColumnAveraging, cold_sample, fit_degraded_prior
from ..data import load_embedded_mnist
from ..forward import q_sample
from ..metrics import classifier_outputs
from ..presets import TrainConfig, training_preset
from ..samplers import sample
from .common import (
    EVAL_BUDGETS,
    Budget,
    BudgetTable,
    Part,
    chapter_parts,
    have_result,
    load_result,
    save_result,
)
from .evaluation import (
    baseline_record,
    beats_baseline,
    book_classifier,
    heldout_reference,
    images_only,
    measure,
    with_baseline,
)
from .figures import figure_path, relative, save_grid
from .store import Cache, RunStore, load_snapshot, record_training, ship_pretrained
from .training_runs import RunSpec

__all__ = [
    "ReportDBudget",
    "BUDGETS",
    "REPORT_EPOCHS",
    "report_epochs",
    "run_epochs",
    "trained_epochs",
    "load_run",
    "load_snapshot",
    "generate",
    "gaussian_data_prior",
    "probe_accuracy",
    "step_change",
    "run_finished",
    "runs_at",
    "pretrained_run",
]

CHAPTER = "report_d"

# cpu tier: the cold-diffusion restorers train for COLD_CPU_EPOCHS epochs, the two DDPMs for DDPM_CPU_EPOCHS (the
# eight runs share one session's 2-core machine with Report A's eight; see TIER_OVERRIDES).
# One epoch of the 8,995 embedded digits is 70 batches of 128 (MNIST's 60,000: 468, the gpu tier).
EPOCH_STEPS = {"cpu": 8995 // 128, "colab": 8995 // 128, "gpu": 60_000 // 128}
DDPM_CPU_EPOCHS = 60  # the two Gaussian DDPMs at the cpu tier (see _DDPM_SHORT below)
COLD_CPU_EPOCHS = 8
COLD_COLAB_EPOCHS = 20  # colab tier (a free T4): the restorers' epochs; the DDPMs train COLAB_EPOCHS
COLAB_EPOCHS = 64  # more than the cpu tier's DDPM_CPU_EPOCHS, within the half hour (colab.describe)
# "cnn_long" (cpu tier only): the GELU DDPM for 200 epochs, 14,000 steps (30% of the report's 46,800), on the
# same rate schedule as "cnn"; about 95 minutes on 2 cores at ~320 img/s. The shipped network at the cpu tier.
LONG_CPU_EPOCHS = 200
# "cnn_report" (cpu tier only): the GELU DDPM for the report's own 46,800 steps of 128 (its 100 epochs of MNIST's
# 60,000 digits; here 668 passes over the 8,995 embedded ones), on the same rate schedule: about 5.4 hours on the 2
# cores at ~310 img/s, the rate of this convolution-bound network with or without channels-last or torch.compile
# (measured side by side on the 2-core machine). Resumable: it checkpoints every 5 epochs.
REPORT_STEPS = training_preset("d_cnn").steps
_COLD_CPU = {
    "tier_overrides": {
        "cpu": {"steps": COLD_CPU_EPOCHS * EPOCH_STEPS["cpu"]},
        "colab": {"steps": COLD_COLAB_EPOCHS * EPOCH_STEPS["colab"]},
    }
}
# The two Gaussian DDPMs at the cpu and colab tiers, which train a fraction of the report's 100 epochs (and
# on 8,995 digits instead of 60,000). The report's constant rates (2e-4, 6e-4) left the GELU network drawing
# formless blobs after 1,050 steps (FID 452.5 in the first re-run, worse than a Gaussian fitted to the
# pixels); a warm-up to 1e-3 and a cosine decay over the same 15 epochs still drew scribbles (FID 282.7, not
# below the pixel-Gaussian baseline). So at these tiers both DDPMs warm up to 2e-3 over 200 steps and decay
# to 0 on a cosine, and they train DDPM_CPU_EPOCHS / COLAB_EPOCHS epochs (TIER_OVERRIDES). No EMA: in a trial run with
# decay 0.999 the average still held 0.999^1400 = 25% of the random initial weights at step 1,400, and its
# samples scored FID 478 against 207 for the trained weights of the same checkpoint (250 samples, 20
# respaced steps), so an EMA would only blur the per-epoch curves. The report's architecture, T, loss and batch
# size are kept; the gpu tier keeps its rates and 100 epochs.
# sample_defaults: what `python -m diffusion_edu sample` draws from the shipped network by default. 100
# respaced steps, not the command's 20: at step 1,400 of the trial run they scored FID 166 against 207 (250
# samples); the report's own sampler takes all 1,000 (`--steps 0`).
_DDPM_SHORT = dict(lr=2e-3, warmup_steps=200, lr_schedule="cosine", sample_defaults={"method": "ddpm", "steps": 100})
_DDPM_CPU = {"tier_overrides": {"cpu": _DDPM_SHORT, "colab": _DDPM_SHORT}}
RUNS: dict[str, RunSpec] = {
    "cnn": ("d_cnn", {**_DDPM_CPU}),
    "cnn_selu": ("d_cnn_selu", {**_DDPM_CPU}),
    "cold_columns_random": ("d_cold_columns", {**_COLD_CPU}),
    "cold_columns_outside_in": ("d_cold_columns", {"cold_order": "outside-in", **_COLD_CPU}),
    "cold_columns_inside_out": ("d_cold_columns", {"cold_order": "inside-out", **_COLD_CPU}),
    "cold_columns_random_g4": ("d_cold_columns", {"cold_group": 4, "T": 7, **_COLD_CPU}),
    "cold_rows_random": ("d_cold_columns", {"cold_axis": "rows", **_COLD_CPU}),
    # the report's appendix also lists rows in groups of 4 (7 steps)
    "cold_rows_random_g4": ("d_cold_columns", {"cold_axis": "rows", "cold_group": 4, "T": 7, **_COLD_CPU}),
    # the cpu tier only (runs_at): the GELU network trained LONG_CPU_EPOCHS on the same rate schedule, the one
    # the package ships; the chapter's curves and comparison stay on "cnn" (colab trains that one longer)
    "cnn_long": ("d_cnn", {"tier_overrides": {"cpu": {**_DDPM_SHORT, "steps": LONG_CPU_EPOCHS * EPOCH_STEPS["cpu"]}}}),
    # the cpu tier only: the same network and rate schedule for the report's own REPORT_STEPS, the question
    # whether this CNN draws digits at the report's scale; shipped once finished (pretrained_run)
    "cnn_report": ("d_cnn", {"tier_overrides": {"cpu": {**_DDPM_SHORT, "steps": REPORT_STEPS}}}),
}
# trained at the cpu tier only; at colab and gpu "cnn" trains as long or longer (gpu: the report's 100 epochs)
CPU_ONLY_RUNS = ("cnn_long", "cnn_report")
COLD_RUNS = tuple(r for r in RUNS if r.startswith("cold_"))
CURVE_RUNS = ("cnn", "cnn_selu", "cold_columns_random")  # the report plots FID / IS per epoch for these
COMPARISON_RUNS = ("cnn", "cnn_selu", "cold_columns_random")
# the package ships "cnn_long" at the cpu tier (pretrained_run), the report's own setting trained longest
SHIPPED_RUNS = ("cnn_report", "cnn_long", "cnn")
# the tiers whose pretrained part also samples the shipped network with all T steps (the report's sampler); the
# colab tier leaves it out to stay within its half hour on a T4 (colab.describe)
ALL_STEPS_TIERS = ("smoke", "cpu", "gpu")
TREND_EVERY = 10  # epochs between the shipped run's snapshots that the pretrained part's FID trend measures
TREND_POINTS = 20  # at most this many trend points (plus the last epoch): a longer run spaces them further apart

# cpu tier: DDPM_CPU_EPOCHS for the DDPMs
# (4,200 steps, about 57 minutes per DDPM on one thread at ~160 img/s, the two side by side on 2 cores;
# results/report_d/training.json), COLD_CPU_EPOCHS for the restorers; a snapshot every epoch.
# colab tier (a free T4, about 30 minutes for the chapter: colab.chapter_estimate("report_d")): the same
# digits, COLAB_EPOCHS epochs for the DDPMs and COLD_COLAB_EPOCHS for the restorers, a snapshot every epoch.
TIER_OVERRIDES = {
    "cpu": dict(
        dataset="mnist-embedded",
        steps=DDPM_CPU_EPOCHS * EPOCH_STEPS["cpu"],  # the DDPMs; the restorers set their own (_COLD_CPU)
        callback_every=EPOCH_STEPS["cpu"],
        checkpoint_every=EPOCH_STEPS["cpu"] * 5,
        log_every=EPOCH_STEPS["cpu"] // 2,
    ),
    "colab": dict(
        dataset="mnist-embedded",
        steps=COLAB_EPOCHS * EPOCH_STEPS["colab"],
        callback_every=EPOCH_STEPS["colab"],
        checkpoint_every=EPOCH_STEPS["colab"] * 5,
        log_every=EPOCH_STEPS["colab"] // 2,
    ),
}

# The report shows samples at epochs 1, 20, 40 and 60 of its 100 (Fig. 1.3, 1.7) and at epoch 100 (Fig. 1.8).
REPORT_EPOCHS = (1, 20, 40, 60, 100)
REPORT_TOTAL_EPOCHS = 100


@dataclass(frozen=True)
class ReportDBudget(Budget):
    """What the evaluation parts draw at a tier (the final numbers use :data:`EVAL_BUDGETS`):

    curve_n: samples per epoch for the FID / IS curves (respaced DDPM with ``EVAL_BUDGETS[tier].steps``
    steps; cold: Algorithm 2, all T steps); grid_n: images per sample grid; grid_steps: DDPM steps of the
    grids (None = all T, the report's ancestral sampler); compare_steps: the DDPM step counts of the
    comparison (None = all T); selu_steps: the same for the T=100 variant; restore_n: held-out digits restored per cold run; prior_components:
    Gaussians in the prior of fully degraded images; probe_n: training digits for the linear probes
    (None = all 8,995); eval_n: samples of the final numbers and the comparison (None = the tier's
    ``EVAL_BUDGETS`` n; the smoke tier draws fewer, since every cold sample costs T network calls);
    cold_n: digits each cold variant generates per algorithm in the ``cold`` part (None = eval_n).
    """

    curve_n: int
    grid_n: int
    grid_steps: int | None
    compare_steps: tuple[int | None, ...]
    selu_steps: int | None
    restore_n: int
    prior_components: int
    probe_n: int | None = None
    eval_n: int | None = None
    cold_n: int | None = None


BUDGETS: BudgetTable[ReportDBudget] = BudgetTable(
    "report_d.BUDGETS",
    {
        "smoke": ReportDBudget(
            curve_n=12,
            grid_n=4,
            grid_steps=3,
            compare_steps=(3,),
            selu_steps=3,
            restore_n=12,  # the evaluation kit's metrics of the restored set need at least 10
            prior_components=2,
            probe_n=300,
            eval_n=12,
        ),
        # cpu: about 600k CNN evaluations in all (~15 minutes on 2 cores next to other work; the grids use 100
        # respaced steps, since 1,000 steps for batches of 16 took 6 minutes a grid on the loaded machine); 250
        # and 500 samples are sizes whose real-digit floor results/metrics/floors.json holds
        "cpu": ReportDBudget(
            curve_n=250,
            grid_n=16,
            grid_steps=100,
            compare_steps=(28, 100),
            selu_steps=None,
            restore_n=200,
            prior_components=10,
            eval_n=500,
            cold_n=250,
        ),
        # colab: 1,000 samples per epoch for the curves (~100 epochs in all), 5,000 for the final numbers
        "colab": ReportDBudget(
            curve_n=1000,
            grid_n=16,
            grid_steps=250,
            compare_steps=(28, 100, None),
            selu_steps=None,
            restore_n=1005,
            prior_components=10,
            eval_n=5000,
            cold_n=2000,
        ),
        "gpu": ReportDBudget(
            curve_n=2000,
            grid_n=16,
            grid_steps=None,
            compare_steps=(28, 100, None),
            selu_steps=None,
            restore_n=1005,
            prior_components=10,
        ),
    },
)


SNAPSHOTS = True  # the runs save their weights every epoch (the curves are measured after training)


def runs_at(tier: str) -> dict[str, RunSpec]:
    """The runs the chapter trains at ``tier``: all of :data:`RUNS` but :data:`CPU_ONLY_RUNS` off the cpu tier."""
    return {name: spec for name, spec in RUNS.items() if tier == "cpu" or name not in CPU_ONLY_RUNS}


def pretrained_run(tier: str) -> str:
    """The run the package ships as ``load_pretrained("report_d")``: the first of :data:`SHIPPED_RUNS` that
    ``tier`` trains and that has finished, else the last that it trains ("cnn_report" at the cpu tier once its
    5.4 hours are done, "cnn_long" until then; "cnn" at the others, which train it as long or longer)."""
    held = [run for run in SHIPPED_RUNS if run in runs_at(tier)]
    runs = store(tier)
    return next((run for run in held[:-1] if runs.finished(run)), held[-1])


def trend_every(run: str, tier: str) -> int:
    """Epochs between the points of the pretrained part's FID trend for ``run``: :data:`TREND_EVERY`, or wider
    where the run is longer than :data:`TREND_POINTS` such steps (the report-scale run's 668 epochs)."""
    return max(TREND_EVERY, math.ceil(run_epochs(run, tier) / TREND_POINTS))


def store(tier: str) -> RunStore:
    """The chapter's runs at ``tier`` (:func:`runs_at`)."""
    return RunStore(CHAPTER, runs_at(tier), TIER_OVERRIDES, tier)


def config(run: str, tier: str) -> TrainConfig:
    """The TrainConfig of one of :data:`RUNS` at ``tier`` (also of a cpu-only run at another tier)."""
    return RunStore(CHAPTER, RUNS, TIER_OVERRIDES, tier).config(run)


def _train(tier: str, progress: bool, cache: Cache | None = None) -> Path:
    return record_training(store(tier), progress, snapshots=SNAPSHOTS)


def colab_plan(tier: str = "colab") -> dict[str, Any]:
    """What the chapter runs at ``tier``, for :func:`~.colab.chapter_estimate`: the training configs of :func:`runs_at`
    and the sampling calls (config, batch, calls): the per-epoch curves, the grids, the restorations and
    generations of the cold part (one network call per degradation step), and the comparison."""
    ev, b = _eval(tier), _budget(tier)
    bs = ev.batch_size
    cfgs = {run: config(run, tier) for run in runs_at(tier)}

    def calls(run: str, n: int, steps: int | None) -> int:
        return -(-n // bs) * (steps or cfgs[run].T)

    sampling = []
    for run in CURVE_RUNS:
        epochs = cfgs[run].steps // max(cfgs[run].callback_every, 1)
        steps = None if run.startswith("cold_") else ev.steps
        sampling.append((cfgs[run], bs, epochs * calls(run, b.curve_n, steps)))
        sampling.append((cfgs[run], b.grid_n, len(REPORT_EPOCHS) * (b.grid_steps or cfgs[run].T)))
    for run in COLD_RUNS:
        sampling.append((cfgs[run], bs, 2 * calls(run, b.restore_n, None) + 2 * calls(run, b.cold_n or ev.n, None)))
    for K in b.compare_steps:
        sampling.append((cfgs["cnn"], bs, calls("cnn", ev.n, K)))
    sampling.append((cfgs["cnn_selu"], bs, 2 * calls("cnn_selu", ev.n, b.selu_steps)))
    sampling.append((cfgs["cold_columns_random"], bs, calls("cold_columns_random", ev.n, None)))
    shipped = pretrained_run(tier)  # the pretrained part: its FID trend and its samples as `sample` draws them
    every = trend_every(shipped, tier)
    trend = len([e for e in range(1, round(run_epochs(shipped, tier)) + 1) if e % every == 0]) + 1
    sampling.append((cfgs[shipped], bs, trend * calls(shipped, b.curve_n, ev.steps)))
    sampling.append((cfgs[shipped], bs, calls(shipped, ev.n, cfgs[shipped].sample_defaults.get("steps", ev.steps))))
    if tier in ALL_STEPS_TIERS:  # and with all T steps (the report's sampler)
        sampling.append((cfgs[shipped], bs, calls(shipped, ev.n, None)))
    return {"train": cfgs, "sampling": sampling}


# ---------------------------------------------------------------------------------------------
# Loading the trained runs and their per-epoch snapshots.
# ---------------------------------------------------------------------------------------------


def run_finished(run: str, tier: str) -> bool:
    """Whether the run's checkpoint has reached its configured number of steps."""
    return store(tier).finished(run)


def _summaries(tier: str, runs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The loss curve and final loss of the ``runs`` a part evaluates (finished: :func:`~.common.ensure_needs`
    saw to it): from training.json when the training part wrote it, else from the runs' own logs."""
    if have_result(CHAPTER, "training", tier):
        summary = load_result(CHAPTER, "training", tier)["data"]
        return {run: summary[run] for run in runs}
    return {run: store(tier).summary(run) for run in runs}


def load_run(run: str, tier: str, device: str | torch.device | None = None):
    """The finished run's network (eval mode, ``parameterization`` set), schedule or degradation, config,
    on ``device`` (default :func:`~.common.eval_device`: the CPU at smoke / cpu, the GPU at colab / gpu).
    Never cached: the parts load per-epoch snapshots into it."""
    return store(tier).load(run, device=device)  # Report D keeps no EMA: the trained weights


def _epoch_steps(cfg: TrainConfig) -> int:
    """Optimisation steps per epoch: the training loop skips each epoch's last incomplete batch."""
    if cfg.subset is not None:
        n = cfg.subset
    elif cfg.dataset == "mnist-embedded":
        n = len(load_embedded_mnist(cfg.split))  # type: ignore[arg-type]
    else:
        n = 60_000  # MNIST's training set (the gpu tier)
    return max(1, n // cfg.batch_size)


def run_epochs(run: str, tier: str) -> float:
    """How many passes over its training digits the run makes at ``tier`` (cpu: over the embedded training
    digits, :data:`TIER_OVERRIDES`; gpu: the report's 100 over MNIST's 60,000)."""
    cfg = config(run, tier)
    return round(cfg.steps / _epoch_steps(cfg), 3)


def trained_epochs(training_record: dict[str, Any], run: str) -> float:
    """Passes over its training digits that ``run`` made, from training.json's own record (its steps and
    config). The record's ``epochs`` field is the data order's 0-based epoch index at the last log line
    (14 after 15 full epochs), so the chapter counts from the steps instead."""
    cfg = TrainConfig.from_dict(training_record["config"]["runs"][run])
    return round(training_record["data"][run]["steps"] / _epoch_steps(cfg), 3)


def _snapshots(run: str, tier: str) -> list[tuple[float, Path]]:
    """(epoch, path) of every snapshot of the run, in order; epochs may be fractional at the smoke tier."""
    cfg = config(run, tier)
    per = _epoch_steps(cfg)
    paths = store(tier).snapshots(run)
    if not paths:
        raise FileNotFoundError(f"run {run!r} at tier {tier!r} has no snapshots under {store(tier).folder(run)}")
    return [(round(int(p.stem.split("_")[1]) / per, 3), p) for p in paths]


def report_epochs(n_epochs: int) -> list[int]:
    """The report's epochs (1, 20, 40, 60, 100 of 100) scaled to a run of ``n_epochs`` snapshots (1-based
    indices, at least 1, without repeats): 25 epochs give 1, 5, 10, 15, 25; 15 give 1, 3, 6, 9, 15."""
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"n_epochs must be an int >= 1, got {n_epochs!r}")
    out: list[int] = []
    for e in REPORT_EPOCHS:
        k = min(n_epochs, max(1, round(e * n_epochs / REPORT_TOTAL_EPOCHS)))
        if k not in out:
            out.append(k)
    return out


# ---------------------------------------------------------------------------------------------
# Sampling both kinds of model, and the priors they start from.
# ---------------------------------------------------------------------------------------------


def gaussian_data_prior(
    schedule, images: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """n draws of x_T whose first two moments match the training chain's: x_T = q_sample(x0', T) with
    x0' ~ N(mu, Sigma) fitted to ``images`` (N, C, H, W). Where alpha_bar_T is far from 0 (T=100 with
    linear betas: 0.36) the chain never reaches N(0, I); this start is what the network was trained on.

    x0' = mu + (X - mu)^T w / sqrt(N) with w ~ N(0, I_N) has exactly the empirical covariance.
    """
    from .evaluation import fitted_gaussian

    x0 = fitted_gaussian(images, n, generator)  # (n, C, H, W), float64
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    return q_sample(x0, schedule.T, schedule.to("cpu"), noise=eps).float()


def generate(
    model: torch.nn.Module,
    process,
    n: int,
    *,
    generator: torch.Generator | None,
    steps: int | None = None,
    algorithm: int = 2,
    prior=None,
    x_T: torch.Tensor | None = None,
    batch_size: int = 500,
    clamp: bool = True,
) -> torch.Tensor:
    """n images from a Report D model: respaced DDPM with ``steps`` (None = all T) for a Gaussian run;
    Bansal et al.'s ``algorithm`` from ``prior`` draws (or ``x_T``) for a cold run. ``clamp``: clip to
    [-1, 1], the image range the metrics read (the cold algorithms' raw output may leave it)."""
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")  # the network's device; images come back to the CPU
    if isinstance(process, RowColumnAveraging):
        if x_T is None:
            x_T = prior.sample(n, generator=generator)
        out = torch.cat(
            [
                images_only(cold_sample(model, process, x_T[i : i + batch_size].to(dev), algorithm=algorithm)).cpu()  # type: ignore[arg-type]
                for i in range(0, n, batch_size)
            ]
        )
    else:
        out = images_only(
            sample(model, process, n, method="ddpm", steps=steps, generator=generator, x_T=x_T, batch_size=batch_size)
        ).cpu()
    return out.clamp(-1, 1) if clamp else out


def _seeded(*keys: Any) -> torch.Generator:
    from ..seeding import derived_seed

    return torch.Generator().manual_seed(derived_seed(0, CHAPTER, *[str(k) for k in keys]))


def _metrics(images: torch.Tensor, cache: Cache, *keys: Any, intervals: bool = True) -> dict[str, Any]:
    """measure() against the held-out digits (with its intervals unless ``intervals`` is False), plus the
    classifier's histogram of the samples' classes."""
    out = measure(images, intervals=intervals, cache=cache, generator=_seeded("metrics", *keys))
    _, logits = classifier_outputs(images, book_classifier(cache))
    hist = torch.bincount(logits.argmax(1), minlength=10).double() / images.shape[0]
    out["class_fractions"] = hist.tolist()
    out["class_entropy_bits"] = float(-(hist[hist > 0] * hist[hist > 0].log2()).sum()) + 0.0  # not -0.0
    return out


def _figure(name: str, images: torch.Tensor, tier: str, nrow: int) -> str:
    """Save a grid ``results/report_d/figures/<name>.png``; its name relative to the results folder."""
    return relative(save_grid(images, figure_path(CHAPTER, name, tier), nrow=nrow), tier)


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False)


def _budget(tier: str) -> ReportDBudget:
    return BUDGETS[tier]


def _eval(tier: str):
    """The tier's :data:`EVAL_BUDGETS` entry, with Report D's own sample count where it sets one."""
    from dataclasses import replace

    ev, b = EVAL_BUDGETS[tier], _budget(tier)
    return replace(ev, n=b.eval_n) if b.eval_n is not None else ev


def _cold_prior(process: RowColumnAveraging, run: str, tier: str):
    """The Gaussian mixture of fully degraded training digits (how Bansal et al. generate new images)."""
    train = load_embedded_mnist("train").tensors()[0]
    return fit_degraded_prior(
        process, train, n_components=_budget(tier).prior_components, generator=_seeded("prior", run)
    )


def _sampler(process, steps: int | None, prior=None) -> str:
    if isinstance(process, RowColumnAveraging):
        start = (
            f"a {prior.weights.numel()}-component Gaussian mixture fitted to the fully degraded training digits"
            if prior is not None
            else "the fully degraded held-out digits"
        )
        return f"Bansal et al. Algorithm 2 over all T={process.T} steps, from {start}"
    k = process.T if steps is None else steps
    return (
        f"DDPM ancestral sampling (Ho et al. Algorithm 2, variance beta_tilde) on {k} of the T={process.T} "
        f"steps{' (all of them)' if k == process.T else ' (respaced)'}, from N(0, I)"
    )


# ---------------------------------------------------------------------------------------------
# Part: curves (loss, FID and IS per epoch; the final numbers).
# ---------------------------------------------------------------------------------------------


def _loss_curve(record: dict[str, Any], per: int) -> dict[str, list]:
    """The training log (mean loss every log interval) against epochs, and its mean over each epoch."""
    steps, losses = record["curve"]["step"], record["curve"]["loss"]
    by_epoch: dict[int, list[float]] = {}
    for s, v in zip(steps, losses):
        by_epoch.setdefault(math.ceil(s / per), []).append(v)
    return {
        "epoch": [round(s / per, 4) for s in steps],
        "loss": losses,
        "epoch_index": sorted(by_epoch),
        "epoch_mean_loss": [sum(v) / len(v) for _, v in sorted(by_epoch.items())],
    }


def _epoch_curve(
    run: str, model, process, prior, tier: str, progress: bool, cache: Cache, every: int = 1
) -> dict[str, Any]:
    """FID, IS and KID of ``run`` at every ``every``-th epoch's snapshot and the last (loaded into ``model`` in
    turn, so the last one is left there): the same x_T and the same sampling noise at every epoch, so the
    curve shows the network changing."""
    ev, b = _eval(tier), _budget(tier)
    snaps = _snapshots(run, tier)
    snaps = [s for i, s in enumerate(snaps, 1) if i % every == 0 or i == len(snaps)]
    rec: dict[str, Any] = {"epoch": [], "step": [], "fid": [], "is": [], "is_std": [], "kid_mean": []}
    bar = _bar(len(snaps), f"{run}: FID / IS per epoch", progress)
    for epoch, path in snaps:
        rec["step"].append(load_snapshot(model, path))
        images = generate(
            model,
            process,
            b.curve_n,
            generator=_seeded("curve", run),
            steps=ev.steps,
            prior=prior,
            batch_size=ev.batch_size,
        )
        m = _metrics(images, cache, "curve", run, intervals=False)  # a trend; the final numbers carry intervals
        rec["epoch"].append(epoch)
        for k in ("fid", "is", "is_std", "kid_mean"):
            rec[k].append(m[k])
        bar.update(1)
    bar.close()
    return rec


def _final_numbers(run: str, model, process, prior, epoch: int, tier: str, cache: Cache) -> dict[str, Any]:
    """The final numbers of ``run``, on the evaluation budget's larger sample, with its grid."""
    ev = _eval(tier)
    start = time.perf_counter()
    images = generate(
        model, process, ev.n, generator=_seeded("final", run), steps=ev.steps, prior=prior, batch_size=ev.batch_size
    )
    sample_s = time.perf_counter() - start
    final = _metrics(images, cache, "final", run)
    final.update(
        epoch=epoch,
        steps=ev.steps or process.T,
        sampler=_sampler(process, ev.steps, prior),
        sample_wall_s=round(sample_s, 2),
    )
    final["figure"] = _figure(f"final_{run}", images[:64], tier, nrow=16)
    return final


def _curves(tier: str, progress: bool, cache: Cache) -> Path:
    t0 = time.perf_counter()
    summary = _summaries(tier, CURVE_RUNS)
    ev, b = _eval(tier), _budget(tier)
    data: dict[str, Any] = {"runs": {}, "final": {}, "final_fid": {}, "final_is": {}}
    for run in CURVE_RUNS:
        model, process, cfg = load_run(run, tier)
        prior = _cold_prior(process, run, tier) if isinstance(process, RowColumnAveraging) else None
        rec = _epoch_curve(run, model, process, prior, tier, progress, cache)
        rec["sampler"] = _sampler(process, ev.steps, prior)
        rec["n_samples"] = b.curve_n
        rec["loss"] = _loss_curve(summary[run], _epoch_steps(cfg))
        rec["final_loss"] = summary[run]["final_loss"]
        data["runs"][run] = rec
        # the last snapshot is the final network
        final = data["final"][run] = _final_numbers(run, model, process, prior, rec["epoch"][-1], tier, cache)
        data["final_fid"][run], data["final_is"][run] = final["fid"], final["is"]
        if "fid_interval" in final:
            data.setdefault("final_fid_interval", {})[run] = final["fid_interval"]
    data["baseline"] = baseline_record(ev.n, cache)
    with_baseline(data, "final_fid", data["final"], data["baseline"])
    cfg_out = {
        "curve_n": b.curve_n,
        "final_n": ev.n,
        "steps": ev.steps,
        "reference": "mnist-embedded/heldout",
        "runs": list(CURVE_RUNS),
        "prior_components": b.prior_components,
        "note": "every epoch's samples start from the same x_T with the same sampling noise",
    }
    return save_result(CHAPTER, "curves", data, cfg_out, tier, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Part: samples (grids at the report's epochs, scaled to the run).
# ---------------------------------------------------------------------------------------------


def _samples(tier: str, progress: bool, cache: Cache) -> Path:
    t0 = time.perf_counter()
    b = _budget(tier)
    data: dict[str, Any] = {
        "runs": {},
        "report_epochs": list(REPORT_EPOCHS),
        "report_total_epochs": REPORT_TOTAL_EPOCHS,
    }
    for run in CURVE_RUNS:
        model, process, cfg = load_run(run, tier)
        prior = _cold_prior(process, run, tier) if isinstance(process, RowColumnAveraging) else None
        snaps = _snapshots(run, tier)
        picks = report_epochs(len(snaps))
        rec: dict[str, Any] = {
            "n_epochs": snaps[-1][0],
            "epochs": [],
            "figures": [],
            "predicted_classes": [],
            "sampler": _sampler(process, b.grid_steps, prior),
            "n_samples": b.grid_n,
        }
        bar = _bar(len(picks), f"{run}: sample grids", progress)
        for k in picks:
            epoch, path = snaps[k - 1]
            load_snapshot(model, path)
            images = generate(model, process, b.grid_n, generator=_seeded("grid", run), steps=b.grid_steps, prior=prior)
            rec["epochs"].append(epoch)
            rec["figures"].append(_figure(f"samples_{run}_epoch{k:03d}", images, tier, nrow=b.grid_n))
            rec["predicted_classes"].append(classifier_outputs(images, book_classifier(cache))[1].argmax(1).tolist())
            bar.update(1)
        bar.close()
        data["runs"][run] = rec
    cfg_out = {
        "grid_n": b.grid_n,
        "grid_steps": b.grid_steps,
        "runs": list(CURVE_RUNS),
        "note": "the report's epochs 1, 20, 40, 60, 100 of 100, scaled to the run's epochs; the same noise "
        "at every epoch",
    }
    return save_result(CHAPTER, "samples", data, cfg_out, tier, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Part: cold (restoration, Algorithms 1 and 2, generation, direction dependence).
# ---------------------------------------------------------------------------------------------


def step_change(degradation: RowColumnAveraging, images: torch.Tensor) -> list[float]:
    """Mean squared pixel change of each step, ||D(x, t - 1) - D(x, t)||^2 / pixels for t = 1..T, averaged
    over ``images``. The D(., t) are nested orthogonal projections, so these add up to ||x - D(x, t)||^2."""
    n, T = images.shape[0], degradation.T
    out = []
    prev = images
    for t in range(1, T + 1):
        cur = degradation.degrade(images, torch.full((n,), t, dtype=torch.int64))
        out.append(float((prev - cur).square().mean()))
        prev = cur
    return out


def probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    l2: float = 1e-3,
    max_iter: int = 300,
) -> float:
    """Held-out accuracy of a linear softmax classifier (L-BFGS, L2 penalty ``l2``) trained on standardised
    features (N, d): how much of a digit's class a representation keeps, read out linearly."""
    for name, f in (("train_features", train_features), ("test_features", test_features)):
        if f.dim() != 2:
            raise ValueError(f"{name} must be a (N, d) matrix, got shape {tuple(f.shape)}")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train_features and test_features must have the same d, got {train_features.shape[1]} "
            f"and {test_features.shape[1]}"
        )
    mu, sd = train_features.double().mean(0), train_features.double().std(0).clamp(min=1e-6)
    xtr, xte = (train_features.double() - mu) / sd, (test_features.double() - mu) / sd
    k = int(max(train_labels.max(), test_labels.max())) + 1
    W = torch.zeros(xtr.shape[1], k, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ W + bias, train_labels) + l2 * W.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xte @ W + bias).argmax(1) == test_labels).double().mean())


@torch.no_grad()
def _restore(
    model, D: RowColumnAveraging, x0: torch.Tensor, y: torch.Tensor, batch: int, cache: Cache, run: str
) -> tuple[dict, dict, dict]:
    """Restore D(x0, T) three ways: R's one-shot guess R(x_T, T), Algorithm 1 and Algorithm 2. Each way's
    mean squared error carries its bootstrap interval over the digits, the differences between ways their
    paired interval (the same digits), and each way's restored set the evaluation kit's metrics, so that
    Algorithms 1 and 2 are also compared as generators from *real* degraded digits (the diagnosis of why
    they rank differently from the fitted prior)."""
    from ..intervals import bootstrap

    classifier = book_classifier(cache)
    x_T = D.degrade(x0, D.T)
    T = torch.full((batch,), D.T, dtype=torch.int64)
    p = next(iter(model.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    direct = torch.cat(
        [
            model(x_T[i : i + batch].to(dev), T[: x_T[i : i + batch].shape[0]].to(dev)).float().cpu()
            for i in range(0, len(x0), batch)
        ]
    )
    raw = {
        "direct": direct,
        "alg1": generate(model, D, len(x0), generator=None, algorithm=1, x_T=x_T, batch_size=batch, clamp=False),
        "alg2": generate(model, D, len(x0), generator=None, algorithm=2, x_T=x_T, batch_size=batch, clamp=False),
    }
    outs = {name: out.clamp(-1, 1) for name, out in raw.items()}
    stats: dict[str, Any] = {}
    errors = {name: (out - x0).square().flatten(1).mean(1).double() for name, out in outs.items()}  # per digit

    def mean_of(e: torch.Tensor) -> float:
        return float(e.mean())

    def interval(e: torch.Tensor, *key: str) -> dict[str, Any]:
        return bootstrap(mean_of, e, generator=_seeded("restore", run, *key)).to_dict()

    for name, out in outs.items():
        pred = classifier_outputs(out, classifier)[1].argmax(1)
        stats[name] = {
            "mse": float((out - x0).square().mean()),
            "mse_interval": interval(errors[name], name),
            "l1": float((out - x0).abs().mean()),
            "accuracy": float((pred == y).double().mean()),
            "accuracy_per_class": [
                float((pred[y == c] == c).double().mean()) if (y == c).any() else None for c in range(10)
            ],
            # how far the (unclipped) result is from agreeing with the observation: max |D(out, T) - x_T|
            "consistency_error": float((D.degrade(raw[name], D.T) - x_T).abs().max()),
            # the restored set as a sample: Algorithms 1 and 2 as generators from real degraded digits
            **{
                k: v
                for k, v in _metrics(out, cache, "restore", run, name).items()
                if k.split("_interval")[0] in ("fid", "precision", "recall", "is") or k == "class_entropy_bits"
            },
        }
    differences = {  # paired over the same digits: negative = the first way is closer
        "alg2_minus_alg1": interval(errors["alg2"] - errors["alg1"], "alg2-alg1"),
        "direct_minus_alg2": interval(errors["direct"] - errors["alg2"], "direct-alg2"),
    }
    return stats, differences, {"x_T": x_T, **outs}


def _cold_generation(model, D: RowColumnAveraging, run: str, tier: str, cache: Cache) -> dict[str, Any]:
    """New digits from the prior of fully degraded digits with Algorithms 1 and 2: their metrics, the
    consistency error (before clipping) and a figure of x_T and both algorithms' results."""
    ev, b = _eval(tier), _budget(tier)
    n_gen = b.cold_n or ev.n
    prior = _cold_prior(D, run, tier)
    x_T = prior.sample(n_gen, generator=_seeded("generate", run))
    out: dict[str, Any] = {"generation": {}}
    gen = {}
    for alg in (1, 2):
        raw = generate(model, D, n_gen, generator=None, algorithm=alg, x_T=x_T, batch_size=ev.batch_size, clamp=False)
        gen[alg] = raw.clamp(-1, 1)
        m = _metrics(gen[alg], cache, "cold", run)
        m["consistency_error"] = float((D.degrade(raw, D.T) - x_T).abs().max())  # before clipping
        out["generation"][f"alg{alg}"] = m
    out["generation_fid"] = {f"alg{a}": out["generation"][f"alg{a}"]["fid"] for a in (1, 2)}
    if "fid_interval" in out["generation"]["alg1"]:
        out["generation_fid_interval"] = {f"alg{a}": out["generation"][f"alg{a}"]["fid_interval"] for a in (1, 2)}
    with_baseline(out, "generation_fid", out["generation"], baseline_record(n_gen, cache))
    out["generate_figure"] = _figure(
        f"cold_generate_{run}", torch.cat([x_T[:10], gen[1][:10], gen[2][:10]]), tier, nrow=10
    )
    return out


def _cold_run(
    run: str,
    x0: torch.Tensor,
    y: torch.Tensor,
    pick: list[int],
    held_x: torch.Tensor,
    summary: dict,
    tier: str,
    cache: Cache,
):
    """One restorer: what it is, its restorations of ``x0`` (and their figure), its generations, and the
    per-step change of the held-out digits ``held_x``. Returns the record and the degradation."""
    model, D, cfg = load_run(run, tier)
    rec: dict[str, Any] = {
        "axis": D.axis,
        "order": D.order_name,
        "group": D.group,
        "T": D.T,
        "line_order": D.order,
        "final_loss": summary[run]["final_loss"],
        "loss": cfg.loss,
    }
    rec["restoration"], rec["restoration_mse_difference"], outs = _restore(
        model, D, x0, y, _eval(tier).batch_size, cache, run
    )
    grid = torch.cat([x0[pick]] + [outs[k][pick] for k in ("x_T", "direct", "alg1", "alg2")])
    rec["restore_figure"] = _figure(f"cold_restore_{run}", grid, tier, nrow=len(pick))
    rec.update(_cold_generation(model, D, run, tier, cache))
    rec["step_change"] = step_change(D, held_x)
    return rec, D


def _cold(tier: str, progress: bool, cache: Cache) -> Path:
    t0 = time.perf_counter()
    summary = _summaries(tier, COLD_RUNS)
    ev, b = _eval(tier), _budget(tier)
    x0, y = load_embedded_mnist("heldout").subset(b.restore_n).tensors()
    train_x, train_y = load_embedded_mnist("train").tensors()
    all_held_x, all_held_y = load_embedded_mnist("heldout").tensors()
    probe_idx = torch.randperm(len(train_x), generator=_seeded("probe"))[: b.probe_n]
    px, py = train_x[probe_idx], train_y[probe_idx]
    data: dict[str, Any] = {
        "runs": {},
        "probe": {"pixels": probe_accuracy(px.flatten(1), py, all_held_x.flatten(1), all_held_y)},
    }
    pick = [int((y == c).nonzero()[0]) for c in range(10) if (y == c).any()]  # one digit per class for figures
    bar = _bar(len(COLD_RUNS), "cold-diffusion restorers", progress)
    for run in COLD_RUNS:
        data["runs"][run], D = _cold_run(run, x0, y, pick, all_held_x, summary, tier, cache)
        key = f"{D.axis}/g{D.group}"
        if key not in data["probe"]:  # D(x, T) does not depend on the order: one probe per axis and group
            data["probe"][key] = probe_accuracy(D.degraded_coords(px), py, D.degraded_coords(all_held_x), all_held_y)
        bar.update(1)
    bar.close()
    data["fid_alg2"] = {run: data["runs"][run]["generation"]["alg2"]["fid"] for run in COLD_RUNS}
    if all("fid_interval" in data["runs"][run]["generation"]["alg2"] for run in COLD_RUNS):
        data["fid_alg2_interval"] = {run: data["runs"][run]["generation"]["alg2"]["fid_interval"] for run in COLD_RUNS}
    data["baseline"] = baseline_record(b.cold_n or ev.n, cache)
    with_baseline(
        data, "fid_alg2", {run: data["runs"][run]["generation"]["alg2"] for run in COLD_RUNS}, data["baseline"]
    )
    cfg_out = {
        "restore_n": len(x0),
        "generate_n": b.cold_n or ev.n,
        "prior_components": b.prior_components,
        "probe_n": len(px),
        "reference": "mnist-embedded/heldout",
        "figure_rows": {
            "restore": ["original x0", "degraded x_T = D(x0, T)", "direct R(x_T, T)", "Algorithm 1", "Algorithm 2"],
            "generate": ["x_T drawn from the prior", "Algorithm 1", "Algorithm 2"],
        },
    }
    return save_result(CHAPTER, "cold", data, cfg_out, tier, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Part: comparison (Report D Sec. 2.3, left blank: Gaussian DDPM vs cold diffusion, one protocol).
# ---------------------------------------------------------------------------------------------


def _comparison_row(
    name: str,
    run: str,
    images: torch.Tensor,
    seconds: float,
    nfe: int,
    sampler: str,
    start: str,
    *,
    train_x: torch.Tensor,
    tier: str,
    cache: Cache,
) -> dict[str, Any]:
    """One setting of the comparison: the metrics, what drew it, its cost and the distances of its
    samples to their nearest training digits ``train_x``, with a figure of the first 20."""
    from ..memorisation import nearest_neighbours

    m = _metrics(images, cache, "comparison")
    dist, _ = nearest_neighbours(images, train_x)
    m.update(
        run=run,
        sampler=sampler,
        start=start,
        nfe=nfe,
        sample_s_per_1000=round(1000 * seconds / len(images), 2),
        nn_distance_mean=float(dist.mean()),
        nn_distance_median=float(dist.median()),
    )
    m["figure"] = _figure(f"comparison_{name}", images[:20], tier, nrow=10)
    return m


def _ddpm_rows(train_x: torch.Tensor, tier: str, cache: Cache, bar) -> dict[str, dict[str, Any]]:
    """The Gaussian DDPMs of the comparison: the GELU CNN at each of the budget's step counts, the SELU
    CNN (T=100) from N(0, I) and from the distribution its chain really ends at."""
    ev, b = _eval(tier), _budget(tier)
    rows: dict[str, dict[str, Any]] = {}
    for run, K in [("cnn", K) for K in b.compare_steps] + [("cnn_selu", b.selu_steps)]:
        model, schedule, _ = load_run(run, tier)
        k = schedule.T if K is None else min(K, schedule.T)
        starts: dict[str, torch.Tensor | None] = {"noise": None}
        if run == "cnn_selu":  # its chain ends at alpha_bar_T = 0.36, far from N(0, I): also start where it trained
            starts["matched"] = gaussian_data_prior(schedule, train_x, ev.n, generator=_seeded("matched"))
        for start, x_T in starts.items():
            t1 = time.perf_counter()
            images = generate(
                model, schedule, ev.n, generator=_seeded("comparison"), steps=k, x_T=x_T, batch_size=ev.batch_size
            )
            label = "N(0, I)" if x_T is None else "N(sqrt(alpha_bar_T) mu, alpha_bar_T Sigma + (1 - alpha_bar_T) I)"
            name = f"ddpm_{run}_K{k}" + ("" if start == "noise" else "_matched")
            seconds = time.perf_counter() - t1
            rows[name] = _comparison_row(
                name, run, images, seconds, k, _sampler(schedule, k), label, train_x=train_x, tier=tier, cache=cache
            )
            bar.update(1)
    return rows


def _cold_row(train_x: torch.Tensor, tier: str, cache: Cache) -> dict[str, Any]:
    """The cold-diffusion setting of the comparison: columns in random order, Algorithm 2 from the prior."""
    ev = _eval(tier)
    model, D, _ = load_run("cold_columns_random", tier)
    prior = _cold_prior(D, "cold_columns_random", tier)
    t1 = time.perf_counter()
    images = generate(model, D, ev.n, generator=_seeded("comparison"), prior=prior, batch_size=ev.batch_size)
    return _comparison_row(
        "cold_columns_random_alg2",
        "cold_columns_random",
        images,
        time.perf_counter() - t1,
        D.T,
        _sampler(D, None, prior),
        "Gaussian mixture of fully degraded training digits",
        train_x=train_x,
        tier=tier,
        cache=cache,
    )


def _real_floor(tier: str, cache: Cache) -> dict[str, Any]:
    """n random training digits measured the same way (the floor), with the held-out digits' distances
    to their nearest training digits."""
    from ..memorisation import nearest_neighbours

    real = load_embedded_mnist("train")
    idx = torch.randperm(len(real), generator=_seeded("floor"))[: _eval(tier).n]
    floor = _metrics(real.batch(idx)[0], cache, "comparison")
    dist, _ = nearest_neighbours(heldout_reference(cache), real.tensors()[0])
    floor.update(nn_distance_mean_heldout=float(dist.mean()), nn_distance_median_heldout=float(dist.median()))
    return floor


def _comparison(tier: str, progress: bool, cache: Cache) -> Path:
    t0 = time.perf_counter()
    ev, b = _eval(tier), _budget(tier)
    bar = _bar(len(b.compare_steps) + 1 + 2, "comparison", progress)
    train_x = load_embedded_mnist("train").tensors()[0]
    rows = _ddpm_rows(train_x, tier, cache, bar)
    rows["cold_columns_random_alg2"] = _cold_row(train_x, tier, cache)
    bar.update(1)
    floor = _real_floor(tier, cache)
    bar.update(1)
    bar.close()
    best_ddpm = [name for name in rows if name.startswith("ddpm_cnn_K")][-1]  # the most sampling steps
    data = {
        "rows": rows,
        "fid": {k: v["fid"] for k, v in rows.items()},
        "is": {k: v["is"] for k, v in rows.items()},
        "real_digits": floor,
        "ddpm_row": best_ddpm,
        "fid_ddpm_vs_cold": {
            "gaussian_ddpm": rows[best_ddpm]["fid"],
            "cold_diffusion": rows["cold_columns_random_alg2"]["fid"],
        },
    }
    baseline = data["baseline"] = baseline_record(ev.n, cache)
    for row in rows.values():  # every row carries its flag, not only the pair stored below
        row["beats_baseline"] = beats_baseline(row, baseline)
    pair = {"gaussian_ddpm": rows[best_ddpm], "cold_diffusion": rows["cold_columns_random_alg2"]}
    data["fid_ddpm_vs_cold_interval"] = {k: r.get("fid_interval") for k, r in pair.items()}
    with_baseline(data, "fid_ddpm_vs_cold", pair, baseline)
    cfg_out = {
        "n": ev.n,
        "reference": "mnist-embedded/heldout",
        "batch_size": ev.batch_size,
        "compare_steps": list(b.compare_steps),
        "prior_components": b.prior_components,
        "load_average": list(os.getloadavg()),
        "note": "real_digits: n random training digits measured the same way (the floor); their nearest-"
        "neighbour distance is that of the held-out digits to the training digits",
    }
    return save_result(CHAPTER, "comparison", data, cfg_out, tier, time.perf_counter() - t0)


def _shipped_evaluation(run: str, tier: str, progress: bool, cache: Cache) -> dict[str, Any]:
    """Does the shipped network draw digits? Its samples as ``python -m diffusion_edu sample`` draws them (the
    run's ``sample_defaults``), measured with intervals (FID, precision, recall, ...) against the baseline and
    n real training digits, with a grid; the same measurement with all T steps of the chain (the report's
    sampler; ``all_steps``), from the same seed; and its FID every :func:`trend_every` epochs on the curves part's
    protocol (``curve_n`` samples, the tier's respaced steps, the same noise every epoch). (The classifier's
    confidence is no test of readability: it gives uniform noise and blank images its top class with
    probability >= 0.9.)"""
    from ..generate import generate as book_generate
    from ..generate import sampler_defaults

    ev = _eval(tier)
    model, process, cfg = load_run(run, tier)
    every = trend_every(run, tier)
    trend = _epoch_curve(run, model, process, None, tier, progress, cache, every=every)
    trend["sampler"] = _sampler(process, ev.steps)
    trend["n_samples"] = _budget(tier).curve_n
    settings = sampler_defaults(cfg)
    seed = int(_seeded("shipped", run).initial_seed() % 2**31)

    def drawn(steps: int | None, *keys: str) -> tuple[torch.Tensor, dict[str, Any]]:
        # n samples with the run's settings on ``steps`` steps, all from ``seed``, timed and measured
        t1 = time.perf_counter()
        images, _ = book_generate(
            (model, process, cfg), ev.n, **{**settings, "steps": steps}, seed=seed, batch_size=ev.batch_size
        )
        seconds = round(time.perf_counter() - t1, 2)
        images = images.clamp(-1, 1)
        record = _metrics(images, cache, "shipped", run, *keys)
        record.update(seed=seed, sample_wall_s=seconds)
        return images, record

    images, shipped = drawn(settings["steps"])
    shipped.update(settings=settings, figure=_figure(f"shipped_{run}", images[:64], tier, nrow=16))
    # the report's own sampler, all T steps, from the same seed: does the sampler or the network limit it?
    all_steps = None
    if tier in ALL_STEPS_TIERS:
        all_steps = drawn(None, "all_steps")[1]
        all_steps["steps"] = process.T
    floor = _real_floor(tier, cache)  # the comparison part's floor: the same n real digits, measured once
    baseline = baseline_record(ev.n, cache)
    shipped["beats_baseline"] = beats_baseline(shipped, baseline)
    return {
        "run": run,
        "n": ev.n,
        "shipped": shipped,
        "all_steps": all_steps,
        "real_digits": floor,
        "baseline": baseline,
        "trend": trend,
        "trend_every": every,
    }


def _pretrained(tier: str, progress: bool, cache: Cache) -> Path:
    """Ship the GELU CNN at T=1000 (``load_pretrained("report_d")``; :func:`pretrained_run`) and measure what
    it draws (:func:`_shipped_evaluation`); the smoke tier writes a throwaway copy. It needs only that run."""
    t0 = time.perf_counter()
    run = pretrained_run(tier)
    # the colab tier's "cnn" trains fewer steps than the cpu tier's cnn_long, which the package ships: it keeps
    # that one and writes its own copy under runs/colab/pretrained
    data, cfg = ship_pretrained(store(tier), run, keep_shipped=tier == "colab", epochs=run_epochs(run, tier))
    data["evaluation"] = _shipped_evaluation(run, tier, progress, cache)
    cfg_out = {
        "train_config": cfg.to_dict(),
        "reference": "mnist-embedded/heldout",
        "n": _eval(tier).n,
        "curve_n": _budget(tier).curve_n,
        "trend_steps": _eval(tier).steps,
        "load_average": list(os.getloadavg()),
    }
    return save_result(CHAPTER, "pretrained", data, cfg_out, tier, time.perf_counter() - t0)


PARTS: dict[str, Part] = chapter_parts(
    CHAPTER,
    Part("training", "train the CNN DDPMs and the cold-diffusion restorers, one snapshot per epoch", _train),
    Part(
        "curves",
        "loss, FID and IS per epoch (cnn, cnn_selu, cold columns) and the final numbers",
        _curves,
        ["training"],
        CURVE_RUNS,
    ),
    Part(
        "samples",
        "sample grids at the report's epochs (1, 20, 40, 60, 100 of 100, scaled)",
        _samples,
        ["training"],
        CURVE_RUNS,
    ),
    Part(
        "cold",
        "cold diffusion: restoration, Algorithms 1 vs 2, generation, rows vs columns, orders",
        _cold,
        ["training"],
        COLD_RUNS,
    ),
    Part(
        "comparison",
        "Gaussian DDPM vs cold diffusion under one protocol (the report's Sec. 2.3)",
        _comparison,
        ["training"],
        COMPARISON_RUNS,
    ),
    Part(
        "pretrained",
        "ship the GELU CNN (T=1000) as load_pretrained('report_d') and measure what it draws",
        _pretrained,
        ["training"],
        SHIPPED_RUNS,
    ),
)
