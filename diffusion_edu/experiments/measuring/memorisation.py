"""Part 3, ``memorisation``: each sample's nearest training digit by pixel distance, against the same
distance for held-out digits and for near-copies of training digits."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from ...data import load_embedded_mnist
from ...metrics import (
    WeightsNotAvailableError,
)
from ..common import save_result
from ..store import Cache
from .kit import BUDGETS, CHAPTER, MeasuringBudget, _pool_info, _train_digits, add_noise, figure_path, model_pool

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
    from ...memorisation import lpips_nearest_neighbours

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
    from ...memorisation import nearest_neighbours

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
