# Longer than ~400 lines: four experiments on the metrics themselves (degradations, sample-size bias,
# memorisation, precision / recall) and the interval-based comparison helpers the other chapters import.
# Three part functions run over 60 lines: each builds one results file top to bottom.
"""Chapter 2, measuring generative models: how the number of samples biases FID, KID and IS, which
degradations of real digits each metric catches (and why Inception features mislead on MNIST), and
whether a model's samples copy its training digits.

Parts, each writing ``results/measuring/<part>.json``:

- ``sample_size_bias``: FID, KID and IS at several sample counts, several seeds each (mean and spread),
  for real digits and for a trained model's samples, against the held-out digits and the training part.
- ``inception_vs_classifier``: degraded real digits (blurred, noised, shifted, classes dropped, a few
  digits copied many times) measured in three feature spaces: the book's MNIST classifier, the same
  network with random weights, and 4x4-averaged pixels. Inception-v3 runs only where its weights can be
  downloaded (colab / gpu tiers).
- ``memorisation``: each sample's nearest training digit by pixel distance, against the same distance
  for held-out digits (real digits the model never saw) and for near-copies of training digits.

The model measured is Report E's ``T1000_linear`` network, trained by
``python -m diffusion_edu experiment report_e --tier TIER --only training``; this chapter only loads
its finished checkpoint (the parts that sample it need that one run: at the smoke and colab tiers it is
trained first when missing, elsewhere they stop with the command). Its samples come from one
pool drawn once per tier (respaced DDPM, beta_tilde variance, labels 0..9 in turn, no guidance),
cached in ``runs/<tier>/measuring/pool.pt`` and subsampled by every part.
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import ImageDataset, load_embedded_mnist
from ..metrics import (
    IS_SPLITS,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    MNISTClassifier,
    WeightsNotAvailableError,
    _fid_from_features,
    _is_from_logits,
    _kid_from_features,
    check_metric_images,
    classifier_outputs,
    inception_fid_is,
    load_mnist_classifier,
    noise_images,
)
from . import figures
from .common import Budget, BudgetTable, Part, chapter_parts, runs_root, save_result
from .evaluation import book_classifier, images_only
from .store import Cache

__all__ = [
    "CHAPTER",
    "PARTS",
    "MeasuringBudget",
    "BUDGETS",
    "DEGRADATIONS",
    "gaussian_blur",
    "add_noise",
    "shift_images",
    "degraded_set",
    "draw_subsets",
    "fit_inverse_n",
    "pixel_features",
    "random_classifier",
    "load_measured_model",
    "model_pool",
    "figure_path",
    "fid_spread",
    "fid_gap_threshold",
    "fid_comparison",
    "PR_SETS",
    "run_precision_recall",
]

CHAPTER = "measuring"
MODEL_CHAPTER, MODEL_RUN = "report_e", "T1000_linear"


@dataclass(frozen=True)
class MeasuringBudget(Budget):
    """Sizes at one tier: the model's sample ``pool`` (drawn with ``steps`` respaced DDPM steps; None =
    all T), the sample ``counts`` and ``seeds`` of the bias curves, the size of each degraded set, the
    number of samples checked for memorisation, how many training digits are used (None = all 8,995),
    and whether the online-only Inception / LPIPS paths are tried."""

    pool: int
    steps: int | None
    counts: tuple[int, ...]
    seeds: int
    degrade_n: int
    memo_n: int
    train_digits: int | None = None
    batch_size: int = 500
    inception: bool = False
    lpips: bool = False


BUDGETS: BudgetTable[MeasuringBudget] = BudgetTable(
    "measuring.BUDGETS",
    {
        "smoke": MeasuringBudget(
            pool=40, steps=4, counts=(20, 40), seeds=2, degrade_n=30, memo_n=20, train_digits=300, batch_size=40
        ),
        "cpu": MeasuringBudget(
            pool=5000, steps=20, counts=(100, 250, 500, 1000, 2000, 5000), seeds=5, degrade_n=750, memo_n=1000
        ),
        "colab": MeasuringBudget(
            pool=10_000,
            steps=100,
            counts=(100, 250, 500, 1000, 2000, 5000, 10_000),
            seeds=5,
            degrade_n=750,
            memo_n=1000,
            inception=True,
            lpips=True,
        ),
        "gpu": MeasuringBudget(
            pool=10_000,
            steps=None,
            counts=(100, 250, 500, 1000, 2000, 5000, 10_000),
            seeds=5,
            degrade_n=750,
            memo_n=1000,
            batch_size=2000,
            inception=True,
            lpips=True,
        ),
    },
)
POOL_SEED = 0
BACKGROUND = -1.0  # the value of an empty MNIST pixel in [-1, 1]

# --------------------------------------------------------------------------------------------------
# Degradations of real digits (images (B, 1, 28, 28) in [-1, 1] in, same shape and range out).
# --------------------------------------------------------------------------------------------------

MNIST_SHAPE = (1, 28, 28)  # what this chapter's degradations and pixel features are made for


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur with a Gaussian of standard deviation ``sigma`` pixels (kernel radius ceil(3 sigma)), the
    border padded with background; ``sigma = 0`` returns the images unchanged. images: (B, C, H, W)."""
    check_metric_images(images, "images", shape=MNIST_SHAPE)
    if not isinstance(sigma, (int, float)) or sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a finite number >= 0 (pixels), got {sigma!r}")
    if sigma == 0:
        return images.clone()
    r = max(1, math.ceil(3 * sigma))
    u = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (u / sigma) ** 2)
    k = (k / k.sum()).to(images.dtype)  # (2r + 1,), sums to 1: a flat image stays flat
    x = F.pad(images, (r, r, r, r), value=BACKGROUND)  # (B, C, H + 2r, W + 2r)
    c = images.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)  # along W: (B, C, H + 2r, W)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)  # along H: (B, C, H, W)


def add_noise(images: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add N(0, sigma^2) noise to every pixel and clamp to [-1, 1]. images: (B, C, H, W)."""
    check_metric_images(images, "images", shape=MNIST_SHAPE)
    if not isinstance(sigma, (int, float)) or sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    eps = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    return (images + sigma * eps.to(images.device)).clamp(-1.0, 1.0)


def shift_images(images: torch.Tensor, dx: int, dy: int = 0) -> torch.Tensor:
    """Move every image ``dx`` pixels right and ``dy`` down (negative: left / up); what leaves the frame
    is lost and what enters is background. images: (B, C, H, W)."""
    check_metric_images(images, "images", shape=MNIST_SHAPE)
    h, w = images.shape[-2:]
    for name, v, size in (("dx", dx, w), ("dy", dy, h)):
        if isinstance(v, bool) or not isinstance(v, int) or abs(v) >= size:
            raise ValueError(f"{name} must be an int with |{name}| < {size} (the image size), got {v!r}")
    out = torch.full_like(images, BACKGROUND)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = images[..., ys, xs]
    return out


# name -> (family, level): what the inception_vs_classifier part measures, mildest first in each family.
DEGRADATIONS: dict[str, tuple[str, float]] = {
    "none": ("none", 0),
    **{f"blur {s:g}": ("blur", s) for s in (0.5, 1.0, 1.5, 2.0)},
    **{f"noise {s:g}": ("noise", s) for s in (0.1, 0.2, 0.4, 0.8)},
    **{f"shift {k}": ("shift", k) for k in (1, 2, 3, 4)},
    **{f"{k} class{'es' if k > 1 else ''}": ("classes", k) for k in (5, 2, 1)},
    **{f"{k} distinct digits": ("copies", k) for k in (100, 10)},
    "pure noise": ("pure_noise", 1),
}


def degraded_set(
    train: ImageDataset, name: str, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training digits degraded as :data:`DEGRADATIONS` ``[name]`` says, with their labels.

    blur / noise / shift: n random digits, blurred (sigma pixels), noised (sigma) or shifted (k pixels
    right). classes k: n random digits of classes 0..k-1 only (modes dropped). copies k: k random
    distinct digits (k/10 per class), each repeated until there are n. pure noise: clamped N(0, I).
    Returns images (n, 1, 28, 28) in [-1, 1] and labels (n,) (-1 for pure noise).
    """
    if name not in DEGRADATIONS:
        raise ValueError(f"name must be one of {list(DEGRADATIONS)}, got {name!r}")
    family, level = DEGRADATIONS[name]
    if family == "pure_noise":
        return noise_images(n, generator), torch.full((n,), -1, dtype=torch.int64)
    labels = train.labels
    if family == "classes":
        pool = torch.nonzero(labels < level).squeeze(1)
    elif family == "copies":
        per_class = int(level) // 10
        pool = torch.cat(
            [
                torch.nonzero(labels == c).squeeze(1)[
                    torch.randperm(int((labels == c).sum()), generator=generator)[:per_class]
                ]
                for c in range(10)
            ]
        )
    else:
        pool = torch.arange(len(train))
    if family == "copies":
        idx = pool[torch.arange(n) % len(pool)]
    else:
        if n > len(pool):
            raise ValueError(f"n={n} is more than the {len(pool)} training digits that {name!r} can draw from")
        idx = pool[torch.randperm(len(pool), generator=generator)[:n]]
    x, y = train.batch(idx)
    if family == "blur":
        x = gaussian_blur(x, float(level))
    elif family == "noise":
        x = add_noise(x, float(level), generator)
    elif family == "shift":
        x = shift_images(x, int(level))
    return x, y


# --------------------------------------------------------------------------------------------------
# Feature spaces, subsets, the 1/n fit.
# --------------------------------------------------------------------------------------------------


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """The pixels averaged over 4x4 blocks: (B, 1, 28, 28) -> (B, 49). A 'feature extractor' that learned
    nothing; 49 values keep FID's covariance invertible with a few hundred images (784 pixels would not)."""
    check_metric_images(images, "images", shape=MNIST_SHAPE)
    return F.avg_pool2d(images.float(), 4).flatten(1)  # (B, 49)


def random_classifier(seed: int = 0) -> MNISTClassifier:
    """The book's classifier architecture with random (untrained) weights, in eval mode: features that
    were never fitted to digits. The global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MNISTClassifier().eval()


def draw_subsets(
    size: int, n: int, seeds: int, generator: torch.Generator | None = None
) -> tuple[list[torch.Tensor], bool]:
    """``seeds`` index sets of ``n`` distinct items out of ``size``: disjoint blocks of one random
    permutation when n * seeds <= size (independent sets), else one random draw per seed (the sets
    overlap; with n == size every set is the whole pool). Returns (index tensors, disjoint)."""
    if not 1 <= n <= size:
        raise ValueError(f"n must lie in 1..{size} (the pool size), got {n}")
    if seeds < 1:
        raise ValueError(f"seeds must be a positive int, got {seeds}")
    if n * seeds <= size:
        perm = torch.randperm(size, generator=generator)
        return [perm[i * n : (i + 1) * n] for i in range(seeds)], True
    return [torch.randperm(size, generator=generator)[:n] for _ in range(seeds)], False


def fit_inverse_n(counts: list[int], values: list[float]) -> dict[str, float]:
    """Least-squares fit of values = v_inf + slope / n (the form of FID's bias, Chong & Forsyth 2020):
    returns v_inf (the value extrapolated to infinitely many samples) and slope."""
    if len(counts) != len(values) or len(counts) < 2 or len(set(counts)) < 2:
        raise ValueError(f"need at least two distinct counts with one value each, got {counts} and {values}")
    x = torch.tensor([1.0 / n for n in counts], dtype=torch.float64)
    a = torch.stack([torch.ones_like(x), x], dim=1)  # (k, 2)
    sol = torch.linalg.lstsq(a, torch.tensor(values, dtype=torch.float64)[:, None]).solution  # (2, 1)
    return {"v_inf": float(sol[0, 0]), "slope": float(sol[1, 0])}


def _quiet_fid(f: torch.Tensor, f_ref: torch.Tensor) -> float:
    with warnings.catch_warnings():  # few images for many features is what this chapter measures
        warnings.filterwarnings("ignore", message="FID from")
        return _fid_from_features(f, f_ref)


def _scores(
    f: torch.Tensor,
    f_ref: torch.Tensor,
    logits: torch.Tensor | None,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """FID and KID of features f against f_ref, IS from logits, accuracy against labels (the random
    subsets and splits drawn from ``generator`` in the order :func:`~diffusion_edu.metrics.evaluate` uses)."""
    out: dict[str, float] = {}
    if logits is not None:
        out["is"], out["is_std"] = _is_from_logits(logits, min(IS_SPLITS, logits.shape[0]), generator)
    out["kid"], out["kid_std"] = _kid_from_features(f, f_ref, KID_SUBSETS, KID_SUBSET_SIZE, generator)
    out["fid"] = _quiet_fid(f, f_ref)
    if logits is not None and labels is not None and bool((labels >= 0).all()):
        out["accuracy"] = float((logits.argmax(1) == labels).float().mean())
    return out


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation over seeds of every score in the runs."""
    out = {}
    for k in runs[0]:
        if k.endswith("_std"):
            continue
        vals = [r[k] for r in runs]
        out[f"{k}_mean"] = statistics.fmean(vals)
        out[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def _train_digits(budget: MeasuringBudget) -> ImageDataset:
    train = load_embedded_mnist("train")
    return train if budget.train_digits is None else train.subset(budget.train_digits)


# --------------------------------------------------------------------------------------------------
# The model and its pool of samples.
# --------------------------------------------------------------------------------------------------


def colab_plan(tier: str = "colab") -> dict[str, Any]:
    """What the chapter runs at ``tier``, for :func:`~.colab.chapter_estimate`: Report E's T1000_linear
    network (trained when missing) and the pool of samples drawn from it. Inception and LPIPS (the colab
    tier's extra metrics) run networks of other libraries and are not in the estimate."""
    from . import report_e

    b, cfg = BUDGETS[tier], report_e.config(MODEL_RUN, tier)
    return {
        "train": {MODEL_RUN: cfg},
        "sampling": [(cfg, b.batch_size, -(-b.pool // b.batch_size) * (b.steps or cfg.T))],
        "not_estimated": "Inception FID / IS and LPIPS (networks of other libraries, downloaded in Colab)",
    }


def load_measured_model(tier: str, cache: Cache | None = None):
    """Report E's T1000_linear network at ``tier`` (a :class:`~diffusion_edu.training.LoadedModel`) and
    where it came from. This never trains: the parts need that run (``Part.needs``), which
    :func:`~.common.ensure_needs` trains first at the smoke and colab tiers (that one run, not the whole
    of Report E's training) and refuses elsewhere; a missing or unfinished checkpoint raises with the
    command that trains it."""
    from ..checkpoint import load_checkpoint
    from . import report_e

    runs = report_e.store(tier)
    loaded = runs.load(MODEL_RUN, cache)
    path = runs.checkpoint(MODEL_RUN)
    state = load_checkpoint(path)
    source = {
        "checkpoint": f"runs/{tier}/{path.parent.relative_to(runs_root(tier))}/checkpoint.pt",
        "step": int(state["step"]),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "ema": state.get("ema") is not None,
        "train_wall_time_s": float(state.get("wall_time_s", 0.0)),
    }
    return loaded, source


def model_pool(tier: str, progress: bool = True) -> dict[str, Any]:
    """The tier's pool of model samples: images (N, 1, 28, 28) in [-1, 1], asked labels (N,) = 0..9 in
    turn, and how they were drawn. Drawn once (cached in ``runs/<tier>/measuring/pool.pt`` and redrawn
    only when the checkpoint or the settings change)."""
    from ..samplers import sample

    budget = BUDGETS[tier]
    (model, schedule, config), source = load_measured_model(tier)
    settings = {
        "n": budget.pool,
        "method": "ddpm",
        "variance": "beta_tilde",
        "steps": budget.steps,
        "T": int(schedule.T),
        "w": 0.0,
        "labels": "0..9 in turn",
        "seed": POOL_SEED,
        "clip_x0": True,
        "model": source,
    }
    path = runs_root(tier) / CHAPTER / "pool.pt"
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if cached.get("settings") == settings:
            return cached
    device = next(model.parameters()).device
    labels = torch.arange(budget.pool) % 10
    gen = torch.Generator(device=device).manual_seed(POOL_SEED)
    t0 = time.perf_counter()
    images = sample(
        model,
        schedule,
        budget.pool,
        method="ddpm",
        steps=budget.steps,
        variance="beta_tilde",
        y=labels.to(device),
        generator=gen,
        batch_size=budget.batch_size,
        progress=progress,
    )
    wall = time.perf_counter() - t0
    pool = {
        "images": images_only(images).float().cpu().clamp(-1, 1),
        "labels": labels,
        "settings": settings,
        "wall_time_s": wall,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "load_average": list(os.getloadavg()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pool, path)
    return pool


def _pool_info(pool: dict[str, Any]) -> dict[str, Any]:
    return {
        **pool["settings"],
        "wall_time_s": round(pool["wall_time_s"], 1),
        "threads": pool["threads"],
        "device": pool["device"],
        "load_average": pool["load_average"],
    }


def figure_path(name: str, tier: str) -> Path:
    """Where a part's figure lives: ``results/measuring/figures/<name>.png`` (smoke: under runs/smoke)."""
    return figures.figure_path(CHAPTER, name, tier)


# --------------------------------------------------------------------------------------------------
# Part 1: sample-size bias.
# --------------------------------------------------------------------------------------------------


def _curve(
    f_src: torch.Tensor,
    logits_src: torch.Tensor,
    f_ref: torch.Tensor,
    counts: list[int],
    seeds: int,
    seed: int,
    progress_label: str | None = None,
) -> list[dict[str, Any]]:
    """Scores of ``seeds`` subsets of each size in ``counts`` drawn from a source set (features (N, d),
    logits (N, 10)) against a fixed reference (features (M, d))."""
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for n in counts:
        subsets, disjoint = draw_subsets(f_src.shape[0], n, seeds, gen)
        runs = [_scores(f_src[idx], f_ref, logits_src[idx], gen) for idx in subsets]
        rows.append({"n": n, **_summary(runs), "disjoint": disjoint, "identical": n == f_src.shape[0], "runs": runs})
        if progress_label:
            print(
                f"  {progress_label:<18} n={n:>6}: FID {rows[-1]['fid_mean']:8.3f} +- {rows[-1]['fid_std']:.3f}",
                flush=True,
            )
    return rows


def _conditional_accuracy(logits: torch.Tensor, asked: torch.Tensor) -> dict[str, Any]:
    """The fraction of samples the classifier assigns to the asked label, overall and per asked label, and
    the confusion counts (row: asked label, column: the classifier's label). logits (N, 10), asked (N,)."""
    got = logits.argmax(1)
    confusion = torch.zeros(10, 10, dtype=torch.int64)
    confusion.index_put_((asked.long(), got), torch.ones_like(got), accumulate=True)
    per_class = (confusion.diagonal().double() / confusion.sum(1).clamp(min=1).double()).tolist()
    return {
        "conditional_accuracy": float((got == asked).float().mean()),
        "conditional_accuracy_per_class": per_class,
        "confusion": confusion.tolist(),
    }


# The four pairs of sets: (curve, the set subsampled, the reference, seed offset, progress label).
BIAS_PAIRS = (
    ("real_vs_heldout", "train", "heldout", 1, "real vs held-out"),
    ("model_vs_heldout", "pool", "heldout", 2, "model vs held-out"),
    ("model_vs_train", "pool", "train", 3, "model vs train"),
    ("real_vs_train", "heldout", "train", 4, "real vs train"),
)


def _bias_curves(
    sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    names: dict[str, tuple[str, str]],
    counts: list[int],
    seeds: int,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Each pair's curve (:data:`BIAS_PAIRS`): the set's features and logits ``sets[key]`` subsampled at
    every count it holds, against the reference's features; ``names[key]``: (the set described, its name
    as a reference)."""
    curves: dict[str, dict[str, Any]] = {}
    for curve, key, ref, offset, what in BIAS_PAIRS:
        (f, logits), f_ref = sets[key], sets[ref][0]
        ns = [n for n in counts if n <= f.shape[0]]
        rows = _curve(f, logits, f_ref, ns, seeds, offset, what if progress else None)
        curves[curve] = {"set": names[key][0], "reference": names[ref][1], "rows": rows}
        curves[curve]["reference_size"] = int(f_ref.shape[0])
    return curves


def _fit_curves(curves: dict[str, dict[str, Any]], d: int) -> None:
    """Add to each curve the fit FID = FID_inf + slope / n over its counts with a full-rank covariance
    (n > d features; all counts when fewer than two are), or None."""
    for c in curves.values():
        rows = [r for r in c["rows"] if r["n"] > d and not r["identical"]] or c["rows"]
        c["fit"] = (
            {**fit_inverse_n([r["n"] for r in rows], [r["fid_mean"] for r in rows]), "counts": [r["n"] for r in rows]}
            if len(rows) >= 2
            else None
        )


def _repeatability(curves: dict[str, dict[str, Any]], seeds: int) -> dict[str, Any]:
    """Report E's Table 1: the model's FID over seeds at the largest count whose seeds are independent
    sample sets (else the largest count)."""
    rows = curves["model_vs_heldout"]["rows"]
    rep = ([r for r in rows if r["disjoint"]] or rows)[-1]
    return {
        "mean": rep["fid_mean"],
        "std": rep["fid_std"],
        "n": rep["n"],
        "seeds": seeds,
        "disjoint": rep["disjoint"],
        "curve": "model_vs_heldout",
    }


def run_sample_size_bias(tier: str, progress: bool = True, cache: Cache | None = None) -> Path:
    """FID / KID / IS against the number of samples, ``seeds`` subsets per count, for four pairs of sets."""
    budget = BUDGETS[tier]
    t0 = time.perf_counter()
    pool = model_pool(tier, progress)
    t_measure = time.perf_counter()
    train, heldout = _train_digits(budget), load_embedded_mnist("heldout")
    clf = book_classifier(cache)
    sets = {
        "train": classifier_outputs(train.tensors()[0], clf),
        "heldout": classifier_outputs(heldout.tensors()[0], clf),
        "pool": classifier_outputs(pool["images"], clf),
    }
    names = {
        "train": (f"{train.name} ({len(train)} digits)", train.name),
        "heldout": (f"{heldout.name} ({len(heldout)} digits)", heldout.name),
        "pool": (f"model pool ({sets['pool'][0].shape[0]} samples)", "model pool"),
    }
    counts = [n for n in budget.counts if n <= sets["pool"][0].shape[0]]
    curves = _bias_curves(sets, names, counts, budget.seeds, progress)
    d = sets["heldout"][0].shape[1]
    _fit_curves(curves, d)
    data = {
        "curves": curves,
        "repeatability": _repeatability(curves, budget.seeds),
        "num_features": d,
        "pool": {**_pool_info(pool), **_conditional_accuracy(sets["pool"][1], pool["labels"])},
        "measure_wall_time_s": round(time.perf_counter() - t_measure, 1),
    }
    config = {
        "budget": budget.as_config(),
        "kid_subsets": KID_SUBSETS,
        "kid_subset_size": f"min({KID_SUBSET_SIZE}, n, m)",
        "is_splits": IS_SPLITS,
        "features": "the shipped MNIST classifier's 128 penultimate features",
        "subsets": "disjoint blocks of one permutation when n * seeds <= pool size, else one draw per seed",
        "threads": torch.get_num_threads(),
    }
    return save_result(CHAPTER, "sample_size_bias", data, config, tier, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------
# Part 2: which degradations each metric catches, in three feature spaces.
# --------------------------------------------------------------------------------------------------

FEATURE_SPACES = {
    "classifier": "the shipped MNIST classifier (128 penultimate features; its logits for IS and accuracy)",
    "random_cnn": "the same architecture with random weights (128 features of a network never fitted to digits)",
    "pixels": "pixels averaged over 4x4 blocks (49 values)",
}


def _feature_fns() -> dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]]:
    clf, rnd = load_mnist_classifier(), random_classifier(0)
    return {
        "classifier": lambda x: classifier_outputs(x, clf),
        "random_cnn": lambda x: (classifier_outputs(x, rnd)[0], None),
        "pixels": lambda x: (pixel_features(x), None),
    }


def _catches(row: dict[str, Any], floor: dict[str, Any], metric: str, worse: str, sigmas: float = 3.0) -> bool:
    """Whether a degraded set's mean score is worse than the undegraded floor's by more than ``sigmas``
    standard deviations of the floor (over seeds)."""
    diff = row[f"{metric}_mean"] - floor[f"{metric}_mean"]
    tol = sigmas * max(floor[f"{metric}_std"], 1e-12)
    return bool(diff > tol if worse == "higher" else -diff > tol)


def _inception(sets: dict[str, torch.Tensor], reference: torch.Tensor, budget: MeasuringBudget) -> dict[str, Any]:
    if not budget.inception:
        return {
            "attempted": False,
            "reason": "Inception-v3 runs only at the colab and gpu tiers: it needs downloaded "
            "weights and 299x299 inputs (offline it raises WeightsNotAvailableError)",
        }
    try:
        scores = {name: inception_fid_is(x, reference) for name, x in sets.items()}
    except WeightsNotAvailableError as e:
        return {"attempted": True, "available": False, "error": str(e)}
    return {
        "attempted": True,
        "available": True,
        "fid": {k: v["fid_inception"] for k, v in scores.items()},
        "is": {k: v["is_inception"] for k, v in scores.items()},
    }


def _degradation_rows(
    train: ImageDataset, heldout: torch.Tensor, fns: dict[str, Callable], budget: MeasuringBudget, progress: bool
) -> tuple[dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """Every degradation's scores in every feature space (``seeds`` sets each, from one generator), and
    the first set of each degradation (for the figure and the Inception scores)."""
    refs = {space: fn(heldout)[0] for space, fn in fns.items()}
    gen = torch.Generator().manual_seed(5)
    rows: dict[str, dict[str, Any]] = {}
    first_sets: dict[str, torch.Tensor] = {}
    for name in DEGRADATIONS:
        runs: dict[str, list] = {space: [] for space in fns}
        for s in range(budget.seeds):
            x, y = degraded_set(train, name, budget.degrade_n, gen)
            if s == 0:
                first_sets[name] = x
            for space, fn in fns.items():
                f, logits = fn(x)
                runs[space].append(_scores(f, refs[space], logits, gen, y))
        rows[name] = {
            "family": DEGRADATIONS[name][0],
            "level": DEGRADATIONS[name][1],
            **{space: {**_summary(r), "runs": r} for space, r in runs.items()},
        }
        if progress:
            c = rows[name]["classifier"]
            print(
                f"  {name:<18} FID {c['fid_mean']:9.2f}  IS {c['is_mean']:5.2f}  "
                f"random-CNN FID {rows[name]['random_cnn']['fid_mean']:9.3g}  "
                f"pixel FID {rows[name]['pixels']['fid_mean']:8.3g}",
                flush=True,
            )
    return rows, first_sets


def _judge_rows(rows: dict[str, dict[str, Any]], spaces: list[str]) -> None:
    """Add to each degradation's row which metrics catch it (:func:`_catches` against the undegraded
    sets) and how far its FID lies from the real digits' towards pure noise's, in each space."""
    floor, ceiling = rows["none"], rows["pure noise"]
    checks = [(space, m, "higher") for space in spaces for m in ("fid", "kid")] + [
        ("classifier", "is", "lower"),
        ("classifier", "accuracy", "lower"),
    ]
    for row in rows.values():
        row["caught"] = {
            f"{space}.{m}": _catches(row[space], floor[space], m, worse)
            for space, m, worse in checks
            if f"{m}_mean" in row[space]
        }
        row["fraction_of_ceiling"] = {  # 0 = real digits, 1 = pure noise
            space: (row[space]["fid_mean"] - floor[space]["fid_mean"])
            / (ceiling[space]["fid_mean"] - floor[space]["fid_mean"])
            for space in spaces
        }


def run_inception_vs_classifier(tier: str, progress: bool = True, cache: Cache | None = None) -> Path:
    """Every degradation of :data:`DEGRADATIONS`, ``seeds`` random sets of ``degrade_n`` digits each,
    scored against the held-out digits in each feature space of :data:`FEATURE_SPACES`."""
    budget = BUDGETS[tier]
    t0 = time.perf_counter()
    train, heldout = _train_digits(budget), load_embedded_mnist("heldout").tensors()[0]
    fns = _feature_fns()
    rows, first_sets = _degradation_rows(train, heldout, fns, budget, progress)
    _judge_rows(rows, list(fns))
    data = {
        "degradations": rows,
        "feature_spaces": FEATURE_SPACES,
        "n": budget.degrade_n,
        "seeds": budget.seeds,
        "reference": "mnist-embedded/heldout",
        "n_reference": int(heldout.shape[0]),
        "inception": _inception(first_sets, heldout, budget),
    }
    figure = figure_path("degradations", tier)
    _save_examples(first_sets, figure)
    config = {
        "budget": budget.as_config(),
        "degradations": {k: list(v) for k, v in DEGRADATIONS.items()},
        "source": train.name,
        "caught": "mean worse than the undegraded sets' mean by > 3 of their std over seeds",
        "threads": torch.get_num_threads(),
        "figure": f"{CHAPTER}/figures/{figure.name}",
    }
    return save_result(CHAPTER, "inception_vs_classifier", data, config, tier, time.perf_counter() - t0)


def _save_examples(sets: dict[str, torch.Tensor], path: Path, per_row: int = 8) -> None:
    """A PNG with one row of ``per_row`` images per degradation, labelled."""
    from matplotlib.figure import Figure

    from ..viz import image_grid

    fig = Figure(figsize=(per_row * 0.62 + 1.6, len(sets) * 0.62), dpi=110)
    axes = fig.subplots(len(sets), 1)
    for ax, (name, x) in zip(axes, sets.items()):
        ax.imshow(image_grid(x[:per_row], nrow=per_row, padding=1), cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.text(-4, 15, name, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.22, right=0.99, top=0.99, bottom=0.01, hspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


# --------------------------------------------------------------------------------------------------
# Part 3: memorisation, by nearest training neighbours.
# --------------------------------------------------------------------------------------------------

CONTROL_SIGMA = 0.1  # the near-copies: training digits with N(0, 0.1^2) noise per pixel


def _distance_stats(d: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(d.double(), torch.tensor([0.01, 0.05, 0.5, 0.95], dtype=torch.float64))
    return {
        "n": int(d.numel()),
        "mean": float(d.mean()),
        "std": float(d.std()),
        "min": float(d.min()),
        "p01": float(q[0]),
        "p05": float(q[1]),
        "median": float(q[2]),
        "p95": float(q[3]),
        "max": float(d.max()),
    }


def _lpips(samples: torch.Tensor, train: torch.Tensor, budget: MeasuringBudget) -> dict[str, Any]:
    from ..memorisation import lpips_nearest_neighbours

    if not budget.lpips:
        return {
            "attempted": False,
            "reason": "LPIPS runs only at the colab and gpu tiers: it needs downloaded "
            "AlexNet weights (offline it raises WeightsNotAvailableError)",
        }
    try:
        d, _ = lpips_nearest_neighbours(samples[:100], train, net_type="alex")
    except WeightsNotAvailableError as e:
        return {"attempted": True, "available": False, "error": str(e)}
    return {"attempted": True, "available": True, "n": int(d.numel()), "mean": float(d.mean()), "net": "alex"}


def _distance_groups(dist: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, Any]], torch.Tensor, float]:
    """Each set's nearest-neighbour distance statistics, its histogram on 40 bins shared by all sets, and
    the fraction below the held-out digits' 1% quantile; with those bin edges and that quantile."""
    top = float(max(d.max() for d in dist.values()))
    edges = torch.linspace(0.0, math.ceil(top), 41)
    threshold = float(torch.quantile(dist["held-out digits"].double(), 0.01))
    groups = {}
    for name, d in dist.items():
        groups[name] = {
            **_distance_stats(d),
            "histogram": torch.histogram(d.double(), bins=edges.double()).hist.tolist(),
            "below_heldout_p01": float((d < threshold).float().mean()),
        }
    return groups, edges, threshold


def run_memorisation(tier: str, progress: bool = True, cache: Cache | None = None) -> Path:
    """Nearest training digit (pixel L2 over 784 pixels in [-1, 1]) of model samples, of held-out digits
    and of near-copies of training digits; distance statistics, shared histograms, examples."""
    from ..memorisation import nearest_neighbours

    budget = BUDGETS[tier]
    t0 = time.perf_counter()
    pool = model_pool(tier, progress)
    train = _train_digits(budget)
    train_x = train.tensors()[0]
    n = min(budget.memo_n, pool["images"].shape[0])
    samples, asked = pool["images"][:n], pool["labels"][:n]
    heldout_x, heldout_y = load_embedded_mnist("heldout").tensors()
    gen = torch.Generator().manual_seed(6)
    copy_idx = torch.randperm(len(train), generator=gen)[:n]
    copies = add_noise(train_x[copy_idx], CONTROL_SIGMA, gen)
    sets = {"model samples": samples, "held-out digits": heldout_x, "near-copies": copies}
    nn = {name: nearest_neighbours(x, train_x) for name, x in sets.items()}  # (d (B, 1), idx (B, 1))
    dist = {name: d[:, 0] for name, (d, _) in nn.items()}
    groups, edges, threshold = _distance_groups(dist)
    labels = train.labels
    groups["model samples"]["neighbour_has_asked_label"] = float(
        (labels[nn["model samples"][1][:, 0]] == asked).float().mean()
    )
    groups["held-out digits"]["neighbour_has_true_label"] = float(
        (labels[nn["held-out digits"][1][:, 0]] == heldout_y).float().mean()
    )
    figure = figure_path("nearest_neighbours", tier)
    _save_pairs(samples, train_x, dist["model samples"], nn["model samples"][1][:, 0], figure)
    data = {
        "groups": groups,
        "histogram_edges": edges.tolist(),
        "heldout_p01": threshold,
        "train_size": len(train),
        "control_sigma": CONTROL_SIGMA,
        "pixels": 784,
        "pool": _pool_info(pool),
        "lpips": _lpips(samples, train_x, budget),
        "distance": "||x - x_train||_2 over the 784 pixels in [-1, 1]; divide by 28 for the RMS per pixel",
    }
    config = {
        "budget": budget.as_config(),
        "samples": f"the first {n} of the model pool",
        "train": train.name,
        "controls": {
            "held-out digits": "the 1,005 held-out real digits (never trained on)",
            "near-copies": f"{n} random training digits + N(0, {CONTROL_SIGMA}^2) per pixel, clamped",
        },
        "threads": torch.get_num_threads(),
        "figure": f"{CHAPTER}/figures/{figure.name}",
    }
    return save_result(CHAPTER, "memorisation", data, config, tier, time.perf_counter() - t0)


def _save_pairs(
    samples: torch.Tensor, train_x: torch.Tensor, d: torch.Tensor, idx: torch.Tensor, path: Path, k: int = 8
) -> None:
    """A PNG of the k samples closest to a training digit and k random ones, each above its neighbour."""
    from matplotlib.figure import Figure

    closest = torch.argsort(d)[:k]
    rand = torch.randperm(len(d), generator=torch.Generator().manual_seed(7))[:k]
    fig = Figure(figsize=(2 * k * 0.8, 2.3), dpi=110)
    axes = fig.subplots(2, 2 * k)
    for col, i in enumerate(torch.cat([closest, rand]).tolist()):
        for row, img in enumerate((samples[i], train_x[idx[i]])):
            ax = axes[row, col]
            ax.imshow(img[0].numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1, col].set_xlabel(f"{float(d[i]):.1f}", fontsize=8)
    axes[0, 0].set_ylabel("sample", fontsize=8)
    axes[1, 0].set_ylabel("nearest\ntraining", fontsize=8)
    axes[0, 0].set_title(f"the {k} closest samples", fontsize=9, loc="left")
    axes[0, k].set_title(f"{k} random samples", fontsize=9, loc="left")
    fig.subplots_adjust(left=0.05, right=0.99, top=0.86, bottom=0.12, wspace=0.08, hspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


# --------------------------------------------------------------------------------------------------
# Part 4: precision and recall of real, collapsed and degraded digits.
# --------------------------------------------------------------------------------------------------

# What the precision_recall part measures: real digits, two kinds of lost diversity, three kinds of damage.
PR_SETS = ("none", "10 distinct digits", "2 classes", "blur 1.5", "noise 0.4", "shift 2", "pure noise")


def run_precision_recall(tier: str, progress: bool = True, cache: Cache | None = None) -> Path:
    """Precision and recall (k = 3, classifier features) with percentile-bootstrap intervals over the
    samples, and FID with its interval, for each set of :data:`PR_SETS` (``degrade_n`` digits) against
    the held-out digits."""
    from ..intervals import evaluation_intervals
    from ..metrics import PR_K, precision_recall_from_features

    budget = BUDGETS[tier]
    t0 = time.perf_counter()
    train, heldout = _train_digits(budget), load_embedded_mnist("heldout").tensors()[0]
    clf = load_mnist_classifier()
    f_ref, _ = classifier_outputs(heldout, clf)
    gen = torch.Generator().manual_seed(8)
    n_boot = (
        {"fid": 200, "precision": 200, "recall": 200} if tier != "smoke" else {"fid": 20, "precision": 20, "recall": 20}
    )
    rows: dict[str, dict[str, Any]] = {}
    for name in PR_SETS:
        x, _ = degraded_set(train, name, budget.degrade_n, gen)
        f, logits = classifier_outputs(x, clf)
        pr = precision_recall_from_features(f, f_ref, PR_K)
        est = {**pr, "fid": _quiet_fid(f, f_ref)}
        ivs = evaluation_intervals(
            f,
            logits,
            f_ref,
            estimates=est,
            n_boot=n_boot,
            k=PR_K,
            metrics=("fid", "precision", "recall"),
            generator=gen,
        )
        rows[name] = {"family": DEGRADATIONS[name][0], "level": DEGRADATIONS[name][1], **est, **ivs}
        if progress:
            print(
                f"  {name:<18} precision {pr['precision']:.3f}  recall {pr['recall']:.3f}  FID {est['fid']:8.2f}",
                flush=True,
            )
    data = {
        "sets": rows,
        "n": budget.degrade_n,
        "n_reference": int(heldout.shape[0]),
        "k": PR_K,
        "reference": "mnist-embedded/heldout",
        "features": "the shipped MNIST classifier's 128 penultimate features",
    }
    config = {
        "budget": budget.as_config(),
        "sets": list(PR_SETS),
        "source": train.name,
        "n_boot": n_boot,
        "interval": "95% percentile bootstrap over the set's images; the reference held fixed",
        "threads": torch.get_num_threads(),
    }
    return save_result(CHAPTER, "precision_recall", data, config, tier, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------
# The measured noise of FID, for comparisons that have no interval of their own.
# --------------------------------------------------------------------------------------------------


def fid_spread(n: int, results: str | Path | None = None, curve: str = "model_vs_heldout") -> dict[str, Any] | None:
    """The spread of FID between disjoint sets of ``n`` samples of one network that the
    ``sample_size_bias`` part measured (``results/measuring/sample_size_bias.json``, curve ``curve``):
    {n, mean, std, seeds, curve}; None when that file, or a row at ``n`` with disjoint sets, is missing."""
    from ..results import read_results, results_dir

    path = Path(results if results is not None else results_dir()) / CHAPTER / "sample_size_bias.json"
    if not path.is_file():
        return None
    record = read_results(path)
    if record["tier"] == "smoke":
        return None
    for row in record["data"]["curves"].get(curve, {}).get("rows", []):
        if row["n"] == n and row.get("disjoint"):
            return {
                "n": n,
                "mean": row["fid_mean"],
                "std": row["fid_std"],
                "seeds": len(row.get("runs", [])),
                "curve": curve,
            }
    return None


def fid_gap_threshold(
    a: float, b: float, n: int, results: str | Path | None = None, sigmas: float = 2.0
) -> float | None:
    """How far apart two FIDs at ``n`` samples must be before the book calls one lower, when neither has an
    interval of its own: ``sigmas`` standard deviations of a difference of two independent FIDs,
    sigmas * sqrt(2) * sd, with sd the spread of :func:`fid_spread` at ``n``, scaled up in proportion when
    the larger FID exceeds the mean FID that spread was measured at (a conservative allowance: measured
    spreads grow more slowly than FID). None when no spread was measured at ``n``."""
    spread = fid_spread(n, results)
    if spread is None:
        return None
    return sigmas * math.sqrt(2) * spread["std"] * max(1.0, max(a, b) / spread["mean"])


def fid_comparison(
    values: dict[str, float],
    n: int,
    claimed: list[str] | None = None,
    results: str | Path | None = None,
    sigmas: float = 2.0,
) -> dict[str, Any]:
    """Rank FIDs at ``n`` samples that carry no interval, deciding each neighbouring pair with
    :func:`fid_gap_threshold`. Returns the point ``order`` (best first), ``pairs`` ({better, worse, gap,
    threshold, decided}), ``ranking`` ("a < b ~ c": "~" where the gap is inside the noise or no spread was
    measured) and, for a ``claimed`` order (best first), ``verdict``: "reproduced at this tier" when every
    neighbouring pair of the claim is decided in its direction, "not reproduced at this tier" when one is
    decided against it, else "inconclusive at this tier"."""
    if len(values) < 2:
        raise ValueError(f"values must hold at least 2 entries, got {values!r}")
    order = sorted(values, key=lambda k: values[k])

    def pair(x: str, y: str) -> dict[str, Any]:
        thr = fid_gap_threshold(values[x], values[y], n, results, sigmas)
        gap = values[y] - values[x]
        return {
            "better": x,
            "worse": y,
            "gap": gap,
            "threshold": thr,
            "decided": None if thr is None else abs(gap) > thr,
        }

    pairs = [pair(x, y) for x, y in zip(order, order[1:])]
    out: dict[str, Any] = {
        "order": order,
        "pairs": pairs,
        "spread": fid_spread(n, results),
        "sigmas": sigmas,
        "n": n,
        "ranking": order[0] + "".join((" < " if p["decided"] else " ~ ") + p["worse"] for p in pairs),
    }
    if claimed is not None:
        missing = [c for c in claimed if c not in values]
        if missing or len(claimed) < 2:
            raise ValueError(f"claimed must name at least 2 entries of values; missing {missing}")
        checks = [pair(x, y) for x, y in zip(claimed, claimed[1:])]
        if any(c["decided"] and c["gap"] < 0 for c in checks):
            out["verdict"] = "not reproduced at this tier"
        elif all(c["decided"] and c["gap"] > 0 for c in checks):
            out["verdict"] = "reproduced at this tier"
        else:
            out["verdict"] = "inconclusive at this tier"
        out["claimed_pairs"] = checks
    return out


_MODEL = ([f"{MODEL_CHAPTER}/training"], (MODEL_RUN,))  # what the parts that sample the model need

PARTS: dict[str, Part] = chapter_parts(
    CHAPTER,
    Part(
        "sample_size_bias",
        "FID / KID / IS against the number of samples (real digits and Report E's "
        "T1000_linear samples), five seeds each",
        run_sample_size_bias,
        *_MODEL,
    ),
    Part(
        "inception_vs_classifier",
        "degraded real digits in three feature spaces: which degradations each metric catches",
        run_inception_vs_classifier,
    ),
    Part("memorisation", "nearest training digits (pixel L2) of samples vs held-out digits", run_memorisation, *_MODEL),
    Part(
        "precision_recall",
        "precision and recall (k-NN manifolds) of real, collapsed and degraded digits, with bootstrap intervals",
        run_precision_recall,
    ),
)
