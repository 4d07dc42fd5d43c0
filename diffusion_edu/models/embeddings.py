"""How a network is told the time step and the class: sinusoidal time embedding, time MLP, labels.

Every network in :mod:`diffusion_edu.models` turns the model time ``t`` (int64, shape (B,)) into a
vector with :func:`sinusoidal_embedding` followed by a small MLP (:class:`TimeEmbedding`), exactly as
Ho et al. (2020) do, and (when conditional) adds a learned label vector (:class:`LabelEmbedding`).

The null label. A conditional network has ``num_classes`` real classes ``0..num_classes-1`` and one
more index, ``num_classes``, meaning "no label". Training replaces a random fraction of the labels by
the null label, so one network learns both the conditional model eps(x_t, t, y) and the unconditional
model eps(x_t, t) (Ho & Salimans 2022, classifier-free guidance; Reports B and E). Report E calls this
"setting the class identifier c to zero"; here the null class has its own index instead, so that the
digit 0 keeps its meaning.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["sinusoidal_embedding", "TimeEmbedding", "LabelEmbedding", "one_hot_labels", "resolve_labels"]


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """The Transformer's sinusoidal position encoding applied to the time step (Vaswani et al. 2017,
    Sec. 3.5; Ho et al. 2020, Sec. 4 and Appendix B).

    With ``half = dim // 2`` frequencies ``f_i = max_period ** (-i / (half - 1))``, i = 0..half-1
    (from 1 down to 1/max_period, geometrically spaced, as in Ho et al.'s code)::

        emb(t) = [sin(t f_0), ..., sin(t f_{half-1}), cos(t f_0), ..., cos(t f_{half-1})]

    An odd ``dim`` gets one zero column at the end. Any ``t`` works (any T, respaced model times).

    Args:
        t: (B,) time steps (integer or float tensor).
        dim: embedding size, at least 2.
    Returns:
        (B, dim) float32 tensor.
    """
    if dim < 2:
        raise ValueError(f"dim must be at least 2 for a sinusoidal embedding, got {dim}")
    if t.dim() != 1:
        raise ValueError(f"t must have shape (B,), got shape {tuple(t.shape)}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)  # (half,)
    angles = t.to(torch.float32)[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (B, 2 * half)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))  # (B, dim)
    return emb


class TimeEmbedding(nn.Module):
    """The time MLP of Ho et al. (2020): sinusoidal(t) -> Linear -> SiLU -> Linear.

    ``emb(t) = W_2 silu(W_1 sinusoidal(t) + b_1) + b_2``; each block of the network then projects
    this vector to its own channels.

    Args (constructor):
        base_dim: size of the sinusoidal features (Ho et al.: the base channel count ``ch``).
        dim: output size (Ho et al.: ``4 * ch``).
    Call: ``t`` (B,) -> (B, dim).
    """

    def __init__(self, base_dim: int, dim: int) -> None:
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.base_dim))


class LabelEmbedding(nn.Module):
    """A learned vector per class plus one for the null label at index ``num_classes``.

    ``emb(y) = E[y]`` with ``E`` of shape (num_classes + 1, dim); networks add it to the time
    embedding (Dhariwal & Nichol 2021, guided-diffusion's ``label_emb``; Report B).

    Call: ``y`` (B,) int64 in 0..num_classes -> (B, dim).
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y)


def one_hot_labels(y: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot label vectors (Report A's label input); the null label ``num_classes`` is all zeros.

    Args:
        y: (B,) int64 in 0..num_classes.
    Returns:
        (B, num_classes) tensor.
    """
    return nn.functional.one_hot(y, num_classes + 1)[:, :num_classes].to(dtype)  # (B, num_classes)


def resolve_labels(
    y: torch.Tensor | None, num_classes: int | None, batch: int, device: torch.device
) -> torch.Tensor | None:
    """Check the labels given to a network and fill in the null label when ``y`` is None.

    Returns None for an unconditional network, else an int64 (B,) tensor in 0..num_classes.
    Raises ValueError for labels given to an unconditional network, a wrong shape, or values out of range.
    """
    if num_classes is None:
        if y is not None:
            raise ValueError(
                "y: this network is unconditional (num_classes=None) and cannot take labels; "
                "build it with num_classes=K to train a class-conditional model"
            )
        return None
    if y is None:
        return torch.full((batch,), num_classes, dtype=torch.int64, device=device)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be None or an int64 tensor of shape (B,), got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if tuple(y.shape) != (batch,):
        raise ValueError(f"y must have shape (B,) = ({batch},), got {tuple(y.shape)}")
    has_values = y.numel() and y.device.type != "meta" and not torch.compiler.is_compiling()
    if has_values and (int(y.min()) < 0 or int(y.max()) > num_classes):
        raise ValueError(
            f"y must hold labels in 0..{num_classes - 1}, or {num_classes} for the null label "
            f"(unconditional); got values in {int(y.min())}..{int(y.max())}"
        )
    return y.to(device=device, dtype=torch.int64)
