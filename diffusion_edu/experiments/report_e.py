"""Report E (conditional MNIST U-Net with classifier-free guidance): the runs and the chapter's parts.

Report E trains a two-level U-Net with time and label in every block, L1 loss, batch 32, label
dropout for classifier-free guidance, and sweeps T in {1000, 4000} x {linear, cosine} and the
guidance weight w. The chapter's parts, in order:

- ``training``: the four networks (T x schedule), each with label dropout;
- ``schedules``: the T x schedule sweep at the report's w = 0.2 (Report E Table 2);
- ``guidance``: w in {0, 0.2, 0.5} (Table 3) and beyond (1, 2, 4) on the T=1000 linear network;
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
from pathlib import Path
from typing import Any

import torch

from ..generate import class_labels  # noqa: F401  (the chapter's label sequence; re-exported)
from .common import EVAL_BUDGETS, Part, chapter_parts, save_result, tier_results_dir
from .evaluation import images_only, measure, metric_columns, real_data_floor
from .figures import class_grid as _class_grid
from .figures import save_grid
from .store import Cache, RunStore, record_training, ship_pretrained
from .training_runs import RunSpec

CHAPTER = "report_e"
BUDGETS = EVAL_BUDGETS  # the chapter samples with the kernel's budget: nothing particular to it

RUNS: dict[str, RunSpec] = {
    "T1000_linear": ("e_unet", {}),
    "T4000_linear": ("e_unet_linear_T4000", {}),
    "T1000_cosine": ("e_unet_cosine_T1000", {}),
    "T4000_cosine": ("e_unet_cosine_T4000", {}),
}

# cpu tier: 17,000 steps of 32 (about 10 minutes on 2 cores, measured: ~900 img/s).
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
    return RunStore(CHAPTER, RUNS, TIER_OVERRIDES, tier)


def config(run: str, tier: str):
    """The TrainConfig of one of :data:`RUNS` at ``tier``."""
    return store(tier).config(run)


def _train(tier: str, progress: bool, cache: Cache | None = None) -> Path:
    return record_training(store(tier), progress)


def colab_plan(tier: str = "colab") -> dict[str, Any]:
    """What the chapter runs at ``tier``, for :func:`~.colab.chapter_estimate`: the training configs and
    the sampling calls (config, batch, calls): schedules (every network at w = 0.2), guidance (every w)
    and repeatability (every seed), each n samples with the respaced sampler; a guided batch runs the
    conditional and unconditional halves in one forward pass."""
    b = BUDGETS[tier]
    chunks = -(-b.n // b.batch_size)
    calls = chunks * (b.steps or config(GUIDANCE_RUN, tier).T)
    sampling = [(config(run, tier), 2 * b.batch_size, calls) for run in RUNS]
    sampling += [(config(GUIDANCE_RUN, tier), b.batch_size * (2 if w else 1), calls) for w in GUIDANCE_WEIGHTS]
    sampling += [(config(GUIDANCE_RUN, tier), 2 * b.batch_size, calls) for _ in REPEAT_SEEDS]
    return {"train": {run: config(run, tier) for run in RUNS}, "sampling": sampling}


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
    missing or unfinished run raises with the command that trains it (this never trains)."""
    return store(tier).load(run, cache)


def guided_samples(
    model, schedule, n: int, w: float, seed: int, tier: str, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """n class-conditional samples (:func:`class_labels`) at guidance weight w with the tier's sampler budget.
    Returns (images (n, 1, 28, 28) in [-1, 1] on the CPU, labels (n,), wall seconds)."""
    from ..samplers import sample

    budget = BUDGETS[tier]
    labels = class_labels(n)
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    t0 = time.perf_counter()
    x = sample(
        model,
        schedule,
        n,
        steps=budget.steps,
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
    n = BUDGETS[tier].n
    rows: dict[str, dict[str, Any]] = {}
    meta: dict[str, dict[str, Any]] = {
        "T": {},
        "schedule": {},
        "train_steps": {},
        "sample_wall_time_s": {},
        "figures": {},
    }
    for run in RUNS:
        model, schedule, cfg = load_run(run, tier, cache)
        images, labels, secs = guided_samples(model, schedule, n, SWEEP_W, SEED, tier, progress)
        rows[run] = _metrics(images, labels, SEED, tier, cache)
        meta["T"][run], meta["schedule"][run], meta["train_steps"][run] = cfg.T, cfg.schedule, cfg.steps
        meta["sample_wall_time_s"][run] = round(secs, 2)
        meta["figures"][run] = _save_grid(images, labels, f"schedules_{run}", tier)
    data = {"w": SWEEP_W, "runs": list(RUNS), **metric_columns(rows), **meta}
    cfg_all = {
        "w": SWEEP_W,
        "seed": SEED,
        "sampler": _sampler_config(tier),
        "runs": {r: config(r, tier).to_dict() for r in RUNS},
    }
    return save_result(CHAPTER, "schedules", data, cfg_all, tier, time.perf_counter() - t_start)


def _guidance(tier: str, progress: bool, cache: Cache) -> Path:
    """Report E Table 3 and beyond: the T=1000 linear network at every w of :data:`GUIDANCE_WEIGHTS`."""
    t_start = time.perf_counter()
    n = BUDGETS[tier].n
    model, schedule, _ = load_run(GUIDANCE_RUN, tier, cache)
    rows, secs_by_w, figures = {}, {}, {}
    for w in GUIDANCE_WEIGHTS:
        images, labels, secs = guided_samples(model, schedule, n, w, SEED, tier, progress)
        rows[w_key(w)] = _metrics(images, labels, SEED, tier, cache)
        secs_by_w[w_key(w)] = round(secs, 2)
        figures[w_key(w)] = _save_grid(images, labels, f"guidance_w{w_key(w)}", tier)
    data = {
        "run": GUIDANCE_RUN,
        "w": list(GUIDANCE_WEIGHTS),
        "keys": [w_key(w) for w in GUIDANCE_WEIGHTS],
        **metric_columns(rows),
        "sample_wall_time_s": secs_by_w,
        "figures": figures,
    }
    cfg_all = {
        "run": GUIDANCE_RUN,
        "seed": SEED,
        "sampler": _sampler_config(tier),
        "train_config": config(GUIDANCE_RUN, tier).to_dict(),
    }
    return save_result(CHAPTER, "guidance", data, cfg_all, tier, time.perf_counter() - t_start)


def _repeatability(tier: str, progress: bool, cache: Cache) -> Path:
    """Report E Table 1: FID of the T=1000 linear network at w = 0.2 over five sampling seeds, plus the FID
    of the pooled samples at growing sample counts (what the spread over seeds cannot show: the bias)."""
    t_start = time.perf_counter()
    n = BUDGETS[tier].n
    model, schedule, _ = load_run(GUIDANCE_RUN, tier, cache)
    runs, pool = [], []
    for seed in REPEAT_SEEDS:
        images, labels, secs = guided_samples(model, schedule, n, SWEEP_W, seed, tier, progress)
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
    Part("training", "train the four Report E U-Nets (T x schedule) with label dropout", _train),
    Part("schedules", "FID, IS, accuracy of the four networks at w = 0.2 (Table 2)", _schedules, ["training"]),
    Part(
        "guidance",
        "FID, IS, accuracy against w in 0..4, T=1000 linear (Table 3)",
        _guidance,
        ["training"],
        (GUIDANCE_RUN,),
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
