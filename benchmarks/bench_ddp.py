"""Data-parallel training throughput: images/s on N processes (DistributedDataParallel) and the scaling
efficiency throughput(N) / (N x throughput(1)).

Each measurement starts N fresh processes (torch.multiprocessing, spawn). With N > 1 they get
torchrun's environment variables and join the process group through ``diffusion_edu.distributed.launch``
(the code ``train()`` runs: gloo on the CPU, NCCL on CUDA, one GPU per process); N = 1 is a plain process
with no process group, the run a reader starts without torchrun. Each process builds the preset's
``TrainingRun`` (DDP around the network, its slice of the global batch) and times
``TrainingRun.train_step()``, the step ``train()`` runs, over ``--windows`` windows of ``--steps``
steps after ``--warmup`` untimed ones, between barriers (so a window lasts as long as the slowest
process). Throughput = steps x global batch / seconds, the median over the windows.

Two ways to scale:

- ``strong``: the global batch stays the preset's (``TrainConfig.batch_size`` is the global batch: the
  book's convention) and each process trains on batch / N. The same run, hopefully faster.
- ``weak``: each process keeps the preset's batch, so the global batch is N times larger: a different
  run (more images per step), the usual way to fill more GPUs.

On the CPU each process uses ``--threads`` torch threads (default 1), and for reference one process with
N x threads threads (the other way to spend the same cores) is measured too.

    python benchmarks/bench_ddp.py                                   # default presets and process counts
    python benchmarks/bench_ddp.py --presets d_cnn --nprocs 1,2 --steps 10 --windows 3

Data: MNIST presets time on the embedded digits, CIFAR-10 presets on fake CIFAR-format images (offline);
on the CPU the CIFAR-10 presets run at ``--cifar-batch`` (a single step at batch 128 takes minutes).
Writes results/benchmarks/ddp_<device>.json (write_results; the smoke tier writes nowhere unless --out
is given).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

DEFAULT_PRESETS = {"cpu": "e_unet,d_cnn", "cuda": "c_cifar10,e_unet"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(job: dict):
    from diffusion_edu import training_preset

    cfg = training_preset(job["preset"], device=job["device"])
    note = []
    if cfg.dataset == "mnist":
        cfg = cfg.replace(dataset="mnist-embedded")
        note.append("embedded MNIST digits")
    elif cfg.dataset == "cifar10":
        note.append("fake CIFAR-format images (offline)")
        if job["device"] == "cpu" and job["cifar_batch"]:
            cfg = cfg.replace(batch_size=job["cifar_batch"])
            note.append(
                f"batch {job['cifar_batch']} on CPU instead of the preset's {training_preset(job['preset']).batch_size}"
            )
    if job["batch"]:
        cfg = cfg.replace(batch_size=job["batch"])
    per_process = cfg.batch_size
    global_batch = per_process * job["world"] if job["mode"] == "weak" else per_process
    return cfg.replace(batch_size=global_batch), "; ".join(note)


def _worker(rank: int, job: dict) -> None:
    """One of the job's processes: build the run in the process group and time its steps."""
    world = job["world"]
    if world > 1:
        os.environ.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(job["port"]),
        )
    import torch

    torch.set_num_threads(job["threads"])
    try:
        from diffusion_edu.data import load_cifar10
        from diffusion_edu.distributed import launch
        from diffusion_edu.training import TrainingRun

        cfg, note = _config(job)
        dataset = None
        if cfg.dataset == "cifar10":
            dataset = load_cifar10(True, job["cifar_root"], download=False, check_integrity=False)
        with launch(cfg.device, cfg.batch_size) as (ctx, device):
            run = TrainingRun(cfg, device, dataset=dataset)

            def sync() -> None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if ctx is not None:
                    ctx.barrier()

            for _ in range(job["warmup"]):
                loss = run.train_step()
            sync()
            seconds = []
            for _ in range(job["windows"]):
                sync()
                start = time.perf_counter()
                for _ in range(job["steps"]):
                    loss = run.train_step()
                float(loss)  # wait for the last step
                sync()
                seconds.append(time.perf_counter() - start)
            if rank == 0:
                median = statistics.median(seconds)
                result = {
                    "img_per_s": round(job["steps"] * cfg.batch_size / median, 2),
                    "s_per_step": round(median / job["steps"], 5),
                    "window_s_per_step": [round(s / job["steps"], 5) for s in seconds],
                    "global_batch": cfg.batch_size,
                    "per_process_batch": cfg.batch_size // world,
                    "processes": world,
                    "threads_per_process": torch.get_num_threads(),
                    "backend": ctx.backend if ctx is not None else None,
                    "device": str(device),
                    "network": cfg.model,
                    "params": sum(p.numel() for p in run.model.parameters()),
                    "precision": str(run.amp_dtype or torch.float32).replace("torch.", ""),
                    "load_average_1min": round(os.getloadavg()[0], 2),
                    "note": note,
                }
                Path(job["result"]).write_text(json.dumps(result))
    except Exception as e:  # noqa: BLE001  (recorded in the results file, the others carry on)
        if rank == 0:
            Path(job["result"]).write_text(
                json.dumps({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]})
            )
        raise


def measure(job: dict) -> dict:
    """Run one job on ``job['world']`` fresh processes; return process 0's measurement (or the error)."""
    import torch.multiprocessing as mp

    fd, result_path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    job = {**job, "port": _free_port(), "result": result_path}
    try:
        mp.spawn(_worker, args=(job,), nprocs=job["world"], join=True)
    except Exception as e:  # noqa: BLE001  (process 0 wrote the reason, unless it died first)
        failure = {"error": f"{type(e).__name__}: {e}"}
    else:
        failure = {"error": "process 0 wrote no measurement"}
    text = Path(result_path).read_text()
    os.unlink(result_path)
    return json.loads(text) if text else failure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--presets", help="comma-separated preset names (default: e_unet,d_cnn on CPU; c_cifar10,e_unet on CUDA)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu or cuda")
    p.add_argument(
        "--nprocs",
        help="comma-separated process counts (default: 1,2 on CPU; 1,2,4,... up to the number of GPUs on CUDA)",
    )
    p.add_argument(
        "--modes", default="strong,weak", help="strong (fixed global batch), weak (fixed per-process batch), or both"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=0,
        help="the batch (global for strong, per process for weak; default: the preset's)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps per window")
    p.add_argument("--windows", type=int, default=3, help="timed windows (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process on CPU")
    p.add_argument(
        "--no-threads-reference",
        dest="threads_reference",
        action="store_false",
        help="on CPU, skip the one-process-with-N-threads reference",
    )
    p.add_argument("--cifar-batch", type=int, default=8, help="global batch for the CIFAR-10 presets on CPU")
    p.add_argument("--out", help="results file (default: results/benchmarks/ddp_<device>.json)")
    p.add_argument("--note", default="", help="free text stored in the results' config")
    args = p.parse_args(argv)

    import torch

    from diffusion_edu.data import write_fake_cifar10
    from diffusion_edu.devices import resolve_device
    from diffusion_edu.results import current_tier, results_dir, write_results

    device = resolve_device(args.device)
    if device.type == "mps":
        print("error: MPS has no multi-process backend; use --device cpu", file=sys.stderr)
        return 2
    kind = device.type
    tier = current_tier(default="gpu" if kind == "cuda" else "cpu")
    if args.nprocs:
        nprocs = [int(n) for n in args.nprocs.split(",") if n]
    elif kind == "cuda":
        count = torch.cuda.device_count()
        nprocs = [n for n in (1, 2, 4, 8, 16) if n <= count]
    else:
        nprocs = [1, 2]
    if 1 not in nprocs:
        nprocs = [1, *nprocs]  # the baseline of every efficiency
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"strong", "weak"} or not modes:
        print(f"error: --modes must be strong, weak or both, got {args.modes!r}", file=sys.stderr)
        return 2
    presets = [s for s in (args.presets or DEFAULT_PRESETS[kind]).split(",") if s]
    cifar_root = tempfile.mkdtemp()
    write_fake_cifar10(cifar_root, per_batch=64)
    base = dict(
        device=kind,
        batch=args.batch,
        steps=args.steps,
        windows=args.windows,
        warmup=args.warmup,
        threads=args.threads,
        cifar_batch=args.cifar_batch,
        cifar_root=cifar_root,
    )
    results, t0, load_before = {}, time.perf_counter(), os.getloadavg()
    for preset in presets:
        entry: dict = {}
        one = measure({**base, "preset": preset, "world": 1, "mode": "strong"})
        print(f"{preset:<14} N=1 {json.dumps(one)}", flush=True)
        for mode in modes:
            runs = {"n_1": one}
            for n in (n for n in nprocs if n > 1):
                runs[f"n_{n}"] = measure({**base, "preset": preset, "world": n, "mode": mode})
                print(f"{preset:<14} {mode} N={n} {json.dumps(runs[f'n_{n}'])}", flush=True)
            entry[mode] = runs
            entry[f"{mode}_efficiency"] = {
                key: round(r["img_per_s"] / (r["processes"] * one["img_per_s"]), 3)
                for key, r in runs.items()
                if "img_per_s" in r and "img_per_s" in one
            }
        if kind == "cpu" and args.threads_reference:
            ref = {}
            for n in (n for n in nprocs if n > 1):
                ref[f"threads_{n * args.threads}"] = r = measure(
                    {**base, "preset": preset, "world": 1, "mode": "strong", "threads": n * args.threads}
                )
                print(f"{preset:<14} 1 process, {n * args.threads} threads {json.dumps(r)}", flush=True)
            entry["one_process_more_threads"] = ref
        results[preset] = entry
    config = {
        "presets": presets,
        "nprocs": nprocs,
        "modes": modes,
        "batch": args.batch or "preset",
        "steps": args.steps,
        "windows": args.windows,
        "warmup": args.warmup,
        "threads_per_process": args.threads,
        "cifar_batch_on_cpu": args.cifar_batch,
        "efficiency": "img_per_s(N) / (N * img_per_s(1)); N=1 is a plain process without a process group",
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
        path = results_dir() / "benchmarks" / f"ddp_{kind}.json"
    write_results(path, f"benchmarks/ddp_{kind}", {"presets": results}, config, tier, time.perf_counter() - t0, device)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
