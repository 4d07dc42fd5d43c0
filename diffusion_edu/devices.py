"""Which device a run uses: ``auto`` picks CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The device to run on: ``auto`` picks CUDA, then Apple's MPS, then the CPU.

    An explicit device that is not available raises ``ValueError`` (no silent fallback).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = spec or "auto"
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu', 'cuda', got {type(spec).__name__}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    kind = spec.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    if kind == "mps" and not mps_ok:
        raise ValueError(f"device={spec!r} was asked for but Apple's MPS is not available; use 'auto' or 'cpu'")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {spec!r}")
    return torch.device(spec)
