"""Benchmark the samplers: images per second, and the sampler's own overhead.

    PYTHONPATH=. python benchmarks/bench_samplers.py            # writes results/benchmarks/samplers_<device>.json

For each network it times DDPM over all T steps, DDIM on 50 steps and DDPM on a 5-step respaced
schedule (Report A's sub-sampling), plus the bare network (min(T, 200) calls on the same batch). The
sampler's overhead is measured with a network that does nothing (returns zeros): its DDPM time over
T steps, divided by the DDPM time of the smallest real network (target: under 5%).

Networks: the MNIST presets of ``diffusion_edu.models`` (Report D's CNN, Report E's small U-Net and
the Ho et al.-style U-Net at MNIST size) with random weights (speed does not depend on training);
``--preset NAME`` (repeatable) picks others. Timings are only comparable on the same machine; the file
records its hardware and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn

from diffusion_edu import make_schedule, sample
from diffusion_edu.generate import default_labels
from diffusion_edu.models import MODEL_PRESETS, build_model_preset
from diffusion_edu.results import current_tier, results_dir, write_results

DEFAULT_PRESETS = ["cnn_mnist", "small_unet_mnist", "unet_mnist"]


class NullModel(nn.Module):
    """A network that does nothing: what is left of the sampling time is the sampler's own work."""

    in_channels, image_size, num_classes, parameterization = 1, 28, None, "eps"

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


def _timed(fn, device: torch.device, repeats: int = 1) -> float:
    """Median wall time of fn() over ``repeats`` runs, synchronising the GPU around each."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(
    model: nn.Module, schedule, n: int, device: torch.device, repeats: int, eval_n: int = 1000, eval_steps: int = 20
) -> dict:
    """Images/s for DDPM (all steps), DDIM-50 and respaced DDPM-5, and the bare network over T calls;
    plus the book's evaluation budget: ``eval_n`` images with respaced DDPM on ``eval_steps`` steps in
    batches of 500 (the cpu tier's 1,000 samples; target: under a minute)."""
    model = model.to(device).eval()
    gen = lambda: torch.Generator(device).manual_seed(0)  # noqa: E731
    kw = dict(generator=None, device=device)
    sample(model, schedule, n, steps=5, **kw)  # warm-up (allocator, kernels)
    T = schedule.T
    out = {"params": sum(p.numel() for p in model.parameters())}
    runs = {
        "ddpm_all": dict(method="ddpm"),
        "ddim_50": dict(method="ddim", steps=min(50, T)),
        "respaced_5": dict(method="ddpm", steps=5),
    }
    for name, opts in runs.items():
        reps = 1 if name == "ddpm_all" else repeats
        sec = _timed(lambda opts=opts: sample(model, schedule, n, **opts, generator=gen(), device=device), device, reps)
        out[name] = {"seconds": sec, "images_per_s": n / sec, "steps": opts.get("steps", T)}
    if eval_n:
        y = default_labels(eval_n, model.num_classes)
        steps = min(eval_steps, T)
        sec = _timed(
            lambda: sample(model, schedule, eval_n, steps=steps, y=y, generator=gen(), device=device, batch_size=500),
            device,
            1,
        )
        out["evaluation"] = {"n": eval_n, "steps": steps, "seconds": sec, "images_per_s": eval_n / sec}
    x = torch.randn(n, model.in_channels, model.image_size, model.image_size, device=device)
    t = torch.full((n,), T // 2, dtype=torch.int64, device=device)

    calls = min(T, 200)

    def bare():
        with torch.no_grad():
            for _ in range(calls):
                model(x, t)

    out["bare_network_call_s"] = _timed(bare, device) / calls
    out["loop_overhead_vs_bare_network"] = out["ddpm_all"]["seconds"] / (T * out["bare_network_call_s"]) - 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16, help="images per sampling run (one batch)")
    p.add_argument("--T", type=int, default=1000, help="diffusion steps (Reports D and E use 1000)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (CI machine: 2)")
    p.add_argument("--repeats", type=int, default=3, help="repeats (median) for the short runs")
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        choices=sorted(MODEL_PRESETS),
        help="a network preset (repeatable; default: " + ", ".join(DEFAULT_PRESETS) + ")",
    )
    p.add_argument("--eval-n", type=int, default=1000, help="images in the evaluation-budget run (0: skip)")
    p.add_argument("--eval-steps", type=int, default=20, help="respaced steps of the evaluation-budget run")
    p.add_argument("--out", default=None, help="results file (default results/benchmarks/samplers_<device>.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    schedule = make_schedule("linear", args.T)
    torch.manual_seed(0)
    models = {name: build_model_preset(name) for name in (args.preset or DEFAULT_PRESETS)}
    t_start = time.perf_counter()
    data = {"models": {}}
    for name, model in models.items():
        data["models"][name] = bench_model(model, schedule, args.n, device, args.repeats, args.eval_n, args.eval_steps)
        print(name, json.dumps(data["models"][name], indent=1))
    null = NullModel()
    null_s = _timed(lambda: sample(null, schedule, args.n, device=device), device, args.repeats)
    smallest = min(data["models"].values(), key=lambda r: r["params"])
    data["null_model_ddpm_all_s"] = null_s
    data["null_model_per_step_us"] = 1e6 * null_s / args.T
    data["sampler_overhead_fraction"] = null_s / smallest["ddpm_all"]["seconds"]
    data["overhead_target"] = 0.05
    data["overhead_within_target"] = data["sampler_overhead_fraction"] < 0.05
    data["evaluation_target_s"] = 60.0
    data["evaluation_within_target"] = {
        k: m["evaluation"]["seconds"] < 60.0 for k, m in data["models"].items() if "evaluation" in m
    }
    data["load_average"] = os.getloadavg()
    print(json.dumps({k: v for k, v in data.items() if k != "models"}, indent=1))
    tier = current_tier()
    config = {k: v for k, v in vars(args).items() if k != "out"}
    out = args.out or results_dir() / "benchmarks" / f"samplers_{device.type}.json"
    if tier == "smoke" and args.out is None:
        print("tier 'smoke': nothing written (smoke numbers are never results); pass --out to keep them")
        return 0
    path = write_results(out, "samplers/benchmark", data, config, tier, time.perf_counter() - t_start, device)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
