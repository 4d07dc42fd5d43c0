"""Training throughput (images/s) and peak memory of each preset's network, through the real training step.

Each preset runs in its own subprocess (so that its peak memory is its own): it builds the preset's
TrainingRun (network, optimizer, EMA, data on the device) and times ``TrainingRun.train_step()``, the
step ``train()`` runs: batch draw, flips and label dropout, noise, forward, loss, backward, clipping,
optimizer and EMA update. Peak memory is the CUDA allocator's peak on a GPU, and the process's peak
resident set size (which includes Python and torch, about 300-400 MiB) on CPU.

Data: the MNIST presets time on the embedded digits (throughput does not depend on which digits);
the CIFAR-10 presets on fake CIFAR-format images (diffusion_edu.data.write_fake_cifar10), because
CIFAR-10 cannot be downloaded offline. On CPU the CIFAR-10 presets are timed at a small batch
(``--cifar-batch``, default 4): at their real batch a single step takes minutes on 2 cores.

    python benchmarks/bench_training.py                   # every distinct preset network, current device
    python benchmarks/bench_training.py --presets e_unet,d_cnn --steps 10 --threads 1,2

On a CPU shared with other jobs, two torch threads can be many times slower than one (OpenMP threads
wait for each other when the cores are busy): ``--threads 1,2`` measures both, and every measurement
records the machine's load average when it started.

Writes results/benchmarks/training_<device>.json (write_results; the smoke tier writes nowhere unless
--out is given).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Presets whose network and step are the same as another's are left out by default: a_unet_mu
# (a_unet's network and cost), the e_unet sweep (T does not change the cost), quick_mnist (e_unet's
# network and batch).
DEFAULT_PRESETS = [
    "a_unet",
    "a_unet_disc",
    "a_autoencoder",
    "a_vae",
    "c_cifar10",
    "b_cifar10_cfg",
    "d_cnn",
    "d_cnn_selu",
    "d_cold_columns",
    "e_unet",
]


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(preset: str, args: argparse.Namespace) -> dict:
    """Time one preset in this process; return its measurements."""
    import torch

    if args.threads:
        torch.set_num_threads(int(args.threads))
    from diffusion_edu import training_preset
    from diffusion_edu.data import load_cifar10, write_fake_cifar10
    from diffusion_edu.devices import resolve_device
    from diffusion_edu.training import TrainingRun

    device = resolve_device(args.device)
    cfg = training_preset(preset, device=str(device))
    note = []
    dataset = None
    if cfg.dataset == "cifar10":
        root = tempfile.mkdtemp()
        write_fake_cifar10(root, per_batch=64)
        dataset = load_cifar10(True, root, download=False, check_integrity=False)
        note.append("fake CIFAR-format images (offline)")
        if device.type == "cpu" and args.cifar_batch:
            cfg = cfg.replace(batch_size=args.cifar_batch)
            note.append(f"batch {args.cifar_batch} on CPU instead of the preset's {training_preset(preset).batch_size}")
    elif cfg.dataset == "mnist":
        cfg = cfg.replace(dataset="mnist-embedded")
        note.append("embedded MNIST digits")
    if cfg.disc_weight > 0:
        try:
            import diffusion_edu.metrics  # noqa: F401
        except ImportError:
            return {"skipped": "needs diffusion_edu.metrics.load_mnist_classifier (not installed)"}
    baseline = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = TrainingRun(cfg, device, dataset=dataset)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    for _ in range(args.warmup):
        loss = run.train_step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = run.train_step()
    float(loss)  # wait for the last step
    sync()
    seconds = time.perf_counter() - start
    out = {
        "threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "network": cfg.model,
        "params": sum(p.numel() for p in run.model.parameters()),
        "batch_size": cfg.batch_size,
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "img_per_s": round(args.steps * cfg.batch_size / seconds, 2),
        "s_per_step": round(seconds / args.steps, 4),
        "precision": str(run.amp_dtype or torch.float32).replace("torch.", ""),
        "channels_last": run.channels_last,
        "note": "; ".join(note),
    }
    if device.type == "cuda":
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["rss_before_build_mib"] = round(baseline, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="comma-separated preset names")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=5, help="timed steps per preset")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument(
        "--threads",
        default="",
        help="torch CPU threads, or a comma-separated list to measure each (default: torch's choice)",
    )
    p.add_argument("--cifar-batch", type=int, default=4, help="batch for the CIFAR-10 presets on CPU (0: the preset's)")
    p.add_argument("--out", help="results file (default: results/benchmarks/training_<device>.json)")
    p.add_argument("--note", default="", help="free text stored in the results' config")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)), flush=True)
        return 0

    import torch

    from diffusion_edu.devices import resolve_device
    from diffusion_edu.results import current_tier, results_dir, write_results

    device = resolve_device(args.device)
    tier = current_tier(default="gpu" if device.type == "cuda" else "cpu")
    threads = [int(n) for n in args.threads.split(",") if n] or [torch.get_num_threads()]
    results, t0, load_before = {}, time.perf_counter(), os.getloadavg()
    for name in [s for s in args.presets.split(",") if s]:
        for n in threads:  # results[preset] for one thread count, results[preset][f"threads_{n}"] for several
            cmd = [
                sys.executable,
                __file__,
                "--child",
                name,
                "--device",
                str(device),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--cifar-batch",
                str(args.cifar_batch),
                "--threads",
                str(n),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            res = json.loads(lines[-1][7:]) if lines else {"error": proc.stderr.strip().splitlines()[-1:]}
            if len(threads) == 1:
                results[name] = res
            else:
                results.setdefault(name, {})[f"threads_{n}"] = res
            print(f"{name:<16} {n} {json.dumps(res)}", flush=True)
            if "skipped" in res:
                break
    config = {
        "presets": args.presets.split(","),
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": threads,
        "cifar_batch_on_cpu": args.cifar_batch,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "note": args.note,
    }
    if args.out:
        path = Path(args.out)
    elif tier == "smoke":
        print("tier is smoke: results are not written (pass --out to keep them)")
        return 0
    else:
        path = results_dir() / "benchmarks" / f"training_{device.type}.json"
    write_results(
        path, f"benchmarks/training_{device.type}", {"presets": results}, config, tier, time.perf_counter() - t0, device
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
