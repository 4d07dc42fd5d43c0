"""One training step of the same U-Net in each library, as that library's users would write it.

Every step does the same work: draw a batch of images already on the device, draw t and eps, form
x_t (Ho et al. Eq. 4), predict eps, MSE loss, backward, clip the gradient norm to 1, Adam (lr 2e-4),
EMA of the weights (decay 0.9999, updated every step), in the precision and memory layout of
``mode`` (bf16 autocast, channels-last, ``torch.compile`` of the network on CUDA by default).

- diffusion_edu: ``TrainingRun.train_step()`` of the package's training engine (what ``train`` runs).
- diffusers: the loop of its ``train_unconditional.py`` example: ``DDPMScheduler.add_noise``,
  ``UNet2DModel(...).sample``, ``diffusers.training_utils.EMAModel`` (``foreach=True``).
- lucidrains: ``GaussianDiffusion(unet)(x0)`` returns the loss, as its ``Trainer`` calls it, with
  ``ema_pytorch.EMA`` (``update_every=1``, ``use_foreach=True``; its Trainer defaults to every 10 steps).

Nothing is augmented (no flips) and nothing is conditional: data loading and labels are not what
this compares. The peers are imported only inside their builders.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from diffusion_edu.data import ImageDataset, load_cifar10, load_dataset, write_fake_cifar10
from diffusion_edu.presets import TrainConfig
from diffusion_edu.training import TrainingRun

from .configs import diffusers_unet_kwargs, lucidrains_unet_kwargs

__all__ = ["StepBench", "load_data", "build_step", "autocast", "attention_diagnostic"]

LR, CLIP, EMA_DECAY, T = 2e-4, 1.0, 0.9999, 1000


@dataclass
class StepBench:
    """A library's training step, ready to time: ``step()`` runs one optimisation step; ``forward(x, t)``
    is the eager network call used to count FLOPs; ``network`` describes what was built."""

    step: Callable[[], Any]
    model: torch.nn.Module
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    network: dict[str, Any]


def autocast(device: torch.device, mode: dict[str, Any]):
    """bf16 autocast on ``device`` when ``mode['precision'] == 'bf16'``, else nothing."""
    if mode["precision"] == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_data(kw: dict[str, Any]) -> ImageDataset:
    """Images for the network ``kw``: the embedded MNIST digits for 1-channel 28x28 networks, else
    fake CIFAR-format images (CIFAR-10 cannot be downloaded offline; throughput does not depend on them)."""
    if (kw["in_channels"], kw["image_size"]) == (1, 28):
        return load_dataset("mnist-embedded", "train")
    if (kw["in_channels"], kw["image_size"]) == (3, 32):
        root = tempfile.mkdtemp(prefix="bench_peers_cifar_")
        write_fake_cifar10(root, per_batch=64)
        return load_cifar10(True, root, download=False, check_integrity=False)
    raise ValueError(f"no benchmark data for {kw['in_channels']}-channel {kw['image_size']}px images")


def _batcher(data: ImageDataset, batch: int, device: torch.device, channels_last: bool) -> Callable[[], torch.Tensor]:
    images = data.images.to(device)  # uint8 (N, C, H, W) on the device, as the package's engine keeps them
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def next_batch() -> torch.Tensor:
        idx = torch.randint(0, images.shape[0], (batch,), device=device)
        return (images[idx].float() / 127.5 - 1.0).contiguous(memory_format=fmt)  # (B, C, H, W) in [-1, 1]

    return next_batch


def _package(preset: str, kw: dict, data: ImageDataset, batch: int, device: torch.device, mode: dict) -> StepBench:
    overrides = {k: v for k, v in kw.items() if k != "name"}
    cfg = TrainConfig(
        dataset="mnist-embedded" if data.name.startswith("mnist") else "cifar10",
        model=preset,
        model_kwargs=overrides,
        schedule="linear",
        T=T,
        parameterization="eps",
        loss="l2",
        optimizer="adam",
        lr=LR,
        grad_clip=CLIP,
        ema_decay=EMA_DECAY,
        batch_size=batch,
        steps=10**9,
        log_every=10**9,
        checkpoint_every=0,
        sample_every=0,
        callback_every=0,
        device=str(device),
        precision=mode["precision"],
        channels_last=mode["channels_last"],
        compile=mode["compile"],
    )
    run = TrainingRun(cfg, device, dataset=data)
    net = run.model
    return StepBench(
        run.train_step,
        net,
        lambda x, t: net(x, t + 1),
        {"class": "diffusion_edu.models.UNet", "kwargs": overrides, "step": "TrainingRun.train_step"},
    )


def _diffusers(kw: dict, data: ImageDataset, batch: int, device: torch.device, mode: dict) -> StepBench:
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    dkw = diffusers_unet_kwargs(kw)
    torch.manual_seed(0)
    net = UNet2DModel(**dkw).to(device)
    if mode["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if mode["compile"] else net
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    ema = EMAModel(net.parameters(), decay=EMA_DECAY, foreach=True)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    next_batch = _batcher(data, batch, device, mode["channels_last"])
    net.train()

    def step() -> torch.Tensor:
        x0 = next_batch()
        noise = torch.randn_like(x0)
        t = torch.randint(0, T, (x0.shape[0],), device=device)
        xt = scheduler.add_noise(x0, noise, t)
        with autocast(device, mode):
            pred = fwd(xt, t).sample
        loss = F.mse_loss(pred.float(), noise.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
        ema.step(net.parameters())
        return loss.detach()

    return StepBench(
        step,
        net,
        lambda x, t: net(x, t).sample,
        {"class": "diffusers.UNet2DModel", "kwargs": dkw, "step": "train_unconditional.py loop"},
    )


def _lucidrains(
    preset: str, kw: dict, data: ImageDataset, batch: int, device: torch.device, mode: dict, default: bool
) -> StepBench:
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    lkw = lucidrains_unet_kwargs(preset, kw, default=default)
    torch.manual_seed(0)
    unet = Unet(**lkw)
    diffusion = GaussianDiffusion(
        unet,
        image_size=kw["image_size"],
        timesteps=T,
        objective="pred_noise",
        beta_schedule="linear",
        auto_normalize=False,
    ).to(device)
    if mode["channels_last"]:
        diffusion = diffusion.to(memory_format=torch.channels_last)
    ema = EMA(diffusion, beta=EMA_DECAY, update_after_step=0, update_every=1, use_foreach=True).to(device)
    if mode["compile"]:
        diffusion.model = torch.compile(unet)
    opt = torch.optim.Adam(diffusion.parameters(), lr=LR)
    next_batch = _batcher(data, batch, device, mode["channels_last"])
    diffusion.train()

    def step() -> torch.Tensor:
        x0 = next_batch()
        with autocast(device, mode):
            loss = diffusion(x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), CLIP)
        opt.step()
        ema.update()
        return loss.detach()

    return StepBench(
        step,
        unet,
        lambda x, t: unet(x, t),
        {
            "class": "denoising_diffusion_pytorch.Unet",
            "kwargs": lkw,
            "step": "GaussianDiffusion.forward (its Trainer's step)",
            "library_default": default,
        },
    )


def build_step(
    library: str,
    preset: str,
    kw: dict[str, Any],
    data: ImageDataset,
    batch: int,
    device: torch.device,
    mode: dict[str, Any],
) -> StepBench:
    """The training step of ``library`` (diffusion_edu | diffusers | lucidrains | lucidrains_default)."""
    if library == "diffusion_edu":
        return _package(preset, kw, data, batch, device, mode)
    if library == "diffusers":
        return _diffusers(kw, data, batch, device, mode)
    if library in ("lucidrains", "lucidrains_default"):
        return _lucidrains(preset, kw, data, batch, device, mode, default=library == "lucidrains_default")
    raise ValueError(f"library must be diffusion_edu, diffusers, lucidrains or lucidrains_default, got {library!r}")


def attention_diagnostic(
    device: torch.device, mode: dict[str, Any], batch: int, channels: int = 256, size: int = 16, repeats: int = 5
) -> dict[str, Any]:
    """Which scaled-dot-product-attention kernel the package's attention block (the CIFAR-10 preset's
    16x16 layer) reaches, and its forward + backward time as it is and with q, k, v made contiguous.

    The fused kernels want the head dimension contiguous in memory; ``AttentionBlock`` hands SDPA
    transposed views, which can send it to the unfused math kernel. This records what happens here.
    """
    import time

    from torch.profiler import ProfilerActivity, profile

    from diffusion_edu.models.unet_blocks import AttentionBlock

    from .flops import sync

    block = AttentionBlock(channels, 1, 32).to(device)
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)

    def contiguous_variant() -> torch.Tensor:  # the block's forward with contiguous q, k, v
        B, C, H, W = x.shape
        qkv = block.qkv(block.norm(x)).reshape(B, 3, 1, C, H * W)  # (B, 3, heads, d, HW)
        q, k, v = (u.contiguous() for u in qkv.transpose(-1, -2).unbind(1))  # each (B, heads, HW, d)
        h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(B, C, H, W)
        return x + block.proj(h)

    def timed(fn) -> float:
        times = []
        for _ in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            with autocast(device, mode):
                out = fn()
            out.float().sum().backward()
            sync(device)
            times.append(time.perf_counter() - start)
        return sorted(times[1:])[len(times[1:]) // 2]  # median after one warm-up

    kernels = {}
    for name, fn in (("as_is", lambda: block(x)), ("contiguous_qkv", contiguous_variant)):
        with profile(activities=[ProfilerActivity.CPU]) as prof, autocast(device, mode):
            fn().float().sum().backward()
        kernels[name] = sorted(
            {
                e.key
                for e in prof.key_averages()
                if "scaled_dot_product" in e.key and e.key != "aten::scaled_dot_product_attention"
            }
        )
    return {
        "channels": channels,
        "size": size,
        "batch": batch,
        "kernels": kernels,
        "fwd_bwd_s": {"as_is": timed(lambda: block(x)), "contiguous_qkv": timed(contiguous_variant)},
    }
