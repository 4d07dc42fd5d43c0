"""Part 2, ``inception_vs_classifier``: which degradations of real digits each metric catches, in
three feature spaces (the book's classifier, the same network with random weights, pixels)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...data import ImageDataset, load_embedded_mnist
from ...metrics import (
    WeightsNotAvailableError,
    classifier_outputs,
    inception_fid_is,
    load_mnist_classifier,
)
from ..common import save_result
from ..store import Cache
from .kit import (
    BUDGETS,
    CHAPTER,
    DEGRADATIONS,
    MeasuringBudget,
    _scores,
    _summary,
    _train_digits,
    degraded_set,
    figure_path,
    pixel_features,
    random_classifier,
)

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

    from ...viz import image_grid

    fig = Figure(figsize=(per_row * 0.62 + 1.6, len(sets) * 0.62), dpi=110)
    axes = fig.subplots(len(sets), 1)
    for ax, (name, x) in zip(axes, sets.items()):
        ax.imshow(image_grid(x[:per_row], nrow=per_row, padding=1), cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.text(-4, 15, name, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.22, right=0.99, top=0.99, bottom=0.01, hspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
