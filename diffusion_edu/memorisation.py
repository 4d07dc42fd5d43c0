"""Memorisation checks: the training images nearest to each sample, by pixel distance and by LPIPS.

A model that memorised its data reproduces training images; its samples then sit at (almost) zero
distance from a training image. Report B compared samples with their nearest training neighbours by
LPIPS (Zhang et al. 2018) with the 'alex' network and found 0.13 on average over 100 samples.

Pixel distance works everywhere. LPIPS needs ImageNet-pretrained AlexNet / VGG weights that torchvision
downloads on first use: offline, :func:`lpips_nearest_neighbours` raises
:class:`diffusion_edu.metrics.WeightsNotAvailableError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F

from .metrics import check_metric_images, download_guard

__all__ = ["nearest_neighbours", "lpips_nearest_neighbours"]


def _train_images(train: Any) -> torch.Tensor:
    from .data import ImageDataset

    images = train.tensors()[0] if isinstance(train, ImageDataset) else train
    return check_metric_images(images, "train")


@torch.no_grad()
def nearest_neighbours(
    samples: torch.Tensor, train: Any, k: int = 1, chunk_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` training images closest to each sample in pixel distance ||x - x_train||_2 (all C * H * W pixels, [-1, 1]).

    samples: (B, C, H, W) in [-1, 1]; train: (N, C, H, W) in [-1, 1] or an ``ImageDataset``.
    Returns distances (B, k), ascending, and indices (B, k) into ``train``. Candidates come from
    ||a||^2 + ||b||^2 - 2 a.b (one matrix product per chunk of samples); the best k + 8 are then re-measured
    exactly, so an exact copy of a training image is found at distance 0.
    """
    check_metric_images(samples, "samples")
    t = _train_images(train)
    if t.shape[1:] != samples.shape[1:]:
        raise ValueError(f"samples {tuple(samples.shape)} and train {tuple(t.shape)} must have the same image shape")
    t = t.to(samples.device).flatten(1).float()  # (N, C * H * W)
    if not 1 <= k <= t.shape[0]:
        raise ValueError(f"k must lie in 1..{t.shape[0]} (the number of training images), got {k}")
    t2 = (t * t).sum(1)  # (N,)
    kc = min(t.shape[0], k + 8)
    dists, idxs = [], []
    for i in range(0, samples.shape[0], chunk_size):
        s = samples[i : i + chunk_size].flatten(1).float()  # (c, C * H * W)
        d2 = (s * s).sum(1, keepdim=True) + t2[None] - 2.0 * s @ t.T  # (c, N)
        cand = d2.topk(kc, dim=1, largest=False).indices  # (c, kc)
        exact = (s[:, None, :] - t[cand]).square().sum(-1)  # (c, kc)
        d, order = exact.sort(dim=1)
        dists.append(d[:, :k].sqrt())
        idxs.append(cand.gather(1, order[:, :k]))
    return torch.cat(dists), torch.cat(idxs)


def _lpips_distance(net_type: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    import torch.hub
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    backbone = {"alex": "AlexNet", "vgg": "VGG16", "squeeze": "SqueezeNet 1.1"}.get(net_type, net_type)
    hint = (
        f"Run where the internet is reachable (Colab), or put torchvision's {backbone} weights into "
        f"{torch.hub.get_dir()}/checkpoints. Offline, use the pixel-distance neighbours: "
        "diffusion_edu.memorisation.nearest_neighbours(samples, train)."
    )
    with download_guard(f"LPIPS with the '{net_type}' network", hint):
        net = cast(Literal["alex", "vgg", "squeeze"], net_type)  # torchmetrics checks the name
        metric = LearnedPerceptualImagePatchSimilarity(net_type=net, reduction="none")

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        metric.reset()
        metric.update(a, b)
        return metric.compute()

    return distance


@torch.no_grad()
def lpips_nearest_neighbours(
    samples: torch.Tensor,
    train: Any,
    net_type: Literal["alex", "vgg", "squeeze"] = "alex",
    candidates: int = 50,
    size: int = 64,
    lpips: Callable | None = None,
    chunk_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training image nearest to each sample by LPIPS (Zhang et al. 2018), as in Report B's check.

    LPIPS against all N training images would cost B x N network passes, so each sample is compared with
    its ``candidates`` nearest training images by pixel distance. Grey images are repeated to 3 channels, and
    all are resized to ``size`` pixels (AlexNet's pooling needs more than 28). ``lpips`` replaces torchmetrics' LPIPS
    with any callable (a (P, 3, H, W), b (P, 3, H, W) in [-1, 1]) -> P distances.
    samples: (B, C, H, W) in [-1, 1], C = 1 or 3; train as in :func:`nearest_neighbours`. Returns distances (B,), indices (B,).
    """
    check_metric_images(samples, "samples")
    t = _train_images(train).to(samples.device)
    if candidates < 1:
        raise ValueError(f"candidates must be a positive int, got {candidates}")
    dist_fn = lpips if lpips is not None else _lpips_distance(net_type)
    _, cand = nearest_neighbours(samples, t, k=min(candidates, t.shape[0]))  # (B, K)
    K = cand.shape[1]

    def prep(x: torch.Tensor) -> torch.Tensor:  # (P, C, H, W) -> (P, 3, size, size)
        if size != x.shape[-1]:
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        x = x.clamp(-1, 1)
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

    best_d, best_i = [], []
    for i in range(0, samples.shape[0], chunk_size):
        s = samples[i : i + chunk_size]
        c = cand[i : i + chunk_size]  # (c, K)
        a = prep(s.repeat_interleave(K, dim=0))  # (c * K, 3, size, size)
        b = prep(t[c.reshape(-1)])  # (c * K, 3, size, size): each sample's candidates
        d = dist_fn(a, b).reshape(s.shape[0], K)  # (c, K)
        m, j = d.min(dim=1)
        best_d.append(m.cpu())
        best_i.append(c.gather(1, j[:, None]).squeeze(1).cpu())
    return torch.cat(best_d), torch.cat(best_i)
