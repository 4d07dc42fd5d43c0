"""The ten-minute recipe, found by measurement: what buys sample quality per CPU-minute on MNIST.

    PYTHONPATH=. python benchmarks/bench_recipe.py speed                 # per-step cost of each variant
    PYTHONPATH=. python benchmarks/bench_recipe.py screen base l2 x0     # train + measure these variants
    PYTHONPATH=. python benchmarks/bench_recipe.py samplers --checkpoint runs/.../checkpoint.pt
    PYTHONPATH=. python benchmarks/bench_recipe.py chunks --checkpoint runs/.../checkpoint.pt   # images per call

One factor at a time around a *base* recipe (``quick_mnist`` with the book's cpu-tier optimisation:
200 warm-up steps and a cosine decay of the learning rate), each variant changes one thing
(:data:`VARIANTS`). Two stages, both written into one results file
(``results/benchmarks/recipe_<device>.json``), keyed by variant:

- ``speed``: what one training step of each variant costs, measured side by side: the variants train
  in turn (``--rounds`` rounds of ``--probe-steps`` steps each, interleaved, so that a change in the
  machine's load hits every variant alike) and each is reported as its throughput relative to *base*
  (a ratio; the absolute images/s of a shared machine mean little). Variants that change only what is
  computed from the same network and batch (loss, target, EMA, learning rate) cost the same per step
  and are not probed: their ratio is 1.
- ``screen``: each variant trains for ``--steps`` x its speed ratio steps (the same CPU time as *base*'s
  ``--steps``; the book's screen uses 7,775, the steps that ten minutes bought ``quick_mnist`` on the
  idle 2-core machine, ``ten_minutes_cpu.json``), then draws
  ``--n`` class-balanced samples with one fixed sampler (respaced DDPM, 20 steps, sigma_t^2 = beta-tilde,
  w = 0: the ``sample`` command's defaults before this study) and is measured with the book's kit
  (classifier-feature FID, conditional accuracy, precision, recall, each with its 95% bootstrap
  interval over the samples). Training runs single-threaded (``--threads``) so that two screening
  workers can share the 2-core machine; the step counts, not the wall time, make the comparison fair.
  One training seed per variant by default: the intervals cover the sampling noise, not the seed-to-seed
  spread; ``--train-seed S`` trains the same variants again from seed S (stored under ``screen_seeds``),
  and :func:`diffusion_edu.experiments.ten_minutes.seed_verdicts` keeps a verdict only where every seed agrees.
- ``chunks``: for one checkpoint, the seconds that ``--n`` samples take when the sampler runs ``--sizes``
  images at a time (``generate(batch_size=...)``), guided and unguided, interleaved over ``--rounds``: the
  data behind :data:`diffusion_edu.generate.CPU_CHUNK`, the chunk the package samples in on a CPU.
- ``samplers``: for one checkpoint, FID and accuracy against the number of sampler steps for each
  method (DDPM, DDIM, DPM-Solver++(2M), Heun) and guidance weight, with the seconds that ``--n``
  samples take: the data behind the ``sample`` defaults that the recipe stores with its run.

Several workers may run at once: each result is merged into the file under a lock.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

#: ``quick_mnist`` as it shipped before this study: every variant starts here, whatever the preset is now.
SHIPPED = [
    "dataset=mnist-embedded",
    "model=small_unet_mnist",
    "T=1000",
    "loss=l1",
    "parameterization=eps",
    "loss_weighting=uniform",
    "p_uncond=0.1",
    "lr=0.001",
    "warmup_steps=0",
    "lr_schedule=constant",
    "batch_size=32",
    "ema_decay=0.995",
    "sample_defaults={}",
]
BASE = ["warmup_steps=200", "lr_schedule=cosine"]

#: label -> ``--set`` overrides of the ``quick_mnist`` preset (as it shipped before this study), and
#: whether the variant changes the per-step cost (then ``speed`` measures it).
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {"sets": [], "costs": False, "what": "quick_mnist as it shipped (constant lr, no warm-up)"},
    "base": {"sets": BASE, "costs": False, "what": "200 warm-up steps, cosine decay to 0"},
    "l2": {"sets": [*BASE, "loss=l2"], "costs": False, "what": "L2 loss (Ho et al. Eq. 14) instead of L1"},
    "x0": {"sets": [*BASE, "parameterization=x0"], "costs": False, "what": "x0-prediction"},
    "v": {"sets": [*BASE, "parameterization=v"], "costs": False, "what": "v-prediction (Salimans & Ho 2022)"},
    "min_snr": {
        "sets": [*BASE, "loss_weighting=min_snr"],
        "costs": False,
        "what": "Min-SNR-5 weighting (Hang et al. 2023)",
    },
    "l2_min_snr": {
        "sets": [*BASE, "loss=l2", "loss_weighting=min_snr"],
        "costs": False,
        "what": "L2 loss with Min-SNR-5 weighting",
    },
    "ema_0.999": {"sets": [*BASE, "ema_decay=0.999"], "costs": False, "what": "EMA decay 0.999"},
    "ema_0.98": {"sets": [*BASE, "ema_decay=0.98"], "costs": False, "what": "EMA decay 0.98"},
    "lr_2e-3": {"sets": [*BASE, "lr=0.002"], "costs": False, "what": "learning rate 2e-3"},
    "lr_5e-4": {"sets": [*BASE, "lr=0.0005"], "costs": False, "what": "learning rate 5e-4"},
    "p_uncond_0": {"sets": [*BASE, "p_uncond=0.0"], "costs": False, "what": "no label dropout (no guidance)"},
    "batch_64": {"sets": [*BASE, "batch_size=64"], "costs": True, "what": "batch 64"},
    "batch_16": {"sets": [*BASE, "batch_size=16"], "costs": True, "what": "batch 16"},
    "ch_24": {"sets": [*BASE, "model_kwargs.ch=24"], "costs": True, "what": "width 24-48-96"},
    "ch_12": {"sets": [*BASE, "model_kwargs.ch=12"], "costs": True, "what": "width 12-24-48"},
    "time_dim_16": {"sets": [*BASE, "model_kwargs.time_dim=16"], "costs": True, "what": "time features 16"},
    "depth_1": {"sets": [*BASE, "model_kwargs.depth=1"], "costs": True, "what": "one down-sampling level (14x14)"},
    "attn_7": {
        "sets": [*BASE, "model_kwargs.attention=true"],
        "costs": True,
        "what": "self-attention at the 7x7 bottleneck",
    },
}
#: the recipe the first screen kept (L2 with Min-SNR-5 on the base), and one change of it a variant: each is
#: judged against "l2_min_snr", its parent (:func:`diffusion_edu.experiments.ten_minutes.parent_of`)
RECIPE = [*BASE, "loss=l2", "loss_weighting=min_snr"]
VARIANTS |= {
    "recipe_lr_2e-3": {"sets": [*RECIPE, "lr=0.002"], "costs": False, "what": "the recipe at learning rate 2e-3"},
    "recipe_ema_0.999": {"sets": [*RECIPE, "ema_decay=0.999"], "costs": False, "what": "the recipe with EMA 0.999"},
    "recipe_v": {
        "sets": [*RECIPE, "parameterization=v"],
        "costs": False,
        "what": "the recipe with v-prediction (Min-SNR-5 on the v error)",
    },
}
#: the recipe once v-prediction was kept (two training seeds), and one change of it per variant
RECIPE_V = [*RECIPE, "parameterization=v"]


def change_of_recipe_v(change: str, what: str) -> dict[str, Any]:
    """A variant that makes one change to the v recipe. Where the same change of the base is a variant that
    costs per step, this one costs alike and is priced by that variant's speed probe ("speed_as": the loss and
    the target do not change what a step costs), so it trains for the same CPU time as the others."""
    priced = [k for k, v in VARIANTS.items() if v["sets"] == [*BASE, change] and v["costs"]]
    return {
        "sets": [*RECIPE_V, change],
        "costs": bool(priced),
        **({"speed_as": priced[0]} if priced else {}),
        "what": f"the recipe (v) {what}",
    }


VARIANTS |= {
    "recipe_v_ch_12": change_of_recipe_v("model_kwargs.ch=12", "at width 12-24-48, same CPU time"),
    "recipe_v_ch_24": change_of_recipe_v("model_kwargs.ch=24", "at width 24-48-96, same CPU time"),
    "recipe_v_batch_64": change_of_recipe_v("batch_size=64", "at batch 64, same CPU time"),
    "recipe_v_depth_1": change_of_recipe_v("model_kwargs.depth=1", "with one down-sampling level, same CPU time"),
    "recipe_v_no_ema": change_of_recipe_v("ema_decay=null", "sampled from its raw weights (no EMA)"),
    "recipe_v_batch_16": change_of_recipe_v("batch_size=16", "at batch 16, same CPU time"),
    "recipe_v_attn_7": change_of_recipe_v("model_kwargs.attention=true", "with attention at 7x7, same CPU time"),
    "recipe_v_x0": change_of_recipe_v("parameterization=x0", "predicting x0 instead of v (Min-SNR-5 on the x0 error)"),
    "recipe_v_no_warmup": change_of_recipe_v("warmup_steps=0", "without the 200 warm-up steps (cosine decay kept)"),
    "recipe_v_constant_lr": change_of_recipe_v("lr_schedule=constant", "with a constant learning rate after warm-up"),
}

#: settings that change only the speed (the same arithmetic): measured by ``speed`` alone.
SPEED_ONLY: dict[str, dict[str, Any]] = {
    "threads_1": {"sets": BASE, "threads": 1, "what": "1 torch thread instead of 2"},
    "channels_last": {"sets": [*BASE, "channels_last=true"], "what": "channels-last memory format"},
    "compile": {"sets": [*BASE, "compile=true"], "what": "torch.compile (inductor on CPU)"},
}

SAMPLER_GRID: dict[str, dict[str, Any]] = {
    "ddpm": {"steps": [10, 20, 50], "w": [0.0, 1.0]},
    "ddim": {"steps": [10, 20], "w": [0.0]},
    "dpm_solver_2m": {"steps": [5, 10, 20], "w": [0.0, 1.0]},
    "heun": {"steps": [5, 10], "w": [0.0]},
}


def config_for(sets: list[str], extra: list[str] = ()):
    from diffusion_edu.presets import TRAINING_PRESETS, TrainConfig, apply_sets

    start = TRAINING_PRESETS["quick_mnist"].config.to_dict()
    return TrainConfig.from_dict(apply_sets(start, [*SHIPPED, *sets, *extra]))


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def merge(out: Path, stage: str, label: str, entry: dict, config: dict, wall: float, device: str) -> None:
    """Add ``entry`` under data[stage][label] of the results file, under a lock (workers run at once)."""
    from diffusion_edu.results import current_tier, write_results

    with locked(out):
        data: dict[str, Any] = {"speed": {}, "screen": {}, "samplers": {}}
        total = 0.0
        if out.is_file():
            old = json.loads(out.read_text())
            data.update(old["data"])
            total = old.get("wall_time_s", 0.0)
        data.setdefault(stage, {})[label] = entry
        write_results(out, "benchmarks/recipe", data, config, current_tier(), total + wall, device)


def read(out: Path) -> dict:
    return json.loads(out.read_text())["data"] if out.is_file() else {}


def cmd_speed(args) -> int:
    """Interleaved throughput of base and every variant whose step costs differ."""
    from diffusion_edu.experiments.common import training_curve
    from diffusion_edu.training import train

    probes = {"base": {"sets": BASE}} | {k: v for k, v in VARIANTS.items() if v["costs"] and "speed_as" not in v}
    probes |= SPEED_ONLY
    if args.labels:
        unknown = set(args.labels) - set(probes)
        if unknown:
            raise ValueError(f"unknown speed probe(s) {sorted(unknown)}; known: {sorted(probes)}")
        probes = {k: v for k, v in probes.items() if k == "base" or k in args.labels}
    rates: dict[str, list[float]] = {k: [] for k in probes}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for label, spec in probes.items():
            torch.set_num_threads(spec.get("threads", args.threads))
            steps = args.probe_steps
            cfg = config_for(
                spec["sets"], [f"steps={steps}", f"log_every={steps // 3}", "checkpoint_every=0", "sample_every=0"]
            )
            run = Path(args.runs) / "speed" / label
            train(cfg, run, overwrite=True, progress=False)
            got = training_curve(run)["img_per_s"][1:]  # the first interval holds the start-up (and compilation)
            rates[label] += got
            print(f"round {r + 1} {label:<14} img/s {got}", flush=True)
    base = sorted(rates["base"])[len(rates["base"]) // 2]
    probe = {
        "rounds": args.rounds,
        "probe_steps": args.probe_steps,
        "threads": args.threads,
        "load_average": os.getloadavg(),
    }
    # a probe of some variants only keeps its own base measurement in each entry: the file's "base" and
    # "_probe" stay those of the full probe, which the other variants' ratios were measured against
    partial = bool(args.labels)
    entries: dict[str, dict[str, Any]] = {}
    for label, spec in probes.items():
        if partial and label == "base":
            continue
        med = sorted(rates[label])[len(rates[label]) // 2]
        bs = config_for(spec["sets"]).batch_size
        entries[label] = {
            "what": spec.get("what", "base recipe"),
            "sets": spec["sets"],
            "threads": spec.get("threads", args.threads),
            "img_per_s_median": med,
            "img_per_s_all": rates[label],
            "img_per_s_ratio": med / base,
            "steps_ratio": (med / bs) / (base / config_for(BASE).batch_size),
            **({"base_img_per_s_median": base, "probe": probe} if partial else {}),
        }
    if not partial:
        entries["_probe"] = probe
    wall = time.perf_counter() - t0
    for k, (label, entry) in enumerate(entries.items()):  # the measurement's time counted once, with the last
        merge(args.out, "speed", label, entry, _config(args), wall if k == len(entries) - 1 else 0.0, "cpu")
    return 0


def _config(args) -> dict:
    return {
        "preset": "quick_mnist",
        "shipped": SHIPPED,
        "base": BASE,
        "variants": {k: v["sets"] for k, v in VARIANTS.items()},
        "speed_only": {k: v["sets"] for k, v in SPEED_ONLY.items()},
        "screen_steps_base": getattr(args, "steps", None),
        "n": getattr(args, "n", None),
        "screen_sampler": {"method": "ddpm", "steps": 20, "variance": "beta_tilde", "w": 0.0},
        "threads": args.threads,
        "reference": "mnist-embedded/heldout",
    }


def cmd_screen(args) -> int:
    from diffusion_edu.experiments.common import measure
    from diffusion_edu.experiments.ten_minutes import seed_key
    from diffusion_edu.generate import generate
    from diffusion_edu.training import load_model, train

    if args.train_seed < 0:
        raise ValueError(f"--train-seed must be >= 0, got {args.train_seed}")
    torch.set_num_threads(args.threads)
    speed = read(args.out).get("speed", {})
    for label in args.labels:
        if label not in VARIANTS:
            raise ValueError(f"unknown variant {label!r}; known: {sorted(VARIANTS)}")
        spec = VARIANTS[label]
        probe = spec.get("speed_as", label)  # the speed entry that prices this variant's step
        if spec["costs"] and probe not in speed:
            raise ValueError(f"variant {label!r} changes the step cost: run the 'speed' stage first ({probe!r})")
        ratio = speed[probe]["steps_ratio"] if spec["costs"] else 1.0
        steps = max(1, round(args.steps * ratio))
        seed = args.train_seed  # 0: the screen's own entry; s >= 1: the same variant from training seed s
        cfg = config_for(
            spec["sets"], [f"steps={steps}", "sample_every=0", f"checkpoint_every={steps}", f"seed={seed}"]
        )
        run = Path(args.runs) / "screen" / (label if seed == 0 else f"{label}_seed{seed}")
        t0 = time.perf_counter()
        result = train(cfg, run, overwrite=True, progress=False)
        loaded = load_model(result.checkpoint, device="cpu")
        images, labels = generate(loaded, args.n, seed=args.seed)
        metrics = measure(images, labels, generator=torch.Generator().manual_seed(args.seed))
        entry = {
            "what": spec["what"],
            "sets": spec["sets"],
            "steps": steps,
            "steps_ratio": ratio,
            "train_wall_time_s": result.wall_time_s,
            "config": result.config.to_dict(),
            "train_seed": seed,
            "metrics": metrics,
            "load_average": os.getloadavg(),
        }
        section, key = ("screen", label) if seed == 0 else ("screen_seeds", seed_key(label, seed))
        merge(args.out, section, key, entry, _config(args), time.perf_counter() - t0, "cpu")
        print(
            json.dumps(
                {
                    "label": label,
                    "steps": steps,
                    "fid": metrics["fid"],
                    "fid_interval": [metrics["fid_interval"]["low"], metrics["fid_interval"]["high"]],
                    "acc": metrics.get("conditional_accuracy"),
                }
            ),
            flush=True,
        )
    return 0


def cmd_samplers(args) -> int:
    from diffusion_edu.experiments.common import measure
    from diffusion_edu.generate import generate
    from diffusion_edu.training import load_model

    torch.set_num_threads(args.threads)
    loaded = load_model(args.checkpoint, device="cpu")
    generate(loaded, 10, seed=args.seed)  # warm-up
    grid_ = SAMPLER_GRID
    if args.method:  # one method at the given steps and weights instead of the grid
        grid_ = {
            args.method: {"steps": args.steps_list or SAMPLER_GRID[args.method]["steps"], "w": args.w_list or [0.0]}
        }
    for method, grid in grid_.items():
        for w in grid["w"]:
            for steps in grid["steps"]:
                t0 = time.perf_counter()
                images, labels = generate(loaded, args.n, method=method, steps=steps, w=w, seed=args.seed)
                seconds = time.perf_counter() - t0
                metrics = measure(images, labels, generator=torch.Generator().manual_seed(args.seed))
                label = f"{args.label}/{method}/w{w:g}/steps{steps}"
                entry = {
                    "checkpoint": str(args.checkpoint),
                    "method": method,
                    "steps": steps,
                    "w": w,
                    "n": args.n,
                    "sample_seconds": seconds,
                    "metrics": metrics,
                    "load_average": os.getloadavg(),
                }
                merge(args.out, "samplers", label, entry, _config(args), seconds, "cpu")
                print(
                    f"{label:<40} {seconds:6.1f} s  FID {metrics['fid']:6.1f}  "
                    f"acc {metrics.get('conditional_accuracy', float('nan')):.3f}",
                    flush=True,
                )
    return 0


def cmd_chunks(args) -> int:
    """Sampling time against the chunk size (images per network call; guidance doubles it), side by side."""
    from diffusion_edu.generate import generate
    from diffusion_edu.training import load_model

    torch.set_num_threads(args.threads)
    loaded = load_model(args.checkpoint, device="cpu")
    generate(loaded, 10, seed=args.seed)  # warm-up
    times: dict[str, list[float]] = {}
    t_all = time.perf_counter()
    for r in range(args.rounds):  # interleaved: a change in the machine's load hits every size alike
        for w in args.w_list:
            for size in args.sizes:
                t0 = time.perf_counter()
                generate(loaded, args.n, method=args.method, steps=args.steps, w=w, seed=args.seed, batch_size=size)
                seconds = time.perf_counter() - t0
                times.setdefault(f"w{w:g}/chunk{size}", []).append(seconds)
                print(f"round {r + 1} w={w:g} chunk {size:>5}: {seconds:5.2f} s", flush=True)
    ref = max(args.sizes)
    entries = {}
    for key, ts in times.items():
        largest = times[f"{key.split('/')[0]}/chunk{ref}"]
        entries[key] = {
            "seconds_median": statistics.median(ts),
            "seconds_all": ts,
            "speedup_vs_largest": statistics.median(largest) / statistics.median(ts),
        }
    entry = {
        "checkpoint": str(args.checkpoint),
        "method": args.method,
        "steps": args.steps,
        "n": args.n,
        "threads": args.threads,
        "rounds": args.rounds,
        "sizes": args.sizes,
        "times": entries,
        "load_average": os.getloadavg(),
    }
    merge(args.out, "chunks", args.label, entry, _config(args), time.perf_counter() - t_all, "cpu")
    return 0


def main(argv: list[str] | None = None) -> int:
    from diffusion_edu.results import results_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="results file (default results/benchmarks/recipe_cpu.json)")
    p.add_argument("--runs", default="runs/bench_recipe", help="folder for the training runs")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    sub = p.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("speed")
    s.add_argument("labels", nargs="*", help="the variants to probe (default: every one whose step cost differs)")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--probe-steps", type=int, default=60)
    s = sub.add_parser("screen")
    s.add_argument("labels", nargs="+")
    s.add_argument("--steps", type=int, default=7775, help="base's training steps (the others: x their speed ratio)")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument(
        "--train-seed",
        type=int,
        default=0,
        help="training seed (0: the screen itself; s >= 1: stored under screen_seeds as LABEL/seed<s>)",
    )
    s = sub.add_parser("samplers")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--label", default="recipe")
    s.add_argument("--method", default=None, help="one method only (with --steps-list, --w-list)")
    s.add_argument("--steps-list", type=lambda v: [int(x) for x in v.split(",")], default=None)
    s.add_argument("--w-list", type=lambda v: [float(x) for x in v.split(",")], default=None)
    s.add_argument("--n", type=int, default=1000)
    s = sub.add_parser("chunks")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--label", default="recipe")
    s.add_argument("--method", default="dpm_solver_2m")
    s.add_argument("--steps", type=int, default=7)
    s.add_argument("--w-list", type=lambda v: [float(x) for x in v.split(",")], default=[0.0, 1.0])
    s.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[25, 50, 100, 200, 500, 1000])
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--n", type=int, default=1000)
    args = p.parse_args(argv)
    args.out = args.out or results_dir() / "benchmarks" / "recipe_cpu.json"
    args.threads = args.threads or (2 if args.stage == "speed" else 1)
    stages = {"speed": cmd_speed, "screen": cmd_screen, "samplers": cmd_samplers, "chunks": cmd_chunks}
    return stages[args.stage](args)


if __name__ == "__main__":
    raise SystemExit(main())
