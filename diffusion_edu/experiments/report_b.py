# Slightly over ~400 lines after formatting: the chapter's five parts and its quoted report facts.
"""Report B (CIFAR-10 with classifier-free guidance): the run's cost, training with label dropout, a sweep
of the guidance weight, nearest training neighbours (memorisation) and interpolation through x_T.

Report B trains an improved U-Net (Dhariwal & Nichol 2021) with a class embedding added to the time
embedding, the cosine schedule, labels dropped to the null label 10% of the time, AdamW at 3e-4 and
batch 14 for about 1M iterations. It shows guided samples, an LPIPS nearest-neighbour check (mean 0.13
over 100 samples) and interpolations. Tiers as in Report C's module:

- ``smoke``: fake CIFAR-shaped noise, a tiny conditional U-Net, a few steps: a code check only.
- ``colab``: the report's network and settings for :data:`COLAB_STEPS` steps (an hour on a T4 by the
  estimate of part ``costs``); EMA 0.999 instead of 0.9999 and fp32, for the same reasons as Report C.
- ``gpu``: the ``b_cifar10_cfg`` preset as it is (1M steps at batch 14), resumable.

    python -m diffusion_edu experiment report_b --tier colab

On several GPUs, as in Report C's module: ``torchrun ... experiment report_b --tier gpu --only training``,
then the other parts with plain ``python -m diffusion_edu experiment report_b --tier gpu``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..metrics import WeightsNotAvailableError
from ..presets import TrainConfig, training_preset
from .cifar import (
    REFERENCE_SPLITS,
    check_cifar_tier,
    cifar10,
    inception_metrics,
    lpips_nearest,
    measured_utilisation,
    network_flops,
    not_measured,
    pixel_nearest,
    plan_estimate,
    sample_images,
    single_process,
    snapshot_network,
    train_cifar_run,
)
from .common import Budget, BudgetTable, Part, chapter_parts, result_path, runs_root, save_result

tier_check = check_cifar_tier  # the tier ensure_needs accepts (never cpu)
CHAPTER = "report_b"
RUN = "b_cifar10_cfg"

REPORT: dict[str, Any] = {
    "steps": 1_000_000,
    "batch": 14,
    "lr": 3e-4,
    "p_uncond": 0.1,
    "lpips_mean": 0.13,
    "lpips_n": 100,
    "source": "Report B, Secs. 1.3, 1.5 and 2",
}
COLAB_STEPS = 20_000
GRID_STEPS = {
    "smoke": [3, 6],
    "colab": [1000, 5000, 10_000, 20_000],
    "gpu": [10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000],
}
TIER_OVERRIDES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        model_kwargs={
            "ch": 16,
            "ch_mult": [1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [16],
            "norm_groups": 8,
            "num_head_channels": 16,
            "num_classes": 10,
        },
        batch_size=4,
        steps=6,
        log_every=2,
        checkpoint_every=0,
        sample_every=0,
        callback_every=3,
        device="cpu",
        precision="fp32",
    ),
    # EMA 0.9999 over 20k steps would still hold 0.9999^20000 = 14% of the random initial weights.
    "colab": dict(
        steps=COLAB_STEPS,
        ema_decay=0.999,
        precision="fp32",
        log_every=100,
        checkpoint_every=2000,
        sample_every=0,
        callback_every=1000,
    ),
    "gpu": dict(sample_every=0, callback_every=10_000),
}


@dataclass(frozen=True)
class ReportBBudget(Budget):
    """Sampling for the parts at a tier: the guidance weights ``w`` swept, ``n`` samples per weight, the
    sampler (``method``, ``steps``: None = all T; ``batch_size``), the weights of the nearest-neighbour
    check (``nn_w``) and the interpolation's rows and points."""

    w: tuple[float, ...]
    n: int
    method: str
    steps: int | None
    batch_size: int
    nn_w: tuple[float, ...]
    interp_rows: int
    interp_points: int


# no cpu entry: the CIFAR chapters run at the smoke, colab and gpu tiers only (check_cifar_tier)
BUDGETS: BudgetTable[ReportBBudget] = BudgetTable(
    "report_b.BUDGETS",
    {
        "smoke": ReportBBudget(
            w=(0.0, 1.0), n=12, method="ddim", steps=4, batch_size=24, nn_w=(0.0,), interp_rows=2, interp_points=4
        ),
        "colab": ReportBBudget(
            w=(0.0, 0.3, 1.0, 3.0),
            n=1000,
            method="ddim",
            steps=50,
            batch_size=500,
            nn_w=(0.0, 3.0),
            interp_rows=5,
            interp_points=9,
        ),
        # Report B samples with Ho et al.'s Algorithm 2 (all 1000 steps) and a guided mix at every step.
        "gpu": ReportBBudget(
            w=(0.0, 0.3, 1.0, 2.0, 4.0),
            n=10_000,
            method="ddpm",
            steps=None,
            batch_size=2000,
            nn_w=(0.0, 4.0),
            interp_rows=5,
            interp_points=9,
        ),
    },
)
INTERP_CLASSES = [1, 3, 7, 8, 9]  # automobile, cat, horse, ship, truck


def config(tier: str) -> TrainConfig:
    """The training configuration of the Report B run at ``tier`` (``b_cifar10_cfg`` + the tier's changes)."""
    check_cifar_tier(tier)
    return training_preset("b_cifar10_cfg").replace(**TIER_OVERRIDES.get(tier, {}))


def colab_plan() -> dict[str, Any]:
    """The colab tier's work in network evaluations (guided ones count twice), for ``plan_estimate``."""
    cfg, s = config("colab"), BUDGETS["colab"]
    steps = s.steps or cfg.T  # None: every step
    per_w = [s.n * steps * (1 if w == 0 else 2) for w in s.w]
    nn_evals = sum(100 * steps * (1 if w == 0 else 2) for w in s.nn_w)
    interp = s.interp_rows * s.interp_points * steps
    return {
        "train_images": cfg.steps * cfg.batch_size,
        "sample_evals": sum(per_w) + nn_evals + interp,
        "inception_images": 60_000 + 3 * s.n * len(s.w),
    }


def _model(tier: str, progress: bool, part: str):
    single_process(part)
    cfg = config(tier)
    run_dir = runs_root(tier) / CHAPTER / RUN  # trained by the part "training" (Part.needs)
    return snapshot_network(run_dir, cfg.steps, cfg)


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 10  # classes in turn: any prefix of 10k is balanced


def measured_h100_estimate(costs: dict[str, Any], results: Any = None) -> dict[str, Any] | None:
    """Report B's 1M steps of batch 14 on an H100 at the utilisation *measured* on that GPU
    (``results/benchmarks/peers_cuda.json``: Ho et al.'s CIFAR-10 network, batch 128, bf16): its training FLOPs
    (``costs["report_run"]``) over MFU x peak. At batch 14 a step is overhead-bound, so the MFU is lower and
    this stays optimistic; ``floor_hours`` is the step count at the measured step rate of the small MNIST
    U-Net on the same GPU (``flops_ratio`` times fewer FLOPs per step: launches, not FLOPs, set its pace). None when
    the benchmark file is missing."""
    from pathlib import Path

    from ..results import read_results, results_dir

    path = Path(results if results is not None else results_dir()) / "benchmarks" / "peers_cuda.json"
    if not path.is_file():
        return None
    rec = read_results(path)
    mfu = rec["data"]["mfu"]
    cifar, mnist = mfu["unet_cifar10"], mfu["unet_mnist"]["libraries"]["diffusion_edu"]
    batch = rec["data"]["training"]["unet_cifar10"]["rows"]["diffusion_edu"]["batch"]
    seconds = costs["report_run"]["flops_total"] / (cifar["mfu"] * cifar["peak_bf16_tflops"] * 1e12)
    return {
        "mfu": cifar["mfu"],
        "mfu_batch": batch,
        "peak_tflops": cifar["peak_bf16_tflops"],
        "hours": seconds / 3600,
        "floor_step_s": 1 / mnist["steps_per_s"],
        "floor_hours": REPORT["steps"] / mnist["steps_per_s"] / 3600,
        "flops_ratio": cifar["libraries"]["diffusion_edu"]["flops_per_step"] / mnist["flops_per_step"],
        "device": rec["hardware"].get("gpu"),
        "source": "results/benchmarks/peers_cuda.json",
    }


# ---- parts -------------------------------------------------------------------------------------------


def _costs(tier: str, progress: bool, cache: Any = None):
    single_process("costs")
    t0 = time.perf_counter()
    cfg = training_preset("b_cifar10_cfg")
    flops = network_flops(cfg)
    util = measured_utilisation(flops)
    data = {
        "params": flops.pop("params"),
        "flops": flops,
        "utilisation": util,
        "colab_plan": plan_estimate(flops, colab_plan(), util),
        "report_run": plan_estimate(flops, {"train_images": REPORT["steps"] * REPORT["batch"]}, util, device="h100"),
        "images_seen": {"report_b": REPORT["steps"] * REPORT["batch"], "ho2020": 800_000 * 128},
    }
    return save_result(
        CHAPTER,
        "costs",
        data,
        {"preset": cfg.to_dict(), "colab": config("colab").to_dict(), "sampling_colab": BUDGETS["colab"].as_config()},
        tier,
        time.perf_counter() - t0,
    )


def _train(tier: str, progress: bool, cache: Any = None):
    check_cifar_tier(tier)
    cfg = config(tier)
    return train_cifar_run(
        CHAPTER, RUN, cfg, tier, GRID_STEPS[tier], [cfg.steps], progress, grid_n=100 if tier != "smoke" else 10
    )


def _guidance(tier: str, progress: bool, cache: Any = None):
    """Samples for each guidance weight w (balanced classes): a grid per w and, online, Inception IS / FID."""
    check_cifar_tier(tier)
    t0 = time.perf_counter()
    s = BUDGETS[tier]
    model, schedule = _model(tier, progress, "guidance")
    refs = {name: cifar10(split, tier).images for name, split in REFERENCE_SPLITS.items()}  # uint8
    folder = result_path(CHAPTER, "guidance", tier).parent / "guidance_grids"
    grids, metrics, walls = {}, {}, {}
    from ..viz import save_image_grid

    for w in s.w:
        images, walls[str(w)] = sample_images(
            model,
            schedule,
            s.n,
            method=s.method,
            steps=s.steps,
            batch_size=s.batch_size,
            y=_labels(s.n),
            w=w,
            seed=1,
            progress=progress,
        )
        path = folder / f"w_{w:g}.png"
        save_image_grid(images[:100].float() / 127.5 - 1, path, nrow=10)
        grids[str(w)] = f"guidance_grids/{path.name}"
        try:
            metrics[str(w)] = inception_metrics(images, refs, [s.n])[s.n]
        except WeightsNotAvailableError as e:
            metrics[str(w)] = not_measured(e)
    data = {
        "w": s.w,
        "n": s.n,
        "grids": grids,
        "metrics": metrics,
        "sample_wall_s": walls,
        "sampler": {"method": s.method, "steps": s.steps},
    }
    return save_result(
        CHAPTER,
        "guidance",
        data,
        {"train": config(tier).to_dict(), "sampling": s.as_config()},
        tier,
        time.perf_counter() - t0,
    )


def _neighbours(samples: torch.Tensor, train: torch.Tensor) -> dict[str, Any]:
    d_pix, i_pix = pixel_nearest(samples, train)
    out: dict[str, Any] = {
        "pixel_l2": d_pix[:, 0].tolist(),
        "pixel_index": i_pix[:, 0].tolist(),
        "pixel_l2_mean": float(d_pix.mean()),
        "pixel_l2_min": float(d_pix.min()),
    }
    try:
        d, idx = lpips_nearest(samples, train)
        out.update(
            lpips=d.tolist(),
            lpips_index=idx.tolist(),
            lpips_mean=float(d.mean()),
            lpips_min=float(d.min()),
            lpips_status="measured",
        )
    except WeightsNotAvailableError as e:
        out.update(lpips_mean=None, lpips_min=None, lpips_status=not_measured(e)["status"], lpips_reason=str(e))
    return out


def _nearest(tier: str, progress: bool, cache: Any = None):
    """Report B's memorisation check on 100 samples, and the same check on 100 held-out test images: the
    distance a new image from the data distribution has to its nearest training image (the baseline)."""
    check_cifar_tier(tier)
    t0 = time.perf_counter()
    s = BUDGETS[tier]
    model, schedule = _model(tier, progress, "nearest_neighbours")
    train = cifar10("train", tier).tensors()[0]
    test = cifar10("test", tier)
    n = min(REPORT["lpips_n"], len(test))
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:n]
    baseline = _neighbours(test.batch(pick)[0], train)
    by_w, pairs = {}, {}
    from ..viz import save_image_grid

    for w in s.nn_w:
        images, _ = sample_images(
            model,
            schedule,
            n,
            method=s.method,
            steps=s.steps,
            batch_size=s.batch_size,
            y=_labels(n),
            w=w,
            seed=2,
            progress=progress,
        )
        x = images.float() / 127.5 - 1
        by_w[str(w)] = _neighbours(x, train)
        k = min(10, n)
        nearest = train[torch.tensor(by_w[str(w)]["pixel_index"][:k])]
        path = result_path(CHAPTER, "nearest_neighbours", tier).parent / "nearest_grids" / f"w_{w:g}.png"
        save_image_grid(torch.cat([x[:k], nearest]), path, nrow=k)  # top: samples; bottom: nearest by pixels
        pairs[str(w)] = f"nearest_grids/{path.name}"
    first = by_w[str(s.nn_w[0])]
    data = {
        "n": n,
        "w": s.nn_w,
        "by_w": by_w,
        "baseline_test": baseline,
        "grids": pairs,
        "lpips_mean": first["lpips_mean"],
        "lpips_baseline_mean": baseline["lpips_mean"],
        "pixel_l2_mean": first["pixel_l2_mean"],
        "pixel_l2_baseline_mean": baseline["pixel_l2_mean"],
        "lpips_net": "alex",
        "lpips_size": 32,
        "candidates": 50,
    }
    return save_result(
        CHAPTER,
        "nearest_neighbours",
        data,
        {"train": config(tier).to_dict(), "sampling": s.as_config()},
        tier,
        time.perf_counter() - t0,
    )


def _interpolation(tier: str, progress: bool, cache: Any = None):
    """Rows of images decoded by deterministic DDIM from starting noises on the great circle between two
    draws of x_T (``diffusion_edu.guidance.interpolate``), one class per row; plus the norms that show
    why the circle and not the straight line."""
    from ..guidance import interpolate, slerp
    from ..viz import save_image_grid

    check_cifar_tier(tier)
    t0 = time.perf_counter()
    s = BUDGETS[tier]
    model, schedule = _model(tier, progress, "interpolation")
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(3)
    steps = s.steps or 100  # interpolation needs DDIM (eta = 0); at the gpu tier 100 steps
    rows, norms = [], []
    for r in range(s.interp_rows):
        a, b = (torch.randn(3, 32, 32, generator=gen) for _ in range(2))
        label = INTERP_CLASSES[r % len(INTERP_CLASSES)]
        rows.append(interpolate(model, schedule, a.to(dev), b.to(dev), s.interp_points, steps=steps, y=label).cpu())
        mid_lerp, mid_slerp = (a + b) / 2, slerp(a, b, 0.5)
        norms.append(
            {
                "a": float(a.norm()),
                "b": float(b.norm()),
                "lerp_mid": float(mid_lerp.norm()),
                "slerp_mid": float(mid_slerp.norm()),
                "label": label,
            }
        )
    again = interpolate(model, schedule, a.to(dev), b.to(dev), s.interp_points, steps=steps, y=label).cpu()
    path = result_path(CHAPTER, "interpolation", tier).parent / "interpolation.png"
    save_image_grid(torch.cat(rows), path, nrow=s.interp_points)
    data = {
        "rows": len(rows),
        "points": s.interp_points,
        "ddim_steps": steps,
        "classes": [n["label"] for n in norms],
        "norms": norms,
        "sqrt_d": 3072**0.5,
        "repeat_max_abs_diff": float((again - rows[-1]).abs().max()),
        "grid": path.name,
    }
    return save_result(
        CHAPTER,
        "interpolation",
        data,
        {"train": config(tier).to_dict(), "sampling": s.as_config()},
        tier,
        time.perf_counter() - t0,
    )


PARTS: dict[str, Part] = chapter_parts(
    CHAPTER,
    Part("costs", "count FLOPs of the improved U-Net; estimate the colab tier on a T4 and 1M steps on a GPU", _costs),
    Part(
        "training", "train the class-conditional improved U-Net with 10% label dropout, grids at several steps", _train
    ),
    Part(
        "guidance",
        "guided samples for a sweep of w: grids, and Inception IS / FID online",
        _guidance,
        needs=["training"],
    ),
    Part(
        "nearest_neighbours",
        "nearest training images of 100 samples and of 100 test images (LPIPS online, pixel L2 always)",
        _nearest,
        needs=["training"],
    ),
    Part(
        "interpolation",
        "deterministic DDIM from noises on a great circle between two x_T",
        _interpolation,
        needs=["training"],
    ),
)
