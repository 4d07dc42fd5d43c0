"""The building blocks of the Ho et al. (2020) U-Net: residual blocks, self-attention, resampling.

Ho et al. build their network from the PixelCNN++ / Wide-ResNet residual block with GroupNorm,
add self-attention at the 16x16 resolution, and feed the time embedding into every residual block.
The options marked "improved" are Dhariwal & Nichol's (2021, "Diffusion Models Beat GANs", Sec. 3)
and Nichol & Dhariwal's (2021) changes that Report B uses: multi-head attention, scale-shift
normalisation from the time embedding (adaptive GroupNorm) and residual up/down-sampling blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import group_norm

__all__ = ["ResBlock", "AttentionBlock", "Downsample", "Upsample", "EmbedSequential", "zero_init"]


def zero_init(module: nn.Module) -> nn.Module:
    """Set a layer's weights and bias to zero, so that the residual branch starts as the identity.

    Ho et al. initialise these layers with scale 1e-10 (their ``default_init(1e-10)``); guided-diffusion
    uses exact zeros (``zero_module``). Either way the network starts close to the identity path.
    """
    for p in module.parameters():
        nn.init.zeros_(p)
    # tells UNet._init_weights to leave it at zero; torch's __setattr__ stub admits only Tensor / Module values
    module.zero_init = True  # type: ignore[assignment]
    return module


class Downsample(nn.Module):
    """Halve the resolution with a 3x3 convolution of stride 2 (Ho et al.'s ``downsample`` with conv).

    Call: (B, C, H, W) -> (B, C, H/2, W/2).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 convolution (Ho et al.).

    Call: (B, C, H, W) -> (B, C, 2H, 2W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """A residual block with the time (and label) embedding added in the middle.

    Ho et al. (2020), Appendix B and their ``resnet_block``::

        h = conv1(silu(norm1(x)))
        h = h + Linear(silu(emb))                       # per-channel bias from the embedding
        h = conv2(dropout(silu(norm2(h))))
        out = skip(x) + h                                # skip: identity, or a 1x1 conv if channels change

    With ``use_scale_shift_norm`` (improved, Dhariwal & Nichol 2021 "AdaGN") the embedding gives a
    scale and a shift instead of a bias: ``norm2(h) * (1 + scale) + shift``. With ``updown="down"`` or
    ``"up"`` (improved ``resblock_updown``) the block also halves / doubles the resolution: both ``h``
    (after ``silu(norm1(x))``) and ``x`` go through 2x2 average pooling / nearest upsampling.

    Call: ``x`` (B, in_ch, H, W), ``emb`` (B, emb_dim) -> (B, out_ch, H', W').
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        dropout: float = 0.0,
        norm_groups: int = 32,
        use_scale_shift_norm: bool = False,
        updown: str | None = None,
    ) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.updown = updown
        self.norm1 = group_norm(in_ch, norm_groups, f" of a residual block's input ({in_ch} channels)")
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch if use_scale_shift_norm else out_ch)
        self.norm2 = group_norm(out_ch, norm_groups, f" of a residual block ({out_ch} channels)")
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.updown == "down":
            return F.avg_pool2d(x, 2)
        if self.updown == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        if self.updown is not None:
            h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        e = self.emb_proj(F.silu(emb))[:, :, None, None]  # (B, out_ch or 2 * out_ch, 1, 1)
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions, with a residual connection (Ho et al. Appendix B).

    ``q, k, v = split(conv1x1(norm(x)))``, ``out = x + proj(softmax(q k^T / sqrt(d)) v)``, computed per
    head with ``d = channels / num_heads`` (Ho et al. use one head; the improved model several). Uses
    ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on CPU and GPU).

    Call: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, num_heads: int = 1, norm_groups: int = 32) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(
                f"num_heads={num_heads} does not divide the {channels} channels of an attention block: "
                f"each head needs channels / num_heads channels"
            )
        self.num_heads = num_heads
        self.norm = group_norm(channels, norm_groups, f" of an attention block ({channels} channels)")
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        d = C // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, d, H * W)  # (B, 3, heads, d, HW)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, d)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d)
        h = h.transpose(-1, -2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + self.proj(h)


class EmbedSequential(nn.Sequential):
    """A sequence of layers where residual blocks also receive the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x
