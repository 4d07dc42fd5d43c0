"""The peers' side of the ten-minute comparison: each library's class-conditional U-Net, trained for the
same wall-clock minutes on the same digits with that library's documented loop and defaults, then sampled
with its own scheduler and scored by the book's evaluation kit (the same classifier, the same held-out digits).

``bench_ten_minutes.py --peers`` trains the package's recipe first and then each peer for the same minutes,
one after the other in one process, with the same torch threads: the side by side of the issue "Ten CPU
minutes". What each peer runs (:data:`PEER_RECIPES`):

- diffusers: the loop of its ``examples/unconditional_image_generation/train_unconditional.py``
  (``DDPMScheduler`` with linear betas over 1,000 steps and epsilon prediction; ``AdamW`` at 1e-4 with
  betas (0.95, 0.999), weight decay 1e-6 and eps 1e-8; ``get_scheduler("cosine")`` with 500 warm-up steps;
  ``EMAModel`` with warm-up, inverse gamma 1, power 3/4, decay at most 0.9999; the gradient norm clipped
  to 1), made class-conditional the way ``UNet2DModel`` offers (``num_class_embeds=10``, labels passed as
  ``class_labels``; it has no null label, so no guidance), sampled as that script's ``DDPMPipeline`` samples:
  with the ``DDPMScheduler`` it trained with (ancestral steps, its ``clip_sample`` on), respaced by
  ``set_timesteps`` to ``sample_steps`` steps, the package's count. (``DPMSolverMultistepScheduler`` was tried
  first: without thresholding, the data predictions of a network trained this briefly threw its samples two
  orders of magnitude outside [-1, 1], and with thresholding it still scored far worse than these ancestral
  steps, so it would have measured the solver on an unfinished network rather than the library.)
- denoising-diffusion-pytorch (lucidrains): its ``classifier_free_guidance`` module as its example
  uses it (``Unet(..., num_classes=10, cond_drop_prob=0.5)``, ``GaussianDiffusion`` with its defaults:
  cosine betas, noise prediction, DDIM on ``sampling_timesteps`` steps with eta 1), trained as its
  ``Trainer`` does (Adam at 1e-4 with betas (0.9, 0.99), the gradient norm clipped to 1,
  ``ema_pytorch.EMA`` with decay 0.995 updated every 10 steps), sampled from the EMA network with the
  guidance its example uses (``cond_scale=6``, ``rescaled_phi=0.7``). ``cond_scale=1`` (no guidance)
  cannot be asked of version 2.3.4: ``forward_with_cond_scale`` then returns one tensor where
  ``model_predictions`` unpacks two.

Both networks are sized to the package's ``quick_mnist`` network (``small_unet_mnist``, about 160k
parameters) as far as each layout allows; the results file records each one's parameters and images per
second. The batch is the package recipe's for all three (32), so a step means the same images.
Nothing here runs without the peers installed (``make bench-peers`` puts them in ``benchmarks/.venv``);
:func:`budget_steps` and :func:`side_by_side` are plain arithmetic, tested without them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["PEER_RECIPES", "PROBE_STEPS", "budget_steps", "side_by_side", "peers_available", "run_peer"]

PROBE_STEPS = 30  # steps timed before a run fixes its length, as the package's `train --minutes` does

PEER_RECIPES: dict[str, dict[str, Any]] = {
    "diffusers": {
        "distribution": "diffusers",
        "network": "diffusers.UNet2DModel",
        # no attention, one ResNet block per level, 28 -> 14 -> 7 like the package's small U-Net:
        # 156k parameters against the package's 160k (counted in the results file)
        "kwargs": {
            "sample_size": 28,
            "in_channels": 1,
            "out_channels": 1,
            "block_out_channels": (8, 16, 32),
            "layers_per_block": 1,
            "down_block_types": ("DownBlock2D", "DownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "UpBlock2D", "UpBlock2D"),
            "add_attention": False,
            # 4 channels per group at the first level, as diffusers' default (32 groups) has at its 128.
            # (8 groups, one channel each there, normalised away each channel's mean: on a 3-minute probe at
            # lr 1e-3 it drew digits on grey backgrounds of random brightness, FID about twice that of 2 groups)
            "norm_num_groups": 2,
            "num_class_embeds": 10,
        },
        "optimizer": {"lr": 1e-4, "betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8},
        "lr_warmup_steps": 500,
        "ema": {"decay": 0.9999, "use_ema_warmup": True, "inv_gamma": 1.0, "power": 0.75},
        "grad_clip": 1.0,
        "loop": "examples/unconditional_image_generation/train_unconditional.py, with class labels",
        "sampler": "DDPMScheduler (clip_sample on), respaced with set_timesteps, no guidance",
    },
    "lucidrains": {
        "distribution": "denoising-diffusion-pytorch",
        "network": "denoising_diffusion_pytorch.classifier_free_guidance.Unet",
        # its fixed layout (two ResNet blocks and linear attention per level, full attention in the middle)
        # at its smallest width that keeps 28 -> 14 -> 7: 138k parameters
        "kwargs": {"dim": 8, "dim_mults": (1, 2, 2), "channels": 1, "num_classes": 10, "cond_drop_prob": 0.5},
        "diffusion": {"image_size": 28, "timesteps": 1000},
        "optimizer": {"lr": 1e-4, "betas": (0.9, 0.99)},
        "ema": {"beta": 0.995, "update_every": 10},
        "grad_clip": 1.0,
        "guidance": {"cond_scale": 6.0, "rescaled_phi": 0.7},
        "loop": "classifier_free_guidance example + Trainer defaults",
        "sampler": "GaussianDiffusion.sample (DDIM, eta 1) with cond_scale 6, rescaled_phi 0.7",
    },
}


def budget_steps(probe_steps: int, probe_seconds: float, minutes: float, spent_seconds: float) -> int:
    """The total steps of a run whose first ``probe_steps`` took ``probe_seconds`` and which has used
    ``spent_seconds`` of its ``minutes`` so far: the probe plus as many steps as the rest of the budget
    holds at the probe's rate (at least the probe itself)."""
    if probe_steps < 1 or probe_seconds <= 0:
        raise ValueError(f"need probe_steps >= 1 and probe_seconds > 0, got {probe_steps} and {probe_seconds}")
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    left = max(0.0, 60 * minutes - spent_seconds)
    return probe_steps + math.floor(left * probe_steps / probe_seconds)


def side_by_side(package: dict[str, Any], peer: dict[str, Any]) -> dict[str, str]:
    """The package against one peer, metric by metric, from the 95% intervals both records hold: "ahead"
    or "behind" when the intervals are disjoint, else "inconclusive" (FID lower is better; conditional
    accuracy and precision higher; sampling seconds, one measurement each, lower)."""
    from diffusion_edu.intervals import interval_from

    out: dict[str, str] = {}
    for key, higher in (("fid", False), ("conditional_accuracy", True), ("precision", True), ("recall", True)):
        a, b = interval_from(package.get(f"{key}_interval")), interval_from(peer.get(f"{key}_interval"))
        if a is None or b is None:
            continue
        if a.overlaps(b):
            out[key] = "inconclusive"
        else:
            out[key] = "ahead" if (a.estimate > b.estimate) == higher else "behind"
    if "sample_seconds" in package and "sample_seconds" in peer:
        out["sample_seconds"] = "ahead" if package["sample_seconds"] < peer["sample_seconds"] else "behind"
    return out


def peers_available() -> dict[str, str | None]:
    """Each peer's installed version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name, recipe in PEER_RECIPES.items():
        try:
            out[name] = version(recipe["distribution"])
        except PackageNotFoundError:
            out[name] = None
    return out


def _batcher(images: torch.Tensor, labels: torch.Tensor, batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, images.shape[0], (batch,), generator=gen)
        return images[idx], labels[idx]  # images in [-1, 1]

    return next_batch


def _timed_loop(step: Callable[[int], float], minutes: float, on_length: Callable[[int], None], progress: bool):
    """Run ``step(i)`` for the probe, fix the run's length (``on_length(total)``), then run the rest.
    Returns (steps, wall seconds, training steps per second, the losses of every step)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    losses = [step(i) for i in range(PROBE_STEPS)]
    probe_s = time.perf_counter() - t0
    total = budget_steps(PROBE_STEPS, probe_s, minutes, probe_s)
    on_length(total)
    for i in tqdm(range(PROBE_STEPS, total), disable=not progress, desc="peer training", leave=False):
        losses.append(step(i))
    wall = time.perf_counter() - t0
    return total, wall, total / wall, losses


def _diffusers(recipe, data, minutes, batch, seed, progress):
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    model = UNet2DModel(**recipe["kwargs"])
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    opt = torch.optim.AdamW(model.parameters(), **recipe["optimizer"])
    warm = recipe["lr_warmup_steps"]
    sched = [get_scheduler("cosine", opt, num_warmup_steps=warm, num_training_steps=10**9)]  # the probe's
    ema = EMAModel(model.parameters(), model_cls=UNet2DModel, model_config=model.config, **recipe["ema"])
    next_batch = _batcher(*data, batch, seed)

    def step(i: int) -> float:
        x0, y = next_batch()
        noise = torch.randn_like(x0)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],))
        xt = noise_scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(model(xt, t, class_labels=y).sample.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
        opt.step()
        sched[0].step()
        opt.zero_grad()
        ema.step(model.parameters())
        return float(loss.detach())

    def fix_length(total: int) -> None:  # the cosine now ends with the budget; catch up the probe's steps
        sched[0] = get_scheduler("cosine", opt, num_warmup_steps=warm, num_training_steps=total)
        for _ in range(PROBE_STEPS):
            sched[0].step()

    steps, wall, rate, losses = _timed_loop(step, minutes, fix_length, progress)
    net = copy.deepcopy(model).eval()
    ema.copy_to(net.parameters())

    @torch.no_grad()
    def draw(labels: torch.Tensor, sample_steps: int, gen: torch.Generator) -> torch.Tensor:
        sampler = DDPMScheduler.from_config(noise_scheduler.config)  # a fresh copy: set_timesteps changes it
        sampler.set_timesteps(sample_steps)
        x = torch.randn(labels.shape[0], 1, 28, 28, generator=gen) * sampler.init_noise_sigma
        for t in sampler.timesteps:
            x = sampler.step(net(x, t, class_labels=labels).sample, t, x, generator=gen).prev_sample
        return x.clamp(-1, 1)

    return net, draw, steps, wall, rate, losses


def _lucidrains(recipe, data, minutes, batch, seed, progress):
    from denoising_diffusion_pytorch.classifier_free_guidance import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    torch.manual_seed(seed)
    model = Unet(**recipe["kwargs"])
    diffusion = GaussianDiffusion(model, **recipe["diffusion"])
    opt = torch.optim.Adam(diffusion.parameters(), **recipe["optimizer"])
    ema = EMA(diffusion, **recipe["ema"])
    next_batch = _batcher(*data, batch, seed)

    def step(i: int) -> float:
        x0, y = next_batch()
        loss = diffusion((x0 + 1) / 2, classes=y)  # it takes images in [0, 1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), recipe["grad_clip"])
        opt.step()
        opt.zero_grad()
        ema.update()
        return float(loss.detach())

    steps, wall, rate, losses = _timed_loop(step, minutes, lambda total: None, progress)
    net = ema.ema_model.eval()

    @torch.no_grad()
    def draw(labels: torch.Tensor, sample_steps: int, gen: torch.Generator) -> torch.Tensor:
        net.sampling_timesteps = sample_steps
        net.is_ddim_sampling = sample_steps < net.num_timesteps
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))  # it draws from the global RNG
        return (2 * net.sample(classes=labels, **recipe["guidance"]) - 1).clamp(-1, 1)

    return net.model, draw, steps, wall, rate, losses


_BUILDERS = {"diffusers": _diffusers, "lucidrains": _lucidrains}


def run_peer(
    name: str,
    minutes: float,
    n: int,
    *,
    sample_steps: int,
    batch: int = 32,
    seed: int = 0,
    subset: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train peer ``name`` for ``minutes`` on the embedded training digits, draw ``n`` class-balanced samples
    (labels 0..9 in turn) on ``sample_steps`` steps of its own scheduler, timed, and measure them with the
    book's kit. Returns the record the benchmark stores (metrics with their intervals)."""
    from diffusion_edu.data import load_embedded_mnist
    from diffusion_edu.experiments.common import measure
    from diffusion_edu.generate import class_labels

    if name not in _BUILDERS:
        raise ValueError(f"peer must be one of {list(_BUILDERS)}, got {name!r}")
    if peers_available()[name] is None:
        raise ModuleNotFoundError(
            f"{PEER_RECIPES[name]['distribution']} is not installed: `make bench-peers` installs the peers into "
            "benchmarks/.venv; run the benchmark with benchmarks/.venv/bin/python"
        )
    recipe = PEER_RECIPES[name]
    images, labels = load_embedded_mnist("train").tensors()
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    net, draw, steps, wall, rate, losses = _BUILDERS[name](recipe, (images, labels), minutes, batch, seed, progress)
    want = class_labels(n)
    gen = torch.Generator().manual_seed(seed)
    draw(want[:10], sample_steps, torch.Generator().manual_seed(seed))  # warm-up, as for the package
    t0 = time.perf_counter()
    out = torch.cat([draw(want[i : i + 500], sample_steps, gen) for i in range(0, n, 500)])
    sample_seconds = time.perf_counter() - t0
    metrics = measure(out, want, generator=torch.Generator().manual_seed(seed))
    calls = sample_steps * (2 if name == "lucidrains" else 1)  # guidance: a conditional and a null call per step
    return {
        "library": name,
        "version": peers_available()[name],
        "network": recipe["network"],
        "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe["kwargs"].items()},
        "params": sum(p.numel() for p in net.parameters()),
        "loop": recipe["loop"],
        "sampler": {"what": recipe["sampler"], "steps": sample_steps, "network_calls_per_sample": calls, "n": n},
        "batch": batch,
        "steps": steps,
        "train_wall_time_s": wall,
        "img_per_s": rate * batch,
        "final_loss_mean_last_50": sum(losses[-50:]) / len(losses[-50:]),
        "sample_seconds": sample_seconds,
        "metrics": metrics,
        "images": out,  # the caller saves a grid and drops this before writing
    }
