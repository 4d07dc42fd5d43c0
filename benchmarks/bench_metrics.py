"""Benchmark the evaluation kit: seconds to evaluate 1,000 and 10,000 samples on this device.

Evaluating = one classifier pass over the samples (features + logits) and FID, IS and KID against a
reference whose features are cached (the 1,005 held-out digits). The product's budget is one minute for
1,000 evaluation samples, sampling included, on 2 CPU cores; the metrics must be a small part of it.

    python benchmarks/bench_metrics.py [--device cpu|cuda] [--threads 2] [--sizes 1000 10000] [--repeats 3]

writes ``results/benchmarks/metrics_<device>.json`` (not in the smoke tier, whose numbers are not results).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from diffusion_edu import metrics
from diffusion_edu.data import load_embedded_mnist
from diffusion_edu.results import current_tier, results_dir, write_results

BUDGET_S = 60.0  # 1,000 samples, sampling + metrics, on 2 CPU cores


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def bench(n: int, ref: metrics.ReferenceStats, pool: torch.Tensor, device: torch.device, repeats: int) -> dict:
    """Median seconds (over ``repeats``, after one warm-up) of each part of evaluate() on ``n`` samples."""
    samples = pool[torch.arange(n) % pool.shape[0]].to(device)  # (n, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    parts: dict[str, list[float]] = {k: [] for k in ("features", "fid", "kid", "is", "evaluate_total")}
    for r in range(repeats + 1):
        t_feat, (f, logits) = _timed(lambda: metrics.classifier_outputs(samples), device)
        t_fid, _ = _timed(lambda f=f: metrics._fid_from_features(f, ref.features), device)
        t_kid, _ = _timed(
            lambda f=f: metrics._kid_from_features(f, ref.features, metrics.KID_SUBSETS, metrics.KID_SUBSET_SIZE, g),
            device,
        )
        t_is, _ = _timed(lambda logits=logits: metrics._is_from_logits(logits, metrics.IS_SPLITS, g), device)
        t_all, _ = _timed(lambda: metrics.evaluate(samples, ref, generator=g), device)
        if r:  # the first round warms up caches and kernels
            for k, v in zip(parts, (t_feat, t_fid, t_kid, t_is, t_all)):
                parts[k].append(v)
    out = {f"{k}_s": round(statistics.median(v), 4) for k, v in parts.items()}
    out.update(n_samples=n, repeats=repeats)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU (the budget is for 2 cores)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()  # on a shared machine other jobs slow everything: record how busy it was
    start = time.perf_counter()
    heldout = load_embedded_mnist("heldout")  # the book's reference set
    t_ref, ref = _timed(lambda: metrics.reference_stats(heldout, metrics.load_mnist_classifier(device)), device)
    pool = load_embedded_mnist("all").tensors()[0]  # 10,000 real digits stand in for samples
    rows = [bench(n, ref, pool, device, args.repeats) for n in args.sizes]
    for row in rows:
        row["fraction_of_1000_sample_budget"] = round(row["evaluate_total_s"] * 1000 / row["n_samples"] / BUDGET_S, 4)
        print(
            f"{row['n_samples']:>6} samples: evaluate {row['evaluate_total_s']:.3f} s "
            f"(features {row['features_s']:.3f}, FID {row['fid_s']:.3f}, KID {row['kid_s']:.3f}, "
            f"IS {row['is_s']:.3f})"
        )
    data = {"reference_features_s": round(t_ref, 4), "n_reference": ref.n, "rows": rows, "budget_s_per_1000": BUDGET_S}
    tier = current_tier()
    config = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "sizes": args.sizes,
        "repeats": args.repeats,
        "kid_subsets": metrics.KID_SUBSETS,
        "kid_subset_size": metrics.KID_SUBSET_SIZE,
        "is_splits": metrics.IS_SPLITS,
        "reference": ref.name,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    if tier == "smoke" and args.out is None:
        print("smoke tier: nothing written")
        return data
    path = args.out or results_dir() / "benchmarks" / f"metrics_{device.type}.json"
    write_results(path, "benchmarks/metrics", data, config, tier, time.perf_counter() - start, device=device)
    print(f"wrote {path}")
    return data


if __name__ == "__main__":
    main()
