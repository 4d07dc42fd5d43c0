"""Quality per network call of the four samplers, on the network shipped for Report E.

    PYTHONPATH=. python benchmarks/bench_solvers.py          # writes results/benchmarks/solvers_<device>.json

For each sampler (respaced DDPM, DDIM with eta = 0, DPM-Solver++(2M), Heun) and each step count it draws
``--n`` class-balanced samples from the shipped ``report_e`` network (Report E's conditional U-Net,
T = 1000, linear schedule, trained at the cpu tier) with guidance weight ``--w``, and measures them with
the book's evaluation kit (:func:`diffusion_edu.experiments.common.measure`: classifier-feature FID,
conditional accuracy, precision and recall against the held-out digits, each with its 95% bootstrap
interval over the samples), next to the network calls per image and the wall time. Every run starts from
the same seed, so the deterministic solvers see the same x_T. Heun's step counts are chosen so that its
network calls (2K - 1) match the others' step counts.

Quality does not depend on the machine's load; the wall times do (the file records the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from diffusion_edu.experiments.common import measure
from diffusion_edu.generate import generate
from diffusion_edu.pretrained import load_pretrained, pretrained_source
from diffusion_edu.results import current_tier, results_dir, write_results
from diffusion_edu.samplers import network_evaluations

# Step counts per sampler; Heun's 3, 5, 10, 25 steps cost 5, 9, 19, 49 network calls.
GRID = {"ddpm": [5, 10, 20, 50], "ddim": [5, 10, 20, 50], "dpm_solver_2m": [5, 10, 20, 50], "heun": [3, 5, 10, 25]}
SMOKE_GRID = {m: s[:1] for m, s in GRID.items()}
SUMMARY_KEYS = ("fid", "conditional_accuracy", "precision", "recall")


def run_one(loaded, method: str, steps: int, n: int, w: float, seed: int) -> dict:
    """Sample ``n`` images with one sampler setting and measure them; wall times of both halves."""
    t0 = time.perf_counter()
    images, labels = generate(loaded, n, method=method, steps=steps, w=w, seed=seed)
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = measure(images, labels, generator=torch.Generator().manual_seed(seed))
    return {
        "method": method,
        "steps": steps,
        "network_calls": network_evaluations(method, steps),
        "guided_calls": network_evaluations(method, steps) * (2 if w != 0 else 1),
        "sample_seconds": sample_s,
        "measure_seconds": time.perf_counter() - t0,
        **metrics,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None, help="samples per setting (default 1000; 64 at the smoke tier)")
    p.add_argument("--w", type=float, default=0.0, help="classifier-free guidance weight (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (CI machine: 2)")
    p.add_argument("--out", default=None, help="results file (default results/benchmarks/solvers_<device>.json)")
    args = p.parse_args(argv)
    tier = current_tier()
    torch.set_num_threads(args.threads)
    n = args.n or (64 if tier == "smoke" else 1000)
    grid = SMOKE_GRID if tier == "smoke" else GRID
    loaded = load_pretrained("report_e")
    device = next(loaded[0].parameters()).device
    t_start = time.perf_counter()
    rows = []
    for method, step_list in grid.items():
        for steps in step_list:
            row = run_one(loaded, method, steps, n, args.w, args.seed)
            rows.append(row)
            print(
                json.dumps(
                    {
                        k: row[k]
                        for k in ("method", "steps", "network_calls", "sample_seconds", *SUMMARY_KEYS)
                        if k in row
                    }
                )
            )
    data = {
        "network": {"pretrained": "report_e", **pretrained_source("report_e")},
        "rows": rows,
        "load_average": os.getloadavg(),
    }
    config = {
        **{k: v for k, v in vars(args).items() if k != "out"},
        "n": n,
        "grid": grid,
        "reference": "mnist-embedded/heldout",
    }
    out = args.out or results_dir() / "benchmarks" / f"solvers_{device.type}.json"
    if tier == "smoke" and args.out is None:
        print("tier 'smoke': nothing written (smoke numbers are never results); pass --out to keep them")
        return 0
    path = write_results(out, "solvers/benchmark", data, config, tier, time.perf_counter() - t_start, device)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
