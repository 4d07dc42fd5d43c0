"""Small exact computations behind the book's corrections of the reports.

- :func:`ema_weights`: how much each training step's parameters weigh in an exponential moving
  average (EMA) of the weights, for an EMA that starts late and updates every few steps.
- :func:`eps_posterior` and :func:`eps_minimisers`: for 1-D data from a Gaussian mixture, the exact
  distribution of the noise eps given x_t, and what a network trained with the squared error (its mean)
  or the absolute error (its median) would output there, next to -sqrt(1 - alpha_bar_t) times the score.
- :func:`zero_variance_noise_scale`: what the ancestral DDPM step with sigma_t = 0 does to the noise
  in x_t (it is not DDIM).
- :func:`within_class_diversity`: the mean pairwise distance of samples of one class, in any features.

Nothing here trains or samples; every function is a formula on its arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .schedules import NoiseSchedule

__all__ = [
    "ema_weights",
    "MixturePosterior",
    "eps_posterior",
    "eps_minimisers",
    "zero_variance_noise_scale",
    "within_class_diversity",
    "mean_within_class_diversity",
]


def _int_at_least(value: object, low: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def ema_weights(steps: int, decay: float, every: int = 1, start: int = 0) -> torch.Tensor:
    """The weight of each step's parameters theta_s in the EMA after ``steps`` training steps, (steps + 1,).

    The EMA is a copy of theta_start at step ``start`` (earlier steps weigh nothing), then at every step
    s = start + every, start + 2 every, ... <= steps it becomes psi <- decay psi + (1 - decay) theta_s
    (Ho et al. 2020 use decay 0.9999, every = 1, start = 0). With K updates, theta_start keeps decay^K and
    the k-th update's theta keeps (1 - decay) decay^(K - k); the weights sum to 1. Index s is the step.
    """
    steps = _int_at_least(steps, 0, "steps")
    every = _int_at_least(every, 1, "every")
    start = _int_at_least(start, 0, "start")
    if start > steps:
        raise ValueError(f"start must be <= steps={steps}, got {start}")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be a float in [0, 1), got {decay!r}")
    w = torch.zeros(steps + 1, dtype=torch.float64)
    updates = torch.arange(start + every, steps + 1, every)
    K = len(updates)
    w[start] = decay**K
    w[updates] = (1.0 - decay) * decay ** torch.arange(K - 1, -1, -1, dtype=torch.float64)
    return w


@dataclass(frozen=True)
class MixturePosterior:
    """A 1-D Gaussian mixture: ``weights`` (sum 1), ``means`` and ``stds`` of its components, (K,) each."""

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor

    def mean(self) -> float:
        return float((self.weights * self.means).sum())

    def cdf(self, c: float) -> float:
        z = (c - self.means) / (self.stds * math.sqrt(2.0))
        return float((self.weights * 0.5 * (1.0 + torch.erf(z))).sum())

    def median(self, tol: float = 1e-12) -> float:
        """The point c with cdf(c) = 1/2, by bisection."""
        lo = float((self.means - 12 * self.stds).min())
        hi = float((self.means + 12 * self.stds).max())
        while hi - lo > tol * max(1.0, abs(lo) + abs(hi)):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.cdf(mid) < 0.5 else (lo, mid)
        return 0.5 * (lo + hi)

    def abs_error(self, c: float) -> float:
        """E|X - c|: for N(m, s^2), (m - c)(1 - 2 Phi((c - m) / s)) + 2 s phi((c - m) / s)."""
        z = (c - self.means) / self.stds
        phi = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
        Phi = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        return float((self.weights * ((self.means - c) * (1 - 2 * Phi) + 2 * self.stds * phi)).sum())


def _mixture(weights: Sequence[float], means: Sequence[float], stds: Sequence[float]):
    w, m, s = (torch.as_tensor(v, dtype=torch.float64).flatten() for v in (weights, means, stds))
    if not (w.numel() == m.numel() == s.numel() >= 1):
        raise ValueError(
            f"weights, means and stds must have one entry per component, got {w.numel()}, {m.numel()}, {s.numel()}"
        )
    if (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-9:
        raise ValueError(f"weights must be >= 0 and sum to 1, got {w.tolist()}")
    if (s <= 0).any():
        raise ValueError(f"stds must be > 0, got {s.tolist()}")
    return w, m, s


def eps_posterior(
    xt: float, alpha_bar: float, weights: Sequence[float], means: Sequence[float], stds: Sequence[float]
) -> tuple[MixturePosterior, float]:
    """The distribution of eps given x_t = sqrt(ab) x0 + sqrt(1 - ab) eps (book eq. q-sample), for
    x0 ~ sum_k w_k N(m_k, s_k^2), and -sqrt(1 - ab) d/dx_t log p(x_t) (the score reading of eps).

    The marginal is sum_k w_k N(sqrt(ab) m_k, v_k), v_k = ab s_k^2 + 1 - ab; component k of eps | x_t is
    Gaussian with mean sqrt(1 - ab) (x_t - sqrt(ab) m_k) / v_k and variance ab s_k^2 / v_k, weighted by the
    responsibility r_k of component k for x_t. Returns (posterior of eps, -sqrt(1 - ab) * score).
    """
    if not 0.0 < alpha_bar < 1.0:
        raise ValueError(f"alpha_bar must be in (0, 1), got {alpha_bar!r}")
    w, m, s = _mixture(weights, means, stds)
    a, b = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    v = alpha_bar * s**2 + b**2
    log_r = torch.log(w.clamp_min(1e-300)) - 0.5 * torch.log(2 * math.pi * v) - 0.5 * (xt - a * m) ** 2 / v
    r = torch.softmax(log_r, 0)
    post = MixturePosterior(r, b * (xt - a * m) / v, torch.sqrt(alpha_bar * s**2 / v))
    score = float((r * -(xt - a * m) / v).sum())
    return post, -b * score


def eps_minimisers(
    xt: float, alpha_bar: float, weights: Sequence[float], means: Sequence[float], stds: Sequence[float]
) -> dict[str, float]:
    """What a perfect network outputs at x_t under each loss: the squared error's minimiser E[eps | x_t]
    ("l2"), the absolute error's, the median of eps | x_t ("l1"), and -sqrt(1 - ab) * score ("score_eps",
    equal to "l2" by Tweedie's formula)."""
    post, score_eps = eps_posterior(xt, alpha_bar, weights, means, stds)
    return {"l2": post.mean(), "l1": post.median(), "score_eps": score_eps}


def zero_variance_noise_scale(schedule: NoiseSchedule) -> torch.Tensor:
    """How much of the noise an ancestral DDPM chain with sigma_t = 0 keeps, relative to the
    sqrt(1 - alpha_bar_t) that x_t should carry, for a network whose eps is exact: (T + 1,), rho_T = 1.

    Ho et al. Eq. 7's mean written with eps is sqrt(ab_{t-1}) x0 + sqrt(1 - ab_{t-1} - beta_tilde_t) eps:
    DDIM's eta = 1 step without its noise (Song et al. 2021, Eq. 12). Each step multiplies the noise's
    share by r_t = sqrt(1 - beta_t / (1 - ab_t)); the product telescopes to rho_t = sqrt(SNR_T / SNR_t),
    SNR = ab / (1 - ab). DDIM with eta = 0 keeps rho_t = 1. Computed here from the per-step table.
    """
    betas = schedule.betas.double()
    ab = schedule.alpha_bar.double()
    r2 = 1.0 - betas[1:] / (1.0 - ab[1:])  # t = 1..T
    keep = torch.ones(schedule.T + 1, dtype=torch.float64)
    keep[:-1] = torch.cumprod(r2.flip(0), 0).flip(0)  # keep[t] = prod_{s = t+1..T} r_s^2
    return keep.clamp_min(0.0).sqrt()


def within_class_diversity(features: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """The mean Euclidean distance between two different samples of the same class, per class:
    (num_classes,), NaN for a class with fewer than 2 samples. features: (N, d); labels: int (N,)."""
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features must be (N, d) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    f = features.double()
    out = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        fc = f[labels == c]
        n = fc.shape[0]
        if n >= 2:
            out[c] = torch.cdist(fc, fc).sum() / (n * (n - 1))
    return out


def mean_within_class_diversity(features_and_labels: torch.Tensor, num_classes: int = 10) -> float:
    """:func:`within_class_diversity` averaged over the classes that have 2 samples or more, from one
    (N, d + 1) tensor whose last column is the label (so that a bootstrap resamples both together)."""
    f, y = features_and_labels[:, :-1], features_and_labels[:, -1].round().long()
    d = within_class_diversity(f, y, num_classes)
    return float(d[~d.isnan()].mean())
