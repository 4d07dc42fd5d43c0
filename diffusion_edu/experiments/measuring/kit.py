"""What the measuring chapter's parts share: its budget per tier, the degradations of real digits,
the feature spaces and subsets, the scores of one set, and the measured model's pool of samples."""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...data import ImageDataset, load_embedded_mnist
from ...metrics import (
    IS_SPLITS,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    MNISTClassifier,
    _fid_from_features,
    _is_from_logits,
    _kid_from_features,
    check_metric_images,
    noise_images,
)
from .. import figures
from ..common import Budget, BudgetTable, runs_root
from ..evaluation import images_only
from ..store import Cache

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
    from .. import report_e

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
    from ...checkpoint import load_checkpoint
    from .. import report_e

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
    from ...samplers import sample

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
