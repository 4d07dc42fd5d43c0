"""Report D's denoiser: a plain stack of convolutions with no down-sampling (Report D Sec. 1.2-1.3).

Report D trains "a CNN with kernel size 7 and 4 hidden layers with 16, 32, 32 and 16 hidden units",
GELU activations (SELU in its harder variant), on MNIST. The report does not say how the network sees
the time step; here every hidden layer adds a learned per-channel bias computed from the sinusoidal
time embedding (the way Ho et al. condition their residual blocks), and a LayerNorm-style GroupNorm
with one group follows each convolution. Every layer keeps the 28x28 resolution, so the receptive field
grows by 6 pixels per hidden layer: an output pixel sees 27x27 input pixels (four 7x7 layers and the
3x3 output layer), about the whole 28x28 digit, with few parameters (about 0.1M).

Errata for the book: Report D says SELU "resembles GELU but without the dip below 0"; SELU does go
below 0 (down to -lambda * alpha ~ -1.76 for very negative inputs); it is GELU whose dip is small.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..forward import Parameterization
from .base import ConvBlock, Denoiser, check_int_tuple, check_positive_int, make_activation
from .embeddings import LabelEmbedding, TimeEmbedding

__all__ = ["CNN"]


class CNN(Denoiser):
    """Report D's CNN denoiser: ``len(hidden)`` 'same'-padded conv layers, then a conv to the image channels.

    Layer l computes ``h_l = act(norm(conv_l(h_{l-1})) + Linear_l(silu(emb(t, y))))`` with
    ``emb = TimeMLP(sinusoidal(t)) (+ LabelEmbedding(y))``; the output layer is a plain 3x3 conv.

    Call: ``x`` (B, in_channels, image_size, image_size), ``t`` (B,), ``y`` (B,) or None -> like ``x``.

    Args:
        in_channels: image channels (1 for MNIST).
        image_size: image height = width (the network is fully convolutional; this fixes the input check).
        hidden: channels of the hidden layers (Report D: (16, 32, 32, 16)).
        kernel_size: kernel of the hidden layers, odd (Report D: 7).
        act: ``"gelu"`` (Report D) or ``"selu"`` (its variant); also ``"relu"``, ``"silu"``.
        time_dim: size of the sinusoidal time features; the time MLP outputs ``2 * time_dim``.
        norm: GroupNorm with one group (a LayerNorm over channels and pixels) after each conv.
        num_classes: None (Report D is unconditional), or K for a learned label embedding.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        hidden: tuple[int, ...] | list[int] = (16, 32, 32, 16),
        kernel_size: int = 7,
        act: Literal["gelu", "selu", "relu", "silu"] = "gelu",
        time_dim: int = 32,
        norm: bool = True,
        num_classes: int | None = None,
        parameterization: Parameterization = "eps",
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, parameterization)
        hidden = check_int_tuple(hidden, "hidden")
        kernel_size = check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so that 'same' padding keeps the image size, got {kernel_size}")
        time_dim = check_positive_int(time_dim, "time_dim", minimum=2)
        make_activation(act)  # a clear error for an unknown name before any layer is built
        self.act_name = act
        emb_dim = 2 * time_dim
        self.time_embed = TimeEmbedding(time_dim, emb_dim)
        self.label_embed = LabelEmbedding(num_classes, emb_dim) if num_classes is not None else None
        chans = (in_channels, *hidden)
        self.layers = nn.ModuleList(
            ConvBlock(c_in, c_out, emb_dim, kernel_size, act, norm_groups=1 if norm else None)
            for c_in, c_out in zip(chans[:-1], chans[1:])
        )
        self.conv_out = nn.Conv2d(hidden[-1], in_channels, 3, padding=1)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_embed(t)  # (B, 2 time_dim)
        if self.label_embed is not None:
            emb = emb + self.label_embed(y)
        h = x
        for layer in self.layers:
            h = layer(h, emb)  # (B, hidden[l], H, W)
        return self.conv_out(h)
