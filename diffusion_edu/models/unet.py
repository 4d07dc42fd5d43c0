"""The Ho et al. (2020) U-Net, with the improved options Report B uses (Dhariwal & Nichol 2021).

Shape of the network (Ho et al. Appendix B, their ``diffusion_utils`` ``model``)::

    conv_in (3x3)                                    -> skip
    for each level i (resolution image_size / 2^i, channels ch * ch_mult[i]):
        num_res_blocks x [ResBlock (+ attention if the resolution is in attn_resolutions)] -> skip each
        down-sample (except at the last level)                                             -> skip
    middle: ResBlock, attention, ResBlock
    for each level, deepest first:
        (num_res_blocks + 1) x [concat(h, skip.pop()) -> ResBlock (+ attention)]
        up-sample (except at the first level)
    GroupNorm -> SiLU -> conv_out (3x3)

The CIFAR-10 model (ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attention at 16x16, dropout 0.1)
has 35.7M parameters, as the paper states (Report C).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ..forward import Parameterization
from .base import Denoiser, check_dropout, check_int_tuple, check_positive_int, group_norm
from .embeddings import LabelEmbedding, TimeEmbedding, one_hot_labels
from .unet_blocks import AttentionBlock, Downsample, EmbedSequential, ResBlock, Upsample, zero_init

__all__ = ["UNet"]


class UNet(Denoiser):
    """Ho et al.'s (2020) U-Net denoiser: ResNet blocks, GroupNorm, self-attention, a time MLP.

    ``UNet(...)(x, t, y=None)``: ``x`` (B, in_channels, image_size, image_size), ``t`` (B,) model time,
    ``y`` (B,) labels in 0..num_classes or None; returns a tensor shaped like ``x``.

    Args:
        in_channels: image channels (3 for CIFAR-10, 1 for MNIST); the output has as many.
        image_size: height = width of the images; divisible by 2 ** (len(ch_mult) - 1).
        ch: base channel count; level i has ``ch * ch_mult[i]`` channels; the time MLP has ``4 * ch``.
        ch_mult: channel multiplier per resolution level; one down-sampling between levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: resolutions (e.g. 16) at which a self-attention layer follows each block.
        mid_attention: the attention layer between the two middle blocks (Ho et al.: always on).
        dropout: dropout probability inside each residual block (Ho et al.: 0.1 on CIFAR-10).
        num_classes: None for an unconditional model; else the network takes labels, with a null
            label at index ``num_classes`` (classifier-free guidance).
        label_at: where the label enters: ``"embedding"``, a learned class embedding added to the time
            embedding, so every block sees it (improved; Reports B and E), or ``"middle"``, the one-hot
            label (null label = zeros) mapped by a linear layer to a per-channel bias added to the
            input of the middle blocks (Report A Sec. 3.3: "in the middle layer of the U-Net").
        num_heads: attention heads (Ho et al.: 1); ignored when ``num_head_channels`` is given.
        num_head_channels: channels per attention head (improved: 64), or None to use ``num_heads``.
        use_scale_shift_norm: the embedding scales and shifts the second GroupNorm (improved).
        resblock_updown: down/up-sample with residual blocks instead of strided / upsampling convs (improved).
        norm_groups: GroupNorm groups (Ho et al.: 32; fewer when a layer has fewer channels).
    """

    # (Longer than ~60 lines: it wires the levels of the diagram above in order, one block per line.)
    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        ch: int = 128,
        ch_mult: tuple[int, ...] | list[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] | list[int] = (16,),
        mid_attention: bool = True,
        dropout: float = 0.1,
        num_classes: int | None = None,
        label_at: Literal["embedding", "middle"] = "embedding",
        num_heads: int = 1,
        num_head_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        norm_groups: int = 32,
        parameterization: Parameterization = "eps",
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, parameterization)
        ch = check_positive_int(ch, "ch")
        ch_mult = check_int_tuple(ch_mult, "ch_mult")
        num_res_blocks = check_positive_int(num_res_blocks, "num_res_blocks")
        attn_resolutions = check_int_tuple(attn_resolutions, "attn_resolutions", allow_empty=True)
        dropout = check_dropout(dropout)
        num_heads = check_positive_int(num_heads, "num_heads")
        if num_head_channels is not None:
            check_positive_int(num_head_channels, "num_head_channels")
        check_positive_int(norm_groups, "norm_groups")
        if label_at not in ("embedding", "middle"):
            raise ValueError(f"label_at must be 'embedding' or 'middle', got {label_at!r}")
        factor = 2 ** (len(ch_mult) - 1)
        if image_size % factor:
            raise ValueError(
                f"image_size={image_size} is not divisible by 2^{len(ch_mult) - 1} = {factor}, the total "
                f"down-sampling of a U-Net with {len(ch_mult)} levels (ch_mult={list(ch_mult)}); "
                f"use fewer levels or pad the images"
            )
        resolutions = [image_size // 2**i for i in range(len(ch_mult))]
        for r in attn_resolutions:
            if r not in resolutions:
                raise ValueError(
                    f"attn_resolutions contains {r}, but this network's resolutions are {resolutions}; "
                    f"attention there would silently never run"
                )

        def heads(channels: int) -> int:
            if num_head_channels is None:
                return num_heads
            if channels % num_head_channels:
                raise ValueError(
                    f"num_head_channels={num_head_channels} does not divide the {channels} channels "
                    f"of an attention block"
                )
            return channels // num_head_channels

        emb_dim = 4 * ch
        res_kw: dict[str, Any] = dict(
            emb_dim=emb_dim, dropout=dropout, norm_groups=norm_groups, use_scale_shift_norm=use_scale_shift_norm
        )

        def attention(channels: int) -> AttentionBlock:
            return AttentionBlock(channels, heads(channels), norm_groups)

        self.time_embed = TimeEmbedding(ch, emb_dim)
        self.label_at = label_at
        self.label_embed = (
            LabelEmbedding(num_classes, emb_dim) if num_classes is not None and label_at == "embedding" else None
        )
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        # Down path: record the channel count of every skip tensor.
        self.down = nn.ModuleList()
        skip_channels, cur = [ch], ch
        for level, mult in enumerate(ch_mult):
            out = ch * mult
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(cur, out, **res_kw)]
                if resolutions[level] in attn_resolutions:
                    layers.append(attention(out))
                self.down.append(EmbedSequential(*layers))
                skip_channels.append(out)
                cur = out
            if level != len(ch_mult) - 1:
                down = ResBlock(cur, cur, updown="down", **res_kw) if resblock_updown else Downsample(cur)
                self.down.append(EmbedSequential(down))
                skip_channels.append(cur)

        self.label_mid = nn.Linear(num_classes, cur) if num_classes is not None and label_at == "middle" else None
        mid: list[nn.Module] = [ResBlock(cur, cur, **res_kw)]
        if mid_attention:
            mid.append(attention(cur))
        mid.append(ResBlock(cur, cur, **res_kw))
        self.mid = EmbedSequential(*mid)

        # Up path: each block concatenates one skip tensor, deepest first.
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch_mult))):
            out = ch * ch_mult[level]
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(cur + skip_channels.pop(), out, **res_kw)]
                cur = out
                if resolutions[level] in attn_resolutions:
                    layers.append(attention(out))
                if level != 0 and i == num_res_blocks:
                    layers.append(ResBlock(cur, cur, updown="up", **res_kw) if resblock_updown else Upsample(cur))
                self.up.append(EmbedSequential(*layers))

        self.norm_out = group_norm(cur, norm_groups, f" of the output layer ({cur} channels)")
        self.conv_out = zero_init(nn.Conv2d(cur, in_channels, 3, padding=1))
        self._init_weights()

    def _init_weights(self) -> None:
        """Ho et al.'s initialisation: Xavier-uniform ("fan_avg") weights and zero biases, except the
        zero-initialised last layer of each residual branch (see :func:`zero_init`)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not getattr(m, "zero_init", False):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_embed(t)  # (B, 4 ch)
        if self.label_embed is not None:
            emb = emb + self.label_embed(y)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        if self.label_mid is not None:
            assert y is not None and self.num_classes is not None  # label_mid: conditional; y filled by resolve_labels
            h = h + self.label_mid(one_hot_labels(y, self.num_classes, h.dtype))[:, :, None, None]  # (B, C, 1, 1)
        h = self.mid(h, emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)  # (B, C + C_skip, H, W)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))
