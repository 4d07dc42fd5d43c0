"""Part 1, ``sample_size_bias``: FID, KID and IS against the number of samples, several seeds each,
for four pairs of sets (real and model samples against the held-out digits and the training part)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...data import load_embedded_mnist
from ...metrics import (
    IS_SPLITS,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    classifier_outputs,
)
from ..common import save_result
from ..evaluation import book_classifier
from ..store import Cache
from .kit import BUDGETS, CHAPTER, _pool_info, _scores, _summary, _train_digits, draw_subsets, fit_inverse_n, model_pool


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
