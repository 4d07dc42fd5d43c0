"""Benchmark the networks of diffusion_edu.models: training and forward throughput, parameters, memory.

For each preset (at its natural resolution, on random inputs) and each mode (fp32, channels_last,
optionally bf16 autocast) it measures

- training throughput: images/s of forward + eps-MSE loss (+ aux_loss) + backward + Adam step,
  after warm-up steps, the median over several timed windows; also images per second of process CPU
  time, which other processes on a shared CPU disturb less;
- forward throughput: images/s of an inference-mode forward pass (what a sampler pays per step);
- parameter count and peak memory: CUDA ``torch.cuda.max_memory_allocated``; on CPU the growth of the
  process's peak resident set (``resource.getrusage(...).ru_maxrss``) over the baseline after the model
  is built (each preset runs in its own subprocess so that the high-water marks do not mix).

The CIFAR-10 networks (35.7M and 44.2M parameters) are slow on a CPU: there they run with a batch of 8
and two timed windows by default. The script writes ``results/benchmarks/models_<device>.json`` through
``diffusion_edu.results.write_results``, one row per (preset, mode, threads). On a shared CPU other
processes steal time: each row records the load average, and the median over windows is the number
to quote. Usage (from the repository root)::

    python benchmarks/bench_models.py                 # every preset, fp32 + channels_last, 2 threads
    python benchmarks/bench_models.py --presets unet_mnist --modes fp32 channels_last bf16
    python benchmarks/bench_models.py --presets unet_cifar10 --cifar-batch 8 --cifar-windows 3   # the 35.7M model
    python benchmarks/bench_models.py --threads 1 2     # one core (robust on a shared CPU), then two
    python benchmarks/bench_models.py --spec '{"name": "unet", "ch": 16, "in_channels": 1, "image_size": 28}'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # peers.flops, when this file is loaded by path (tests)

from peers.flops import timed_windows as _timed_windows  # noqa: E402  (one timing loop for every benchmark)

from diffusion_edu.models import MODEL_PRESETS, build_model, count_parameters  # noqa: E402
from diffusion_edu.results import current_tier, results_dir, write_results  # noqa: E402


def measure(
    spec: dict,
    mode: str,
    batch: int,
    forward_batch: int,
    warmup: int,
    windows: int,
    window_s: float,
    device: torch.device,
) -> dict:
    """Measure one network in one mode; returns a dict of plain numbers."""
    spec = dict(spec)
    model = build_model(spec.pop("name"), **spec).to(device)
    C, S = model.in_channels, model.image_size
    memory_format = torch.channels_last if mode in ("channels_last", "bf16") else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else nullcontext()
    g = torch.Generator(device="cpu").manual_seed(0)

    def inputs(b: int):
        x = torch.randn(b, C, S, S, generator=g).to(device).contiguous(memory_format=memory_format)
        t = torch.randint(1, 1001, (b,), generator=g).to(device)
        y = torch.randint(0, model.num_classes + 1, (b,), generator=g).to(device) if model.num_classes else None
        return x, t, y

    x, t, y = inputs(batch)
    eps = torch.randn_like(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def train_step():
        with autocast:
            out = model(x, t, y)
            loss = torch.nn.functional.mse_loss(out.float(), eps)
            if model.aux_loss is not None:
                loss = loss + 1e-3 * model.aux_loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(warmup):
        train_step()
    train_rates, train_cpu_rates = _timed_windows(train_step, windows, window_s, device)
    peak = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
    )

    model.eval()
    xf, tf, yf = inputs(forward_batch)

    def forward_step():
        with torch.inference_mode(), autocast:
            model(xf, tf, yf)

    for _ in range(max(1, warmup // 2)):
        forward_step()
    fwd_rates, fwd_cpu_rates = _timed_windows(forward_step, windows, window_s, device)
    train_img_s = statistics.median(train_rates) * batch
    fwd_img_s = statistics.median(fwd_rates) * forward_batch
    return {
        "params": count_parameters(model),
        "batch": batch,
        "forward_batch": forward_batch,
        "train_img_s": round(train_img_s, 2),
        "train_img_s_windows": [round(r * batch, 2) for r in train_rates],
        "train_img_per_cpu_s": round(statistics.median(train_cpu_rates) * batch, 2),
        "forward_img_s": round(fwd_img_s, 2),
        "forward_img_s_windows": [round(r * forward_batch, 2) for r in fwd_rates],
        "forward_img_per_cpu_s": round(statistics.median(fwd_cpu_rates) * forward_batch, 2),
        # what 1,000 samples of 50 network evaluations cost (twice that with classifier-free guidance)
        "sample_1000x50_s": round(1000 * 50 / fwd_img_s, 1),
        "peak_memory_mib": round(peak / 2**20, 1),
        "peak_memory_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_maxrss_growth_training",
    }


def _print_row(name: str, mode: str, r: dict) -> None:
    print(
        f"{name:18s} {mode:13s} params {r['params']:>10,d}  train {r['train_img_s']:7.1f} img/s "
        f"({r['train_img_per_cpu_s']:6.1f}/cpu-s)  forward {r['forward_img_s']:7.1f} img/s "
        f"({r['forward_img_per_cpu_s']:6.1f}/cpu-s)  1000x50 samples {r['sample_1000x50_s']:6.1f} s  "
        f"peak {r['peak_memory_mib']:6.1f} MiB",
        flush=True,
    )


def _worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = json.loads(args.worker_spec)
    out = {}
    for mode in args.modes:
        out[mode] = measure(
            spec, mode, args.batch, args.forward_batch, args.warmup, args.windows, args.window_s, device
        )
    print("RESULT " + json.dumps(out))


def _run_one(
    args: argparse.Namespace,
    spec: dict,
    mode: str,
    threads: int,
    batch: int,
    forward_batch: int,
    warmup: int,
    windows: int,
) -> dict:
    """Measure one (network, mode, threads) in a fresh subprocess (separate memory high-water marks),
    or in this process with --in-process."""
    if args.in_process:
        torch.set_num_threads(threads)
        return measure(spec, mode, batch, forward_batch, warmup, windows, args.window_s, torch.device(args.device))
    cmd = [
        sys.executable,
        __file__,
        "--worker-spec",
        json.dumps(spec),
        "--modes",
        mode,
        "--batch",
        str(batch),
        "--forward-batch",
        str(forward_batch),
        "--warmup",
        str(warmup),
        "--windows",
        str(windows),
        "--window-s",
        str(args.window_s),
        "--threads",
        str(threads),
        "--device",
        args.device,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"benchmark of {spec} ({mode}) failed:\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT ") :])[mode]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=list(MODEL_PRESETS), help="presets to measure (default: all)")
    p.add_argument(
        "--spec", action="append", default=[], help="extra JSON build_model spec with a 'name' key (repeatable)"
    )
    p.add_argument("--modes", nargs="+", default=["fp32", "channels_last"], choices=["fp32", "channels_last", "bf16"])
    p.add_argument("--batch", type=int, default=128, help="training batch size")
    p.add_argument("--forward-batch", type=int, default=250, help="forward-only batch size")
    p.add_argument(
        "--cifar-batch",
        type=int,
        default=None,
        help="training batch for the CIFAR-10 presets (default: 8 on CPU, --batch on CUDA); forward uses twice it",
    )
    p.add_argument(
        "--cifar-windows",
        type=int,
        default=None,
        help="timed windows for the CIFAR-10 presets, after one warm-up step (default: 2 on CPU, --windows on CUDA)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the windows")
    p.add_argument("--windows", type=int, default=5, help="timed windows (the median is reported)")
    p.add_argument("--window-s", type=float, default=2.0, help="seconds per timed window")
    p.add_argument("--threads", type=int, nargs="+", default=[2], help="torch CPU thread counts to measure")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--out", type=Path, default=None, help="results file (default results/benchmarks/models_<device>.json)"
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="measure in this process (faster start; peak CPU memory then mixes across networks)",
    )
    p.add_argument("--worker-spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker_spec is not None:
        args.threads = args.threads[0]
        _worker(args)
        return 0

    tier = current_tier()
    specs = {name: MODEL_PRESETS[name] for name in args.presets}
    for i, s in enumerate(args.spec):
        specs[f"spec{i}"] = json.loads(s)
    on_cpu = args.device == "cpu"
    cifar_batch = args.cifar_batch or (8 if on_cpu else args.batch)
    cifar_windows = args.cifar_windows or (2 if on_cpu else args.windows)
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = []
    for threads in args.threads:
        for name, spec in specs.items():
            cifar = spec.get("image_size") == 32 and spec.get("in_channels") == 3
            batch, fwd_batch = (cifar_batch, 2 * cifar_batch) if cifar else (args.batch, args.forward_batch)
            warmup, windows = (1, cifar_windows) if cifar and on_cpu else (args.warmup, args.windows)
            for mode in args.modes:
                load = os.getloadavg()[0]
                r = _run_one(args, spec, mode, threads, batch, fwd_batch, warmup, windows)
                rows.append({"preset": name, "mode": mode, "threads": threads, "load_average_1min": load, **r})
                _print_row(f"{name} t{threads}", mode, r)
    data = {
        "rows": rows,
        "specs": specs,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }
    config = {k: v for k, v in vars(args).items() if k not in ("worker_spec", "out", "in_process")}
    device = "cuda" if args.device.startswith("cuda") else args.device
    out = args.out
    if out is None:
        if tier == "smoke":
            print("tier is smoke: results are not written into results/ (pass --out to keep them)")
            return 0
        out = results_dir() / "benchmarks" / f"models_{device}.json"
    write_results(out, "benchmarks/models", data, config, tier, time.perf_counter() - start, device=args.device)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
