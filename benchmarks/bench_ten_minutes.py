"""Ten minutes of CPU: what a training preset buys in a fixed wall-clock budget, against the book's targets.

    PYTHONPATH=. python benchmarks/bench_ten_minutes.py                     # quick_mnist, 10 minutes, 2 threads
    PYTHONPATH=. python benchmarks/bench_ten_minutes.py --set lr=2e-3 --label lr2e-3   # a recipe variant

It trains ``--preset`` with ``TrainConfig.minutes`` (``train --minutes``: the run times its first steps and
fixes its step count so that the learning-rate schedule ends with the budget), then draws ``--n``
class-balanced samples with the ``sample`` command's defaults for that run (the sampler settings its
preset recommends, ``TrainConfig.sample_defaults``; else respaced DDPM, 20 steps, sigma_t^2 =
beta-tilde, w = 0), timing them, and measures them with the book's evaluation kit
(:func:`diffusion_edu.experiments.common.measure`: classifier-feature FID, conditional accuracy,
precision and recall, each with its 95% bootstrap interval over the samples). It sets them against
the targets of the ten-minute recipe:

- FID within 2x the n-matched real-data floor (real training digits against the held-out digits at the
  same n, ``results/metrics/floors.json``), judged on the upper end of the FID's interval;
- conditional accuracy >= 98%, judged on the lower end of its interval;
- the n samples in at most 10 seconds on the machine that trained.

With ``--snapshots K`` the run also keeps its EMA weights every K steps, with the minutes trained so
far, and each snapshot is measured the same way afterwards: FID against training minutes. With
``--reuse`` an existing run of the same recipe is sampled again (new sampler defaults) without
retraining. A grid of 100 samples (one column per class) goes to ``results/benchmarks/figures/``.

Each target's entry in the results file says whether it was met and by how much it was missed. Wall
times depend on the machine's load: the file records the load average before and after, and the
throughput the run measured. Peers (diffusers, denoising-diffusion-pytorch) are compared in
``bench_peers.py``; this file measures the package alone.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from diffusion_edu.experiments.ten_minutes import ACCURACY_TARGET  # one home: a recommended sampler meets it too

FID_FLOOR_FACTOR = 2.0
SAMPLE_SECONDS_TARGET = 10.0


def floor_at(n: int) -> dict:
    """The real-data FID floor at ``n`` samples (:func:`diffusion_edu.experiments.evaluation.real_data_floor`);
    an error when results/metrics/floors.json has none at that n."""
    from diffusion_edu.experiments.evaluation import real_data_floor

    floor = real_data_floor(n)
    if floor is None:
        raise ValueError(f"results/metrics/floors.json has no floor at n = {n}")
    return floor


def targets(metrics: dict, sample_seconds: float, floor: dict) -> dict:
    """Each target: its threshold, the measured value (with the interval end that decides), met or not,
    and the shortfall when missed."""
    fid_limit = FID_FLOOR_FACTOR * floor["fid_mean"]
    fid_hi = metrics.get("fid_interval", {}).get("high", metrics["fid"])
    acc = metrics.get("conditional_accuracy")
    acc_lo = metrics.get("conditional_accuracy_interval", {}).get("low", acc)
    out = {
        "fid": {
            "target": f"<= {FID_FLOOR_FACTOR:g} x the n-matched floor",
            "limit": fid_limit,
            "measured": metrics["fid"],
            "decided_by": fid_hi,
            "met": fid_hi <= fid_limit,
            "missed_by_factor": None if fid_hi <= fid_limit else fid_hi / fid_limit,
        },
        "sample_seconds": {
            "target": f"<= {SAMPLE_SECONDS_TARGET:g} s",
            "limit": SAMPLE_SECONDS_TARGET,
            "measured": sample_seconds,
            "decided_by": sample_seconds,
            "met": sample_seconds <= SAMPLE_SECONDS_TARGET,
            "missed_by_factor": None
            if sample_seconds <= SAMPLE_SECONDS_TARGET
            else sample_seconds / SAMPLE_SECONDS_TARGET,
        },
    }
    if acc is not None:
        out["conditional_accuracy"] = {
            "target": f">= {ACCURACY_TARGET:.0%}",
            "limit": ACCURACY_TARGET,
            "measured": acc,
            "decided_by": acc_lo,
            "met": acc_lo >= ACCURACY_TARGET,
            "missed_by_points": None if acc_lo >= ACCURACY_TARGET else 100 * (ACCURACY_TARGET - acc_lo),
        }
    return out


def snapshot_callback(folder: Path, t_start: float):
    """A training callback that saves the EMA weights (the raw ones without EMA) and the minutes so far."""

    def save(step: int, model, ema) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        net = ema if ema is not None else model
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        minutes = (time.perf_counter() - t_start) / 60
        torch.save({"step": step, "minutes": minutes, "state_dict": state}, folder / f"step_{step:07d}.pt")

    return save


def measure_snapshots(folder: Path, loaded, draw: dict, n: int, seed: int) -> list[dict]:
    """Each snapshot's samples measured as the final network's are: FID against training minutes."""
    from diffusion_edu.experiments.common import measure
    from diffusion_edu.generate import generate

    model, process, config = loaded
    final = {k: v.clone() for k, v in model.state_dict().items()}
    out = []
    for path in sorted(folder.glob("step_*.pt")):
        snap = torch.load(path, weights_only=True)
        model.load_state_dict(snap["state_dict"])
        images, labels = generate((model, process, config), n, seed=seed, **draw)
        m = measure(images, labels, generator=torch.Generator().manual_seed(seed))
        keep = ("fid", "fid_interval", "conditional_accuracy", "conditional_accuracy_interval", "precision", "recall")
        out.append({"step": snap["step"], "minutes": snap["minutes"], **{k: m.get(k) for k in keep}})
        print(f"snapshot step {snap['step']} ({snap['minutes']:.1f} min): FID {m['fid']:.1f}", flush=True)
    model.load_state_dict(final)
    return out


def save_grid(loaded, draw: dict, args, tier: str) -> str | None:
    """100 samples (labels 0..9 in turn, one class per column) as a PNG next to the results file."""
    from diffusion_edu.generate import generate
    from diffusion_edu.results import results_dir
    from diffusion_edu.viz import save_image_grid

    if tier == "smoke":
        return None
    images, _ = generate(loaded, 100, seed=args.seed, **draw)
    path = results_dir() / "benchmarks" / "figures" / f"ten_minutes_{args.label}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(images, path, nrow=10)
    return str(path.relative_to(results_dir()))


def run_peers(args, tier: str, minutes: float, n: int, sample_steps: int, package: dict) -> dict:
    """Each peer named by ``--peers`` (none named: every one) trained for the same ``minutes``, sampled on
    ``sample_steps`` steps of its own scheduler, measured, with a grid and the side-by-side verdicts
    (:func:`benchmarks.peers.ten_minutes.side_by_side`) against the package's ``package`` record. At the smoke
    ``tier`` the peers train on 256 digits and write no grid."""
    from peers.ten_minutes import PEER_RECIPES, run_peer, side_by_side

    from diffusion_edu.results import results_dir
    from diffusion_edu.viz import save_image_grid

    names = args.peers or list(PEER_RECIPES)
    unknown = [p for p in names if p not in PEER_RECIPES]
    if unknown:
        raise SystemExit(f"--peers: unknown peer(s) {unknown}; choose from {list(PEER_RECIPES)}")
    out = {}
    for name in names:
        print(f"peer {name}: training for {minutes:g} min", flush=True)
        rec = run_peer(
            name,
            minutes,
            n,
            sample_steps=sample_steps,
            seed=args.seed,
            subset=256 if tier == "smoke" else None,
            progress=False,
        )
        images = rec.pop("images")
        if tier != "smoke":
            path = results_dir() / "benchmarks" / "figures" / f"ten_minutes_{args.label}_peer_{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image_grid(images[:100], path, nrow=10)
            rec["grid"] = str(path.relative_to(results_dir()))
        rec["package_vs_peer"] = side_by_side(package, {**rec["metrics"], "sample_seconds": rec["sample_seconds"]})
        print(
            f"peer {name}: {rec['steps']} steps, FID {rec['metrics']['fid']:.1f}, "
            f"accuracy {rec['metrics'].get('conditional_accuracy')}, {rec['package_vs_peer']}",
            flush=True,
        )
        out[name] = rec
    return out


def reused_run(run_dir: Path, config):
    """The finished run in ``run_dir`` when it trained this recipe (``sample_defaults`` may differ)."""
    from types import SimpleNamespace

    from diffusion_edu.checkpoint import load_checkpoint
    from diffusion_edu.experiments.common import training_curve
    from diffusion_edu.presets import TrainConfig

    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"--reuse: no run at {run_dir}; train it first (without --reuse)")
    record = load_checkpoint(ckpt)
    saved = record["config"]
    ignore = {"sample_defaults", "steps", "budget_fixed_at", "callback_every", "device"}
    mine = {k: v for k, v in config.to_dict().items() if k not in ignore}
    theirs = {k: v for k, v in saved.items() if k not in ignore}
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"--reuse: the run at {run_dir} trained another recipe (differs in {diff})")
    curve = training_curve(run_dir)
    return SimpleNamespace(
        checkpoint=ckpt,
        step=curve["step"][-1],
        wall_time_s=float(record.get("wall_time_s", curve["elapsed_s"][-1])),
        config=TrainConfig.from_dict(saved),
    )


def main(argv: list[str] | None = None) -> int:
    from diffusion_edu.experiments.common import measure, training_curve
    from diffusion_edu.experiments.evaluation import baseline_record, beats_baseline
    from diffusion_edu.generate import generate, sampler_defaults
    from diffusion_edu.presets import TRAINING_PRESETS, TrainConfig, apply_sets
    from diffusion_edu.results import current_tier, results_dir, write_results
    from diffusion_edu.training import load_model, train

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="quick_mnist", choices=sorted(TRAINING_PRESETS))
    p.add_argument("--minutes", type=float, default=None, help="training budget (default 10; 0.1 at the smoke tier)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field")
    p.add_argument("--label", default="default", help="name of this recipe variant in the results file")
    p.add_argument("--n", type=int, default=None, help="samples (default 1000; 64 at the smoke tier)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (CI machine: 2)")
    p.add_argument("--device", default="cpu", help="where it trains and samples (cpu, the recipe's home; or cuda)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--runs", default="runs/bench_ten_minutes", help="folder for the training runs")
    p.add_argument("--out", default=None, help="results file (default results/benchmarks/ten_minutes_<device>.json)")
    p.add_argument("--snapshots", type=int, default=0, help="keep the EMA weights every K steps and measure each")
    p.add_argument("--reuse", action="store_true", help="sample an existing run of this recipe again, no training")
    p.add_argument(
        "--peers",
        nargs="*",
        default=None,
        metavar="PEER",
        help="then train each peer (diffusers, lucidrains; none named: both) for the same minutes, side by side "
        "(needs `make bench-peers`; run with benchmarks/.venv/bin/python)",
    )
    args = p.parse_args(argv)
    tier = current_tier()
    torch.set_num_threads(args.threads)
    minutes = args.minutes if args.minutes is not None else (0.1 if tier == "smoke" else 10.0)
    n = args.n or (64 if tier == "smoke" else 1000)
    sets = [*args.set, f"minutes={minutes}", f"device={args.device}"] + (["subset=256"] if tier == "smoke" else [])
    config = TrainConfig.from_dict(apply_sets(TRAINING_PRESETS[args.preset].config.to_dict(), sets))
    load_before = os.getloadavg()
    run_dir = Path(args.runs) / f"{args.preset}-{args.label}"
    t_start = time.perf_counter()
    snapshots = run_dir / "snapshots"
    if args.reuse:
        result = reused_run(run_dir, config)
    else:
        if args.snapshots:
            config.callback_every = args.snapshots
        callbacks = [snapshot_callback(snapshots, time.perf_counter())] if args.snapshots else None
        result = train(config, run_dir, overwrite=True, callbacks=callbacks)
    settings = sampler_defaults(config)  # the preset's recommendation (the run's own config may predate it)
    loaded = load_model(result.checkpoint, device=args.device)
    draw = {k: settings[k] for k in ("method", "steps", "eta", "variance", "w")}
    generate(loaded, 10, seed=args.seed, **draw)  # warm-up: first-call allocations are not the sampler's speed
    t0 = time.perf_counter()
    images, labels = generate(loaded, n, seed=args.seed, **draw)  # the sample command's defaults
    sample_seconds = time.perf_counter() - t0
    metrics = measure(images, labels, generator=torch.Generator().manual_seed(args.seed))
    grid = save_grid(loaded, draw, args, tier)
    curve = measure_snapshots(snapshots, loaded, draw, n, args.seed) if snapshots.is_dir() else []
    floor = floor_at(1000) if tier != "smoke" else {"n": n, "fid_mean": float("nan"), "fid_std": float("nan")}
    entry = {
        "label": args.label,
        "preset": args.preset,
        "sets": args.set,
        "config": result.config.to_dict(),
        "steps": result.step,
        "budget_fixed_at": result.config.budget_fixed_at,
        "train_wall_time_s": result.wall_time_s,
        "img_per_s_logged": training_curve(run_dir)["img_per_s"][-5:],
        "sampler": {**draw, "n": n, "from": "preset sample_defaults" if config.sample_defaults else "book defaults"},
        "sample_seconds": sample_seconds,
        "grid": grid,
        "curve": curve,
        "reused_run": bool(args.reuse),
        "metrics": metrics,
        "floor": floor,
        "targets": targets(metrics, sample_seconds, floor) if tier != "smoke" else None,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    if args.peers is not None:
        # the yardstick every library is held to: a Gaussian fitted to the training digits' pixels, same n
        entry["baseline"] = baseline_record(n)
        entry["beats_baseline"] = beats_baseline(metrics, entry["baseline"])
        entry["peers"] = run_peers(
            args, tier, minutes, n, draw["steps"] or 10, {**metrics, "sample_seconds": sample_seconds}
        )
        for rec in entry["peers"].values():
            rec["beats_baseline"] = beats_baseline(rec["metrics"], entry["baseline"])
    print(
        json.dumps(
            {k: entry[k] for k in ("label", "steps", "train_wall_time_s", "sample_seconds")}
            | {m: metrics.get(m) for m in ("fid", "conditional_accuracy", "precision", "recall")}
        )
    )
    if tier == "smoke" and args.out is None:
        print("tier 'smoke': nothing written (smoke numbers are never results); pass --out to keep them")
        return 0
    device = torch.device(args.device)
    out = Path(args.out) if args.out else results_dir() / "benchmarks" / f"ten_minutes_{device.type}.json"
    variants = {}
    if out.is_file():  # one file holds every recipe variant measured, keyed by label
        variants = json.loads(out.read_text())["data"].get("variants", {})
    variants[args.label] = entry
    cfg = {
        "minutes": minutes,
        "threads": args.threads,
        "n": n,
        "reference": "mnist-embedded/heldout",
        "targets": {
            "fid_floor_factor": FID_FLOOR_FACTOR,
            "conditional_accuracy": ACCURACY_TARGET,
            "sample_seconds": SAMPLE_SECONDS_TARGET,
        },
    }
    path = write_results(
        out, "ten_minutes/benchmark", {"variants": variants}, cfg, tier, time.perf_counter() - t_start, device
    )
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
