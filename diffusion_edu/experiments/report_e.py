"""Report E (conditional MNIST U-Net with classifier-free guidance): the runs and the chapter's parts.

Report E trains a two-level U-Net with time and label in every block, L1 loss, batch 32, label
dropout for classifier-free guidance, and sweeps T in {1000, 4000} x {linear, cosine} and the
guidance weight w. The chapter's parts, in order:

- ``training``: the four networks (T x schedule), each with label dropout, each from the tier's
  training seeds (``BUDGETS[tier].training_seeds``: three at the cpu tier);
- ``schedules``: the T x schedule sweep at the report's w = 0.2 (Report E Table 2);
- ``steps``: the same sweep at each sampler step count of the tier's ``step_counts`` (the report
  sampled all T steps; the cpu tier affords 20 and 100): how much the step count moves Table 2;
- ``guidance``: w in {0, 0.2, 0.5} (Table 3) and beyond (1, 2, 4) on the T=1000 linear network, for
  each of the tier's training seeds of it (``BUDGETS[tier].training_seeds``; with two or more, the
  ranking of w is judged over seeds as well as samples);
- ``schedule_seeds``: Table 2 on every training seed of every network, each network's mean with its
  t interval over the seeds (the seed-0 draws are the ``schedules`` part's, the guidance network's are
  the ``guidance`` part's at w = 0.2, reused from their results files);
- ``repeatability``: FID over five sampling seeds (Table 1), next to FID's sample-size bias;
- ``pretrained``: the T=1000 linear network shipped as ``load_pretrained("report_e")``.

Every evaluation draws class-conditional samples, the same number of each digit (100 per class at
the cpu tier), with the respaced DDPM sampler (sigma^2 = beta_tilde) at the tier's
:data:`~.common.EVAL_BUDGETS`, and measures them against the held-out digits with the book's
classifier-feature FID, IS and conditional accuracy. Sampling seeds are shared across settings
(common random numbers): at every w the i-th sample starts from the same x_T and the same noise.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..generate import class_labels  # noqa: F401  (the chapter's label sequence; re-exported)
from .budgets import BudgetTable
from .common import (
    EVAL_BUDGETS,
    EvalBudget,
    Part,
    chapter_parts,
    have_result,
    load_result,
    save_result,
    tier_results_dir,
)
from .evaluation import (
    SEED_METRICS,
    baseline_record,
    images_only,
    measure,
    metric_columns,
    real_data_floor,
    with_baseline,
)
from .evaluation import seed_columns as evaluation_seed_columns
from .figures import class_grid as _class_grid
from .figures import save_grid
from .store import Cache, RunStore, record_training, ship_pretrained
from .training_runs import TRAINING_SEEDS, RunSpec, seed_run_name, seed_runs_of

CHAPTER = "report_e"


@dataclass(frozen=True)
class ReportEBudget(EvalBudget):
    """The kernel's sampling budget (:data:`~.common.EVAL_BUDGETS`: ``n``, ``steps``, ``batch_size``), the
    sampler step counts of the ``steps`` part (None = all T steps, the report's protocol) and how many
    training seeds of every sweep network the tier trains and the parts ``guidance`` and ``schedule_seeds``
    measure (:func:`training_seeds`)."""

    step_counts: tuple[int | None, ...] = ()
    training_seeds: int = 1


# (step counts, training seeds) per tier: what each tier affords for four networks of 1,000 (cpu) or
# 10,000 (colab, gpu) guided samples (at the cpu tier 100 steps cost 5x the parts' 20). The colab tier
# keeps one training seed: eight more networks and their guidance curves would take its chapter past the
# half hour of a free T4 (tests/test_colab_tier.py). The cpu tier measures all three: each more network
# trains in 18-50 minutes here, with the machine's load (one thread, two runs at a time: the minutes are in
# results/report_e/training.json), the twelve more guidance settings add about 2.5 minutes each and the six
# more Table 2 draws about 8 minutes in all (guidance.json and schedule_seeds.json record the parts' wall times).
_EXTRA: dict[str, tuple[tuple[int | None, ...], int]] = {
    "smoke": ((2, 4), 3),
    "cpu": ((20, 100), 3),
    "colab": ((20, 100), 1),
    "gpu": ((100, None), 3),
}
BUDGETS: BudgetTable[ReportEBudget] = BudgetTable(
    "report_e.BUDGETS",
    {
        tier: ReportEBudget(**EVAL_BUDGETS[tier].as_config(), step_counts=counts, training_seeds=seeds)
        for tier, (counts, seeds) in _EXTRA.items()
    },
)

SWEEP_RUNS: dict[str, RunSpec] = {
    "T1000_linear": ("e_unet", {}),
    "T4000_linear": ("e_unet_linear_T4000", {}),
    "T1000_cosine": ("e_unet_cosine_T1000", {}),
    "T4000_cosine": ("e_unet_cosine_T4000", {}),
}
# every sweep network again from other training seeds (initialisation, data order, noise), so that Table 2's
# ranking and the guidance ranking are judged over training seeds as well as over samples. A seed run differs
# from its sweep network in ``seed`` only; a tier trains the first BUDGETS[tier].training_seeds of them.


def seed_run(run: str, seed: int) -> str:
    """The sweep network ``run`` (one of :data:`SWEEP_RUNS`) from training seed ``seed``: seed 0 is ``run``."""
    return seed_run_name(run, seed, SWEEP_RUNS, "run")


RUNS: dict[str, RunSpec] = {**SWEEP_RUNS, **seed_runs_of(SWEEP_RUNS, SWEEP_RUNS)}


def training_seeds(tier: str) -> tuple[int, ...]:
    """The training seeds that ``tier`` trains of every sweep network and measures."""
    return TRAINING_SEEDS[: BUDGETS[tier].training_seeds]


def seed_runs(tier: str, run: str = "T1000_linear") -> dict[int, str]:
    """The training seeds (seed -> run) of sweep network ``run`` (the guidance network by default) at ``tier``."""
    return {seed: seed_run(run, seed) for seed in training_seeds(tier)}


# the guidance network's seed runs at the tier with the most (the guidance file's config names them)
SEED_RUNS: dict[int, str] = {seed: seed_run("T1000_linear", seed) for seed in TRAINING_SEEDS}


def runs_at(tier: str) -> dict[str, RunSpec]:
    """The runs the chapter trains at ``tier``: the four sweep networks, each from :func:`training_seeds`."""
    seeded = {seed_run(run, seed) for run in SWEEP_RUNS for seed in training_seeds(tier)}
    return {name: spec for name, spec in RUNS.items() if name in seeded}


# cpu tier: 17,000 steps of 32 (results/report_e/training.json records the minutes and images/s of each run).
# colab tier (a free T4, about 30 minutes for the chapter: colab.chapter_estimate("report_e")): the same
# recipe on the same digits, but batches of 128 (a batch of 32 leaves a GPU idle between kernel launches;
# the chapter studies T, the schedule and w, not the batch), 6,000 steps = 768k images, 1.4x the cpu tier's.
TIER_OVERRIDES = {
    "cpu": dict(
        dataset="mnist-embedded",
        steps=17_000,
        lr=1e-3,
        warmup_steps=200,
        lr_schedule="cosine",
        channels_last=True,
        log_every=200,
        checkpoint_every=2000,
    ),
    "colab": dict(
        dataset="mnist-embedded",
        batch_size=128,
        steps=6_000,
        lr=1e-3,
        warmup_steps=200,
        lr_schedule="cosine",
        log_every=200,
        checkpoint_every=1000,
    ),
}

SWEEP_W = 0.2  # the guidance weight of Report E's Table 2 (its best)
GUIDANCE_WEIGHTS = (0.0, 0.2, 0.5, 1.0, 2.0, 4.0)  # Table 3's three, then beyond
GUIDANCE_RUN = "T1000_linear"  # the network of Tables 1 and 3
REPEAT_SEEDS = (0, 1, 2, 3, 4)  # Table 1: five sampling runs
SEED = 0  # the sampling seed of the schedules and guidance parts (= the first repeatability seed)
GRID_PER_CLASS = 8  # columns of the saved sample grids (one row per digit)
SAMPLER: dict[str, Any] = {"method": "ddpm", "variance": "beta_tilde", "clip_x0": True}


def store(tier: str) -> RunStore:
    """The chapter's runs at ``tier``."""
    return RunStore(CHAPTER, runs_at(tier), TIER_OVERRIDES, tier)


def config(run: str, tier: str):
    """The TrainConfig of one of :data:`RUNS` at ``tier`` (also of a seed run that the tier does not train)."""
    return RunStore(CHAPTER, RUNS, TIER_OVERRIDES, tier).config(run)


def _train(tier: str, progress: bool, cache: Cache | None = None) -> Path:
    return record_training(store(tier), progress)


def colab_plan(tier: str = "colab") -> dict[str, Any]:
    """What the chapter runs at ``tier``, for :func:`~.colab.chapter_estimate`: the training configs and
    the sampling calls (config, batch, calls): schedules (every sweep network at w = 0.2), steps (each
    sweep network at each of the tier's step counts), guidance (every w, every training seed) and
    repeatability (every sampling seed), each n samples with the respaced sampler; a guided batch runs
    the conditional and unconditional halves in one forward pass."""
    b = BUDGETS[tier]
    chunks = -(-b.n // b.batch_size)

    def calls(run: str, steps: int | None = b.steps) -> int:
        return chunks * (steps or config(run, tier).T)

    sampling = [(config(run, tier), 2 * b.batch_size, calls(run)) for run in SWEEP_RUNS]
    sampling += [(config(r, tier), 2 * b.batch_size, calls(r, k)) for k in b.step_counts for r in SWEEP_RUNS]
    sampling += [
        (config(run, tier), b.batch_size * (2 if w else 1), calls(run))
        for run in seed_runs(tier).values()
        for w in GUIDANCE_WEIGHTS
    ]
    sampling += [(config(GUIDANCE_RUN, tier), 2 * b.batch_size, calls(GUIDANCE_RUN)) for _ in REPEAT_SEEDS]
    return {"train": {run: config(run, tier) for run in runs_at(tier)}, "sampling": sampling}


# ---------------------------------------------------------------------------------------------
# Helpers shared by the evaluation parts.
# ---------------------------------------------------------------------------------------------


def w_key(w: float) -> str:
    """The results-file key of a guidance weight: 0 -> "0", 0.2 -> "0.2", 4.0 -> "4"."""
    return f"{float(w):g}"


def class_grid(
    images: torch.Tensor, labels: torch.Tensor, per_class: int = GRID_PER_CLASS, num_classes: int = 10
) -> torch.Tensor:
    """:func:`~.figures.class_grid` with the chapter's default of :data:`GRID_PER_CLASS` per digit."""
    return _class_grid(images, labels, per_class, num_classes)


def load_run(run: str, tier: str, cache: Cache | None = None):
    """The finished run's network, schedule and config (the EMA weights), loaded once per ``cache``; a
    missing or unfinished run raises with the command that trains it (this never trains). A run trained
    in the channels-last memory format is sampled in it too (faster CPU convolutions; the outputs agree
    with the default format to float rounding)."""
    model, process, cfg = store(tier).load(run, cache)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, process, cfg


def guided_samples(
    model,
    schedule,
    n: int,
    w: float,
    seed: int,
    tier: str,
    progress: bool = False,
    steps: int | None | str = "tier",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """n class-conditional samples (:func:`class_labels`) at guidance weight w with the tier's sampler budget
    (``steps``: the budget's step count by default, else this many respaced steps, None = all T).
    Returns (images (n, 1, 28, 28) in [-1, 1] on the CPU, labels (n,), wall seconds)."""
    from ..samplers import sample

    budget = BUDGETS[tier]
    steps = _sampler_steps(steps, tier)
    labels = class_labels(n)
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    x = sample(
        model,
        schedule,
        n,
        steps=steps,
        y=labels,
        w=w,
        generator=g,
        batch_size=budget.batch_size,
        progress=progress,
        **SAMPLER,
    )
    x = images_only(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return x.float().cpu().clamp(-1.0, 1.0), labels, time.perf_counter() - t0


def _sampler_steps(steps: int | None | str, tier: str) -> int | None:
    """The respaced step count that ``steps`` names: "tier" = the tier's budget, an int, or None (all T)."""
    if steps == "tier":
        return BUDGETS[tier].steps
    if steps is not None and not isinstance(steps, int):
        raise ValueError(f"steps must be 'tier', None (all T) or an int, got {steps!r}")
    return steps


def drawn_samples(
    run: str,
    w: float,
    seed: int,
    tier: str,
    cache: Cache,
    progress: bool = False,
    steps: int | None | str = "tier",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`guided_samples` of a finished run, drawn once per ``cache``: the parts that share a setting
    (schedules' T=1000 linear row, guidance's w = 0.2 point, the first repeatability seed, the steps part's
    row at the tier's step count) measure the same samples. Returns (images, labels, wall seconds of the
    draw that made them)."""
    model, schedule, _ = load_run(run, tier, cache)
    k = _sampler_steps(steps, tier)
    key = ("samples", CHAPTER, run, float(w), seed, tier, k)
    return cache.get(key, lambda: guided_samples(model, schedule, BUDGETS[tier].n, w, seed, tier, progress, k))


def figure_file(relative: str, tier: str) -> Path:
    """Where a figure named in a results file (relative to the results folder) lies at ``tier``."""
    return tier_results_dir(tier) / relative


def _save_grid(images: torch.Tensor, labels: torch.Tensor, name: str, tier: str) -> str:
    per_class = min(GRID_PER_CLASS, len(images) // 10)
    relative = f"{CHAPTER}/figures/{name}.png"
    save_grid(class_grid(images, labels, per_class), figure_file(relative, tier), nrow=per_class)
    return relative


def _measure(images: torch.Tensor, labels: torch.Tensor | None, seed: int, tier: str, cache: Cache) -> dict[str, Any]:
    """:func:`~.common.measure` with a seeded generator (KID subsets, IS splits). At the smoke tier FID's
    small-sample warning is silenced: every smoke number is that small, and none is ever shown."""
    with warnings.catch_warnings():
        if tier == "smoke":
            warnings.filterwarnings("ignore", message="FID from", category=UserWarning)
        return measure(images, labels, cache=cache, generator=torch.Generator().manual_seed(seed))


def _metrics(images: torch.Tensor, labels: torch.Tensor, seed: int, tier: str, cache: Cache) -> dict[str, float]:
    m = _measure(images, labels, seed, tier, cache)
    keys = ("fid", "is", "is_std", "kid_mean", "kid_std", "conditional_accuracy", "precision", "recall")
    return {k: m[k] for k in m if k in keys or k.endswith("_interval")}


def _sampler_config(tier: str) -> dict[str, Any]:
    b = BUDGETS[tier]
    return {
        **SAMPLER,
        "steps": b.steps,
        "n": b.n,
        "batch_size": b.batch_size,
        "labels": "0..9 cycled: n / 10 samples of each digit",
        "reference": "mnist-embedded/heldout",
        "metrics": "book classifier-feature FID, IS, KID and conditional accuracy (diffusion_edu.metrics)",
    }


# ---------------------------------------------------------------------------------------------
# The parts.
# ---------------------------------------------------------------------------------------------


def _schedules(tier: str, progress: bool, cache: Cache) -> Path:
    """Report E Table 2: each T x schedule network at w = 0.2."""
    t_start = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    meta: dict[str, dict[str, Any]] = {
        "T": {},
        "schedule": {},
        "train_steps": {},
        "sample_wall_time_s": {},
        "figures": {},
    }
    for run in SWEEP_RUNS:
        _, _, cfg = load_run(run, tier, cache)
        images, labels, secs = drawn_samples(run, SWEEP_W, SEED, tier, cache, progress)
        rows[run] = _metrics(images, labels, SEED, tier, cache)
        meta["T"][run], meta["schedule"][run], meta["train_steps"][run] = cfg.T, cfg.schedule, cfg.steps
        meta["sample_wall_time_s"][run] = round(secs, 2)
        meta["figures"][run] = _save_grid(images, labels, f"schedules_{run}", tier)
    data = {"w": SWEEP_W, "runs": list(SWEEP_RUNS), **metric_columns(rows), **meta}
    cfg_all = {
        "w": SWEEP_W,
        "seed": SEED,
        "sampler": _sampler_config(tier),
        "runs": {r: config(r, tier).to_dict() for r in SWEEP_RUNS},
    }
    return save_result(CHAPTER, "schedules", data, cfg_all, tier, time.perf_counter() - t_start)


def _guidance(tier: str, progress: bool, cache: Cache) -> Path:
    """Report E Table 3 and beyond: the T=1000 linear network at every w of :data:`GUIDANCE_WEIGHTS`."""
    t_start = time.perf_counter()
    keys = [w_key(w) for w in GUIDANCE_WEIGHTS]
    per_seed: dict[int, dict[str, dict[str, Any]]] = {}
    secs_by_w, figures = {}, {}
    for train_seed, run in seed_runs(tier).items():
        per_seed[train_seed] = {}
        for w in GUIDANCE_WEIGHTS:
            images, labels, secs = drawn_samples(run, w, SEED, tier, cache, progress)
            per_seed[train_seed][w_key(w)] = _metrics(images, labels, SEED, tier, cache)
            if run == GUIDANCE_RUN:  # the curve and grids of the network that Tables 1-3 share
                secs_by_w[w_key(w)] = round(secs, 2)
                figures[w_key(w)] = _save_grid(images, labels, f"guidance_w{w_key(w)}", tier)
    data = {
        "run": GUIDANCE_RUN,
        "w": list(GUIDANCE_WEIGHTS),
        "keys": keys,
        **metric_columns(per_seed[0]),
        "sample_wall_time_s": secs_by_w,
        "figures": figures,
    }
    if len(per_seed) >= 2:  # an interval over training seeds needs at least two of them
        data["seeds"] = seed_columns(per_seed, keys)
    cfg_all = {
        "run": GUIDANCE_RUN,
        "seed": SEED,
        "seed_runs": {str(k): v for k, v in seed_runs(tier).items()},
        "seeds": "each w sampled with the same sampling seed on each training seed's network; the seed "
        "interval is Student's t over the training seeds (diffusion_edu.intervals.seed_spread)",
        "sampler": _sampler_config(tier),
        "train_config": config(GUIDANCE_RUN, tier).to_dict(),
    }
    return save_result(CHAPTER, "guidance", data, cfg_all, tier, time.perf_counter() - t_start)


def seed_columns(per_seed: dict[int, dict[str, dict[str, Any]]], keys: list[str]) -> dict[str, Any]:
    """{training seed: {setting: metrics}} -> the layout of the guidance file's ``seeds``
    (:func:`~.evaluation.seed_columns` over :data:`SEED_METRICS`), plus the ``runs`` of the seeds."""
    return {**evaluation_seed_columns(per_seed, keys, SEED_METRICS), "runs": [SEED_RUNS[s] for s in sorted(per_seed)]}


def steps_key(steps: int | None) -> str:
    """The results-file key of a sampler step count: 100 -> "100", None (all T) -> "all"."""
    return "all" if steps is None else str(steps)


def _steps(tier: str, progress: bool, cache: Cache) -> Path:
    """Table 2 at each sampler step count of the tier's ``step_counts`` (the report sampled all T steps):
    every sweep network at w = 0.2, the same samples' seed at every count."""
    t_start = time.perf_counter()
    b = BUDGETS[tier]
    by_steps: dict[str, dict[str, Any]] = {}
    for steps in b.step_counts:
        rows, secs_by_run, used = {}, {}, {}
        for run in SWEEP_RUNS:
            _, _, cfg = load_run(run, tier, cache)
            images, labels, secs = drawn_samples(run, SWEEP_W, SEED, tier, cache, progress, steps)
            rows[run] = _metrics(images, labels, SEED, tier, cache)
            secs_by_run[run], used[run] = round(secs, 2), steps or cfg.T
        by_steps[steps_key(steps)] = {**metric_columns(rows), "steps": used, "sample_wall_time_s": secs_by_run}
    keys = [steps_key(k) for k in b.step_counts]
    data = {
        "w": SWEEP_W,
        "runs": list(SWEEP_RUNS),
        "keys": keys,
        "by_steps": by_steps,
        "largest": {"key": keys[-1], **by_steps[keys[-1]]},
    }
    cfg_all = {
        "w": SWEEP_W,
        "seed": SEED,
        "step_counts": keys,
        "sampler": {**_sampler_config(tier), "steps": "each of step_counts"},
        "runs": {r: config(r, tier).to_dict() for r in SWEEP_RUNS},
    }
    return save_result(CHAPTER, "steps", data, cfg_all, tier, time.perf_counter() - t_start)


def _sampling_problem(cfg: dict[str, Any], tier: str) -> str | None:
    """Why a record with config ``cfg`` was not sampled as the part ``schedule_seeds`` samples (None: it was).
    Configs compare as stored: ``_sampler_config`` and ``TrainConfig.to_dict`` hold plain JSON values."""
    if cfg.get("seed") != SEED or cfg.get("sampler") != _sampler_config(tier):
        return "was sampled with other settings than this part's"
    return None


def _schedules_problem(cfg: dict[str, Any], tier: str) -> str | None:
    """Why the ``schedules`` record with config ``cfg`` does not hold the seed-0 draws that the part
    ``schedule_seeds`` wants (None: it does)."""
    if cfg.get("w") != SWEEP_W:
        return "was sampled with other settings than this part's"
    if why := _sampling_problem(cfg, tier):
        return why
    runs = {r: config(r, tier).to_dict() for r in SWEEP_RUNS}
    return None if cfg.get("runs") == runs else "was measured on networks of other configs"


def _guidance_problem(cfg: dict[str, Any], tier: str) -> str | None:
    """Why the ``guidance`` record with config ``cfg`` does not hold the draws of the guidance network's
    training seeds at w = 0.2 that the part ``schedule_seeds`` wants (None: it does)."""
    if why := _sampling_problem(cfg, tier):
        return why
    if cfg.get("train_config") != config(GUIDANCE_RUN, tier).to_dict():
        return "was measured on a network of another config"
    held = {int(k): v for k, v in cfg.get("seed_runs", {}).items()}
    return None if held == seed_runs(tier) else "lacks a training seed of this tier"


_PROBLEMS = {"schedules": _schedules_problem, "guidance": _guidance_problem}


def _recorded(part: str, tier: str, progress: bool, cache: Cache) -> dict[str, Any]:
    """The results record of ``part`` (``schedules`` or ``guidance``), whose draws the part ``schedule_seeds``
    reuses, once its config shows that it holds the very draws wanted (:data:`_PROBLEMS`). A missing or
    stale record is re-made at the smoke and colab tiers and refused with the command at the cpu and gpu tiers."""
    problem = _PROBLEMS[part]
    rec = load_result(CHAPTER, part, tier) if have_result(CHAPTER, part, tier) else None
    why = "has not run at this tier" if rec is None else problem(rec["config"], tier)
    if why and tier in ("smoke", "colab"):
        PARTS[part].run(tier, progress, cache)
        rec = load_result(CHAPTER, part, tier)
        why = problem(rec["config"], tier)
    if why or rec is None:
        raise RuntimeError(
            f"report_e part 'schedule_seeds' reuses the draws of part {part!r}, which {why}. Run it first: "
            f"python -m diffusion_edu experiment report_e --tier {tier} --only {part}"
        )
    return rec


def _schedule_seeds(tier: str, progress: bool, cache: Cache) -> Path:
    """Report E Table 2 over training seeds: every sweep network at w = 0.2 from each training seed of the tier
    (:func:`training_seeds`), with the ``schedules`` part's sampler, n and sampling seed, and with two seeds or
    more each network's mean over the seeds with Student's t interval (``seeds``).

    A draw that another part has measured is read from its results file, not drawn again (the same network
    config, sampler, n, w and sampling seed give the same samples: ``test_report_e`` checks it): seed 0 of every
    network is the ``schedules`` part's draw, the guidance network's other seeds are the ``guidance`` part's
    draws at w = 0.2. The other networks' seeds 1 and 2 are drawn here. ``sources`` says where each value
    comes from."""
    t0 = time.perf_counter()
    seeds = training_seeds(tier)
    sched = _recorded("schedules", tier, progress, cache)["data"]
    guid = _recorded("guidance", tier, progress, cache)["data"] if len(seeds) > 1 else {}
    per_seed: dict[int, dict[str, dict[str, Any]]] = {s: {} for s in seeds}
    sources: dict[str, dict[str, str]] = {run: {} for run in SWEEP_RUNS}
    measured: dict[str, dict[str, Any]] = {}
    secs_by_run: dict[str, float] = {}
    figures: dict[str, str] = {}
    for run in SWEEP_RUNS:
        for s in seeds:
            name = seed_run(run, s)
            if s == 0:
                per_seed[s][run] = {m: sched[m][run] for m in SEED_METRICS}
                sources[run][str(s)] = "schedules.json"
            elif run == GUIDANCE_RUN:
                block = guid["seeds"]
                i = block["training_seeds"].index(s)
                per_seed[s][run] = {m: block[f"{m}_per_seed"][w_key(SWEEP_W)][i] for m in SEED_METRICS}
                sources[run][str(s)] = "guidance.json"
            else:
                images, labels, secs = drawn_samples(name, SWEEP_W, SEED, tier, cache, progress)
                per_seed[s][run] = measured[name] = _metrics(images, labels, SEED, tier, cache)
                secs_by_run[name] = round(secs, 2)
                figures[name] = _save_grid(images, labels, f"schedule_seeds_{name}", tier)
                sources[run][str(s)] = "measured"
    data: dict[str, Any] = {
        "w": SWEEP_W,
        "runs": list(SWEEP_RUNS),
        "training_seeds": list(seeds),
        "seed_runs": {run: [seed_run(run, s) for s in seeds] for run in SWEEP_RUNS},
        "per_seed": {str(s): {m: {r: per_seed[s][r][m] for r in SWEEP_RUNS} for m in SEED_METRICS} for s in seeds},
        "sources": sources,
        "measured": measured,
        "sample_wall_time_s": secs_by_run,
        "figures": figures,
    }
    if len(seeds) >= 2:  # an interval over training seeds needs at least two of them
        data["seeds"] = evaluation_seed_columns(per_seed, list(SWEEP_RUNS), SEED_METRICS)
        means = {k: {"fid_interval": iv} for k, iv in data["seeds"]["fid_interval"].items()}
        with_baseline(data["seeds"], "fid", means, baseline_record(BUDGETS[tier].n, cache))
    cfg_all = {
        "w": SWEEP_W,
        "seed": SEED,
        "training_seeds": list(seeds),
        "sampler": _sampler_config(tier),
        "seeds": "each network sampled with the same sampling seed on each training seed's run; seed 0 is the "
        "schedules part's draw, the T=1000 linear network's other seeds the guidance part's at w = 0.2 (same "
        "config, sampler and seed, checked); the seed interval is Student's t over the training seeds "
        "(diffusion_edu.intervals.seed_spread)",
        "runs": {seed_run(r, s): config(seed_run(r, s), tier).to_dict() for r in SWEEP_RUNS for s in seeds},
    }
    return save_result(CHAPTER, "schedule_seeds", data, cfg_all, tier, time.perf_counter() - t0)


def _repeatability(tier: str, progress: bool, cache: Cache) -> Path:
    """Report E Table 1: FID of the T=1000 linear network at w = 0.2 over five sampling seeds, plus the FID
    of the pooled samples at growing sample counts (what the spread over seeds cannot show: the bias)."""
    t_start = time.perf_counter()
    n = BUDGETS[tier].n
    runs, pool = [], []
    for seed in REPEAT_SEEDS:
        images, labels, secs = drawn_samples(GUIDANCE_RUN, SWEEP_W, seed, tier, cache, progress)
        runs.append({"seed": seed, **_metrics(images, labels, seed, tier, cache), "sample_wall_time_s": round(secs, 2)})
        pool.append(images)
    fids = [r["fid"] for r in runs]
    pooled = torch.cat(pool)  # (len(REPEAT_SEEDS) * n, 1, 28, 28), each digit equally often
    counts = sorted({max(n // 4, 20), max(n // 2, 20), n, 2 * n, len(pooled)})
    perm = torch.randperm(len(pooled), generator=torch.Generator().manual_seed(SEED))
    by_n = [_measure(pooled[perm[:k]], None, SEED, tier, cache)["fid"] for k in counts]
    data = {
        "run": GUIDANCE_RUN,
        "w": SWEEP_W,
        "n": n,
        "seeds": list(REPEAT_SEEDS),
        "runs": runs,
        "fid": {"mean": statistics.fmean(fids), "std": statistics.stdev(fids) if len(fids) > 1 else 0.0},
        "fid_by_n": {"n": counts, "fid": by_n},
        "floor": real_data_floor(n),
    }
    cfg_all = {
        "run": GUIDANCE_RUN,
        "w": SWEEP_W,
        "seeds": list(REPEAT_SEEDS),
        "sampler": _sampler_config(tier),
        "fid_by_n": "random subsets (seed 0) of the pooled samples of all seeds",
    }
    return save_result(CHAPTER, "repeatability", data, cfg_all, tier, time.perf_counter() - t_start)


def _pretrained(tier: str, progress: bool, cache: Cache) -> Path:
    """Ship the T=1000 linear network (``load_pretrained("report_e")``); the smoke tier writes a throwaway copy."""
    t_start = time.perf_counter()
    data, cfg = ship_pretrained(store(tier), GUIDANCE_RUN, cache)
    return save_result(
        CHAPTER, "pretrained", data, {"train_config": cfg.to_dict()}, tier, time.perf_counter() - t_start
    )


PARTS: dict[str, Part] = chapter_parts(
    CHAPTER,
    Part(
        "training",
        "train the four Report E U-Nets (T x schedule) with label dropout, each from the tier's training seeds",
        _train,
    ),
    Part(
        "schedules",
        "FID, IS, accuracy of the four networks at w = 0.2 (Table 2)",
        _schedules,
        ["training"],
        tuple(SWEEP_RUNS),
    ),
    Part(
        "steps",
        "Table 2 at each of the tier's sampler step counts (the report: all T)",
        _steps,
        ["training"],
        tuple(SWEEP_RUNS),
    ),
    Part(
        "guidance",
        "FID, IS, accuracy against w in 0..4, T=1000 linear, each training seed of the tier (Table 3)",
        _guidance,
        ["training"],
        tuple(SEED_RUNS.values()),
    ),
    Part(
        "schedule_seeds",
        "Table 2 over the tier's training seeds of every network: mean and t interval over seeds",
        _schedule_seeds,
        ["training"],
        tuple(seed_run(r, s) for s in TRAINING_SEEDS[1:] for r in SWEEP_RUNS if r != GUIDANCE_RUN),
    ),
    Part(
        "repeatability",
        "FID over five sampling seeds vs its sample-size bias (Table 1)",
        _repeatability,
        ["training"],
        (GUIDANCE_RUN,),
    ),
    Part(
        "pretrained",
        "ship the T=1000 linear network as load_pretrained('report_e')",
        _pretrained,
        ["training"],
        (GUIDANCE_RUN,),
    ),
)
