"""Which arithmetic a run uses on a device: the one place that decides it, for training and sampling.

``resolve_precision(precision, device)`` turns a :class:`~diffusion_edu.presets.TrainConfig`'s
``precision`` into a :class:`Precision`:

- ``"auto"``: on a CUDA GPU with native bf16 units (Ampere and later: A100, H100, RTX 30xx...)
  bf16 autocast; on a CUDA GPU without them (Colab's free T4, V100, RTX 20xx) fp16 autocast with a
  gradient scaler (fp16's narrow exponent range underflows small gradients unless the loss is scaled,
  Micikevicius et al. 2018); on the CPU and other devices fp32.
- ``"bf16"``: bf16 autocast (on the CPU too); refused on a CUDA GPU without native bf16, where PyTorch
  would emulate it slowly.
- ``"fp16"``: fp16 autocast with a gradient scaler, CUDA only.
- ``"fp32"``: no autocast.

Native bf16 is asked with ``torch.cuda.is_bf16_supported(including_emulation=False)`` (PyTorch's
default counts emulation, which answers True on a T4) and the device's compute capability (8.0 or up).
The resolved name is recorded with every training run (``TrainResult.precision``, the checkpoint and
each chapter's ``training.json``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["Precision", "PRECISIONS", "cuda_has_native_bf16", "resolve_precision", "autocast", "grad_scaler"]

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """A resolved choice: ``name`` (fp32 | bf16 | fp16), the autocast ``dtype`` (None = no autocast) and
    whether the backward pass needs a gradient scaler (fp16 only)."""

    name: Literal["fp32", "bf16", "fp16"]
    dtype: torch.dtype | None
    scaler: bool = False


FP32 = Precision("fp32", None)
BF16 = Precision("bf16", torch.bfloat16)
FP16 = Precision("fp16", torch.float16, scaler=True)


def cuda_has_native_bf16(device: str | torch.device) -> bool:
    """True when the CUDA device computes in bf16 natively, not by emulation: PyTorch says so
    (``torch.cuda.is_bf16_supported``, asked without emulation where that argument exists) and the
    device itself has compute capability 8.0 or higher (mixed machines hold older GPUs too)."""
    try:
        supported = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the including_emulation argument
        supported = torch.cuda.is_bf16_supported()
    return bool(supported) and torch.cuda.get_device_capability(torch.device(device))[0] >= 8


def resolve_precision(precision: str, device: str | torch.device) -> Precision:
    """The :class:`Precision` that ``precision`` (auto | fp32 | bf16 | fp16) means on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if precision == "fp32":
        return FP32
    if precision == "fp16":
        if not cuda:
            raise ValueError(f"precision='fp16' (autocast with a gradient scaler) needs a CUDA device, got {dev}")
        return FP16
    native = cuda and cuda_has_native_bf16(dev)
    if precision == "bf16":
        if cuda and not native:
            raise ValueError(
                f"precision='bf16': the GPU {dev} has no native bf16 units (PyTorch would emulate "
                "it slowly); use precision='auto' (fp16 with a gradient scaler there) or 'fp32'"
            )
        return BF16
    if not cuda:
        return FP32
    return BF16 if native else FP16


def autocast(device: str | torch.device, precision: Precision):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    dev = torch.device(device)
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=precision.dtype)


def grad_scaler(device: str | torch.device, precision: Precision) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 training (None otherwise)."""
    return torch.amp.GradScaler(torch.device(device).type) if precision.scaler else None
