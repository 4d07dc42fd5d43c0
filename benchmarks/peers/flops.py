"""FLOPs of a training step, counted by PyTorch rather than estimated, and the timing helpers.

``torch.utils.flop_counter.FlopCounterMode`` intercepts every operator dispatched while it is active
and adds up the FLOPs of the ones with a known formula: matrix products, convolutions (forward and
each gradient that autograd actually computes) and scaled dot-product attention. Element-wise work
(norms, activations, the optimizer) is not counted; that is the usual convention for model FLOPs.

The counter has formulas for the CUDA attention kernels but not for PyTorch's fused CPU attention
kernel, so a network using ``scaled_dot_product_attention`` would be under-counted on a CPU. The
counting pass therefore runs with the math backend of SDPA (the same attention as plain matrix
products): the counted FLOPs are the model's, whichever kernel the timed steps use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "train_flops_per_image", "sync", "timed_windows"]


def count_flops(fn: Callable[[], object]) -> int:
    """The FLOPs PyTorch counts while ``fn()`` runs (multiply and add counted as 2; attention through the
    math backend of scaled_dot_product_attention, so that it is counted on every device)."""
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def train_flops_per_image(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: torch.nn.Module,
    shape: tuple[int, int, int],
    batch: int = 2,
    T: int = 1000,
    device: torch.device | str = "cpu",
) -> float:
    """Counted FLOPs of forward + MSE loss + backward for one image (the count for ``batch`` images / batch).

    forward(x, t) -> prediction: the library's own call of its network (eager, not compiled);
    shape: (C, H, W). Gradients are computed for every parameter (as in training) but not for the
    input images. The model's gradients are cleared afterwards.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g).to(device)
    t = torch.randint(0, T, (batch,), generator=g).to(device)
    target = torch.randn(batch, *shape, generator=g).to(device)

    def step():
        loss = torch.nn.functional.mse_loss(forward(x, t).float(), target)
        loss.backward()

    flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops / batch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_windows(
    step: Callable[[], object], windows: int, window_s: float, device: torch.device
) -> tuple[list[float], list[float]]:
    """Run ``step`` in ``windows`` windows of at least ``window_s`` seconds each (whole steps, at least one);
    return the steps per wall-clock second and per second of process CPU time of each window."""
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    rates, cpu_rates = [], []
    for _ in range(windows):
        sync(device)
        start, cpu_start, n = time.perf_counter(), time.process_time(), 0
        while True:
            step()
            n += 1
            sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= window_s:
                break
        rates.append(n / elapsed)
        cpu_rates.append(n / max(time.process_time() - cpu_start, 1e-9))
    return rates, cpu_rates
