"""Pictures: image grids (used by training, samplers and every chapter).

More plots (schedules, trajectories, the noising widget and its static animation) live here too.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

__all__ = ["image_grid", "save_image_grid", "show_images"]


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Tile a batch (B, C, H, W) into one uint8 array (H', W') for grey or (H', W', 3) for colour.

    ``value_range`` is the range the images are in (model range [-1, 1] by default); values outside
    it are clipped.
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    b, c, h, w = x.shape
    ncol = min(nrow, b)
    nrows = (b + ncol - 1) // ncol
    grid = torch.ones(c, nrows * (h + padding) + padding, ncol * (w + padding) + padding)
    for i in range(b):
        r, q = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    arr = (grid * 255 + 0.5).to(torch.uint8).numpy()
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, **kwargs) -> None:
    """Write :func:`image_grid` to a PNG file (parent folders are created)."""
    import matplotlib.image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arr = image_grid(images, nrow=nrow, **kwargs)
    matplotlib.image.imsave(path, arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)


def show_images(images: torch.Tensor, nrow: int = 8, ax=None, title: str | None = None, labels: Sequence | None = None, **kwargs):
    """Show a batch as a grid on a matplotlib axis (a new figure when ``ax`` is None); returns the axis."""
    import matplotlib.pyplot as plt

    arr = image_grid(images, nrow=nrow, **kwargs)
    if ax is None:
        h, w = arr.shape[:2]
        _, ax = plt.subplots(figsize=(min(12, w / 40), min(12, h / 40)))
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
