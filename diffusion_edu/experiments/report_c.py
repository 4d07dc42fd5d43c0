"""Report C (replicating Ho et al. 2020 on CIFAR-10): the cost of the run, training, and Inception IS / FID.

Report C trains Ho et al.'s 35.7M-parameter U-Net on CIFAR-10 for 100k steps on Colab and measures
IS 5.75 and FID 44.47 on 1,000 samples, against the paper's IS 9.46 and FID 3.17 on 50,000 samples
after 800k steps. Nothing CIFAR-scale trains on a CPU, so the parts run at three tiers:

- ``smoke``: fake CIFAR-shaped noise images (real torchvision loader, checksum skipped), a tiny U-Net,
  a few steps. A code check for CI; its numbers mean nothing.
- ``colab``: the paper's network and settings for :data:`COLAB_STEPS` steps, sized by the estimate that
  :func:`~diffusion_edu.experiments.cifar.plan_estimate` makes from counted FLOPs (part ``costs``) to
  finish on a free Colab T4 in about an hour. Changed from the paper because of the budget, and only
  that: warm-up, EMA decay, fp32 (the T4 has no bf16), DDIM with 50 steps for the evaluation samples.
- ``gpu``: the paper's configuration (``c_cifar10``, 800k steps, resumable across sessions), grids at
  the steps Report C shows, and Inception IS / FID at 100k and 800k steps on 1k, 10k and 50k samples.

    python -m diffusion_edu experiment report_c --tier colab
    python -m diffusion_edu experiment report_c --tier gpu      # run again to resume after a stop

On several GPUs the part ``training`` runs under ``torchrun`` (:func:`~.cifar.train_cifar_run`: every
process trains its slice of each global batch, process 0 alone writes grids, snapshots and
``training.json``); the other parts sample and measure in one process afterwards
(:func:`~.cifar.single_process`)::

    torchrun --nproc_per_node 4 -m diffusion_edu experiment report_c --tier gpu --only training
    python -m diffusion_edu experiment report_c --tier gpu
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..metrics import WeightsNotAvailableError
from ..presets import TrainConfig, training_preset
from ..results import read_results
from .cifar import (
    REFERENCE_SPLITS,
    check_cifar_tier,
    cifar10,
    inception_metrics,
    measured_utilisation,
    network_flops,
    not_measured,
    plan_estimate,
    sample_images,
    single_process,
    snapshot_network,
    train_cifar_run,
)
from .common import Budget, BudgetTable, Part, chapter_parts, result_path, runs_root, save_result
from .figures import save_grid

tier_check = check_cifar_tier  # the tier ensure_needs accepts (never cpu)
CHAPTER = "report_c"
RUN = "c_cifar10"

# Facts quoted from Report C ("Our Results") and from Ho et al. (2020) as Report C quotes them.
REPORT: dict[str, Any] = {
    "steps": 100_000,
    "it_per_s": 1.64,
    "bar_loss": 0.0301,
    "bar_elapsed": "1:35:05",
    "bar_remaining": "118:14:14",
    "bar_total": 800_000,
    "is": 5.75,
    "is_std": 0.40,
    "fid": 44.47,
    "n_samples": 1000,
    "grid_steps": [3000, 15000, 30000, 45000, 60000, 75000, 90000, 100000],
    "source": "Report C, 'The images generated during our training' and 'Our Results'",
}
PAPER: dict[str, Any] = {
    "steps": 800_000,
    "batch": 128,
    "steps_per_s": 21,
    "hours": 10.6,
    "params": 35.7e6,
    "is": 9.46,
    "is_std": 0.11,
    "fid": 3.17,
    "n_samples": 50_000,
    "device": "tpu_v3_8",
    "source": "Ho et al. (2020), Sec. 4, Table 1 and App. B (quoted in Report C's Table 1)",
}

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)  # CIFAR-10's labels
COLAB_STEPS = 3000  # the first step at which Report C shows samples
GRID_STEPS: dict[str, list[int]] = {
    "smoke": [3, 6],
    "colab": [250, 500, 1000, 2000, 3000],
    "gpu": REPORT["grid_steps"] + [200_000, 400_000, 600_000, 800_000],
}
TIER_OVERRIDES: dict[str, dict[str, Any]] = {
    # A tiny U-Net on fake data: checks that the code runs, nothing else.
    "smoke": dict(
        model_kwargs={
            "ch": 16,
            "ch_mult": [1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [16],
            "norm_groups": 8,
            "dropout": 0.1,
        },
        batch_size=4,
        steps=6,
        warmup_steps=2,
        log_every=2,
        checkpoint_every=0,
        sample_every=0,
        callback_every=3,
        device="cpu",
        precision="fp32",
    ),
    # The paper's network and optimiser; warm-up and EMA shortened to fit 3k steps (EMA 0.9999 would
    # still hold 0.9999^3000 = 74% of the random initial weights); fp32 because the T4 has no bf16.
    "colab": dict(
        steps=COLAB_STEPS,
        warmup_steps=300,
        ema_decay=0.999,
        precision="fp32",
        log_every=50,
        checkpoint_every=500,
        sample_every=0,
        callback_every=250,
    ),
    "gpu": dict(sample_every=0, callback_every=1000),
}


@dataclass(frozen=True)
class ReportCBudget(Budget):
    """Evaluation at a tier: the checkpoints (training ``steps``) evaluated, the sample counts ``n`` (the
    first n of one draw), the sampler (``method``, ``sampling_steps``: None = all T) and its batch."""

    steps: tuple[int, ...]
    n: tuple[int, ...]
    method: str
    sampling_steps: int | None
    batch_size: int


# no cpu entry: the CIFAR chapters run at the smoke, colab and gpu tiers only (check_cifar_tier)
BUDGETS: BudgetTable[ReportCBudget] = BudgetTable(
    "report_c.BUDGETS",
    {
        "smoke": ReportCBudget(steps=(6,), n=(12,), method="ddim", sampling_steps=4, batch_size=12),
        "colab": ReportCBudget(
            steps=(COLAB_STEPS,), n=(1000, 10_000), method="ddim", sampling_steps=50, batch_size=500
        ),
        # Ho et al. sample with the full 1000-step ancestral sampler (their Algorithm 2).
        "gpu": ReportCBudget(
            steps=(100_000, 800_000), n=(1000, 10_000, 50_000), method="ddpm", sampling_steps=None, batch_size=2000
        ),
    },
)


def config(tier: str) -> TrainConfig:
    """The training configuration of the Report C run at ``tier`` (the ``c_cifar10`` preset + the tier's changes)."""
    check_cifar_tier(tier)
    return training_preset("c_cifar10").replace(**TIER_OVERRIDES.get(tier, {}))


def colab_plan() -> dict[str, Any]:
    """The colab tier's work, as counts of network evaluations, for :func:`plan_estimate`."""
    cfg, ev = config("colab"), BUDGETS["colab"]
    n = max(ev.n)
    # Inception: the 50k training and 10k test references once, each sample prefix through 2 FIDs and IS.
    return {
        "train_images": cfg.steps * cfg.batch_size,
        "sample_evals": n * (ev.sampling_steps or cfg.T),  # None: every step
        "inception_images": 60_000 + 3 * sum(ev.n),
    }


# ---- parts -------------------------------------------------------------------------------------------


def _costs(tier: str, progress: bool, cache: Any = None):
    """FLOPs counted on the actual networks, the utilisation of two published runs, and what they
    imply: the colab tier's duration on a T4, the paper's 800k steps on a current GPU."""
    single_process("costs")
    t0 = time.perf_counter()
    cfg = training_preset("c_cifar10")
    flops = network_flops(cfg)
    util = measured_utilisation(flops)
    data = {
        "params": flops["params"],
        "params_m": flops.pop("params") / 1e6,
        "flops": flops,
        "utilisation": util,
        "colab_plan": plan_estimate(flops, colab_plan(), util),
        "paper_run": plan_estimate(flops, {"train_images": PAPER["steps"] * PAPER["batch"]}, util, device="h100"),
        "report_run": {"steps": REPORT["steps"], "it_per_s": REPORT["it_per_s"]},
    }
    data["cpu_check"] = _cpu_check(flops)
    data["gpu_benchmark"] = _gpu_benchmark(PAPER["steps"] * PAPER["batch"])
    return save_result(
        CHAPTER,
        "costs",
        data,
        {"preset": cfg.to_dict(), "colab": config("colab").to_dict(), "eval_colab": BUDGETS["colab"].as_config()},
        tier,
        time.perf_counter() - t0,
    )


def _benchmark_rows(device: str) -> list[dict]:
    from ..results import results_dir

    path = results_dir() / "benchmarks" / f"models_{device}.json"
    if not path.is_file():
        return []
    return [r for r in read_results(path)["data"].get("rows", []) if r.get("preset") == "unet_cifar10"]


def _cpu_check(flops: dict[str, float]) -> dict[str, Any] | None:
    """The package's CPU benchmark (results/benchmarks/models_cpu.json) times counted FLOPs: the FLOP rate
    the CPU reached. A count far too high would show up as a rate above what a core can do."""
    rows = [r for r in _benchmark_rows("cpu") if r.get("mode") == "fp32" and r.get("threads") == 1]
    if not rows:
        return None
    r = rows[0]
    return {
        "train_img_s": r["train_img_s"],
        "threads": 1,
        "mode": "fp32",
        "batch": r["batch"],
        "achieved_flops": r["train_img_s"] * flops["train_per_image"],
        "source": "results/benchmarks/models_cpu.json",
    }


def _gpu_benchmark(train_images: int) -> dict[str, Any] | None:
    """When a benchmark has timed the 35.7M network's training on a GPU: the measured throughput and what
    the paper's run costs at that speed. Sources, in order: the model benchmark
    (results/benchmarks/models_cuda.json, the fastest mode), else the peer benchmark
    (results/benchmarks/peers_cuda.json: the package's row, ``TrainingRun.train_step`` with EMA and
    clipping, the engine's GPU options)."""
    rows = _benchmark_rows("cuda")
    if rows:
        best = max(rows, key=lambda r: r.get("train_img_s", 0.0))
        return {
            "train_img_s": best["train_img_s"],
            "mode": best.get("mode"),
            "batch": best.get("batch"),
            "hours": train_images / best["train_img_s"] / 3600,
            "source": "results/benchmarks/models_cuda.json",
            "device": None,
        }
    from ..results import results_dir

    path = results_dir() / "benchmarks" / "peers_cuda.json"
    if not path.is_file():
        return None
    rec = read_results(path)
    row = rec["data"].get("training", {}).get("unet_cifar10", {}).get("rows", {}).get("diffusion_edu", {})
    if "img_s" not in row:
        return None
    mode = rec["data"]["mode"]
    mode_s = ", ".join([mode["precision"]] + [k.replace("_", "-") for k in ("channels_last", "compile") if mode.get(k)])
    mfu = rec["data"].get("mfu", {}).get("unet_cifar10", {}).get("mfu")
    return {
        "train_img_s": row["img_s"],
        "mode": mode_s,
        "batch": row["batch"],
        "mfu": mfu,
        "hours": train_images / row["img_s"] / 3600,
        "source": "results/benchmarks/peers_cuda.json",
        "device": rec["hardware"].get("gpu"),
        "tier": rec["tier"],
    }


def _train(tier: str, progress: bool, cache: Any = None):
    check_cifar_tier(tier)
    cfg = config(tier)
    return train_cifar_run(
        CHAPTER,
        RUN,
        cfg,
        tier,
        GRID_STEPS[tier],
        list(BUDGETS[tier].steps),
        progress,
        grid_n=64 if tier != "smoke" else 4,
    )


def _evaluate(tier: str, progress: bool, cache: Any = None):
    """Sample from each evaluated checkpoint and measure Inception IS and FID (against the CIFAR-10
    training and test sets) on the first n samples for each n; offline: recorded as not measured."""
    check_cifar_tier(tier)
    single_process("evaluation")
    t0 = time.perf_counter()
    cfg, ev = config(tier), BUDGETS[tier]
    run_dir = runs_root(tier) / CHAPTER / RUN  # trained by the part "training" (Part.needs)
    refs = {name: cifar10(split, tier).images for name, split in REFERENCE_SPLITS.items()}  # uint8
    rows, grids, walls = [], {}, {}
    grid_dir = result_path(CHAPTER, "evaluation", tier).parent / "evaluation_grids"
    for step in ev.steps:
        model, schedule = snapshot_network(run_dir, step, cfg)
        samples, wall = sample_images(
            model,
            schedule,
            max(ev.n),
            method=ev.method,
            steps=ev.sampling_steps,
            batch_size=ev.batch_size,
            seed=step,
            progress=progress,
        )
        walls[str(step)] = wall
        grids[str(step)] = _save_grid(samples[:64], grid_dir / f"step_{step:07d}.png")
        try:
            metrics = inception_metrics(samples, refs, list(ev.n))
        except WeightsNotAvailableError as e:  # offline: recorded as not measured, never a number
            metrics = {n: not_measured(e) for n in ev.n}
        rows += [{"step": step, "n": n, **metrics[n]} for n in ev.n]
    data = {
        "rows": rows,
        "sample_wall_s": walls,
        "grids": grids,
        "sampler": {"method": ev.method, "sampling_steps": ev.sampling_steps},
        "vs_report": _closest(rows, REPORT["steps"], REPORT["n_samples"]),
        "vs_paper": _closest(rows, PAPER["steps"], PAPER["n_samples"]),
    }
    return save_result(
        CHAPTER, "evaluation", data, {"train": cfg.to_dict(), "eval": ev.as_config()}, tier, time.perf_counter() - t0
    )


def _save_grid(images: torch.Tensor, path) -> str:
    save_grid(images, path, nrow=8)
    return f"{path.parent.name}/{path.name}"


def _closest(rows: list[dict], step: int, n: int) -> dict[str, Any]:
    """The row nearest to (step, n): the one to hold against a report's number (same scale only at gpu)."""
    return dict(min(rows, key=lambda r: (abs(r["step"] - step), abs(r["n"] - n))))


PARTS: dict[str, Part] = chapter_parts(
    CHAPTER,
    Part("costs", "count FLOPs of the 35.7M U-Net; estimate the colab tier on a T4 and 800k steps on a GPU", _costs),
    Part(
        "training", "train Ho et al.'s U-Net on CIFAR-10 (colab: 3k steps; gpu: 800k), grids at several steps", _train
    ),
    Part(
        "evaluation",
        "Inception IS / FID vs the training and test sets at 1k / 10k / 50k samples",
        _evaluate,
        needs=["training"],
    ),
)
