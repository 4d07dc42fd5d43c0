"""The package against denoising-diffusion-pytorch (lucidrains) and diffusers, in one run (issue 9).

On the current device it measures, for Ho et al.'s U-Net at the MNIST preset's size and at the
CIFAR-10 preset's (35.7M parameters), built in each library as closely as its API allows
(benchmarks/peers/configs.py says how, and the file records every network's parameters and FLOPs):

- training throughput: images/s of each library's training step (benchmarks/peers/training.py), same
  batch, same precision, after warm-up steps, the median of several timed windows; peak memory (CUDA
  allocator peak, or on CPU the growth of the process's peak resident set: each library and size runs
  in its own subprocess so that the high-water marks do not mix);
- sampling: DDIM with 50 steps, one network (the package's) driven by the package's sampler, by
  diffusers' DDIMScheduler loop and by lucidrains' GaussianDiffusion.ddim_sample, each against the
  bare network's 50 calls (the sampler's overhead), run interleaved;
- ratios package / peer, issue 9's targets met or not and by how much, and on CUDA the model FLOPs
  utilisation of each training step (FLOPs counted by torch.utils.flop_counter, peak from a table of
  datasheet numbers keyed by device name).

On CUDA every library runs with bf16 autocast, channels-last and torch.compile (the package's engine
options TrainConfig.precision / channels_last / compile); on CPU in fp32. Writes
results/benchmarks/peers_<device>.json (write_results; nothing at the smoke tier unless --out).
The peers live in their own environment: ``make bench-peers`` creates benchmarks/.venv and runs this.

    benchmarks/.venv/bin/python benchmarks/bench_peers.py --threads 2          # the full CPU run
    benchmarks/.venv/bin/python benchmarks/bench_peers.py --tiny --out /tmp/p.json   # seconds, shrunk networks
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' samplers draw a progress bar per call

import torch  # noqa: E402

import diffusion_edu  # noqa: E402  (the torchvision import fix, before the peers import torchvision)
from diffusion_edu.results import atomic_write_bytes, current_tier, results_dir, write_results  # noqa: E402

# isort: split
from peers.configs import (  # noqa: E402
    DISTRIBUTIONS,
    LIBRARIES,
    PEERS,
    PRESETS,
    evaluate_targets,
    faster_peer,
    median_rate,
    mfu,
    overhead,
    package_kwargs,
    peak_bf16_flops,
    ratio,
    resolve_mode,
)

HERE = Path(__file__).resolve().parent


def versions() -> dict[str, str | None]:
    """Installed versions of the package, the peers and the stack under them (None: not installed)."""
    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusion_edu": diffusion_edu.__version__,
    }
    for dist in ("diffusers", "denoising-diffusion-pytorch", "ema-pytorch", "accelerate", "einops"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def available(library: str) -> str | None:
    """None if ``library`` can run here, else why not."""
    module = {
        "diffusers": "diffusers",
        "lucidrains": "denoising_diffusion_pytorch",
        "lucidrains_default": "denoising_diffusion_pytorch",
    }.get(library)
    if module is None:
        return None
    import importlib.util

    if importlib.util.find_spec(module) is None:
        dist = DISTRIBUTIONS[library.replace("_default", "")]
        return f"{dist} is not installed here (make bench-peers installs it into benchmarks/.venv)"
    return None


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure_training(job: dict[str, Any]) -> dict[str, Any]:
    """Time one library's training step for one preset (``job``: see :func:`training_job`)."""
    from peers.flops import timed_windows, train_flops_per_image
    from peers.training import build_step, load_data

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    kw = job["kwargs"]
    data = load_data(kw)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    rss0 = _rss_kib()
    bench = build_step(job["library"], job["preset"], kw, data, job["batch"], device, job["mode"])
    for _ in range(job["warmup"]):
        bench.step()
    rates, cpu_rates = timed_windows(bench.step, job["windows"], job["window_s"], device)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) - base_cuda, "cuda_max_memory_allocated_growth"
    else:
        peak, kind = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024, "cpu_maxrss_growth"
    shape = (kw["in_channels"], kw["image_size"], kw["image_size"])
    flops = train_flops_per_image(bench.forward, bench.model, shape, batch=2, device=device)
    b = job["batch"]
    return {
        "library": job["library"],
        "network": bench.network,
        "params": sum(p.numel() for p in bench.model.parameters()),
        "train_flops_per_image": flops,
        "batch": b,
        "warmup_steps": job["warmup"],
        "img_s": round(median_rate(rates) * b, 3),
        "img_s_windows": [round(r * b, 3) for r in rates],
        "img_per_cpu_s": round(median_rate(cpu_rates) * b, 3),
        "peak_memory_mib": round(peak / 2**20, 1),
        "peak_memory_kind": kind,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "threads": torch.get_num_threads(),
    }


def training_job(
    args: argparse.Namespace, library: str, preset: str, device: torch.device, mode: dict[str, Any]
) -> dict[str, Any]:
    cpu = device.type == "cpu"
    cifar = preset == "unet_cifar10"
    batch = args.batch or (8 if cpu and cifar and not args.tiny else 4 if args.tiny else 128)
    return {
        "library": library,
        "preset": preset,
        "kwargs": package_kwargs(preset, tiny=args.tiny),
        "batch": batch,
        "device": str(device),
        "mode": mode,
        "threads": args.threads,
        "warmup": args.warmup if args.warmup is not None else (1 if cpu and cifar else 2 if cpu else 10),
        "windows": args.windows if args.windows is not None else (3 if cpu and cifar else 5),
        "window_s": args.window_s if args.window_s is not None else (5.0 if cpu and cifar else 3.0),
    }


def run_training_job(args: argparse.Namespace, job: dict[str, Any]) -> dict[str, Any]:
    """Measure in a fresh subprocess (own memory high-water mark), or here with --in-process."""
    why = available(job["library"])
    if why:
        return {"library": job["library"], "skipped": why}
    if args.in_process:
        return measure_training(job)
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        # One library failing (a compile error, out of memory) must not lose the others' measurements:
        # the row says why, in the same "skipped" field the page renders, with the end of the traceback.
        tail = proc.stderr.strip().splitlines()
        last = tail[-1] if tail else f"exit status {proc.returncode}"
        print(
            f"training benchmark of {job['library']} / {job['preset']} failed:\n{proc.stderr[-3000:]}",
            file=sys.stderr,
            flush=True,
        )
        return {"library": job["library"], "skipped": f"failed here: {last[:300]}", "error_tail": proc.stderr[-3000:]}
    return json.loads(lines[-1][len("RESULT ") :])


def training_summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios package / each peer and / the faster peer (library default rows are reference only)."""
    rates = {lib: r.get("img_s") for lib, r in rows.items()}
    pkg = rates.get("diffusion_edu")
    name, best = faster_peer(rates)
    return {
        "rows": rows,
        "ratios": {peer: ratio(pkg, rates.get(peer)) for peer in PEERS if rates.get(peer) is not None},
        "faster_peer": name,
        "ratio_vs_faster_peer": ratio(pkg, best),
    }


def measure_sampling(
    args: argparse.Namespace, preset: str, device: torch.device, mode: dict[str, Any], libraries: list[str]
) -> dict[str, Any]:
    from peers.sampling import STEPS, sampling_loops, time_interleaved

    kw = package_kwargs(preset, tiny=args.tiny)
    source = "freshly initialised (seed 0): the time does not depend on the weights"
    if args.checkpoint.get(preset):
        from diffusion_edu import load_model

        net = load_model(args.checkpoint[preset], device=device).model
        source = f"checkpoint {args.checkpoint[preset]}"
    else:
        from diffusion_edu.models import build_model

        torch.manual_seed(0)
        net = build_model(**kw)
    n = args.sample_n or (4 if args.tiny else 32 if device.type == "cpu" else 256)
    loops = sampling_loops(net, n, device, mode, [lib for lib in libraries if not available(lib)])
    seconds = time_interleaved(loops, args.sample_repeats, device)
    bare = statistics.median(seconds["bare"])
    out_loops = {}
    for name, secs in seconds.items():
        if name == "bare":
            continue
        med = statistics.median(secs)
        out_loops[name] = {
            "seconds": med,
            "seconds_repeats": secs,
            "img_s": n / med,
            "overhead": overhead(med, bare),
            "overhead_repeats": [overhead(s, b) for s, b in zip(secs, seconds["bare"])],
        }
    rates = {name: r["img_s"] for name, r in out_loops.items()}
    name, best = faster_peer(rates)
    skipped = {lib: available(lib) for lib in libraries if available(lib)}
    return {
        "n": n,
        "steps": STEPS,
        "network": {"kwargs": kw, "weights": source, "params": sum(p.numel() for p in net.parameters())},
        "bare_network_s": bare,
        "bare_network_repeats": seconds["bare"],
        "loops": out_loops,
        "ratios": {peer: ratio(rates.get("diffusion_edu"), rates[peer]) for peer in PEERS if peer in rates},
        "faster_peer": name,
        "ratio_vs_faster_peer": ratio(rates.get("diffusion_edu"), best),
        "skipped": skipped,
        "repeats": args.sample_repeats,
    }


def mfu_rows(training: dict[str, Any], device_name: str | None) -> dict[str, Any]:
    """MFU of every measured training step on this device (None where the peak is unknown)."""
    peak, source = peak_bf16_flops(device_name)
    out = {}
    for preset, t in training.items():
        per_lib = {}
        for lib, r in t["rows"].items():
            if "img_s" not in r:
                continue
            flops_per_step = r["train_flops_per_image"] * r["batch"]
            steps_per_s = r["img_s"] / r["batch"]
            per_lib[lib] = {
                "flops_per_step": flops_per_step,
                "steps_per_s": steps_per_s,
                "achieved_tflops": flops_per_step * steps_per_s / 1e12,
                "mfu": mfu(flops_per_step, steps_per_s, peak) if peak else None,
            }
        pkg = per_lib.get("diffusion_edu", {})
        out[preset] = {
            "peak_bf16_tflops": peak / 1e12 if peak else None,
            "peak_source": source,
            "libraries": per_lib,
            "mfu": pkg.get("mfu"),
        }
    return out


def print_targets(targets: list[dict[str, Any]]) -> None:
    """One line per target of :func:`~peers.configs.evaluate_targets`: met, MISSED or not measured."""
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        print(f"target [{verdict:12s}] {t['target']} ({t['preset']}): {value} vs {t['threshold']}; {t['note']}")


def load_partial(path: Path | None, device_name: str | None, mode: dict[str, Any]) -> dict[str, Any]:
    """The measurements an earlier, interrupted run saved in ``path`` (empty if none). A file from
    another device or mode is refused: its numbers would not be side by side with this run's."""
    empty: dict[str, Any] = {
        "device_name": device_name,
        "mode": mode,
        "training": {},
        "sampling": {},
        "versions": versions(),
    }
    if path is None or not path.exists():
        return empty
    saved = json.loads(path.read_text())
    if saved.get("device_name") != device_name or saved.get("mode") != mode:
        raise ValueError(
            f"--partial {path} holds measurements on {saved.get('device_name')!r} in mode "
            f"{saved.get('mode')}; this run is on {device_name!r} in mode {mode}: use another file"
        )
    saved.setdefault("training", {})
    saved.setdefault("sampling", {})
    return saved


def save_partial(path: Path | None, done: dict[str, Any]) -> None:
    if path is not None:
        atomic_write_bytes(path, json.dumps(done, indent=1).encode())


def hardware_from_log(log: Path | None, device_name: str) -> dict[str, Any]:
    """What the cut-off run's machine was, from the lines benchmarks/run_gpu.sh prints first: nvidia-smi's
    CSV row (name, driver, memory, max SM clock) and ``torch <version> cuda <version> <device name>``."""
    hw: dict[str, Any] = {
        "gpu": device_name,
        "device": "cuda",
        "cpu": "not recorded",
        "cpu_count": None,
        "torch": "not recorded",
        "source": "the --partial file of a run cut off by its time limit",
    }
    if log is None:
        return hw
    for line in log.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0] == device_name:
            hw.update(driver=parts[1], gpu_memory=parts[2], gpu_max_sm_clock=parts[3])
        if line.startswith("torch ") and line.endswith(device_name):
            words = line.split()
            hw.update(torch=words[1], cuda=words[3] if len(words) > 3 and words[2] == "cuda" else None)
    hw["source"] += f" and its log {log.name}"
    return hw


def finalize(args: argparse.Namespace) -> int:
    """The results file of a run that was cut off: what its --partial file holds, rows it did not reach
    marked as not measured (never estimated), the targets evaluated on what exists."""
    if args.out is None or args.wall_time is None:
        raise ValueError("--finalize needs --out (the results file) and --wall-time (the cut-off run's seconds)")
    saved = json.loads(args.finalize.read_text())
    device_name, mode = saved.get("device_name"), saved["mode"]
    device_type = "cuda" if device_name else "cpu"
    training = {preset: training_summary(rows) for preset, rows in saved.get("training", {}).items()}
    sampling = saved.get("sampling", {})
    planned_training = {preset: [lib for lib in LIBRARIES if lib != "lucidrains_default"] for preset in PRESETS}
    not_measured = {
        "training": {
            preset: [lib for lib in libs if lib not in training.get(preset, {}).get("rows", {})]
            for preset, libs in planned_training.items()
        },
        "sampling": [
            preset for preset in PRESETS if preset in (args.sample_presets or PRESETS) and preset not in sampling
        ],
        "why": "the run was cut off by the time limit of its command before it reached these; they are absent, "
        "not estimated",
    }
    not_measured["training"] = {k: v for k, v in not_measured["training"].items() if v}
    data: dict[str, Any] = {
        "device": device_type,
        "device_name": device_name,
        "mode": mode,
        "versions": saved.get("versions") or {},
        "training": training,
        "sampling": sampling,
        "mfu": mfu_rows(training, device_name),
        "not_measured": not_measured,
        "diagnostics": {},
    }
    data["targets"] = targets = evaluate_targets(data, planned_sampling=args.sample_presets or list(PRESETS))
    hw = saved.get("hardware") or hardware_from_log(args.log, device_name)
    if not data["versions"] and hw.get("torch") not in (None, "not recorded"):
        data["versions"] = {"torch": hw["torch"], "note": "the cut-off run recorded no other versions"}
    tier = current_tier(default="gpu" if device_type == "cuda" else "cpu")
    threads = {r.get("threads") for rows in saved.get("training", {}).values() for r in rows.values()} - {None}
    config = {
        "finalized_from": str(args.finalize),
        "mode": mode,
        "note": args.note,
        "threads": threads.pop() if len(threads) == 1 else sorted(threads),
        "cut_off": True,
        "log": str(args.log) if args.log else None,
    }
    write_results(args.out, f"benchmarks/peers_{device_type}", data, config, tier, args.wall_time, hardware=hw)
    print_targets(targets)
    print(f"wrote {args.out} (from {args.finalize})")
    return 0


def parse_checkpoints(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        preset, sep, path = item.partition("=")
        if not sep or preset not in PRESETS:
            raise ValueError(f"--checkpoint expects PRESET=PATH with PRESET in {list(PRESETS)}, got {item!r}")
        out[preset] = path
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=list(LIBRARIES))
    p.add_argument(
        "--no-lucidrains-default",
        action="store_true",
        help="skip the reference row of lucidrains' default Unet (dim 64, dim_mults 1-2-4-8) at CIFAR-10 size",
    )
    p.add_argument(
        "--sample-presets",
        nargs="*",
        default=None,
        help="presets to time DDIM-50 on (default: unet_mnist on CPU, both on CUDA)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the CI machine has 2 cores)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 on CUDA")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 128; 8 for CIFAR-10 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 on CPU, 10 on CUDA)")
    p.add_argument("--windows", type=int, default=None, help="timed windows, median reported (default 5)")
    p.add_argument("--window-s", type=float, default=None, help="seconds per window (default 3)")
    p.add_argument("--sample-n", type=int, default=None, help="images per sampling run (default 32 CPU, 256 CUDA)")
    p.add_argument("--sample-repeats", type=int, default=3, help="interleaved repeats of each sampling loop")
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PRESET=PATH",
        help="sample with a trained network (a diffusion_edu checkpoint) instead of a fresh one",
    )
    p.add_argument("--tiny", action="store_true", help="shrunk networks and batches (tests, development)")
    p.add_argument("--in-process", action="store_true", help="no subprocess per measurement (CPU memory mixes)")
    p.add_argument(
        "--out", type=Path, default=None, help="results file (default results/benchmarks/peers_<device>.json)"
    )
    p.add_argument("--note", default="", help="free text stored in the results' config")
    p.add_argument(
        "--partial",
        type=Path,
        default=None,
        help="checkpoint file: every finished measurement is saved there at once, and a run started "
        "with the same file skips what it holds (a run split over several time-limited commands)",
    )
    p.add_argument(
        "--finalize",
        type=Path,
        default=None,
        metavar="PARTIAL",
        help="measure nothing: write the results file from the --partial file of a run that was cut "
        "off (on another machine), saying what it did not measure; needs --out, --wall-time",
    )
    p.add_argument("--wall-time", type=float, default=None, help="with --finalize: the cut-off run's wall time (s)")
    p.add_argument(
        "--log",
        type=Path,
        default=None,
        help="with --finalize: the run's log from benchmarks/run_gpu.sh (GPU, driver and torch lines)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print("RESULT " + json.dumps(measure_training(json.loads(args.worker))), flush=True)
        return 0
    if args.finalize is not None:
        return finalize(args)
    args.checkpoint = parse_checkpoints(args.checkpoint)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    device_type = "cuda" if device.type == "cuda" else device.type
    tier = current_tier(default="gpu" if device_type == "cuda" else "cpu")
    mode = resolve_mode(device_type, args.precision, args.channels_last, args.compile)
    device_name = torch.cuda.get_device_name(device) if device_type == "cuda" else None
    sample_presets = (
        args.sample_presets
        if args.sample_presets is not None
        else (list(PRESETS) if device_type == "cuda" else ["unet_mnist"])
    )
    start, load_before = time.perf_counter(), os.getloadavg()
    print(f"device {device} ({device_name or platform.processor() or 'cpu'}), mode {mode}, threads {args.threads}")

    done = load_partial(args.partial, device_name, mode)
    if args.partial is not None:
        from diffusion_edu.results import hardware_info

        done.setdefault("hardware", hardware_info(device))
    training = {}
    for preset in args.presets:
        libs = list(args.libraries)
        if preset == "unet_cifar10" and "lucidrains" in libs and not (args.no_lucidrains_default or args.tiny):
            libs.append("lucidrains_default")
        rows = {}
        for lib in libs:
            if lib in done["training"].get(preset, {}):
                rows[lib] = r = done["training"][preset][lib]
                print(f"train {preset:13s} {lib:19s} (from {args.partial})")
                continue
            rows[lib] = run_training_job(args, training_job(args, lib, preset, device, mode))
            r = rows[lib]
            done["training"].setdefault(preset, {})[lib] = r
            save_partial(args.partial, done)
            print(
                f"train {preset:13s} {lib:19s} "
                + (
                    f"skipped: {r['skipped']}"
                    if "skipped" in r
                    else f"{r['img_s']:9.2f} img/s  params {r['params']:>11,d}  "
                    f"{r['train_flops_per_image'] / 1e9:7.3f} GFLOP/img  peak {r['peak_memory_mib']:8.1f} MiB"
                ),
                flush=True,
            )
        training[preset] = training_summary(rows)
    sampling = {}
    for preset in sample_presets:
        if preset in done["sampling"]:
            sampling[preset] = s = done["sampling"][preset]
            print(f"ddim-50 {preset:13s} (from {args.partial})")
        else:
            sampling[preset] = s = measure_sampling(args, preset, device, mode, list(args.libraries))
            done["sampling"][preset] = s
            save_partial(args.partial, done)
        for name, r in s["loops"].items():
            print(
                f"ddim-50 {preset:13s} {name:14s} {r['img_s']:9.2f} img/s  overhead {100 * r['overhead']:6.1f}% "
                f"(bare network {s['bare_network_s']:.3f} s)",
                flush=True,
            )
    from peers.training import attention_diagnostic

    batch = args.batch or (4 if args.tiny else 8 if device_type == "cpu" else 128)
    diagnostics = {"package_attention": attention_diagnostic(device, mode, batch, channels=32 if args.tiny else 256)}
    a = diagnostics["package_attention"]
    print(f"package attention kernels {a['kernels']}, fwd+bwd {a['fwd_bwd_s']}")
    data: dict[str, Any] = {
        "device": device_type,
        "diagnostics": diagnostics,
        "device_name": device_name,
        "mode": mode,
        "versions": versions(),
        "training": training,
        "sampling": sampling,
        "mfu": mfu_rows(training, device_name),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }
    data["targets"] = evaluate_targets(data)
    print_targets(data["targets"])
    config = {k: v for k, v in vars(args).items() if k not in ("worker", "out")}
    config["sample_presets"] = sample_presets
    out = args.out
    if out is None:
        if tier == "smoke":
            print("tier is smoke: results are not written into results/ (pass --out to keep them)")
            return 0
        out = results_dir() / "benchmarks" / f"peers_{device_type}.json"
    write_results(out, f"benchmarks/peers_{device_type}", data, config, tier, time.perf_counter() - start, device)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
