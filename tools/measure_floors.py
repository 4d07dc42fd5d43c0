"""Measure the floors and the ceiling that every FID / KID / IS in the book is read against.

- Floor (real vs real): n random digits of the embedded training part against the 1,005 held-out digits,
  for several n, five seeds each. No model can be expected to beat real digits, and FID's bias grows as n
  shrinks, so a model's FID means something only next to the floor at the same n.
- Ceiling: n images of clamped Gaussian noise against the held-out digits (a sampler that learned nothing).

    python tools/measure_floors.py [--counts 100 250 500 1000 2000 5000 8995] [--seeds 5] [--threads 2]

writes ``results/metrics/floors.json`` via :func:`diffusion_edu.results.write_results`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from diffusion_edu.data import load_embedded_mnist
from diffusion_edu.metrics import (
    FEATURE_EXTRACTOR,
    IS_SPLITS,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    inception_score,
    noise_ceiling,
    real_vs_real,
    reference_stats,
)
from diffusion_edu.results import current_tier, results_dir, write_results

KEYS = ("fid", "kid_mean", "is")


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of FID, KID and IS (and conditional accuracy when present)."""
    out = {}
    for k in KEYS + (("conditional_accuracy",) if "conditional_accuracy" in runs[0] else ()):
        vals = [r[k] for r in runs]
        out[f"{k}_mean"] = statistics.fmean(vals)
        out[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def measure(kind: str, counts: list[int], seeds: int, ref) -> list[dict]:
    fn = real_vs_real if kind == "floor" else noise_ceiling
    rows = []
    for n in counts:
        runs = [fn(n, reference=ref, generator=torch.Generator().manual_seed(seed)) for seed in range(seeds)]
        row = {"n": n, **summarise(runs), "runs": [{k: r[k] for k in KEYS + ("kid_std", "is_std")} for r in runs]}
        rows.append(row)
        print(
            f"{kind:7s} n={n:5d}: FID {row['fid_mean']:8.3f} +- {row['fid_std']:.3f}  "
            f"KID {row['kid_mean_mean']:.4f} +- {row['kid_mean_std']:.4f}  "
            f"IS {row['is_mean']:.3f} +- {row['is_std']:.3f}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[100, 250, 500, 1000, 2000, 5000, 8995])
    p.add_argument("--ceiling-counts", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()  # the machine is shared: say how busy it was
    start = time.perf_counter()
    heldout = load_embedded_mnist("heldout").tensors()[0]
    ref = reference_stats(heldout)
    is_ref = inception_score(heldout, generator=torch.Generator().manual_seed(0))
    data = {
        "reference": ref.name,
        "n_reference": ref.n,
        "feature_extractor": FEATURE_EXTRACTOR,
        "heldout_is": {"is": is_ref[0], "is_std": is_ref[1]},
        "floor": measure("floor", args.counts, args.seeds, ref),
        "ceiling": measure("ceiling", args.ceiling_counts, args.seeds, ref),
    }
    config = {
        "counts": args.counts,
        "ceiling_counts": args.ceiling_counts,
        "seeds": list(range(args.seeds)),
        "floor": "n random digits of mnist-embedded/train (without replacement) vs mnist-embedded/heldout",
        "ceiling": "n images of N(0, I) noise clamped to [-1, 1] vs mnist-embedded/heldout",
        "kid_subsets": KID_SUBSETS,
        "kid_subset_size": f"min({KID_SUBSET_SIZE}, n, 1005)",
        "is_splits": IS_SPLITS,
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    tier = current_tier()
    if tier == "smoke" and args.out is None:
        print("smoke tier: nothing written")
        return
    path = args.out or results_dir() / "metrics" / "floors.json"
    write_results(path, "metrics/floors", data, config, tier, time.perf_counter() - start)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
