"""Report A's autoencoder and VAE denoisers (Report A Sec. 3.1.1).

Report A first tried to denoise with a convolutional autoencoder: encode the noisy image into a small
embedding, decode it back. The output it must predict (the noise eps, or the posterior mean) is mostly
unstructured noise, which no small embedding can carry, so the report "added a skip connection and a
few convolutional layers at the end": the decoder's estimate of the clean image is concatenated with
the noisy input, and the last convolutions can then form eps by comparing the two. The VAE variant
(Kingma & Welling 2013) uses the same network with a sampled bottleneck; the report found it better.

Layout (``ch_mult=(1, 2, 2)`` on 28x28)::

    x -> ConvBlock(in -> ch) at 28 -> strided ConvBlock(-> 2 ch) at 14 -> strided ConvBlock(-> 2 ch) at 7
      -> flatten -> Linear -> z (latent_dim)                        [VAE: mu, log sigma^2 -> sample z]
      -> concat(z, one_hot(y)) -> Linear -> (2 ch, 7, 7)             [the label enters in the middle]
      -> ConvBlock at 7 -> transposed conv up to 14 -> ConvBlock -> ... -> ConvBlock(-> ch) at 28
      -> concat(decoder output, x)                                   [the skip connection from the input]
      -> ConvBlock -> ConvBlock -> conv 3x3 -> out                   [the few convolutional layers at the end]

Every ConvBlock also adds a per-channel bias from the time embedding (Report A feeds "a sinusoidal
embedding of the timestep" to all its networks). Report A gives the label one-hot; a null label
(all-zero one-hot vector) makes the same network usable unconditionally (classifier-free guidance).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..forward import Parameterization
from .base import ConvBlock, Denoiser, check_int_tuple, check_positive_int
from .embeddings import TimeEmbedding, one_hot_labels

__all__ = ["Autoencoder", "VAE"]


class Autoencoder(Denoiser):
    """Report A's convolutional autoencoder denoiser with an input skip connection and output convs.

    Call: ``x`` (B, in_channels, image_size, image_size), ``t`` (B,), ``y`` (B,) or None -> like ``x``.

    Args:
        in_channels: image channels (1 for MNIST).
        image_size: image height = width, divisible by 2 ** (len(ch_mult) - 1).
        ch: base channels; encoder level i has ``ch * ch_mult[i]`` (strided convs between levels).
        ch_mult: channel multiplier per level.
        latent_dim: size of the bottleneck embedding z.
        num_head_layers: ConvBlocks after the skip concatenation (then one output conv).
        time_dim: size of the sinusoidal time features; the time MLP outputs ``4 * time_dim``.
        norm_groups: GroupNorm groups in each ConvBlock.
        num_classes: None, or K: the one-hot label (null label = zeros) is concatenated to z.
    """

    variational = False

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        ch: int = 32,
        ch_mult: tuple[int, ...] | list[int] = (1, 2, 2),
        latent_dim: int = 32,
        num_head_layers: int = 2,
        time_dim: int = 32,
        norm_groups: int = 8,
        num_classes: int | None = None,
        parameterization: Parameterization = "eps",
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, parameterization)
        ch = check_positive_int(ch, "ch")
        ch_mult = check_int_tuple(ch_mult, "ch_mult")
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        num_head_layers = check_positive_int(num_head_layers, "num_head_layers", minimum=0)
        time_dim = check_positive_int(time_dim, "time_dim", minimum=2)
        norm_groups = check_positive_int(norm_groups, "norm_groups")
        factor = 2 ** (len(ch_mult) - 1)
        if image_size % factor:
            raise ValueError(
                f"image_size={image_size} is not divisible by 2^{len(ch_mult) - 1} = {factor}, the total "
                f"down-sampling of an encoder with {len(ch_mult)} levels (ch_mult={list(ch_mult)})"
            )
        emb_dim = 4 * time_dim
        chans = [ch * m for m in ch_mult]
        self.bottom = (chans[-1], image_size // factor, image_size // factor)  # (C, H, W) at the bottleneck
        flat = chans[-1] * self.bottom[1] * self.bottom[2]
        block: dict[str, Any] = dict(emb_dim=emb_dim, norm_groups=norm_groups)

        self.time_embed = TimeEmbedding(time_dim, emb_dim)
        self.encoder = nn.ModuleList([ConvBlock(in_channels, chans[0], **block)])
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            self.encoder.append(ConvBlock(c_in, c_out, stride=2, **block))
        self.to_latent = nn.Linear(flat, 2 * latent_dim if self.variational else latent_dim)
        self.from_latent = nn.Linear(latent_dim + (num_classes or 0), flat)
        self.decoder = nn.ModuleList([ConvBlock(chans[-1], chans[-1], **block)])
        self.upsample = nn.ModuleList()
        for c_in, c_out in zip(reversed(chans[1:]), reversed(chans[:-1])):
            self.upsample.append(nn.ConvTranspose2d(c_in, c_out, 2, stride=2))
            self.decoder.append(ConvBlock(c_out, c_out, **block))
        head_in = chans[0] + in_channels
        self.head = nn.ModuleList(
            ConvBlock(head_in if i == 0 else chans[0], chans[0], **block) for i in range(num_head_layers)
        )
        self.conv_out = nn.Conv2d(chans[0] if num_head_layers else head_in, in_channels, 3, padding=1)

    def encode(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The encoder: (B, C, H, W) -> (B, latent_dim), or (B, 2 latent_dim) = [mu, log sigma^2] for the VAE."""
        h = x
        for layer in self.encoder:
            h = layer(h, emb)
        return self.to_latent(h.flatten(1))  # (B, C_bottom * H_bottom * W_bottom) -> latent

    def bottleneck(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder receives; the autoencoder passes z through (the VAE samples it here)."""
        self.aux_loss = None
        return z

    def _forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_embed(t)  # (B, 4 time_dim)
        z = self.bottleneck(self.encode(x, emb))  # (B, latent_dim)
        if self.num_classes is not None:
            assert y is not None  # a conditional network always gets labels (resolve_labels fills the null label)
            z = torch.cat([z, one_hot_labels(y, self.num_classes, z.dtype)], dim=1)  # (B, latent_dim + K)
        h = self.from_latent(z).view(-1, *self.bottom)  # (B, C_bottom, H_bottom, W_bottom)
        h = self.decoder[0](h, emb)
        for up, layer in zip(self.upsample, self.decoder[1:]):
            h = layer(up(h), emb)  # (B, C, 2H, 2W)
        h = torch.cat([h, x], dim=1)  # the skip connection from the noisy input: (B, ch + in_channels, H, W)
        for layer in self.head:
            h = layer(h, emb)
        return self.conv_out(h)


class VAE(Autoencoder):
    """Report A's VAE-style denoiser: the autoencoder with a Gaussian bottleneck (Kingma & Welling 2013).

    The encoder gives ``mu`` and ``log sigma^2``. In training mode ``z = mu + sigma * e``, ``e ~ N(0, I)``
    (the reparameterisation trick, Kingma & Welling Sec. 2.4), and ``self.aux_loss`` is set to the KL
    divergence to the prior N(0, I) (their Eq. 10 and Appendix B)::

        KL = -1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2),

    averaged over the batch and divided by the number of image values C*H*W, so that it is on the scale
    of a per-pixel mean-squared error (the training loop adds ``aux_weight * aux_loss``). In eval mode
    ``z = mu``: the network is deterministic and ``aux_loss`` is None.

    Call: as :class:`Autoencoder`, plus an optional keyword ``generator`` for the sampled ``e``.
    """

    variational = True

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | int,
        y: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        self._generator = generator
        try:
            return super().forward(x, t, y)
        finally:
            self._generator = None

    def bottleneck(self, z: torch.Tensor) -> torch.Tensor:
        mu, logvar = z.chunk(2, dim=1)  # each (B, latent_dim)
        if not self.training:
            self.aux_loss = None
            return mu
        logvar = logvar.clamp(-30.0, 20.0)
        e = torch.randn(mu.shape, generator=getattr(self, "_generator", None), device=mu.device, dtype=mu.dtype)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)  # (B,)
        self.aux_loss = kl.mean() / (self.in_channels * self.image_size**2)
        return mu + torch.exp(0.5 * logvar) * e
