"""Figures of the chapters: where a part's PNGs live and one helper that writes a grid of images.

A part's figures lie under ``results/<chapter>/figures/`` (smoke: under ``runs/smoke/results``); a
results file names each by its path relative to a folder that the chapter states (the chapter's
folder or the results folder), which :func:`relative` writes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .common import tier_results_dir

__all__ = ["figures_dir", "figure_path", "relative", "save_grid", "class_grid"]


def figures_dir(chapter: str, tier: str) -> Path:
    """``results/<chapter>/figures`` (smoke: under ``runs/smoke/results``)."""
    return tier_results_dir(tier) / chapter / "figures"


def figure_path(chapter: str, name: str, tier: str) -> Path:
    """Where the figure ``name`` (without ``.png``) of a chapter lies at ``tier``."""
    return figures_dir(chapter, tier) / f"{name}.png"


def relative(path: Path, tier: str, chapter: str | None = None) -> str:
    """``path`` relative to the tier's results folder, or to the chapter's folder in it when ``chapter``
    is given (the two ways a results file names its figures)."""
    root = tier_results_dir(tier) / chapter if chapter else tier_results_dir(tier)
    return str(path.relative_to(root))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, grey: bool = False) -> Path:
    """Write ``images`` (B, C, H, W) in [-1, 1], or uint8 pixels, as one PNG grid of ``nrow`` columns.

    ``grey``: an 8-bit grey PNG written by PIL (compact; single-channel images only), else the RGBA PNG of
    :func:`diffusion_edu.viz.save_image_grid`."""
    from ..viz import image_grid, save_image_grid

    path = Path(path)
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1.0
    if not grey:
        save_image_grid(images, path, nrow=nrow)
        return path
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, nrow=nrow)).save(path, optimize=True)
    return path


def class_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int, num_classes: int = 10) -> torch.Tensor:
    """The first ``per_class`` samples of each class, class by class: (num_classes * per_class, C, H, W),
    which ``image_grid(..., nrow=per_class)`` shows as one row per class. Every class needs that many."""
    rows = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} samples; per_class={per_class} needs at least that many")
        rows.append(images[idx])
    return torch.cat(rows)
