"""How long the MNIST chapters take at the colab tier on Colab's free T4: an estimate, from the book's
own benchmark results files, until a Colab run measures it.

The colab tier of chapters 2-5 is sized so that a chapter finishes in about 30 minutes on a T4. No T4
has run them yet, so the time each chapter states is **estimated**, in code, from two committed
measurements:

- the T4's FLOP rate for the package's networks, as chapter 6 estimates it: its fp32 datasheet peak
  (:data:`~.cifar.ACCELERATORS` ``t4``; conservative, since the T4 trains in fp16 here) times the
  utilisation a published Turing-GPU run of Ho et al.'s U-Net reached (:data:`~.cifar.CENTRAL`);
- a fixed cost per training step that small networks cannot go below (kernel launches, the
  optimizer's and EMA's per-parameter updates, Python): the package's MNIST U-Net measured on an H100
  (``results/benchmarks/peers_cuda.json``, 128 images a step), whose arithmetic takes a negligible part
  of its step. That GPU ran with ``torch.compile``, which the colab tier does not use, and a T4 host's
  CPU is slower: the real cost per step is likely higher, so the estimate is a lower bound on time
  plus the arithmetic. A sampling step (forward pass only) is taken to cost a third of a training
  step (forward, backward about twice the forward, no optimizer), an assumption stated here.

``chapter_estimate(chapter)`` adds the training runs and the sampling the chapter's colab budgets ask
for; each chapter's page shows it, labelled as an estimate, next to the measured wall times once a
colab-tier results file exists.
"""

from __future__ import annotations

import functools
from typing import Any

from ..presets import TrainConfig
from ..results import read_results, results_dir

__all__ = [
    "T4_MINUTES",
    "step_overhead_s",
    "t4_flop_rate",
    "train_step_s",
    "forward_s",
    "training_estimate",
    "chapter_estimate",
    "describe",
]

T4_MINUTES = 30  # what a chapter's colab tier may take on a free T4, all parts together
SOURCE = "benchmarks/peers_cuda.json"


@functools.cache
def _peers() -> dict[str, Any]:
    return read_results(results_dir() / SOURCE)["data"]["mfu"]


def step_overhead_s() -> float:
    """Seconds per training step of the package's MNIST U-Net on the GPU of ``peers_cuda.json``
    (measured; taken as the fixed cost of a small network's step on any CUDA GPU)."""
    return 1.0 / float(_peers()["unet_mnist"]["libraries"]["diffusion_edu"]["steps_per_s"])


@functools.cache
def t4_flop_rate() -> float:
    """The T4's estimated FLOP/s for the package's networks, as chapter 6 estimates it: the T4's fp32
    peak (:data:`~.cifar.ACCELERATORS`; conservative, since the colab tier trains in fp16 there) times
    the utilisation :data:`~.cifar.CENTRAL` reached (a published run of Ho et al.'s U-Net on a Turing GPU
    in fp32, its speed times the FLOPs counted here)."""
    from .cifar import ACCELERATORS, CENTRAL, MEASURED_RUNS

    run = MEASURED_RUNS[CENTRAL]
    train, forward = _network_flops("unet_cifar10", "{}")
    achieved = run["images_per_s"] * (train if run["kind"] == "train" else forward)
    return ACCELERATORS["t4"].peak_flops * achieved / ACCELERATORS[run["device"]].peak_flops


@functools.cache
def _network_flops(model: str, kwargs: str) -> tuple[float, float]:
    """(training FLOPs, forward FLOPs) per image of a network, counted on the meta device."""
    import json

    import torch

    from ..builders import build_network
    from .cifar import count_flops

    with torch.device("meta"):
        net: Any = build_network(TrainConfig(model=model, model_kwargs=json.loads(kwargs))).train()
        x = torch.zeros(1, net.in_channels, net.image_size, net.image_size)
        t = torch.ones(1, dtype=torch.int64)
        y = torch.zeros(1, dtype=torch.int64) if getattr(net, "num_classes", None) else None
    forward = count_flops(lambda: net(x, t, y))
    train = count_flops(lambda: net(x, t, y).float().square().mean().backward())
    return float(train), float(forward)


def _flops(config: TrainConfig) -> tuple[float, float, float]:
    import json

    return (*_network_flops(config.model, json.dumps(config.model_kwargs, sort_keys=True)), t4_flop_rate())


def train_step_s(config: TrainConfig) -> float:
    """Estimated seconds per training step on a T4: the fixed cost plus the batch's arithmetic."""
    train, _, rate = _flops(config)
    return step_overhead_s() + config.batch_size * train / rate


def forward_s(config: TrainConfig, batch: int) -> float:
    """Estimated seconds of one sampling step (a forward pass of ``batch`` images) on a T4."""
    _, forward, rate = _flops(config)
    return step_overhead_s() / 3 + batch * forward / rate


def training_estimate(configs: dict[str, TrainConfig]) -> dict[str, Any]:
    """Each run's estimated T4 minutes (steps x :func:`train_step_s`) and their sum."""
    runs = {
        name: {
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "s_per_step": train_step_s(cfg),
            "minutes": cfg.steps * train_step_s(cfg) / 60,
        }
        for name, cfg in configs.items()
    }
    return {"runs": runs, "minutes": sum(r["minutes"] for r in runs.values())}


def chapter_estimate(chapter: str) -> dict[str, Any]:
    """The colab tier of an MNIST chapter on a T4, estimated: training minutes per run, sampling minutes
    (network evaluations of the chapter's budgets, in batches), their total, and where the rates come from."""
    from importlib import import_module

    mod = import_module(f"diffusion_edu.experiments.{chapter}")
    if not hasattr(mod, "colab_plan"):
        raise ValueError(
            f"chapter {chapter!r} has no colab_plan(); chapters with one: report_a, report_d, report_e, measuring"
        )
    plan = mod.colab_plan()
    train = training_estimate(plan["train"])
    sampling = sum(forward_s(cfg, batch) * calls for cfg, batch, calls in plan["sampling"]) / 60
    return {
        "estimate": True,
        "device": "NVIDIA T4 (free Colab)",
        "training": train,
        "not_estimated": plan.get("not_estimated"),
        "sampling_minutes": sampling,
        "minutes": train["minutes"] + sampling,
        "budget_minutes": T4_MINUTES,
        "sources": {
            "step_overhead": f"results/{SOURCE} (measured, {step_overhead_s() * 1e3:.1f} ms a step)",
            "flop_rate": f"{t4_flop_rate() / 1e12:.1f} TFLOP/s (chapter 6's T4 estimate: its fp32 peak "
            "times a published Turing GPU run's utilisation)",
        },
    }


def describe(chapter: str) -> str:
    """One Markdown paragraph for a chapter's page: the colab tier's estimated T4 time, labelled as an
    estimate, with the measured wall time of a colab-tier training run when one has been recorded."""
    from .common import have_result, load_result

    e = chapter_estimate(chapter)
    runs = e["training"]["runs"]
    steps = sorted({r["steps"] for r in runs.values()})
    text = (
        f"**Colab tier (`DIFFUSION_EDU_TIER=colab`), on a free T4: about {e['minutes']:.0f} minutes, estimated** "
        f"(budget {T4_MINUTES}): training {len(runs)} network{'s' if len(runs) > 1 else ''} "
        f"({'/'.join(f'{s:,}' for s in steps)} steps) about {e['training']['minutes']:.0f} minutes, sampling "
        f"about {e['sampling_minutes']:.0f}. Not measured on a T4 yet: the estimate adds the fixed cost of a "
        f"training step of the package's MNIST U-Net, {e['sources']['step_overhead']}, to the arithmetic at "
        f"{e['sources']['flop_rate']}; see `diffusion_edu.experiments.colab` for its assumptions."
    )
    if e["not_estimated"]:
        text += f" Not in the estimate: {e['not_estimated']}."
    train_chapter = "report_e" if chapter == "measuring" else chapter
    if have_result(train_chapter, "training", "colab"):
        rec = load_result(train_chapter, "training", "colab")
        wall = sum(r["train_wall_time_s"] for r in rec["data"].values()) / 60
        text += (
            f" Measured at tier {rec['tier']}: training took {wall:.0f} minutes ({rec['hardware'].get('gpu', 'CPU')})."
        )
    return text
