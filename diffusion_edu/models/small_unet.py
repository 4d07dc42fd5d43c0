"""Report E's two-level U-Net (Report E Sec. 3.2.1; after Ronneberger et al. 2015).

Ronneberger et al.'s U-Net has four levels; Report E keeps two for 28x28 MNIST digits::

    block(in -> ch)        28x28 ------------------------------ concat -> block(2 ch -> ch) -> conv1x1 -> out
       maxpool 2x2                                                  ^ transposed conv 2x2 (2 ch -> ch)
    block(ch -> 2 ch)      14x14 -------------- concat -> block(4 ch -> 2 ch)
       maxpool 2x2                                  ^ transposed conv 2x2 (4 ch -> 2 ch)
    bottleneck block(2 ch -> 4 ch)  7x7  [+ self-attention over the 49 positions, with attention=True]

Each block is two 3x3 convolutions (padding 1), each followed by ReLU; the report integrates "the time
embedding and conditional labels into each block": here the first convolution of every block gets a
per-channel bias from ``emb = TimeMLP(sinusoidal(t)) + LabelEmbedding(y)``.

Report E's network has no attention. ``attention=True`` adds one self-attention block after the
bottleneck (Ho et al.'s at 16x16 on CIFAR-10; here at the 7x7 level, where 49 positions make it cheap):
an option the ten-minute recipe screens (chapter 5b), off by default so Report E's network is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..forward import Parameterization
from .base import Denoiser, check_positive_int
from .embeddings import LabelEmbedding, TimeEmbedding
from .unet_blocks import AttentionBlock

__all__ = ["SmallUNet"]


class DoubleConv(nn.Module):
    """Two 3x3 convolutions with ReLU; the embedding is added after the first convolution.

    ``h = relu(conv2(relu(conv1(x) + Linear(silu(emb)))))``.  Call: (B, in_ch, H, W), (B, emb_dim) -> (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x) + self.emb_proj(F.silu(emb))[:, :, None, None])  # emb: (B, out_ch, 1, 1)
        return F.relu(self.conv2(h))


class SmallUNet(Denoiser):
    """Report E's U-Net: ``depth`` levels of max-pooling (2 in the report), channels doubling per level.

    Call: ``x`` (B, in_channels, image_size, image_size), ``t`` (B,), ``y`` (B,) or None -> like ``x``.

    Args:
        in_channels: image channels (1 for MNIST); the 1x1 output convolution maps back to as many.
        image_size: image height = width, divisible by 2 ** depth (28 with depth 2).
        ch: channels of the first block; level i has ``ch * 2**i``.
        depth: number of down-sampling steps (Report E: 2; Ronneberger et al.: 4).
        time_dim: size of the sinusoidal time features; the time MLP outputs ``4 * time_dim``.
        num_classes: None, or K classes with the null label at index K (Report E: 10).
        attention: add a self-attention block (one head, zero-initialised output projection) after the
            bottleneck; False (Report E) leaves the network and its checkpoints as they were.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        ch: int = 32,
        depth: int = 2,
        time_dim: int = 32,
        num_classes: int | None = None,
        parameterization: Parameterization = "eps",
        attention: bool = False,
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, parameterization)
        if not isinstance(attention, bool):
            raise TypeError(f"attention must be True or False, got {attention!r}")
        ch = check_positive_int(ch, "ch")
        depth = check_positive_int(depth, "depth")
        time_dim = check_positive_int(time_dim, "time_dim", minimum=2)
        if image_size % 2**depth:
            raise ValueError(
                f"image_size={image_size} is not divisible by 2^{depth} = {2**depth}, the total down-sampling "
                f"of a U-Net with depth={depth} max-pooling steps"
            )
        emb_dim = 4 * time_dim
        self.time_embed = TimeEmbedding(time_dim, emb_dim)
        self.label_embed = LabelEmbedding(num_classes, emb_dim) if num_classes is not None else None
        chans = [ch * 2**i for i in range(depth + 1)]  # e.g. [ch, 2 ch, 4 ch]
        self.down = nn.ModuleList(
            DoubleConv(c_in, c_out, emb_dim) for c_in, c_out in zip([in_channels, *chans[:-2]], chans[:-1])
        )
        self.bottleneck = DoubleConv(chans[-2], chans[-1], emb_dim)
        # GroupNorm needs a divisor of the bottleneck's channels: 32 groups where they allow, else fewer
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if chans[-1] % g == 0)
        self.attention = AttentionBlock(chans[-1], norm_groups=groups) if attention else None
        self.upconv = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.up = nn.ModuleList(DoubleConv(2 * chans[i], chans[i], emb_dim) for i in reversed(range(depth)))
        self.conv_out = nn.Conv2d(ch, in_channels, 1)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_embed(t)  # (B, 4 time_dim)
        if self.label_embed is not None:
            emb = emb + self.label_embed(y)
        skips, h = [], x
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
            h = F.max_pool2d(h, 2)  # (B, C, H/2, W/2)
        h = self.bottleneck(h, emb)
        if self.attention is not None:
            h = self.attention(h)  # (B, 4 ch, 7, 7) -> same, every position attends to all 49
        for upconv, block in zip(self.upconv, self.up):
            h = block(torch.cat([skips.pop(), upconv(h)], dim=1), emb)  # concat: (B, 2C, H, W)
        return self.conv_out(h)
