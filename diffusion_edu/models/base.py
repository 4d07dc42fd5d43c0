"""What every denoiser shares: the call ``model(x, t, y=None)``, its input checks, and small layer helpers.

A denoiser maps a noisy batch ``x`` (B, C, H, W), the model time ``t`` (B,) and optional labels ``y``
(B,) to a tensor shaped like ``x``: the quantity it declares in ``parameterization`` (eps, x0 or the
posterior mean mu, a constructor argument; the samplers and the training loop read it from there).
Subclasses implement ``_forward(x, t, y)`` with checked inputs: ``t`` an int64 or float (B,) tensor
and ``y`` an int64 (B,) tensor with the null label filled in (or None for unconditional networks).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..forward import PARAMETERIZATIONS, Parameterization
from .embeddings import resolve_labels

__all__ = ["Denoiser", "ConvBlock", "Activation", "ACTIVATIONS", "make_activation", "group_norm", "check_positive_int"]

Activation = Literal["silu", "relu", "gelu", "selu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "selu": nn.SELU}


def make_activation(act: str, name: str = "act") -> nn.Module:
    """The activation module called ``act`` (one of ACTIVATIONS); a clear error for unknown names."""
    if act not in ACTIVATIONS:
        raise ValueError(f"{name} must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    return ACTIVATIONS[act]()


def group_norm(channels: int, groups: int, where: str = "") -> nn.GroupNorm:
    """GroupNorm with ``min(groups, channels)`` groups (Wu & He 2018; Ho et al. use 32 groups).

    Raises ValueError when the channels do not split evenly into the groups.
    """
    g = min(groups, channels)
    if channels % g:
        raise ValueError(
            f"norm_groups={groups} does not divide the {channels} channels{where}: GroupNorm needs "
            f"channels divisible by the number of groups; choose channel counts that are multiples "
            f"of norm_groups, or change norm_groups"
        )
    return nn.GroupNorm(g, channels)


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= minimum, else raise a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_int_tuple(values: object, name: str, minimum: int = 1, allow_empty: bool = False) -> tuple[int, ...]:
    """Return ``values`` (a list or tuple of ints >= minimum) as a tuple; errors name ``name``."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of ints, got {type(values).__name__}")
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_positive_int(v, f"{name}[{i}]", minimum) for i, v in enumerate(values))


def check_dropout(dropout: object) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    return float(dropout)


class Denoiser(nn.Module):
    """Base class: checks ``(x, t, y)`` and calls ``self._forward``.

    Attributes: ``in_channels``, ``image_size``, ``num_classes`` (None if unconditional),
    ``parameterization`` (what the output is: ``"eps"``, ``"x0"`` or ``"mu"``), and ``aux_loss`` (None,
    or a scalar tensor set by a training-mode forward pass: the VAE's KL term).
    """

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int | None, parameterization: Parameterization = "eps"
    ) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS} (what the network outputs), "
                f"got {parameterization!r}"
            )
        self.parameterization: Parameterization = parameterization
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.image_size = check_positive_int(image_size, "image_size")
        if num_classes is not None:
            check_positive_int(num_classes, "num_classes")
        self.num_classes = num_classes
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Run the network on noisy images ``x`` (B, C, H, W) at model time ``t`` (B,), labels ``y`` (B,) or None."""
        t, y = self.check_inputs(x, t, y)
        return self._forward(x, t, y)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def check_inputs(
        self, x: torch.Tensor, t: torch.Tensor | int, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check shapes and types; return ``t`` as a (B,) tensor and ``y`` with the null label filled in."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.dtype.is_floating_point:
            got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a float tensor of shape (B, C, H, W), got {got}")
        expected = (self.in_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}) for this network "
                f"(in_channels={self.in_channels}, image_size={self.image_size}), got {tuple(x.shape)}"
            )
        batch = x.shape[0]
        if isinstance(t, bool):
            raise TypeError("t must be an int or a tensor of model times of shape (B,), got a bool")
        if isinstance(t, int):
            t = torch.full((batch,), t, dtype=torch.int64, device=x.device)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be an int or a tensor of shape (B,), got {type(t).__name__}")
        if t.dtype == torch.bool or t.dtype.is_complex:
            raise TypeError(f"t must hold model times (int64), got dtype {t.dtype}")
        if t.dim() == 0:
            t = t.expand(batch)
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
        return t.to(x.device), resolve_labels(y, self.num_classes, batch, x.device)


class ConvBlock(nn.Module):
    """Convolution -> GroupNorm (optional) -> plus a per-channel bias from the embedding -> activation.

    ``h = act(norm(conv(x)) + Linear(silu(emb)))``: the same way Ho et al. feed time into a residual
    block, in a plain (non-residual) layer. Used by Report D's CNN and Report A's autoencoders.

    Call: ``x`` (B, in_ch, H, W), ``emb`` (B, emb_dim) -> (B, out_ch, H', W').
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        kernel_size: int = 3,
        act: str = "silu",
        norm_groups: int | None = 8,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = (
            group_norm(out_ch, norm_groups, f" of a conv block ({out_ch} channels)") if norm_groups else nn.Identity()
        )
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(x))
        return self.act(h + self.emb_proj(nn.functional.silu(emb))[:, :, None, None])  # emb: (B, out_ch, 1, 1)
