"""Input checks shared by the package: each raises an error that names the argument and what was expected."""

from __future__ import annotations

import torch


def check_timesteps(
    t: torch.Tensor | int,
    T: int,
    batch: int | None = None,
    device: torch.device | str | None = None,
    allow_zero: bool = False,
    name: str = "t",
) -> torch.Tensor:
    """Return ``t`` as an int64 tensor of shape (batch,), checked to lie in 1..T (0..T if allow_zero).

    An int (or 0-d tensor) is broadcast to the batch. Floats are refused: t is a step index.
    """
    lo = 0 if allow_zero else 1
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an integer timestep or a tensor of them, got a bool")
    if isinstance(t, int):
        t = torch.tensor(t, dtype=torch.int64)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer timesteps, got dtype {t.dtype}")
    if t.dim() > 1:
        raise ValueError(f"{name} must be a scalar or a 1-d tensor of shape (B,), got shape {tuple(t.shape)}")
    if t.numel() and (t.min() < lo or t.max() > T):
        raise ValueError(
            f"{name} must lie in {lo}..T={T} (t is 1-based; t=0 is clean data); "
            f"got values in {int(t.min())}..{int(t.max())}"
        )
    t = t.to(dtype=torch.int64, device=device)
    if batch is not None:
        if t.dim() == 0:
            t = t.expand(batch)
        elif t.shape[0] != batch:
            raise ValueError(f"{name} has {t.shape[0]} entries but the batch has {batch} images")
    return t


def check_images(x: torch.Tensor, name: str = "x", finite: bool = True) -> torch.Tensor:
    """Check that ``x`` is a float image batch of shape (B, C, H, W) with finite values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must be a batch of images of shape (B, C, H, W), got rank {x.dim()} shape {tuple(x.shape)}"
            + ("; add a batch dimension with x[None]" if x.dim() == 3 else "")
        )
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor (images scaled to [-1, 1]), got {x.dtype}")
    if finite and not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {n_bad} non-finite values (NaN or inf)")
    return x
