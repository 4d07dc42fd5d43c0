"""Part 4, ``precision_recall``: precision and recall (k-NN manifolds) of real, collapsed and
degraded digits, with bootstrap intervals."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...data import load_embedded_mnist
from ...metrics import (
    classifier_outputs,
    load_mnist_classifier,
)
from ..common import save_result
from ..store import Cache
from .kit import BUDGETS, CHAPTER, DEGRADATIONS, _quiet_fid, _train_digits, degraded_set

# What the precision_recall part measures: real digits, two kinds of lost diversity, three kinds of damage.
PR_SETS = ("none", "10 distinct digits", "2 classes", "blur 1.5", "noise 0.4", "shift 2", "pure noise")


def run_precision_recall(tier: str, progress: bool = True, cache: Cache | None = None) -> Path:
    """Precision and recall (k = 3, classifier features) with percentile-bootstrap intervals over the
    samples, and FID with its interval, for each set of :data:`PR_SETS` (``degrade_n`` digits) against
    the held-out digits."""
    from ...intervals import evaluation_intervals
    from ...metrics import PR_K, precision_recall_from_features

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
