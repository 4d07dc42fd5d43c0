# Longer than ~400 lines: the chapter's seven comparisons each own their sampler settings and diagnostics
# (the bound's terms, the first reverse step); the shared pieces live in the kernel (store, evaluation, figures).
"""Report A (MNIST DDPM design study): the runs it compares and the chapter's parts.

Report A trains at T=400 with eps-prediction and compares denoisers (U-Net, autoencoder, VAE-style),
eps vs mean prediction, four noise schedules, a one-hot label with and without a discriminator term,
fast sampling (DDIM vs sub-sampled steps) and the reverse variance. Every network takes the label
one-hot in its middle, as the report describes; samples are drawn 100 per class. Beyond the report: two
v-prediction U-Nets, on the linear schedule and rescaled to zero terminal SNR (part ``zero_snr``, DDIM's
start), and the denoisers and schedules again from training seeds 1 and 2 (part ``seeds``).

Every evaluation part loads the networks that the ``training`` part trained (it never trains), draws
``n`` samples per setting (the same seed, so the same x_T, in every setting), measures them against the
held-out digits (:func:`~.evaluation.measure`) and saves a grid of the first samples of each class under
``results/report_a/figures/``. Draws are seeded, so a setting has one set of numbers everywhere in the
chapter; within one run of the chapter (one :class:`~.store.Cache`) each setting is drawn once.

    python -m diffusion_edu experiment report_a --tier cpu --threads 1
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .common import (
    EVAL_BUDGETS,
    Budget,
    BudgetTable,
    Part,
    chapter_parts,
    final_loss,
    have_result,
    load_result,
    runs_root,
    save_result,
    training_curve,
)
from .evaluation import (
    INTERVAL_KEYS,
    baseline_record,
    book_classifier,
    for_metrics,
    images_only,
    measure,
    metric_columns,
    seed_columns,
    with_baseline,
)
from .figures import figures_dir as _figures_dir
from .figures import save_grid as _save_png
from .store import Cache, RunStore, record_training
from .training_runs import TRAINING_SEEDS, RunSpec, seed_run_name, seed_runs_of

CHAPTER = "report_a"

_MIDDLE = {"model_kwargs": {"num_classes": 10, "label_at": "middle"}}
RUNS: dict[str, RunSpec] = {
    "unet": ("a_unet", _MIDDLE),  # linear betas, eps: the reference run
    "unet_mu": ("a_unet_mu", _MIDDLE),  # predicts the posterior mean instead
    "autoencoder": ("a_autoencoder", {}),
    "vae": ("a_vae", {}),
    "unet_quadratic": ("a_unet", {**_MIDDLE, "schedule": "quadratic"}),
    "unet_cosine": ("a_unet", {**_MIDDLE, "schedule": "cosine"}),
    "unet_sigmoid": ("a_unet", {**_MIDDLE, "schedule": "sigmoid"}),
    "unet_disc": ("a_unet_disc", _MIDDLE),  # + gamma * discriminator term (Eqs. 8-9)
    # DDIM's start (part ``zero_snr``): the reference U-Net trained to predict v (Salimans & Ho 2022), on the
    # linear schedule and on the same schedule rescaled to zero terminal SNR (Lin et al. 2024), where x_T
    # keeps no digit and N(0, I) is the distribution the network saw at t = T
    "unet_v": ("a_unet", {**_MIDDLE, "parameterization": "v"}),
    "unet_v_zsnr": ("a_unet", {**_MIDDLE, "parameterization": "v", "schedule_kwargs": {"zero_terminal_snr": True}}),
}
# The networks that the chapter's two rankings rest on (the denoisers, the four schedules), again from other
# training seeds (initialisation, data order, noise), so that each ranking is judged over training seeds as
# well as over samples (part ``seeds``): a tier trains the first BUDGETS[tier].training_seeds of them.
SEED_BASES = ("unet", "autoencoder", "vae", "unet_quadratic", "unet_cosine", "unet_sigmoid")


def seed_run(base: str, seed: int) -> str:
    """The run of ``base`` (one of :data:`SEED_BASES`) from training seed ``seed``: seed 0 is ``base`` itself."""
    return seed_run_name(base, seed, SEED_BASES)


RUNS.update(seed_runs_of(RUNS, SEED_BASES))

# cpu tier: 1,500 steps of 64 (about 8 minutes for the U-Net on one core, ~200 img/s; the eight runs
# share one session's 2-core machine with Report D's, so each gets less than quick_mnist's ~10 minutes).
# colab tier (a free T4, about 30 minutes for the chapter: colab.chapter_estimate("report_a")): the same
# recipe on the same digits at the report's batch of 128, 3,000 steps (4x the cpu tier's images).
TIER_OVERRIDES = {
    "cpu": dict(
        dataset="mnist-embedded",
        batch_size=64,
        steps=1500,
        lr=1e-3,
        warmup_steps=200,
        lr_schedule="cosine",
        channels_last=True,
        log_every=50,
        checkpoint_every=500,
    ),
    "colab": dict(
        dataset="mnist-embedded",
        batch_size=128,
        steps=3000,
        lr=1e-3,
        warmup_steps=200,
        lr_schedule="cosine",
        log_every=100,
        checkpoint_every=500,
    ),
}

SEED = 0  # x_T and every sampling step's noise; also the metrics' random subsets
GRID_ROWS = 6  # sample grids: the first GRID_ROWS samples of each class, one column per class
COLUMNS = ("fid", "kid_mean", "kid_std", "is", "conditional_accuracy")  # the metric columns of a comparison
SCHEDULE_RUNS = {"linear": "unet", "quadratic": "unet_quadratic", "cosine": "unet_cosine", "sigmoid": "unet_sigmoid"}
# Report A says its schedule results hold "for T between 200 and 2000" (Sec. 3.2) and shows T = 400 only. The
# four schedule networks again at other T, each differing from its T = 400 run in T only (part ``t_range``);
# a tier trains the T of its BUDGETS[tier].t_range.
T_REPORT = 400
T_RANGE = (200, 1000, 2000)


def t_run(schedule: str, T: int) -> str:
    """The network of ``schedule`` (a key of :data:`SCHEDULE_RUNS`) trained with ``T`` steps: T = 400 is the
    schedule's own run, the others those of :data:`T_RANGE`."""
    if schedule not in SCHEDULE_RUNS:
        raise ValueError(f"schedule must be one of {tuple(SCHEDULE_RUNS)}, got {schedule!r}")
    if T == T_REPORT:
        return SCHEDULE_RUNS[schedule]
    if T not in T_RANGE:
        raise ValueError(f"T must be {T_REPORT} or one of {T_RANGE}, got {T!r}")
    return f"{SCHEDULE_RUNS[schedule]}_T{T}"


RUNS.update(
    {
        t_run(sched, T): (RUNS[base][0], {**RUNS[base][1], "T": T})
        for T in T_RANGE
        for sched, base in SCHEDULE_RUNS.items()
    }
)
KL_TIMESTEPS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 400)  # parameterization: the bound's terms at these t


@dataclass(frozen=True)
class ReportABudget(Budget):
    """What the evaluation parts draw at a tier. At the cpu tier the evaluation parts must fit in about
    12 minutes on 2 cores after the training runs; the U-Net evaluates ~650 images per second there
    (results/benchmarks/models_cpu.json), and :func:`planned_evaluations` counts what a budget asks for.

    samples: samples per setting of the comparisons (denoisers, parameterization, schedules,
    conditioning), rounded down to whole classes (None = the tier's :data:`~.common.EVAL_BUDGETS` n);
    fast_k: fast_sampling's K -> samples; variance_k: the same for the variance part; bound_images:
    held-out digits of the bound's terms (parameterization, at :data:`KL_TIMESTEPS`); draw_batch: images
    per sampling batch (None = the tier's EVAL_BUDGETS batch).

    Fewer samples at large K keep the cpu tier within its budget; KID is unbiased in the number of
    samples, FID is not (compare FID only at equal n; floors.json has the floor per n). At the cpu tier:
    500 samples up to K = 20, fewer at large K (about 210,000 network evaluations for the two parts, some
    10 minutes on 2 idle cores). At K = 400 that is 50 samples: a grid and a rough KID, not enough to
    rank samplers by (the ledger judges the 400-step ranking from the colab tier up).

    full_samples: samples per setting of the comparisons that Report A ran at all T = 400 steps (its own
    sampler over the four schedules, the eps and mu networks, and DDIM's diagnosis; None = ``samples``);
    full_steps: the steps of those settings (None = all T; the smoke tier shortens them, never shown);
    ddim_samples: samples per setting of the part ``ddim`` at the book's steps (None = ``samples``);
    schedule_full_samples: samples per schedule at all T steps in the part ``schedules`` (None =
    ``full_samples``; eight settings of 400 steps each: the cpu tier halves them to fit);
    training_seeds: how many training seeds of :data:`SEED_BASES` the tier trains and the part ``seeds``
    measures (1 = none beyond the runs themselves: the colab tier, whose half hour has no room for twelve more);
    t_range: the T of :data:`T_RANGE` at which the tier trains the four schedule networks and the part
    ``t_range`` ranks them (with T = 400 itself; empty: the part ranks T = 400 alone).
    """

    fast_k: dict[int, int]
    variance_k: dict[int, int]
    bound_images: int
    samples: int | None = None
    draw_batch: int | None = None
    deterministic_k: dict[int, int] = field(default_factory=dict)
    diversity_n_boot: int = 1000
    full_samples: int | None = None
    full_steps: int | None = None
    ddim_samples: int | None = None
    schedule_full_samples: int | None = None
    training_seeds: int = 1
    t_range: tuple[int, ...] = ()


# draw_batch: 100 on the CPU (the cpu tier's results were drawn so), the tier's batch on a GPU
BUDGETS: BudgetTable[ReportABudget] = BudgetTable(
    "report_a.BUDGETS",
    {
        "smoke": ReportABudget(
            fast_k={5: 20, 10: 20},
            variance_k={4: 20, 8: 20},
            bound_images=16,
            draw_batch=100,
            deterministic_k={4: 20, 8: 20},
            diversity_n_boot=50,
            full_samples=10,
            full_steps=8,
            ddim_samples=10,
            training_seeds=2,
            t_range=(200,),
        ),
        "cpu": ReportABudget(
            fast_k={5: 500, 10: 500, 20: 500, 50: 250, 100: 100, 400: 50},
            variance_k={20: 500, 400: 50},
            bound_images=300,
            samples=500,
            draw_batch=100,
            deterministic_k={20: 200, 400: 50},
            full_samples=200,
            schedule_full_samples=100,
            training_seeds=3,
            t_range=(200, 2000),
        ),
        "colab": ReportABudget(
            fast_k={5: 2000, 10: 2000, 20: 2000, 50: 2000, 100: 1000, 400: 1000},
            variance_k={20: 2000, 400: 2000},
            bound_images=1005,
            samples=2000,
            deterministic_k={20: 2000, 400: 1000},
            full_samples=1000,
        ),
        "gpu": ReportABudget(
            fast_k={k: 10_000 for k in (5, 10, 20, 50, 100, 400)},
            variance_k={20: 10_000, 400: 10_000},
            bound_images=1005,
            deterministic_k={20: 10_000, 400: 10_000},
            training_seeds=3,
            t_range=T_RANGE,
        ),
    },
)


def training_seeds(tier: str) -> tuple[int, ...]:
    """The training seeds of :data:`SEED_BASES` that ``tier`` trains and the part ``seeds`` measures."""
    return TRAINING_SEEDS[: BUDGETS[tier].training_seeds]


def runs_at(tier: str) -> dict[str, RunSpec]:
    """The runs the chapter trains at ``tier``: every run but the seed runs of seeds, and the schedule runs of
    T, that the tier does not train."""
    extra = {seed_run(b, s) for b in SEED_BASES for s in TRAINING_SEEDS[1:] if s not in training_seeds(tier)}
    extra |= {t_run(sched, T) for sched in SCHEDULE_RUNS for T in T_RANGE if T not in BUDGETS[tier].t_range}
    return {name: spec for name, spec in RUNS.items() if name not in extra}


def store(tier: str) -> RunStore:
    """The chapter's runs at ``tier`` (:func:`runs_at`)."""
    return RunStore(CHAPTER, runs_at(tier), TIER_OVERRIDES, tier)


def config(run: str, tier: str):
    """The TrainConfig of one of :data:`RUNS` at ``tier`` (also of a seed run that the tier does not train)."""
    return RunStore(CHAPTER, RUNS, TIER_OVERRIDES, tier).config(run)


def _train(tier: str, progress: bool, cache: Cache | None = None) -> Path:
    return record_training(store(tier), progress)


# ---------------------------------------------------------------------------------------------
# Sampling settings, loading the trained networks, drawing and measuring samples.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampler:
    """One way of sampling: ``method`` (ddpm / ddim), ``steps`` (respaced to that many; None = all T),
    ``variance`` of the DDPM step (beta_tilde, beta, or zero: Report A's deterministic choice), DDIM's
    ``eta``, ``clip_x0`` (clip the predicted clean image to [-1, 1] before taking the step) and ``start``:
    where x_T comes from (:func:`start_images`): "noise" N(0, I), as every sampler of the book starts;
    "matched" q(x_T | x_0) of training digits, the distribution the network was trained on at t = T;
    "mean" N(sqrt(alpha_bar_T) m, (1 - alpha_bar_T) I) with m the training digits' mean image."""

    method: Literal["ddpm", "ddim"] = "ddpm"
    steps: int | None = None
    variance: Literal["beta_tilde", "beta", "zero"] = "beta_tilde"
    eta: float = 0.0
    clip_x0: bool = True
    start: Literal["noise", "matched", "mean"] = "noise"

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`diffusion_edu.samplers.sample`."""
        kw: dict[str, Any] = {"method": self.method, "steps": self.steps, "clip_x0": self.clip_x0}
        if self.method == "ddpm":
            kw["variance"] = self.variance
        else:
            kw["eta"] = self.eta
        return kw

    def kind(self) -> str:
        """The sampler without its number of steps, e.g. "DDPM, variance zero, clipped x0"."""
        what = f"DDPM, variance {self.variance}" if self.method == "ddpm" else f"DDIM, eta {self.eta:g}"
        start = {"noise": "", "matched": ", x_T from q(x_T | x_0)", "mean": ", x_T around the mean digit"}
        return f"{what}, {'clipped' if self.clip_x0 else 'unclipped'} x0{start[self.start]}"

    def describe(self) -> str:
        """The sampler in words, e.g. "DDPM, variance beta_tilde, clipped x0, 20 steps"."""
        return f"{self.kind()}, {self.steps or 'all'} steps"


def book_sampler(tier: str) -> Sampler:
    """The chapter's protocol: respaced DDPM with beta_tilde and a clipped x0 at the tier's steps."""
    return Sampler("ddpm", EVAL_BUDGETS[tier].steps, "beta_tilde", 0.0, True)


def full_sampler(tier: str, base: Sampler) -> Sampler:
    """``base`` at all T steps (the tier's ``full_steps`` at the smoke tier): how Report A sampled."""
    return Sampler(base.method, BUDGETS[tier].full_steps, base.variance, base.eta, base.clip_x0, base.start)


def _whole_classes(n: int) -> int:
    """n rounded down to whole classes (a multiple of 10, at least one sample per class)."""
    return max(10, n // 10 * 10)


def full_samples(tier: str) -> int:
    """Samples per setting at all T steps (:data:`BUDGETS` ``full_samples``), in whole classes."""
    n = BUDGETS[tier].full_samples
    return samples_per_setting(tier) if n is None else _whole_classes(n)


def samples_per_setting(tier: str) -> int:
    """The tier's sample count (:data:`BUDGETS`, else :data:`EVAL_BUDGETS`) rounded down to whole classes."""
    n = BUDGETS[tier].samples
    return _whole_classes(EVAL_BUDGETS[tier].n if n is None else n)


def class_labels(n: int) -> torch.Tensor:
    """Labels 0, 1, ..., 9, 0, 1, ... (n,): n / 10 samples of each class, interleaved."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 10 or n % 10:
        raise ValueError(f"n must be a positive multiple of 10 (the same number of samples per class), got {n!r}")
    from ..generate import class_labels as cycled

    return cycled(n, 10)


def checkpoint_path(run: str, tier: str) -> Path:
    return store(tier).checkpoint(run)


def train_command(tier: str, *parts: str) -> str:
    """The command that trains the chapter's runs at ``tier`` (finished runs are loaded, not retrained),
    then runs ``parts``."""
    return store(tier).train_command(*parts)


def run_status(run: str, tier: str) -> str | None:
    """None when ``run``'s checkpoint at ``tier`` reached its config's steps, else "no checkpoint" or
    "step s of S" (a run the training queue is still training, or never started, is not finished)."""
    return store(tier).status(run)


def run_finished(run: str, tier: str) -> bool:
    """Whether ``run`` has a checkpoint at ``tier`` that reached its config's steps."""
    return run_status(run, tier) is None


# The runs each evaluation part measures.
PART_RUNS: dict[str, tuple[str, ...]] = {
    "denoisers": ("unet", "autoencoder", "vae"),
    "parameterization": ("unet", "unet_mu"),
    "schedules": tuple(SCHEDULE_RUNS.values()),
    "conditioning": ("unet", "unet_disc"),
    "fast_sampling": ("unet",),
    "variance": ("unet",),
    "ddim": ("unet",),
    "zero_snr": ("unet_v", "unet_v_zsnr"),
    "seeds": tuple(seed_run(b, s) for s in TRAINING_SEEDS for b in SEED_BASES),  # those of the tier's seeds
    "t_range": tuple(t_run(sched, T) for T in sorted((T_REPORT, *T_RANGE)) for sched in SCHEDULE_RUNS),
    "pretrained": ("unet",),
}


def missing_runs(part: str, tier: str) -> dict[str, str]:
    """The runs that ``part`` needs and that are not finished at ``tier``: {run: "no checkpoint" or
    "step s of S"} (empty when the part can run)."""
    if part not in PART_RUNS:
        raise ValueError(f"part must be one of {list(PART_RUNS)}, got {part!r}")
    return store(tier).missing(part_runs(part, tier))


def part_runs(part: str, tier: str) -> tuple[str, ...]:
    """The runs that ``part`` loads at ``tier``: :data:`PART_RUNS` less the seed runs the tier does not train."""
    at = runs_at(tier)
    return tuple(r for r in PART_RUNS[part] if r in at)


def training_summary(tier: str) -> dict[str, Any]:
    """The training record of the chapter at ``tier``: ``results/report_a/training.json`` when the
    ``training`` part has written it; otherwise a record of the same shape built from the finished runs'
    checkpoints and logs (``runs/<tier>/report_a/<run>/log.jsonl``), with ``missing`` naming the runs not
    finished yet and ``source`` saying where the numbers come from."""
    from ..models import count_parameters
    from ..results import hardware_info

    if have_result(CHAPTER, "training", tier):
        return {**load_result(CHAPTER, "training", tier), "missing": {}, "source": "training.json"}
    missing = store(tier).missing()
    summary, configs = {}, {}
    for run in runs_at(tier):
        if run in missing:
            continue
        model, _, cfg = load_run(run, tier)
        steps = config(run, tier).steps  # a finished run stopped there (run_status)
        curve = training_curve(checkpoint_path(run, tier).parent)
        wall = curve["elapsed_s"][-1] if curve["elapsed_s"] else None
        summary[run] = {
            "preset": RUNS[run][0],
            "params": count_parameters(model),
            "steps": steps,
            "epochs": curve["epoch"][-1] if curve["epoch"] else 0,
            "batch_size": cfg.batch_size,
            "train_wall_time_s": wall,
            "img_per_s": round(steps * cfg.batch_size / wall, 1) if wall else None,
            "final_loss": final_loss(curve),
            "curve": {k: curve[k] for k in ("step", "epoch", "loss", "elapsed_s")},
        }
        configs[run] = cfg.to_dict()
    return {
        "name": "training",
        "tier": tier,
        "data": summary,
        "config": {"runs": configs},
        "hardware": hardware_info(),
        "missing": missing,
        "source": "runs' logs (training.json not written yet)",
    }


def load_run(run: str, tier: str, cache: Cache | None = None):
    """The trained network of ``run`` at ``tier`` (model, schedule, config) on
    :func:`~.common.eval_device` (the CPU at the smoke and cpu tiers, the GPU at colab and gpu), loaded
    once per ``cache``. A missing or unfinished checkpoint raises with the command that trains it."""
    return store(tier).load(run, cache)


def draw(
    run: str, tier: str, sampler: Sampler, n: int, progress: bool = False, cache: Cache | None = None
) -> tuple[torch.Tensor, float]:
    """n samples (n / 10 per class) of ``run`` with ``sampler`` and :data:`SEED`, unclamped, and the wall
    seconds they took when first drawn (a later call with the same arguments and ``cache`` returns the
    same tensor)."""

    def make() -> tuple[torch.Tensor, float]:
        model, schedule, _ = load_run(run, tier, cache)
        return draw_with(model, schedule, tier, sampler, n, progress)

    return make() if cache is None else cache.get(("samples", run, tier, sampler, n), make)


def draw_with(
    model, schedule, tier: str, sampler: Sampler, n: int, progress: bool = False
) -> tuple[torch.Tensor, float]:
    """What :func:`draw` does for any network: n samples (n / 10 per class) with ``sampler`` from
    :data:`SEED` and its ``start``, unclamped, and the wall seconds they took."""
    from ..samplers import sample

    x_T = start_images(sampler.start, schedule, n)
    t0 = time.perf_counter()
    x = sample(
        model,
        schedule,
        n,
        y=class_labels(n),
        x_T=x_T,
        generator=torch.Generator().manual_seed(SEED),
        batch_size=draw_batch(tier),
        progress=progress,
        **sampler.kwargs(),
    )
    return images_only(x).cpu(), time.perf_counter() - t0


def start_images(start: str, schedule, n: int) -> torch.Tensor | None:
    """x_T for ``n`` samples (n / 10 per class, interleaved like :func:`class_labels`) from ``start``
    (:class:`Sampler`): None for "noise" (the sampler draws N(0, I) from its generator); for "matched",
    q(x_T | x_0) (Ho et al. Eq. 4) of the first n / 10 training digits of each class, so that sample i
    starts from a digit of the class it is asked for; for "mean", the same marginal's Gaussian with every
    x_0 replaced by the training digits' mean image. The noise comes from its own seed (:data:`SEED` + 1),
    not from the sampler's generator, so the sampling noise is the same as from "noise"."""
    from ..data import load_embedded_mnist

    if start == "noise":
        return None
    if start not in ("matched", "mean"):
        raise ValueError(f"start must be 'noise', 'matched' or 'mean', got {start!r}")
    x0, y = load_embedded_mnist("train").tensors()
    per_class = n // 10
    idx = torch.stack([(y == c).nonzero().flatten()[:per_class] for c in range(10)], 1).flatten()  # 0..9, 0..9
    if len(idx) != n:
        raise ValueError(f"the training digits hold fewer than n / 10 = {per_class} digits of some class")
    x0 = x0[idx] if start == "matched" else x0.mean(0, keepdim=True).expand(n, -1, -1, -1)
    ab = schedule.alpha_bar.to("cpu")[-1]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(SEED + 1))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def figures_dir(tier: str) -> Path:
    """``results/report_a/figures`` (smoke: under ``runs/smoke/results``)."""
    return _figures_dir(CHAPTER, tier)


def save_grid(images: torch.Tensor, path: Path, rows: int = GRID_ROWS) -> None:
    """A PNG of the first ``rows`` samples of each class (class-interleaved images: one column per class)."""
    _save_png(images[: 10 * rows], path, nrow=10, grey=True)


def measured_record(x: torch.Tensor, seconds: float, sampler: Sampler, n: int, cache: Cache | None) -> dict[str, Any]:
    """The record of one drawn setting: its sampler, n, the evaluation kit with intervals
    (:func:`~.evaluation.measure`), what :func:`~.evaluation.for_metrics` repaired, and the sampling time."""
    images, stats = for_metrics(x)
    metrics = measure(images, class_labels(n), cache=cache, generator=torch.Generator().manual_seed(SEED))
    return {
        "sampler": asdict(sampler),
        "n": n,
        **metrics,
        **stats,
        "sample_seconds": round(seconds, 2),
        "seconds_per_1000": round(1000 * seconds / n, 2),
    }


def evaluate_setting(
    run: str,
    tier: str,
    sampler: Sampler,
    n: int,
    figure: str | None = None,
    progress: bool = False,
    cache: Cache | None = None,
) -> dict[str, Any]:
    """Draw, measure and (optionally) save a grid: FID, KID, IS, conditional accuracy, sampling time."""
    x, seconds = draw(run, tier, sampler, n, progress, cache)
    rec = {"run": run, **measured_record(x, seconds, sampler, n, cache)}
    if figure is not None:
        save_grid(for_metrics(x)[0], figures_dir(tier) / f"{figure}.png")
        rec["figure"] = f"figures/{figure}.png"
    return rec


def _save(part: str, data: dict, cfg: dict, tier: str, t0: float) -> Path:
    cfg = {
        **cfg,
        "seed": SEED,
        "reference": "mnist-embedded/heldout (1,005 digits)",
        "chapter_budget": {
            "samples_per_setting": samples_per_setting(tier),
            "fast_K_to_n": BUDGETS[tier].fast_k,
            "variance_K_to_n": BUDGETS[tier].variance_k,
            "bound_images": BUDGETS[tier].bound_images,
            "planned_evaluations": planned_evaluations(tier),
        },
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
    }
    return save_result(CHAPTER, part, data, cfg, tier, time.perf_counter() - t0)


def _run_configs(runs, tier: str, cache: Cache) -> dict[str, dict]:
    return {r: load_run(r, tier, cache)[2].to_dict() for r in runs}


# ---------------------------------------------------------------------------------------------
# The parts.
# ---------------------------------------------------------------------------------------------

_TRAINING_KEYS = ("params", "steps", "batch_size", "train_wall_time_s", "img_per_s", "final_loss")


def _denoisers(tier: str, progress: bool, cache: Cache) -> Path:
    """U-Net vs autoencoder vs VAE, trained with the same steps and batch, sampled the same way."""
    t0 = time.perf_counter()
    training = training_summary(tier)["data"]
    sampler, n = book_sampler(tier), samples_per_setting(tier)
    recs = {}
    for run in ("unet", "autoencoder", "vae"):
        recs[run] = evaluate_setting(run, tier, sampler, n, f"denoisers_{run}", progress, cache)
        recs[run]["training"] = {k: training.get(run, {}).get(k) for k in _TRAINING_KEYS}
    data = {
        "sampler": sampler.describe(),
        "n": n,
        "settings": recs,
        **metric_columns(recs, COLUMNS),
        "params": {r: rec["training"]["params"] for r, rec in recs.items()},
    }
    with_baseline(data, "fid", recs, baseline_record(n, cache))
    return _save(
        "denoisers", data, {"sampler": asdict(sampler), "n": n, "runs": _run_configs(recs, tier, cache)}, tier, t0
    )


def _device(model: torch.nn.Module) -> torch.device:
    """The device of the network's parameters (the CPU for a network without any)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def bound_terms(model, schedule, x0: torch.Tensor, y: torch.Tensor | None, ts, generator=None) -> dict[str, list]:
    """Per-step terms of the variational bound (Ho et al. Eq. 8 with sigma_t^2 = beta_t; book eq. a-lt):
    L_{t-1} = E ||mu_tilde_t(x_t, x_0) - mu_theta(x_t, t)||^2 / (2 beta_t), in nats per image, and the
    mean squared errors of the eps and x_0 that the output implies, at each t in ``ts``.

    x0: (B, 1, 28, 28) in [-1, 1]; y: (B,) labels or None. What the network outputs is what it declares
    (:func:`diffusion_edu.forward.declared_parameterization`); one noise draw per image and t from ``generator``.
    """
    from ..forward import declared_parameterization, eps_from_x0
    from ..losses import DiffusionTables

    p = declared_parameterization(model)
    tables = DiffusionTables.from_schedule(schedule.to("cpu"))
    out: dict[str, list] = {"t": [], "L": [], "eps_mse": [], "x0_mse": []}
    for t_int in ts:
        if isinstance(t_int, bool) or not isinstance(t_int, int) or not 1 <= t_int <= schedule.T:
            raise ValueError(f"ts must hold integer steps in 1..T={schedule.T}, got {t_int!r}")
        t = torch.full((x0.shape[0],), t_int, dtype=torch.int64)
        eps = torch.randn(x0.shape, generator=generator)
        xt = tables.q_sample(x0, t, eps)
        dev = _device(model)  # the bound is summed on the CPU; the network runs where it lives
        output = model(xt.to(dev), schedule.model_time(t).to(dev), None if y is None else y.to(dev)).float().cpu()
        mu = tables.mu_from_output(output, xt, t, p)
        mu_tilde = tables.posterior_mean(x0, xt, t)  # Ho et al. Eq. 7
        x0_pred = tables.x0_from_output(output, xt, t, p)
        eps_pred = eps_from_x0(
            xt, x0_pred, tables.at(tables.sqrt_alpha_bar, t), tables.at(tables.sqrt_one_minus_alpha_bar, t)
        )
        beta = float(schedule.betas[t_int])
        out["t"].append(int(t_int))
        out["L"].append(float((mu_tilde - mu).square().flatten(1).sum(1).mean() / (2 * beta)))
        out["eps_mse"].append(float((eps_pred - eps).square().mean()))
        out["x0_mse"].append(float((x0_pred - x0).square().mean()))
    return out


def _parameterization(tier: str, progress: bool, cache: Cache) -> Path:
    """eps-prediction vs posterior-mean (mu) prediction: samples, and the bound's terms per t."""
    from ..data import load_embedded_mnist

    t0 = time.perf_counter()
    sampler, n = book_sampler(tier), samples_per_setting(tier)
    runs = {"eps": "unet", "mu": "unet_mu"}
    recs = {
        name: evaluate_setting(run, tier, sampler, n, f"parameterization_{name}", progress, cache)
        for name, run in runs.items()
    }
    x0, y = load_embedded_mnist("heldout").tensors()
    k = BUDGETS[tier].bound_images
    x0, y = x0[:k], y[:k]
    terms = {
        name: bound_terms(
            load_run(run, tier, cache)[0],
            load_run(run, tier, cache)[1],
            x0,
            y,
            KL_TIMESTEPS,
            torch.Generator().manual_seed(SEED),
        )
        for name, run in runs.items()
    }
    full, n_full = full_sampler(tier, sampler), full_samples(tier)
    full_recs = {
        name: evaluate_setting(run, tier, full, n_full, f"parameterization_{name}_full", progress, cache)
        for name, run in runs.items()
    }
    data: dict[str, Any] = {
        "sampler": sampler.describe(),
        "n": n,
        "runs": runs,
        "settings": recs,
        **metric_columns(recs, COLUMNS),
        "full": {"sampler": full.describe(), "n": n_full, "settings": full_recs, **metric_columns(full_recs, COLUMNS)},
        "bound": {"t": list(KL_TIMESTEPS), "images": k, **{name: tm for name, tm in terms.items()}},
    }
    with_baseline(data, "fid", recs, baseline_record(n, cache))
    with_baseline(data["full"], "fid", full_recs, baseline_record(n_full, cache))
    return _save(
        "parameterization",
        data,
        {
            "sampler": asdict(sampler),
            "n": n,
            "full_sampler": asdict(full),
            "full_n": n_full,
            "bound_images": k,
            "runs": _run_configs(runs.values(), tier, cache),
        },
        tier,
        t0,
    )


@torch.no_grad()
def first_step(model, schedule, x_T: torch.Tensor, y: torch.Tensor, clip_x0: bool) -> dict[str, float]:
    """The first reverse step x_T -> x_{T-1} from pure noise with variance 0 (Report A's sampler): the rms
    of x_{T-1}, and the gain 1 / sqrt(alpha_T) that Ho et al. Eq. 11 puts on the network's error."""
    from ..samplers import ddpm_step

    dev = _device(model)
    out = ddpm_step(
        model,
        x_T.to(dev),
        schedule.T,
        schedule.to(dev),
        y=None if y is None else y.to(dev),
        variance="zero",
        clip_x0=clip_x0,
    )
    return {"rms": float(out.x_prev.float().square().mean().sqrt()), "gain": float(schedule.alphas[schedule.T] ** -0.5)}


def _schedule_diagnostics(tier: str, steps: int | None, n: int, cache: Cache) -> dict[str, Any]:
    """How each schedule ends at T and what the first reverse step does, at all T steps and respaced."""
    from ..data import load_embedded_mnist
    from ..schedules import respace

    x0 = load_embedded_mnist("heldout").tensors()[0]
    power = float(x0.square().mean())  # E[x0^2] of the digits: x_{T-1} under q has rms sqrt(ab x0^2 + 1 - ab)
    y = class_labels(n)
    x_T = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(SEED))
    diag = {}
    for name, run in SCHEDULE_RUNS.items():
        model, schedule, _ = load_run(run, tier, cache)
        schedule = schedule.to("cpu")
        ab = schedule.alpha_bar
        rec = {
            "T": schedule.T,
            "alpha_bar_T": float(ab[-1]),
            "signal_T": float(ab[-1].sqrt()),
            "beta_T": float(schedule.betas[-1]),
            "log_snr_T": float(schedule.log_snr[-1]),
            "half_at_t": int((ab < 0.5).nonzero()[0]) if (ab < 0.5).any() else None,
        }
        chains = {"full": schedule} | ({f"respaced_{steps}": respace(schedule, steps)} if steps else {})
        for label, sch in chains.items():
            ab_prev = float(sch.alpha_bar[-2])
            rec[label] = {
                "rms_expected": (ab_prev * power + 1 - ab_prev) ** 0.5,
                "clipped": first_step(model, sch, x_T, y, True),
                "unclipped": first_step(model, sch, x_T, y, False),
            }
        diag[name] = rec
    return diag


def schedule_protocols(tier: str) -> dict[str, Sampler]:
    """The samplers of the part ``schedules``: the book's, the book's without clipping, and Report A's
    (variance 0, the unclipped mean of Ho et al. Eq. 11), all at the book's number of steps; then the
    book's and Report A's at all T steps, as Report A sampled ("book_full", "report_full", with
    :func:`full_samples` samples): there the two differ in the sampler only."""
    book = book_sampler(tier)
    report = Sampler("ddpm", book.steps, "zero", 0.0, False)
    return {
        "book": book,
        "no_clip": Sampler("ddpm", book.steps, "beta_tilde", 0.0, False),
        "report": report,
        "book_full": full_sampler(tier, book),
        "report_full": full_sampler(tier, report),
    }


def protocol_samples(tier: str, protocol: str) -> int:
    """Samples per schedule under ``protocol``: at all T steps the tier's schedule_full_samples (else its
    full_samples), else :func:`samples_per_setting`."""
    if not protocol.endswith("_full"):
        return samples_per_setting(tier)
    n = BUDGETS[tier].schedule_full_samples
    return full_samples(tier) if n is None else _whole_classes(n)


def _schedules(tier: str, progress: bool, cache: Cache) -> Path:
    """The four schedules under one protocol, then under Report A's (variance 0, unclipped Eq. 11 mean)."""
    t0 = time.perf_counter()
    book, n = book_sampler(tier), samples_per_setting(tier)
    protocols = schedule_protocols(tier)
    settings: dict[str, dict] = {}
    for pname, sampler in protocols.items():
        m = protocol_samples(tier, pname)
        settings[pname] = {
            name: evaluate_setting(run, tier, sampler, m, f"schedules_{pname}_{name}", progress, cache)
            for name, run in SCHEDULE_RUNS.items()
        }
    cols = {
        p: metric_columns(
            recs, ("fid", "kid_mean", "kid_std", "is", "conditional_accuracy", "out_of_range", "non_finite")
        )
        for p, recs in settings.items()
    }
    data: dict[str, Any] = {
        "n": n,
        "protocols": {
            p: {"sampler": s.describe(), "n": protocol_samples(tier, p), **cols[p]} for p, s in protocols.items()
        },
        **cols["book"],
        "settings": settings,
        "diagnostics": _schedule_diagnostics(tier, book.steps, n, cache),
    }
    with_baseline(data, "fid", settings["book"], baseline_record(n, cache))
    for p in protocols:
        with_baseline(data["protocols"][p], "fid", settings[p], baseline_record(protocol_samples(tier, p), cache))
    return _save(
        "schedules",
        data,
        {
            "protocols": {p: asdict(s) for p, s in protocols.items()},
            "n": n,
            "n_per_protocol": {p: protocol_samples(tier, p) for p in protocols},
            "runs": _run_configs(SCHEDULE_RUNS.values(), tier, cache),
        },
        tier,
        t0,
    )


def nearest_neighbour_labels(images: torch.Tensor) -> torch.Tensor:
    """The label of each image's nearest embedded training digit in pixel distance (a 1-NN classifier):
    a judge of the asked digit that no network was trained against. images: (B, 1, 28, 28) in [-1, 1]."""
    from ..data import load_embedded_mnist
    from ..memorisation import nearest_neighbours

    train = load_embedded_mnist("train")
    _, idx = nearest_neighbours(images, train, k=1)
    return train.labels[idx[:, 0]].to(torch.int64)


def _per_class(pred: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return [float((pred[labels == c] == c).float().mean()) for c in range(10)]


def _conditioning(tier: str, progress: bool, cache: Cache) -> Path:
    """Conditional accuracy with and without the discriminator term, by two judges."""
    from ..data import load_embedded_mnist
    from ..metrics import classifier_outputs

    t0 = time.perf_counter()
    sampler, n = book_sampler(tier), samples_per_setting(tier)
    labels = class_labels(n)
    recs = {}
    for run in ("unet", "unet_disc"):
        rec = evaluate_setting(run, tier, sampler, n, f"conditioning_{run}", progress, cache)
        images, _ = for_metrics(draw(run, tier, sampler, n, cache=cache)[0])
        clf = classifier_outputs(images, book_classifier(cache))[1].argmax(1)
        knn = nearest_neighbour_labels(images)
        rec.update(
            knn_accuracy=float((knn == labels).float().mean()),
            per_class_classifier=_per_class(clf, labels),
            per_class_knn=_per_class(knn, labels),
            disc_weight=load_run(run, tier, cache)[2].disc_weight,
        )
        recs[run] = rec
    real, real_labels = load_embedded_mnist("heldout").tensors()
    judges = {
        "classifier_heldout": float(
            (classifier_outputs(real, book_classifier(cache))[1].argmax(1) == real_labels).float().mean()
        ),
        "knn_heldout": float((nearest_neighbour_labels(real) == real_labels).float().mean()),
    }
    data = {
        "sampler": sampler.describe(),
        "n": n,
        "settings": recs,
        "judges": judges,
        **metric_columns(recs, ("fid", "kid_mean", "is", "conditional_accuracy", "knn_accuracy", "disc_weight")),
    }
    return _save(
        "conditioning",
        data,
        {
            "sampler": asdict(sampler),
            "n": n,
            "knn_reference": "mnist-embedded/train",
            "runs": _run_configs(recs, tier, cache),
        },
        tier,
        t0,
    )


FAST_SAMPLERS = {
    "ddim": Sampler("ddim"),
    "respaced_beta_tilde": Sampler("ddpm", variance="beta_tilde"),
    "respaced_zero": Sampler("ddpm", variance="zero"),
}


def at_steps(base: Sampler, K: int) -> Sampler:
    """``base`` with K (respaced) steps."""
    return Sampler(base.method, K, base.variance, base.eta, base.clip_x0)


def _sweep(
    tier: str, samplers: dict[str, Sampler], ks: dict[int, int], prefix: str, progress: bool, cache: Cache
) -> dict:
    """Every sampler at every K (with n = ks[K] samples): per-sampler lists over K, and the records."""
    keys = ("fid", "kid_mean", "kid_std", "is", "conditional_accuracy", "seconds_per_1000")
    by_sampler: dict[str, dict] = {name: {k: [] for k in keys} for name in samplers}
    with_intervals = (*keys, "precision", "recall", *(f"{k}_interval" for k in INTERVAL_KEYS))
    settings: dict[str, dict] = {name: {} for name in samplers}
    for K, n in ks.items():
        for name, base in samplers.items():
            s = at_steps(base, K)
            rec = evaluate_setting("unet", tier, s, n, f"{prefix}_{name}_K{K}", progress, cache)
            settings[name][str(K)] = rec
            for k in keys:
                by_sampler[name][k].append(rec[k])
    at_k = {
        str(K): {
            k: {name: settings[name][str(K)].get(k) for name in samplers}
            for k in with_intervals
            if any(k in settings[name][str(K)] for name in samplers)
        }
        for K in ks
    }
    for K, n in ks.items():  # each K's ranking beside the baseline at its number of samples
        with_baseline(
            at_k[str(K)], "fid", {name: settings[name][str(K)] for name in samplers}, baseline_record(n, cache)
        )
    return {"K": list(ks), "n": list(ks.values()), "samplers": by_sampler, "by_K": at_k, "settings": settings}


def _fast_sampling(tier: str, progress: bool, cache: Cache) -> Path:
    """DDIM vs respaced DDPM (beta_tilde, and variance 0 as Report A samples) at K steps, quality and time."""
    t0 = time.perf_counter()
    ks = BUDGETS[tier].fast_k
    data = {
        "describe": {name: s.kind() for name, s in FAST_SAMPLERS.items()},
        **_sweep(tier, FAST_SAMPLERS, ks, "fast", progress, cache),
    }
    return _save(
        "fast_sampling",
        data,
        {
            "samplers": {k: asdict(s) for k, s in FAST_SAMPLERS.items()},
            "K_to_n": ks,
            "run": _run_configs(["unet"], tier, cache),
        },
        tier,
        t0,
    )


VARIANCE_SAMPLERS = {v: Sampler("ddpm", variance=v) for v in ("zero", "beta", "beta_tilde")}


def _variance(tier: str, progress: bool, cache: Cache) -> Path:
    """The reverse variance sigma_t^2 = 0 (Report A), beta_t or beta_tilde_t, at a few K and at all T steps."""
    t0 = time.perf_counter()
    ks = BUDGETS[tier].variance_k
    sweep = _sweep(tier, VARIANCE_SAMPLERS, ks, "variance", progress, cache)
    last = str(max(ks))
    data = {
        "describe": {name: s.kind() for name, s in VARIANCE_SAMPLERS.items()},
        **sweep,
        "full_K": int(last),
        "full": sweep["by_K"][last],
    }
    return _save(
        "variance",
        data,
        {
            "samplers": {k: asdict(s) for k, s in VARIANCE_SAMPLERS.items()},
            "K_to_n": ks,
            "run": _run_configs(["unet"], tier, cache),
        },
        tier,
        t0,
    )


# The part ``ddim``: why DDIM with eta = 0 scores worse than respaced DDPM on these networks.
DDIM_OTHER_NETWORK = ("report_e", "T1000_linear")  # chapter 5's network: T = 1000, 17,000 steps at the cpu tier


def ddim_samples(tier: str) -> int:
    """Samples per setting of the part ``ddim`` at the book's steps (:data:`BUDGETS` ``ddim_samples``)."""
    n = BUDGETS[tier].ddim_samples
    return samples_per_setting(tier) if n is None else _whole_classes(n)


def ddim_settings(tier: str) -> dict[str, tuple[Sampler, int]]:
    """The settings of the part ``ddim`` on the reference U-Net: {name: (sampler, n)}. At the book's
    steps: DDIM with eta in {0, 0.5, 1}, each with the clipped x0 and without; respaced DDPM (the book's
    sampler); DDIM and DDPM from a start matched to q(x_T | x_0), and DDIM from the mean digit's marginal.
    At all T steps (as many samples as the schedules' 400-step protocols, :func:`protocol_samples`, so that
    its DDPM setting is the linear schedule's "book_full" draw): DDIM from N(0, I), from the matched start, DDPM."""
    book, n, n_full = book_sampler(tier), ddim_samples(tier), protocol_samples(tier, "report_full")
    K = book.steps
    out: dict[str, tuple[Sampler, int]] = {}
    for eta in (0.0, 0.5, 1.0):
        for clip in (True, False):
            out[f"ddim_eta{eta:g}_{'clip' if clip else 'noclip'}"] = (Sampler("ddim", K, eta=eta, clip_x0=clip), n)
    out["ddpm"] = (book, n)
    out["ddim_matched"] = (Sampler("ddim", K, start="matched"), n)
    out["ddim_mean"] = (Sampler("ddim", K, start="mean"), n)
    out["ddpm_matched"] = (Sampler("ddpm", K, "beta_tilde", start="matched"), n)
    out["ddim_full"] = (full_sampler(tier, Sampler("ddim")), n_full)
    out["ddim_matched_full"] = (full_sampler(tier, Sampler("ddim", start="matched")), n_full)
    out["ddpm_full"] = (full_sampler(tier, book), n_full)
    return out


def _other_network_ddim(tier: str, progress: bool, cache: Cache) -> dict[str, Any]:
    """DDIM (eta 0) against respaced DDPM at the book's steps on chapter 5's network
    (:data:`DDIM_OTHER_NETWORK`, label-conditional, w = 0), when that chapter's run is finished at ``tier``;
    otherwise the record says which run is missing and the command that trains it."""
    from importlib import import_module

    chapter, run = DDIM_OTHER_NETWORK
    other = import_module(f"{__package__}.{chapter}").store(tier)
    status = other.status(run)
    if status is not None:
        return {"chapter": chapter, "run": run, "missing": status, "command": other.train_command()}
    model, schedule, cfg = other.load(run, cache)
    book, n = book_sampler(tier), ddim_samples(tier)
    recs = {
        name: measured_record(*draw_with(model, schedule, tier, sampler, n, progress), sampler, n, cache)
        for name, sampler in {"ddpm": book, "ddim": Sampler("ddim", book.steps)}.items()
    }
    ab_T = float(schedule.alpha_bar[-1])
    out = {
        "chapter": chapter,
        "run": run,
        "T": schedule.T,
        "schedule": cfg.schedule,
        "signal_T": ab_T**0.5,
        "settings": recs,
        **metric_columns(recs, ("fid", "conditional_accuracy")),
        "config": cfg.to_dict(),
    }
    with_baseline(out, "fid", recs, baseline_record(n, cache))
    return out


def _by_steps(settings: dict[str, dict[str, Any]], cache: Cache) -> dict[str, dict[str, Any]]:
    """Measured settings split into the book's steps ("steps") and all T steps ("full": names ending in
    "_full"), each group as metric columns with the pixel-Gaussian baseline at its own n beside it."""
    groups = {
        "steps": [k for k in settings if not k.endswith("_full")],
        "full": [k for k in settings if k.endswith("_full")],
    }
    out = {}
    for g, names in groups.items():
        recs = {k: settings[k] for k in names}
        out[g] = metric_columns(recs, COLUMNS)
        with_baseline(out[g], "fid", recs, baseline_record(recs[names[0]]["n"], cache))
    return out


def _ddim(tier: str, progress: bool, cache: Cache) -> Path:
    """DDIM's diagnosis on the reference U-Net (:func:`ddim_settings`) and on chapter 5's network."""
    from ..data import load_embedded_mnist

    t0 = time.perf_counter()
    planned = ddim_settings(tier)
    settings = {
        name: evaluate_setting("unet", tier, s, m, f"ddim_{name}", progress, cache) for name, (s, m) in planned.items()
    }
    _, schedule, _ = load_run("unet", tier, cache)
    ab_T = float(schedule.alpha_bar.to("cpu")[-1])
    mean_digit = load_embedded_mnist("train").tensors()[0].mean(0)
    data: dict[str, Any] = {
        "K": book_sampler(tier).steps,
        "full_K": full_sampler(tier, Sampler()).steps or schedule.T,
        "T": schedule.T,
        "describe": {name: s.describe() for name, (s, _) in planned.items()},
        "n": {name: m for name, (_, m) in planned.items()},
        "settings": settings,
        **_by_steps(settings, cache),
        "start": {
            "signal_T": ab_T**0.5,
            "mean_offset_rms": float((ab_T**0.5 * mean_digit).square().mean().sqrt()),
        },
        "other_network": _other_network_ddim(tier, progress, cache),
    }
    cfg = {
        "settings": {name: {**asdict(s), "n": m} for name, (s, m) in planned.items()},
        "start_seed": SEED + 1,
        "run": _run_configs(["unet"], tier, cache),
        "other_network": list(DDIM_OTHER_NETWORK),
    }
    return _save("ddim", data, cfg, tier, t0)


# The part ``zero_snr``: the start of the chain fixed by the schedule instead of by a matched x_T.
ZERO_SNR_RUNS = ("unet_v", "unet_v_zsnr")  # v-prediction on the linear schedule; the same, rescaled (Lin et al.)


def zero_snr_settings(tier: str) -> dict[str, tuple[Sampler, int]]:
    """The settings of the part ``zero_snr`` on each of :data:`ZERO_SNR_RUNS`: DDIM (eta 0) and the DDPM step
    at the book's steps (:func:`ddim_samples` samples) and at all T steps (as many as the ``ddim`` part's
    400-step settings), every one from N(0, I) and the same seeds as the ``ddim`` part."""
    book, n, n_full = book_sampler(tier), ddim_samples(tier), protocol_samples(tier, "report_full")
    return {
        "ddim": (Sampler("ddim", book.steps), n),
        "ddpm": (book, n),
        "ddim_full": (full_sampler(tier, Sampler("ddim")), n_full),
        "ddpm_full": (full_sampler(tier, book), n_full),
    }


def _zero_snr(tier: str, progress: bool, cache: Cache) -> Path:
    """DDIM against the DDPM step on two v-prediction U-Nets that differ in the schedule's end only: the
    linear schedule (13% of the digit left in x_T at T = 400) and the same schedule rescaled to zero
    terminal SNR (Lin et al. 2024), where q(x_T | x_0) is the N(0, I) that sampling starts from."""
    t0 = time.perf_counter()
    planned = zero_snr_settings(tier)
    networks: dict[str, Any] = {}
    for run in ZERO_SNR_RUNS:
        _, schedule, cfg = load_run(run, tier, cache)
        settings = {
            name: evaluate_setting(run, tier, s, m, f"zero_snr_{run}_{name}", progress, cache)
            for name, (s, m) in planned.items()
        }
        summary = store(tier).summary(run)
        curve = summary["curve"]
        networks[run] = {
            "schedule": schedule.name,
            "parameterization": cfg.parameterization,
            "signal_T": float(schedule.alpha_bar.to("cpu")[-1]) ** 0.5,
            "final_loss": summary["final_loss"],
            "train_wall_time_s": curve["elapsed_s"][-1] if curve.get("elapsed_s") else None,
            "settings": settings,
            **_by_steps(settings, cache),
        }
    data: dict[str, Any] = {
        "K": book_sampler(tier).steps,
        "full_K": full_sampler(tier, Sampler()).steps or config("unet_v", tier).T,
        "T": config("unet_v", tier).T,
        "describe": {name: s.describe() for name, (s, _) in planned.items()},
        "n": {name: m for name, (_, m) in planned.items()},
        "networks": networks,
    }
    cfg_out = {
        "settings": {name: {**asdict(s), "n": m} for name, (s, m) in planned.items()},
        "runs": _run_configs(ZERO_SNR_RUNS, tier, cache),
    }
    return _save("zero_snr", data, cfg_out, tier, t0)


# The part ``seeds``: the denoisers' and the schedules' rankings over training seeds.
SEED_RANKINGS: dict[str, dict[str, str]] = {
    "denoisers": {"unet": "unet", "autoencoder": "autoencoder", "vae": "vae"},  # entry -> base run
    "schedules": dict(SCHEDULE_RUNS),
}


def _seeds(tier: str, progress: bool, cache: Cache) -> Path:
    """The two rankings the chapter's conclusions rest on, the denoisers and the four schedules (the book's
    sampler), measured on each training seed of the tier (:func:`training_seeds`): the same sampler, n and
    sampling seed as the parts ``denoisers`` and ``schedules`` (so seed 0 is their draw), and with two seeds
    or more each entry's mean over the seeds with Student's t interval (``seeds``)."""
    t0 = time.perf_counter()
    sampler, n = book_sampler(tier), samples_per_setting(tier)
    seeds, runs = training_seeds(tier), store(tier)
    data: dict[str, Any] = {"sampler": sampler.describe(), "n": n, "training_seeds": list(seeds), "rankings": {}}
    baseline = baseline_record(n, cache)
    for ranking, entries in SEED_RANKINGS.items():
        per_seed: dict[int, dict[str, dict[str, Any]]] = {}
        for seed in seeds:
            per_seed[seed] = {
                name: evaluate_setting(seed_run(base, seed), tier, sampler, n, None, progress, cache)
                for name, base in entries.items()
            }
        rec: dict[str, Any] = {
            "runs": {name: [seed_run(base, s) for s in seeds] for name, base in entries.items()},
            "final_loss": {
                name: [runs.summary(seed_run(base, s))["final_loss"] for s in seeds] for name, base in entries.items()
            },
            "per_seed": {str(s): metric_columns(recs, COLUMNS) for s, recs in per_seed.items()},
        }
        if len(seeds) >= 2:  # an interval over training seeds needs at least two of them
            rec["seeds"] = seed_columns(per_seed, list(entries))
            means = {k: {"fid_interval": iv} for k, iv in rec["seeds"]["fid_interval"].items()}
            with_baseline(rec["seeds"], "fid", means, baseline)
        data["rankings"][ranking] = rec
    cfg = {
        "sampler": asdict(sampler),
        "n": n,
        "training_seeds": list(seeds),
        "seeds": "each network sampled with the same sampling seed on each training seed's run; the seed interval "
        "is Student's t over the training seeds (diffusion_edu.intervals.seed_spread)",
        "runs": _run_configs(part_runs("seeds", tier), tier, cache),
    }
    return _save("seeds", data, cfg, tier, t0)


def t_values(tier: str) -> list[int]:
    """The T at which the part ``t_range`` ranks the four schedules at ``tier``: 400 and the tier's ``t_range``."""
    return sorted((T_REPORT, *BUDGETS[tier].t_range))


def _t_range(tier: str, progress: bool, cache: Cache) -> Path:
    """Report A's "for T between 200 and 2000": the four schedules at each T of :func:`t_values`, each network
    trained like its T = 400 run but for T, sampled with the book's sampler (the same n and sampling seed as the
    part ``schedules``, so T = 400 is that part's draw), each T's FIDs with their bootstrap intervals and the
    baseline. Every schedule keeps its definition in terms of T (linear: beta from 1e-4 to 0.02 over T steps),
    so T also moves how much of the digit x_T keeps: ``alpha_bar_T`` records it."""
    t0 = time.perf_counter()
    sampler, n = book_sampler(tier), samples_per_setting(tier)
    baseline = baseline_record(n, cache)
    data: dict[str, Any] = {"sampler": sampler.describe(), "n": n, "T": t_values(tier), "by_T": {}}
    for T in t_values(tier):
        recs = {
            sched: evaluate_setting(t_run(sched, T), tier, sampler, n, f"t_range_T{T}_{sched}", progress, cache)
            for sched in SCHEDULE_RUNS
        }
        block: dict[str, Any] = {
            "runs": {sched: t_run(sched, T) for sched in SCHEDULE_RUNS},
            **metric_columns(recs, COLUMNS),
        }
        block["figures"] = {sched: r["figure"] for sched, r in recs.items()}
        block["alpha_bar_T"] = {
            sched: float(load_run(t_run(sched, T), tier, cache)[1].alpha_bar[-1]) for sched in SCHEDULE_RUNS
        }
        with_baseline(block, "fid", recs, baseline)
        data["by_T"][str(T)] = block
    cfg = {
        "sampler": asdict(sampler),
        "n": n,
        "T": t_values(tier),
        "runs": _run_configs(part_runs("t_range", tier), tier, cache),
    }
    return _save("t_range", data, cfg, tier, t0)


def _pretrained(tier: str, progress: bool, cache: Cache) -> Path:
    """Ship the reference U-Net (linear, eps) with the package: ``load_pretrained("report_a")``."""
    from ..pretrained import PRETRAINED_DIR, export_pretrained

    t0 = time.perf_counter()
    cfg = load_run("unet", tier, cache)[2]
    folder = runs_root("smoke") / "pretrained" if tier == "smoke" else PRETRAINED_DIR
    dest = export_pretrained(
        checkpoint_path("unet", tier),
        CHAPTER,
        folder=folder,
        source={"tier": tier, "chapter": CHAPTER, "run": "unet", "preset": RUNS["unet"][0], "dataset": cfg.dataset},
    )
    from ..models import count_parameters

    data = {
        "name": CHAPTER,
        "file": dest.name,
        "bytes": dest.stat().st_size,
        "run": "unet",
        "params": count_parameters(load_run("unet", tier, cache)[0]),
        "steps": cfg.steps,
    }
    return _save("pretrained", data, {"run": cfg.to_dict()}, tier, t0)


def planned_draws(tier: str) -> set[tuple[str, Sampler, int]]:
    """Every distinct (run, sampler, n) that the evaluation parts draw at ``tier``: each is sampled once
    per process (:func:`draw`) however many parts use it."""
    book, n = book_sampler(tier), samples_per_setting(tier)
    draws = {(run, book, n) for run in ("unet", "autoencoder", "vae", "unet_mu", "unet_disc")}
    draws |= {
        (run, s, protocol_samples(tier, p))
        for p, s in schedule_protocols(tier).items()
        for run in SCHEDULE_RUNS.values()
    }
    draws |= {(run, full_sampler(tier, book), full_samples(tier)) for run in ("unet", "unet_mu")}
    draws |= {("unet", s, m) for s, m in ddim_settings(tier).values()}
    draws |= {(run, s, m) for s, m in zero_snr_settings(tier).values() for run in ZERO_SNR_RUNS}
    draws |= {(run, book, n) for part in ("seeds", "t_range") for run in part_runs(part, tier)}
    for samplers, ks in ((FAST_SAMPLERS, BUDGETS[tier].fast_k), (VARIANCE_SAMPLERS, BUDGETS[tier].variance_k)):
        draws |= {("unet", at_steps(base, K), m) for K, m in ks.items() for base in samplers.values()}
    return draws


def draw_batch(tier: str) -> int:
    """Images per sampling batch at ``tier`` (:data:`BUDGETS`, else the tier's EVAL_BUDGETS batch)."""
    b = BUDGETS[tier].draw_batch
    return EVAL_BUDGETS[tier].batch_size if b is None else b


def colab_plan(tier: str = "colab") -> dict[str, Any]:
    """What the chapter runs at ``tier``, for :func:`~.colab.chapter_estimate`: the tier's training configs
    and the sampling calls (config, batch, calls) of every planned draw (guided draws run both halves in
    one forward), plus the bound terms and first-step diagnostics as single batches."""
    b = draw_batch(tier)
    sampling = []
    for run, s, m in planned_draws(tier):
        cfg = config(run, tier)
        sampling.append((cfg, b, -(-m // b) * (s.steps or cfg.T)))
    ev = planned_evaluations(tier)
    unet = config("unet", tier)
    sampling.append((unet, b, -(-(ev["bound"] + ev["first_step"]) // b)))
    return {"train": {run: config(run, tier) for run in runs_at(tier)}, "sampling": sampling}


def planned_evaluations(tier: str) -> dict[str, int]:
    """What the evaluation parts cost at ``tier``, in images passed through a network (one image at one
    step is one): drawing the samples, the bound terms of ``parameterization`` and the first-step
    diagnostics of ``schedules``. The cpu tier's budgets are chosen with it (:data:`BUDGETS`)."""
    draws = planned_draws(tier)
    steps = {run: config(run, tier).T for run in RUNS}
    n, book = samples_per_setting(tier), book_sampler(tier)
    return {
        "sampling": sum(m * (s.steps or steps[run]) for run, s, m in draws),
        "settings": len(draws),
        "bound": 2 * BUDGETS[tier].bound_images * len(KL_TIMESTEPS),
        "first_step": len(SCHEDULE_RUNS) * (2 if book.steps else 1) * 2 * n,
    }


def _evaluation(name: str, description: str, fn) -> Part:
    """An evaluation part: it needs the training part's runs of :data:`PART_RUNS` and never trains."""
    return Part(name, description, fn, ["training"], PART_RUNS[name])


PARTS: dict[str, Part] = chapter_parts(
    CHAPTER,
    Part(
        "training",
        "train the Report A networks (T=400): the report's eight, two v-prediction runs, the tier's training seeds "
        "and the schedules at the tier's other T",
        _train,
    ),
    _evaluation("denoisers", "U-Net vs autoencoder vs VAE at the same budget", _denoisers),
    _evaluation("parameterization", "eps vs posterior-mean prediction; the bound per t", _parameterization),
    _evaluation("schedules", "four schedules under one protocol, and under Report A's sampler", _schedules),
    _evaluation("conditioning", "conditional accuracy with and without the discriminator term", _conditioning),
    _evaluation("fast_sampling", "DDIM vs respaced DDPM at K = 5..400 steps: quality and time", _fast_sampling),
    _evaluation("variance", "reverse variance 0 vs beta vs beta_tilde", _variance),
    _evaluation("ddim", "why DDIM (eta 0) trails respaced DDPM: eta, clipping, the start of the chain", _ddim),
    _evaluation(
        "zero_snr", "DDIM vs DDPM on v-prediction networks, linear and rescaled to zero terminal SNR", _zero_snr
    ),
    _evaluation("seeds", "the denoisers' and the schedules' rankings over the tier's training seeds", _seeds),
    _evaluation("t_range", "the four schedules' ranking at T = 400 and the tier's other T (200 to 2000)", _t_range),
    _evaluation("pretrained", "ship the reference U-Net with the package", _pretrained),
)


# ---------------------------------------------------------------------------------------------
# The part ``deterministic``: what sigma_t = 0 does to the samples' diversity, on the shipped network.
# ---------------------------------------------------------------------------------------------

# K -> samples per variance: ReportABudget.deterministic_k (20 steps are cheap, so they get more samples).
DETERMINISTIC_VARIANCES = ("zero", "beta_tilde", "beta")
FIGURE_CLASS = 4  # the grid of the part: one row per variance, samples of this digit
PART_RUNS["deterministic"] = ("unet",)  # the shipped network is the cpu tier's unet run, exported


def shipped_network(tier: str, cache: Cache | None = None):
    """The network the package ships for this chapter (``load_pretrained("report_a")``, the cpu tier's
    ``unet`` run) on :func:`~.common.eval_device`, loaded once per ``cache``, and where it came from."""
    from ..pretrained import load_pretrained, pretrained_source
    from .common import eval_device

    def make():
        return load_pretrained(CHAPTER, device=eval_device(tier)), pretrained_source(CHAPTER)

    return make() if cache is None else cache.get(("pretrained", CHAPTER, tier), make)


def diversity_record(
    features: torch.Tensor, labels: torch.Tensor, n_boot: int = 1000, seed: int = SEED
) -> dict[str, Any]:
    """Within-class diversity (:func:`diffusion_edu.diagnostics.within_class_diversity`: the mean
    distance between two samples of one class, in the classifier's features), per class and averaged
    over the classes, with a 95% bootstrap interval over the samples ("centred": a resample's duplicates
    pull every distance to zero together)."""
    from ..diagnostics import mean_within_class_diversity, within_class_diversity
    from ..intervals import bootstrap

    both = torch.cat([features.double(), labels.double()[:, None]], 1)  # (N, d + 1): resampled together
    per_class = within_class_diversity(features, labels)
    iv = bootstrap(
        mean_within_class_diversity,
        both,
        n_boot=n_boot,
        method="centred",
        generator=torch.Generator().manual_seed(seed),
    )
    return {"diversity": iv.estimate, "diversity_interval": iv.to_dict(), "diversity_per_class": per_class.tolist()}


def _draw_shipped(variance: str, K: int, n: int, tier: str, progress: bool, cache: Cache):
    """n samples (n / 10 per class) of the shipped network, respaced DDPM at K steps (all T when K = T),
    with ``variance`` and the clipped x0, from :data:`SEED`; and the seconds they took."""
    from ..samplers import sample

    def make():
        (model, schedule, _), _ = shipped_network(tier, cache)
        t0 = time.perf_counter()
        x = sample(
            model,
            schedule,
            n,
            steps=None if K == schedule.T else K,
            variance=variance,
            clip_x0=True,
            y=class_labels(n),
            generator=torch.Generator().manual_seed(SEED),
            batch_size=draw_batch(tier),
            progress=progress,
        )
        return images_only(x).cpu(), time.perf_counter() - t0

    return cache.get(("pretrained_samples", CHAPTER, variance, K, n), make)


def _deterministic_setting(variance: str, K: int, n: int, tier: str, progress: bool, cache: Cache) -> dict:
    """One setting of the part: the evaluation kit (with intervals) and the within-class diversity."""
    from ..metrics import classifier_outputs

    x, seconds = _draw_shipped(variance, K, n, tier, progress, cache)
    images, stats = for_metrics(x)
    labels = class_labels(n)
    rec = measure(images, labels, cache=cache, generator=torch.Generator().manual_seed(SEED))
    features = classifier_outputs(images, book_classifier(cache))[0]
    rec.update(diversity_record(features, labels, BUDGETS[tier].diversity_n_boot), **stats, n=n, K=K)
    rec["sample_seconds"] = round(seconds, 2)
    return rec


def _class_rows(images: torch.Tensor, labels: torch.Tensor, digit: int, per_row: int) -> torch.Tensor:
    return images[(labels == digit).nonzero().flatten()[:per_row]]


def _deterministic(tier: str, progress: bool, cache: Cache) -> Path:
    """The reverse variance sigma_t^2 in {0, beta_tilde, beta} at 20 respaced steps and at all 400:
    precision and recall, and each class's diversity against the real digits', on the shipped network."""
    from ..data import load_embedded_mnist
    from ..metrics import classifier_outputs

    t0 = time.perf_counter()
    ks = BUDGETS[tier].deterministic_k
    (_, schedule, cfg), source = shipped_network(tier, cache)
    real, real_labels = load_embedded_mnist("heldout").tensors()
    real_features = classifier_outputs(real, book_classifier(cache))[0]
    real_rec = {"n": len(real_labels), **diversity_record(real_features, real_labels, BUDGETS[tier].diversity_n_boot)}
    settings: dict[str, dict] = {v: {} for v in DETERMINISTIC_VARIANCES}
    figures = {}
    for K, n in ks.items():
        rows = []
        for v in DETERMINISTIC_VARIANCES:
            rec = _deterministic_setting(v, K, n, tier, progress, cache)
            rec["diversity_ratio"] = rec["diversity"] / real_rec["diversity"]
            settings[v][str(K)] = rec
            images = for_metrics(_draw_shipped(v, K, n, tier, progress, cache)[0])[0]
            rows.append(_class_rows(images, class_labels(n), FIGURE_CLASS, min(10, n // 10)))
        path = figures_dir(tier) / f"deterministic_K{K}.png"
        _save_png(torch.cat(rows), path, nrow=len(rows[0]), grey=True)
        figures[str(K)] = f"figures/{path.name}"
    keys = ("fid", "kid_mean", "is", "conditional_accuracy", "diversity", "diversity_ratio")
    by_k = {str(K): metric_columns({v: settings[v][str(K)] for v in settings}, keys) for K in ks}
    full = str(max(ks))
    data = {
        "network": source,
        "T": schedule.T,
        "K": list(ks),
        "n": list(ks.values()),
        "full_K": int(full),
        "variances": list(DETERMINISTIC_VARIANCES),
        "by_K": by_k,
        "full": by_k[full],
        "settings": settings,
        "real": real_rec,
        "figure_class": FIGURE_CLASS,
        "figures": figures,
    }
    config_ = {"K_to_n": ks, "variances": list(DETERMINISTIC_VARIANCES), "clip_x0": True, "network": cfg.to_dict()}
    return _save("deterministic", data, config_, tier, t0)


PARTS.update(
    chapter_parts(
        CHAPTER,
        Part(
            "deterministic",
            "sigma_t = 0 vs beta_tilde vs beta on the shipped network: precision, recall, within-class diversity",
            _deterministic,
        ),
    )
)
