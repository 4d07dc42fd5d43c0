"""Cold diffusion with row/column averaging (Report D, Chapter 2; Bansal et al. 2022, "Cold Diffusion").

Cold diffusion swaps Gaussian noise for a deterministic degradation D(x, t) with D(x, 0) = x, and
trains a restoration network R(x_t, t) to predict x0 (L1 in Bansal et al., L2 in Report D's
pseudo-code). Report D's degradation replaces rows (or columns) of a 28 x 28 digit by their mean,
one more row per step, in a chosen order. Every D(., t) here is the orthogonal projection onto the
images whose first t chosen rows / columns are constant, and these sets shrink as t grows, hence
D(D(x, s), t) = D(x, max(s, t)) (tested).

``axis="both"`` alternates rows and columns (row 1st in the order, column 1st, row 2nd, ...). A chosen
row and a chosen column share a pixel, so once both kinds are chosen the projection makes their whole
union one constant: its mean. (It is also what averaging the chosen rows and columns again and again
converges to.) With one axis it is exactly Report D's "replace each chosen row by its mean".

Errata for the book (Report D):
- Its sampling pseudo-code computes x0_hat = f_T[z_T, T] at every step. The restoration network must
  see the current image and step, x0_hat = R(x_s, s) (Bansal et al. Algorithm 2); see :func:`cold_sample`.
- It names three losses for R: an l1 norm (Chapter 2 introduction), the MSE (Sec. 2.1) and a squared
  norm in the pseudo-code. Bansal et al. use L1; the training engine offers both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ._checks import check_images, check_timesteps
from .samplers import Trajectory, _inference

__all__ = ["AXES", "ORDERS", "RowColumnAveraging", "line_order", "cold_sample", "DegradedPrior", "fit_degraded_prior"]

Axis = Literal["rows", "columns", "both"]
Order = Literal["random", "outside-in", "inside-out"]
AXES: tuple[str, ...] = ("rows", "columns", "both")
ORDERS: tuple[str, ...] = ("random", "outside-in", "inside-out")


def line_order(order: Order, n: int, seed: int = 0) -> list[int]:
    """The order in which the n lines (or groups of lines) are averaged, 1-based as Report D writes it.

    outside-in: [1, n, 2, n - 1, ...]; inside-out: [c, c + 1, c - 1, c + 2, ...] with c = ceil(n / 2)
    (for n = 28: [14, 15, 13, 16, ...]); random: a permutation drawn from ``torch.Generator`` seeded with ``seed``.
    """
    if order == "outside-in":
        return [(k // 2 + 1) if k % 2 == 0 else (n - k // 2) for k in range(n)]
    if order == "inside-out":
        c = (n + 1) // 2
        out = [c]
        for k in range(1, n):
            out += [c + k, c - k]
        return [i for i in out if 1 <= i <= n][:n]
    if order == "random":
        return (torch.randperm(n, generator=torch.Generator().manual_seed(seed)) + 1).tolist()
    raise ValueError(f"unknown order {order!r}; valid: {', '.join(repr(o) for o in ORDERS)}")


class RowColumnAveraging:
    """Report D's degradation D(x, t): the first t rows / columns (in ``order``) replaced by their mean.

    D(x, t)[i, :] = mean_k x[i, k] for each chosen row i (Report D Sec. 2.1, written there for columns:
    z_t[:, j] = 1/28 sum_k x[k, j]). With ``group = g`` the lines are averaged in blocks of g adjacent
    lines (one value per block; Report D's "groups of 4", 7 steps for 28 rows). T = size / g steps for
    one axis, 2 size / g for ``axis="both"``. Images: (B, C, size, size), each channel on its own.
    """

    def __init__(self, axis: Axis = "rows", order: Order = "random", group: int = 1, size: int = 28, seed: int = 0):
        if axis not in AXES:
            raise ValueError(f"unknown axis {axis!r}; valid: {', '.join(repr(a) for a in AXES)}")
        for name, v in (("size", size), ("group", group)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if size % group:
            raise ValueError(f"group={group} must divide size={size} (blocks of whole lines), e.g. 1, 4 or 7 for 28")
        self.axis, self.order_name, self.group, self.size, self.seed = axis, order, group, size, int(seed)
        self.n_lines = size // group
        self.order = line_order(order, self.n_lines, self.seed)  # 1-based block indices
        rank = torch.empty(self.n_lines, dtype=torch.int64)
        rank[torch.tensor(self.order) - 1] = torch.arange(self.n_lines)  # rank[b] = when block b is averaged
        self._rank = {torch.device("cpu"): rank}  # per device, so the sampling loop copies it only once
        self.T = self.n_lines * (2 if axis == "both" else 1)

    def config(self) -> dict:
        """The JSON-able keyword arguments that rebuild this degradation (stored in checkpoints)."""
        return {"axis": self.axis, "order": self.order_name, "group": self.group, "size": self.size, "seed": self.seed}

    def __repr__(self) -> str:
        return f"RowColumnAveraging(T={self.T}, " + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    def _check(self, x: torch.Tensor, name: str) -> None:
        check_images(x, name)
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"{name} must be (B, C, {self.size}, {self.size}) images, got {tuple(x.shape)}")

    def _blocks(self, x: torch.Tensor, sel: torch.Tensor, rows: bool) -> torch.Tensor:
        """Replace each selected block of rows (or columns) by its mean. sel: bool (B, n_lines)."""
        B, C, H, W = x.shape
        n, g = self.n_lines, self.group
        if rows:
            xb = x.reshape(B, C, n, g, W)  # (B, C, block, row in block, W)
            m = xb.mean(dim=(3, 4), keepdim=True)  # (B, C, n, 1, 1)
            return torch.where(sel[:, None, :, None, None], m, xb).reshape(B, C, H, W)
        xb = x.reshape(B, C, H, n, g)  # (B, C, H, block, column in block)
        m = xb.mean(dim=(2, 4), keepdim=True)  # (B, C, 1, n, 1)
        return torch.where(sel[:, None, None, :, None], m, xb).reshape(B, C, H, W)

    def _apply(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """D(x, t) without input checks; t: int64 (B,) on x's device."""
        if x.device not in self._rank:
            self._rank[x.device] = self._rank[torch.device("cpu")].to(x.device)
        rank = self._rank[x.device][None, :]  # (1, n)
        if self.axis == "rows":
            return self._blocks(x, rank < t[:, None], rows=True)
        if self.axis == "columns":
            return self._blocks(x, rank < t[:, None], rows=False)
        rsel, csel = rank < ((t + 1) // 2)[:, None], rank < (t // 2)[:, None]  # (B, n): rows at odd steps
        rows_only = self._blocks(x, rsel, rows=True)  # t <= 1: no column chosen yet
        g = self.group
        rows_px, cols_px = rsel.repeat_interleave(g, 1), csel.repeat_interleave(g, 1)  # (B, H), (B, W)
        union = rows_px[:, None, :, None] | cols_px[:, None, None, :]  # (B, 1, H, W)
        count = union.sum(dim=(2, 3), keepdim=True).clamp(min=1)  # (B, 1, 1, 1)
        mean = (x * union).sum(dim=(2, 3), keepdim=True) / count  # (B, C, 1, 1)
        return torch.where(csel.any(1)[:, None, None, None], torch.where(union, mean, x), rows_only)

    def degrade(self, x0: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """D(x0, t) (Report D Sec. 2.1; Bansal et al. Sec. 3; book eq. cold-degradation).

        x0: (B, C, size, size); t: int or int64 (B,) in 0..T. Returns (B, C, size, size).
        """
        self._check(x0, "x0")
        t = check_timesteps(t, self.T, batch=x0.shape[0], device=x0.device, allow_zero=True)
        return self._apply(x0, t)

    def degraded_coords(self, x: torch.Tensor) -> torch.Tensor:
        """The few numbers that determine D(x, T): block means (B, C * n_lines), or channel means (B, C) for "both"."""
        self._check(x, "x")
        B, C, H, W = x.shape
        n, g = self.n_lines, self.group
        if self.axis == "rows":
            return x.reshape(B, C, n, g, W).mean(dim=(3, 4)).reshape(B, C * n)
        if self.axis == "columns":
            return x.reshape(B, C, H, n, g).mean(dim=(2, 4)).reshape(B, C * n)
        return x.mean(dim=(2, 3))

    def from_coords(self, z: torch.Tensor, channels: int = 1) -> torch.Tensor:
        """The fully degraded image with coordinates z (the inverse of :meth:`degraded_coords`): (B, C, size, size)."""
        B, s, n, g = z.shape[0], self.size, self.n_lines, self.group
        if self.axis == "both":
            return z.reshape(B, channels, 1, 1).expand(B, channels, s, s).contiguous()
        z = z.reshape(B, channels, n, 1).repeat_interleave(g, dim=2)  # (B, C, size, 1)
        if self.axis == "columns":
            z = z.transpose(2, 3)  # (B, C, 1, size)
        return z.expand(B, channels, s, s).contiguous()


def cold_sample(
    model: torch.nn.Module,
    degradation: RowColumnAveraging,
    x_T: torch.Tensor,
    algorithm: Literal[1, 2] = 2,
    trajectory_every: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Restore x_T step by step with Bansal et al.'s (2022) Algorithm 1 or 2 (book eq. cold-sampling).

    For s = T..1, with x0_hat = R(x_s, s) the network's x0 prediction:
      Algorithm 1 (naive):   x_{s-1} = D(x0_hat, s - 1)
      Algorithm 2 (Report D): x_{s-1} = x_s - D(x0_hat, s) + D(x0_hat, s - 1).
    If R is off by the same error e at every step, Algorithm 1 returns x0 + e and Algorithm 2
    x0 + e - D(e, T): its D terms telescope and cancel the part of e that survives full degradation
    (all of a constant offset). Report D calls R(z_T, T) at every step: an error (module docstring).
    model: R, called as model(x_s, s) and predicting x0; x_T: (B, C, size, size), usually D(x0, T) or a
    draw from :func:`fit_degraded_prior`. Returns x_0, or (x_0, Trajectory) with ``trajectory_every = k``.
    """
    if algorithm not in (1, 2) or isinstance(algorithm, bool):
        raise ValueError(f"algorithm must be 1 (naive) or 2 (Bansal et al.'s improved sampling), got {algorithm!r}")
    degradation._check(x_T, "x_T")
    every = trajectory_every
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"trajectory_every must be an int >= 1 or None, got {trajectory_every!r}")
    if getattr(model, "parameterization", "x0") != "x0":
        raise ValueError(f"the restoration network must predict x0, got parameterization={model.parameterization!r}")
    x, T, B = x_T, degradation.T, x_T.shape[0]
    ts, xs, x0s = [], [], []
    with _inference(model):
        for s in range(T, 0, -1):
            t = torch.full((B,), s, dtype=torch.int64, device=x.device)
            x0_hat = model(x, t)  # R(x_s, s)
            if algorithm == 1:
                x_prev = degradation._apply(x0_hat, t - 1)
            else:
                x_prev = x - degradation._apply(x0_hat, t) + degradation._apply(x0_hat, t - 1)
            if every is not None and (T - s) % every == 0:
                ts.append(s)
                xs.append(x)
                x0s.append(x0_hat)
            x = x_prev
    if every is None:
        return x
    ts.append(0)
    xs.append(x)
    x0s.append(x)
    return x, Trajectory(t=ts, model_t=list(ts), xt=torch.stack(xs), x0_pred=torch.stack(x0s))


# ---------------------------------------------------------------------------------------------
# A distribution for the fully degraded image, so that cold diffusion can generate new digits.
# ---------------------------------------------------------------------------------------------


@dataclass
class DegradedPrior:
    """A Gaussian mixture on the coordinates of D(x, T) (see :func:`fit_degraded_prior`).

    weights: (K,); means: (K, d); covs: (K, d, d), float64; channels: C of the images.
    """

    degradation: RowColumnAveraging
    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    channels: int = 1

    def sample(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """n fully degraded images x_T (n, C, size, size): pick a component, draw its Gaussian, expand to pixels."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (the number of images) must be an int >= 1, got {n!r}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.means.shape[1], 1, generator=generator, dtype=torch.float64)  # (n, d, 1)
        z = self.means[k] + (torch.linalg.cholesky(self.covs)[k] @ z).squeeze(-1)  # (n, d)
        return self.degradation.from_coords(z, self.channels).to(dtype)


def _log_gauss(z: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """log N(z_i; mean_k, cov_k) for all i, k: (N, K)."""
    L = torch.linalg.cholesky(covs)  # (K, d, d)
    diff = (z[None] - means[:, None]).transpose(1, 2)  # (K, d, N)
    sol = torch.linalg.solve_triangular(L, diff, upper=False)  # (K, d, N)
    logdet = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)  # (K,)
    return (-0.5 * (sol**2).sum(1) - 0.5 * (logdet[:, None] + z.shape[1] * math.log(2 * math.pi))).T


def fit_degraded_prior(
    degradation: RowColumnAveraging,
    images: torch.Tensor,
    n_components: int = 1,
    generator: torch.Generator | None = None,
    max_iter: int = 200,
    reg: float = 1e-6,
) -> DegradedPrior:
    """Fit a Gaussian mixture (full covariances, EM) to the fully degraded training images.

    D(x, T) is nearly deterministic (every chosen row is a constant), so generating new images needs
    a distribution of x_T; Bansal et al. (2022) fit a Gaussian mixture to the channel means of fully
    blurred images for the same reason. The mixture lives on :meth:`RowColumnAveraging.degraded_coords`
    (28 row means for 28 single rows); ``reg`` is added to each covariance's diagonal (border rows of
    MNIST are always -1). One component is the maximum-likelihood Gaussian; more are fitted by EM from
    a k-means start drawn with ``generator``. images: (N, C, size, size) in [-1, 1]. The prior is fitted
    and sampled on the CPU (move its draws to the model's device).
    """
    z = degradation.degraded_coords(images).double().cpu()  # (N, d); the prior lives on the CPU
    N, d = z.shape
    if isinstance(n_components, bool) or not isinstance(n_components, int) or not 1 <= n_components <= N:
        raise ValueError(f"n_components must be an int in 1..{N} (the number of images), got {n_components!r}")
    eye = reg * torch.eye(d, dtype=torch.float64)
    K = n_components
    means = z[torch.randperm(N, generator=generator)[:K]].clone()  # (K, d)
    for _ in range(10):  # a few k-means steps for a sensible start
        lab = torch.cdist(z, means).argmin(1)
        means = torch.stack([z[lab == k].mean(0) if (lab == k).any() else means[k] for k in range(K)])
    resp = torch.nn.functional.one_hot(torch.cdist(z, means).argmin(1), K).double()  # (N, K)
    prev = -math.inf
    for _ in range(max_iter if K > 1 else 1):
        nk = resp.sum(0) + 1e-12  # (K,)   M-step
        weights, means = nk / N, (resp.T @ z) / nk[:, None]
        diff = z[None] - means[:, None]  # (K, N, d)
        covs = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / nk[:, None, None] + eye
        logp = _log_gauss(z, means, covs) + weights.log()  # (N, K)   E-step
        ll = torch.logsumexp(logp, dim=1)
        resp = (logp - ll[:, None]).exp()
        if ll.mean().item() - prev < 1e-8:
            break
        prev = ll.mean().item()
    return DegradedPrior(degradation, weights, means, covs, channels=images.shape[1])
