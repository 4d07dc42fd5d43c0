"""Training objectives: what the network is asked to predict, and the loss on that prediction.

Ho et al. (2020) Algorithm 1: draw x_0 from the data, t ~ Uniform{1..T}, eps ~ N(0, I); form
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Eq. 4) and regress the network's output on
its target: eps (Eq. 14, ``L_simple``), the clean image x_0, or the posterior mean mu_tilde(x_t, x_0)
(Eq. 7). Cold diffusion (Bansal et al. 2022) replaces the noise by a deterministic degradation
x_t = D(x_0, t) and always regresses on x_0.

The functions here run inside the training loop, so they call the unchecked cores of
:mod:`diffusion_edu.forward` (each check of its public functions reads a value back from the GPU and
stalls it) on coefficient tables kept on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .forward import (
    PARAMETERIZATIONS,
    posterior_mean,
    v_from_eps_x0,
    x0_from_eps,
    x0_from_posterior_mean,
    x0_from_v,
    xt_from_x0,
)
from .schedules import NoiseSchedule

__all__ = [
    "DiffusionTables",
    "pixel_loss",
    "LOSS_WEIGHTINGS",
    "snr_weight",
    "sample_timesteps",
    "augment_batch",
    "gaussian_loss",
    "cold_loss",
    "discriminator_term",
]


@dataclass(frozen=True)
class DiffusionTables:
    """Per-step coefficients of a schedule in float32 on the training device, indexed by t = 0..T.

    sqrt_alpha_bar, sqrt_one_minus_alpha_bar: the two weights of Ho et al. Eq. 4.
    posterior_mean_coef_x0, posterior_mean_coef_xt: the posterior-mean weights of Ho et al. Eq. 7
    (the schedule's, as in :func:`~diffusion_edu.forward.posterior_mean`).
    """

    sqrt_alpha_bar: torch.Tensor
    sqrt_one_minus_alpha_bar: torch.Tensor
    posterior_mean_coef_x0: torch.Tensor
    posterior_mean_coef_xt: torch.Tensor

    @classmethod
    def from_schedule(cls, schedule: NoiseSchedule, device: torch.device | str = "cpu") -> DiffusionTables:
        ab = schedule.alpha_bar.double().cpu()  # compute in float64, store in float32
        return cls(
            *(
                v.to(device=device, dtype=torch.float32)
                for v in (
                    ab.sqrt(),
                    (1 - ab).sqrt(),
                    schedule.posterior_mean_coef_x0.cpu(),
                    schedule.posterior_mean_coef_xt.cpu(),
                )
            )
        )

    @property
    def T(self) -> int:
        return self.sqrt_alpha_bar.shape[0] - 1

    @staticmethod
    def at(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """values[t] shaped (B, 1, 1, 1) to broadcast against images."""
        return values[t].view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. Eq. 4; book eq. q-sample)."""
        return xt_from_x0(x0, eps, self.at(self.sqrt_alpha_bar, t), self.at(self.sqrt_one_minus_alpha_bar, t))

    def posterior_mean(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """mu_tilde(x_t, x_0) (Ho et al. Eq. 7)."""
        return posterior_mean(x0, xt, self.at(self.posterior_mean_coef_x0, t), self.at(self.posterior_mean_coef_xt, t))

    @staticmethod
    def _check(parameterization: str) -> None:
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be 'eps', 'x0', 'mu' or 'v', got {parameterization!r}")

    def target(
        self, parameterization: str, x0: torch.Tensor, eps: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """What the network should output: eps, x_0, mu_tilde(x_t, x_0) (Ho et al. Eq. 7) or the velocity
        v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022)."""
        self._check(parameterization)
        if parameterization == "eps":
            return eps
        if parameterization == "v":
            return v_from_eps_x0(eps, x0, self.at(self.sqrt_alpha_bar, t), self.at(self.sqrt_one_minus_alpha_bar, t))
        return x0 if parameterization == "x0" else self.posterior_mean(x0, xt, t)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """The signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) at t, shaped (B, 1, 1, 1)."""
        return (self.at(self.sqrt_alpha_bar, t) / self.at(self.sqrt_one_minus_alpha_bar, t)).square()

    def x0_from_output(
        self, output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, parameterization: str
    ) -> torch.Tensor:
        """The clean image the output implies: Eq. 4 solved for x_0 (eps, v), the output itself (x0), or
        Eq. 7 solved for x_0 (mu). t: 1..T (posterior_mean_coef_x0 > 0 there)."""
        self._check(parameterization)
        if parameterization == "eps":
            return x0_from_eps(xt, output, self.at(self.sqrt_alpha_bar, t), self.at(self.sqrt_one_minus_alpha_bar, t))
        if parameterization == "v":
            return x0_from_v(xt, output, self.at(self.sqrt_alpha_bar, t), self.at(self.sqrt_one_minus_alpha_bar, t))
        if parameterization == "x0":
            return output
        return x0_from_posterior_mean(
            output, xt, self.at(self.posterior_mean_coef_x0, t), self.at(self.posterior_mean_coef_xt, t)
        )

    def mu_from_output(
        self, output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, parameterization: str
    ) -> torch.Tensor:
        """The reverse-step mean the output implies: mu_tilde(x_t, x0_pred) (Ho et al. Eq. 7)."""
        if parameterization == "mu":
            return output
        return self.posterior_mean(self.x0_from_output(output, xt, t, parameterization), xt, t)


def pixel_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    loss: Literal["l2", "l1"] = "l2",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over batch and pixels of (output - target)^2 (``l2``, Ho et al. Eq. 14) or |output - target|
    (``l1``, Report E and Bansal et al.); with ``weight`` (B, 1, 1, 1) each image's error is scaled by its
    weight first. Computed in float32 whatever the autocast precision."""
    diff = output.float() - target.float()
    if loss == "l2":
        err = diff.square()
    elif loss == "l1":
        err = diff.abs()
    else:
        raise ValueError(f"loss must be 'l2' or 'l1', got {loss!r}")
    return (err if weight is None else err * weight.float()).mean()


LOSS_WEIGHTINGS: tuple[str, ...] = ("uniform", "min_snr")


def snr_weight(snr: torch.Tensor, parameterization: str, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma weighting (Hang et al. 2023, Eq. 6 and Sec. 3.4) on the regression of ``parameterization``.

    Their weight on the x_0 error is min(SNR_t, gamma). Since x_0 - x0_pred = (eps - eps_pred) / sqrt(SNR_t)
    (Eq. 4) and = sqrt(1 - alpha_bar_t) (v - v_pred), the same weight on the network's own error is
    min(SNR_t, gamma) / SNR_t for eps, min(SNR_t, gamma) for x0, and min(SNR_t, gamma) / (SNR_t + 1) for v.
    It stops the many low-noise steps, whose x_0 is nearly given, from dominating the gradient.
    """
    if not gamma > 0:
        raise ValueError(f"min_snr_gamma must be > 0, got {gamma!r}")
    clipped = snr.clamp(max=gamma)
    if parameterization == "eps":
        return clipped / snr
    if parameterization == "x0":
        return clipped
    if parameterization == "v":
        return clipped / (snr + 1)
    raise ValueError(f"Min-SNR weighting is defined for eps, x0 and v predictions, not {parameterization!r}")


def sample_timesteps(
    batch: int, T: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """t ~ Uniform{1, ..., T} for each image (Ho et al. Algorithm 1 line 3): int64 (batch,)."""
    return torch.randint(1, T + 1, (batch,), generator=generator, device=device)


def augment_batch(
    x0: torch.Tensor,
    y: torch.Tensor,
    *,
    hflip: bool,
    p_uncond: float,
    null_label: int | None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flips (each image with probability 1/2; Ho et al. Sec. 4 for CIFAR-10) and label
    dropout: each label becomes the null label ``null_label`` (= num_classes) with probability
    ``p_uncond``, so that one network learns the conditional and the unconditional model
    (Ho & Salimans 2022, Algorithm 1). x0: (B, C, H, W); y: (B,) int64. Draws flips first, then drops."""
    B = x0.shape[0]
    if hflip:
        flip = torch.rand(B, generator=generator, device=x0.device) < 0.5
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
    if p_uncond > 0:
        if null_label is None:
            raise ValueError("p_uncond > 0 drops labels to the null label, which needs a class-conditional model")
        drop = torch.rand(B, generator=generator, device=y.device) < p_uncond
        y = torch.where(drop, torch.full_like(y, null_label), y)
    return x0, y


def gaussian_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    tables: DiffusionTables,
    parameterization: str = "eps",
    loss: Literal["l2", "l1"] = "l2",
    y: torch.Tensor | None = None,
    weighting: str = "uniform",
    min_snr_gamma: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ho et al. Algorithm 1: loss(model(x_t, t, y), target) with x_t from Eq. 4.

    x0, eps: (B, C, H, W); t: (B,) int64 in 1..T (the model time: training never respaces);
    y: (B,) labels or None. weighting: ``uniform`` (every t alike, Ho et al.'s L_simple) or ``min_snr``
    (:func:`snr_weight` with ``min_snr_gamma``). Returns (scalar loss, output (B, C, H, W), x_t (B, C, H, W)).
    """
    xt = tables.q_sample(x0, t, eps)
    output = model(xt, t) if y is None else model(xt, t, y)
    if weighting == "uniform":
        weight = None
    elif weighting == "min_snr":
        weight = snr_weight(tables.snr(t), parameterization, min_snr_gamma)
    else:
        raise ValueError(f"weighting must be one of {LOSS_WEIGHTINGS}, got {weighting!r}")
    return pixel_loss(output, tables.target(parameterization, x0, eps, xt, t), loss, weight), output, xt


def cold_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    degradation,
    loss: Literal["l2", "l1"] = "l1",
    y: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bansal et al. (2022) Eq. 2: || R(D(x_0, t), t) - x_0 || with the restoration network R.

    Bansal et al. use the L1 norm; Report D uses the mean squared error. ``degradation`` has
    ``.degrade(x0, t)``. Returns (scalar loss, the predicted clean image (B, C, H, W)).
    """
    xt = degradation.degrade(x0, t)
    x0_pred = model(xt, t) if y is None else model(xt, t, y)
    return pixel_loss(x0_pred, x0, loss), x0_pred


def discriminator_term(
    discriminator: torch.nn.Module,
    x_pred: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    kept: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Report A's extra term (its Eqs. 8-9): || softmax(D(x_pred)) - onehot(y) ||^2, averaged over the
    images whose label was not dropped to the null label (``y == num_classes``; 0 if none is left).

    D is a frozen MNIST classifier returning logits; its softmax is compared with the one-hot label so
    that a perfectly confident, correct D gives 0. Gradients flow through D into the network. Report A
    writes D(mu_theta(x_t, y, t)), the predicted x_{t-1}; the training loop feeds D the predicted clean
    image x0_pred by default (``TrainConfig.disc_input``), because D was trained on clean digits: at
    large t the predicted x_{t-1} is nearly pure noise and D's answer on it means nothing, while x0_pred
    is a digit-like image at every t. ``disc_input="mu"`` follows the report. Either way the loop clamps
    the input to D's range [-1, 1] (x0_pred from an eps-prediction divides by sqrt(alpha_bar_t), which
    is tiny at large t, and would otherwise feed D values far outside anything it has seen).

    x_pred: (B, 1, 28, 28) in [-1, 1]; y: (B,) int64 in 0..num_classes. kept: what the sum over the
    kept images is divided by (default: their number here, at least 1). Under DDP each process holds a
    slice of the global batch and passes the global batch's count divided by the number of processes,
    so that the mean of the processes' terms (what DDP's gradient averaging optimises) is the global
    batch's term.
    """
    keep = y != num_classes  # (B,) rows that carry a real label
    probs = F.softmax(discriminator(x_pred).float(), dim=1)  # (B, num_classes)
    onehot = F.one_hot(y.clamp(max=num_classes - 1), num_classes).to(probs.dtype)
    per_image = (probs - onehot).square().sum(dim=1)  # (B,)
    return (per_image * keep).sum() / (keep.sum().clamp(min=1) if kept is None else kept)
