"""DDIM with 50 steps, one network, three loops: the package's sampler, diffusers' ``DDIMScheduler``
loop and lucidrains' ``GaussianDiffusion.ddim_sample``, each timed against the bare network.

All three drive the *same* network object (the package's U-Net, trained or freshly initialised: the
time does not depend on the weights). The peers number time steps from 0 and the package from 1, so
they call it through :class:`PeerAdapter`, which adds 1 to t (one tiny integer add per step).
Every loop clips the predicted x_0 to [-1, 1] and uses eta = 0. The bare network time is 50 calls
of the network on the same batch, with no sampler around it: a loop's overhead is its time over that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from diffusion_edu import make_schedule, sample

from .flops import sync
from .training import autocast

__all__ = ["PeerAdapter", "sampling_loops", "time_interleaved"]

STEPS, T = 50, 1000


class PeerAdapter(nn.Module):
    """The package's network called the peers' way: ``adapter(x, t, *_)`` with 0-based t is
    ``net(x, t + 1)``; carries the attributes lucidrains' GaussianDiffusion reads from its model."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.channels = self.out_dim = net.in_channels
        self.self_condition = False
        self.random_or_learned_sinusoidal_cond = False

    def forward(self, x: torch.Tensor, t: torch.Tensor, *_: Any) -> torch.Tensor:
        return self.net(x, t + 1)


def sampling_loops(
    net: nn.Module, n: int, device: torch.device, mode: dict[str, Any], libraries: list[str]
) -> dict[str, Callable[[], torch.Tensor]]:
    """name -> a function that draws n images with DDIM-50 (``bare``: 50 network calls, no sampler)."""
    net = net.to(device).eval()
    if mode["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    C, S = net.in_channels, net.image_size
    schedule = make_schedule("linear", T)
    fmt = torch.channels_last if mode["channels_last"] else torch.contiguous_format
    x_fixed = torch.randn(n, C, S, S, device=device).contiguous(memory_format=fmt)
    times = [int(t) for t in torch.linspace(T, 1, STEPS).round().long()]

    def bare() -> torch.Tensor:
        with torch.no_grad(), autocast(device, mode):
            for t in times:
                out = net(x_fixed, torch.full((n,), t, device=device, dtype=torch.int64))
        return out

    def package() -> torch.Tensor:
        x_T = torch.randn(n, C, S, S, device=device).contiguous(memory_format=fmt)
        with autocast(device, mode):
            return sample(net, schedule, n, method="ddim", steps=STEPS, eta=0.0, x_T=x_T)

    loops: dict[str, Callable[[], torch.Tensor]] = {"bare": bare}
    if "diffusion_edu" in libraries:
        loops["diffusion_edu"] = package
    adapter = PeerAdapter(net).eval()
    if "diffusers" in libraries:
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler(
            num_train_timesteps=T,
            beta_schedule="linear",
            beta_start=1e-4,
            beta_end=0.02,
            clip_sample=True,
            set_alpha_to_one=True,
            prediction_type="epsilon",
        )

        def diffusers_loop() -> torch.Tensor:  # DDIMPipeline.__call__, with the model call made directly
            x = torch.randn(n, C, S, S, device=device).contiguous(memory_format=fmt)
            scheduler.set_timesteps(STEPS)
            with torch.no_grad(), autocast(device, mode):
                for t in scheduler.timesteps:
                    eps = adapter(x, torch.full((n,), int(t), device=device, dtype=torch.int64))
                    x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            return x

        loops["diffusers"] = diffusers_loop
    if "lucidrains" in libraries:
        from denoising_diffusion_pytorch import GaussianDiffusion

        diffusion = (
            GaussianDiffusion(
                adapter,
                image_size=S,
                timesteps=T,
                sampling_timesteps=STEPS,
                objective="pred_noise",
                beta_schedule="linear",
                ddim_sampling_eta=0.0,
                auto_normalize=False,
            )
            .to(device)
            .eval()
        )

        def lucidrains_loop() -> torch.Tensor:
            with autocast(device, mode):
                return diffusion.ddim_sample((n, C, S, S))

        loops["lucidrains"] = lucidrains_loop
    return loops


def time_interleaved(
    loops: dict[str, Callable[[], torch.Tensor]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each loop per repeat, run interleaved (the order rotates every repeat) after one
    untimed warm-up run each, so that a change in the machine's load hits every loop alike."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(loops)
    for name in names:
        loops[name]()
    sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            start = time.perf_counter()
            loops[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds
