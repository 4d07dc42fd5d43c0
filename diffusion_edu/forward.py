"""The forward (noising) process and the conversions between what a network can predict.

Equations are from Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models"; the book
derives each of them in chapter 1 (the forward process) and chapter 2 (the reverse process).
``t`` is 1-based; ``t = 0`` is the clean image (see :mod:`diffusion_edu.schedules`).

Two layers. The *cores* (``xt_from_x0`` ... ``eps_and_x0``) are each formula once, written on the
schedule's coefficients at t (Python floats, or tensors of shape (B, 1, 1, 1)): they check nothing and
never read a value back from the device, so the sampling loop, the training losses and the chapters
call them directly. The *public functions* (``q_sample`` ... ``eps_and_x0_from_output``) take images
of shape (B, C, H, W) and ``t`` as an int or an int tensor of shape (B,), check them, look the
coefficients up in the schedule and delegate to a core.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ._checks import check_images, check_timesteps
from .schedules import NoiseSchedule

__all__ = [
    "Parameterization",
    "PARAMETERIZATIONS",
    "declared_parameterization",
    "Coefficient",
    "xt_from_x0",
    "x0_from_eps",
    "eps_from_x0",
    "posterior_mean",
    "x0_from_posterior_mean",
    "mean_from_eps",
    "eps_from_mean",
    "v_from_eps_x0",
    "eps_from_v",
    "x0_from_v",
    "eps_and_x0",
    "randn_on",
    "randn_like",
    "q_step",
    "q_sample",
    "q_mean_variance",
    "q_posterior",
    "predict_x0_from_eps",
    "predict_eps_from_x0",
    "posterior_mean_from_eps",
    "eps_from_posterior_mean",
    "eps_and_x0_from_output",
]

Parameterization = Literal["eps", "x0", "mu", "v"]
"""What the network outputs: the noise eps (Ho et al.'s choice), the clean image x0, the
posterior mean mu (Report A compares eps and mu), or the velocity v = sqrt(alpha_bar_t) eps -
sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022, Sec. 4)."""
PARAMETERIZATIONS: tuple[str, ...] = ("eps", "x0", "mu", "v")
_VALID = "valid: 'eps', 'x0', 'mu', 'v'"


def declared_parameterization(model: object, parameterization: str | None = None) -> Parameterization:
    """What ``model`` outputs: the ``parameterization`` it declares (a :class:`~diffusion_edu.models.Denoiser`
    takes it as a constructor argument; any other network declares it as an attribute), or the one
    passed here. A network that declares nothing must be told (no guess: an x0 network read as an eps
    network gives wrong samples without an error); the two must agree when both are given."""
    declared = getattr(model, "parameterization", None)
    for value, where in (
        (parameterization, "parameterization"),
        (declared, f"{type(model).__name__}.parameterization"),
    ):
        if value is not None and value not in PARAMETERIZATIONS:
            raise ValueError(f"unknown {where} {value!r}; {_VALID}")
    if parameterization is not None and declared is not None and parameterization != declared:
        raise ValueError(
            f"parameterization={parameterization!r} but the network declares {declared!r} "
            f"({type(model).__name__}.parameterization): they must agree"
        )
    chosen = parameterization if parameterization is not None else declared
    if chosen is None:
        raise ValueError(
            f"the network {type(model).__name__} does not declare what it outputs: pass "
            "parameterization='eps', 'x0', 'mu' or 'v', or give its class a parameterization attribute "
            "(the package's networks take parameterization=... when built)"
        )
    return chosen  # type: ignore[return-value]


Coefficient = float | torch.Tensor
"""A schedule value at t: a Python float (one t for the batch) or a tensor of shape (B, 1, 1, 1)."""


# ---------------------------------------------------------------------------------------------
# The cores: each formula once, unchecked, on the coefficients at t.
# sqrt_ab = sqrt(alpha_bar_t), sqrt_1m_ab = sqrt(1 - alpha_bar_t) (the two weights of Eq. 4).
# ---------------------------------------------------------------------------------------------


def _sqrt(v: Coefficient) -> Coefficient:
    return math.sqrt(v) if isinstance(v, float) else v.sqrt()


def xt_from_x0(x0: torch.Tensor, eps: torch.Tensor, sqrt_ab: Coefficient, sqrt_1m_ab: Coefficient) -> torch.Tensor:
    """Ho et al. Eq. 4: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
    return sqrt_ab * x0 + sqrt_1m_ab * eps


def x0_from_eps(xt: torch.Tensor, eps: torch.Tensor, sqrt_ab: Coefficient, sqrt_1m_ab: Coefficient) -> torch.Tensor:
    """Eq. 4 solved for x_0: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    return (xt - sqrt_1m_ab * eps) / sqrt_ab


def eps_from_x0(xt: torch.Tensor, x0: torch.Tensor, sqrt_ab: Coefficient, sqrt_1m_ab: Coefficient) -> torch.Tensor:
    """Eq. 4 solved for the noise: eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
    return (xt - sqrt_ab * x0) / sqrt_1m_ab


def posterior_mean(x0: torch.Tensor, xt: torch.Tensor, coef_x0: Coefficient, coef_xt: Coefficient) -> torch.Tensor:
    """Ho et al. Eq. 7: mu_tilde(x_t, x_0) = coef_x0 x_0 + coef_xt x_t, with the schedule's
    ``posterior_mean_coef_x0`` and ``posterior_mean_coef_xt`` at t."""
    return coef_x0 * x0 + coef_xt * xt


def x0_from_posterior_mean(
    mu: torch.Tensor, xt: torch.Tensor, coef_x0: Coefficient, coef_xt: Coefficient
) -> torch.Tensor:
    """Eq. 7 solved for x_0: x_0 = (mu - coef_xt x_t) / coef_x0 (t >= 1, where coef_x0 > 0)."""
    return (mu - coef_xt * xt) / coef_x0


def mean_from_eps(
    xt: torch.Tensor, eps: torch.Tensor, sqrt_alpha: Coefficient, beta: Coefficient, sqrt_1m_ab: Coefficient
) -> torch.Tensor:
    """Ho et al. Eq. 11: mu = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps)."""
    return (xt - beta / sqrt_1m_ab * eps) / sqrt_alpha


def eps_from_mean(
    xt: torch.Tensor, mu: torch.Tensor, sqrt_alpha: Coefficient, beta: Coefficient, sqrt_1m_ab: Coefficient
) -> torch.Tensor:
    """Eq. 11 solved for the noise: eps = (x_t - sqrt(alpha_t) mu) sqrt(1 - alpha_bar_t) / beta_t."""
    return (xt - sqrt_alpha * mu) * sqrt_1m_ab / beta


def v_from_eps_x0(eps: torch.Tensor, x0: torch.Tensor, sqrt_ab: Coefficient, sqrt_1m_ab: Coefficient) -> torch.Tensor:
    """Salimans & Ho (2022) Sec. 4: the velocity v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0."""
    return sqrt_ab * eps - sqrt_1m_ab * x0


def eps_from_v(xt: torch.Tensor, v: torch.Tensor, sqrt_ab: Coefficient, sqrt_1m_ab: Coefficient) -> torch.Tensor:
    """Eq. 4 and the velocity solved for the noise: eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v
    (the two weights' squares sum to 1)."""
    return sqrt_1m_ab * xt + sqrt_ab * v


def x0_from_v(xt: torch.Tensor, v: torch.Tensor, sqrt_ab: Coefficient, sqrt_1m_ab: Coefficient) -> torch.Tensor:
    """Eq. 4 and the velocity solved for the clean image: x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
    return sqrt_ab * xt - sqrt_1m_ab * v


def eps_and_x0(
    output: torch.Tensor, xt: torch.Tensor, parameterization: str, alpha_bar: Coefficient, model_beta: Coefficient
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) from a network's output, whichever of eps, x0, mu or v it predicts (Eqs. 4 and 11 solved).

    alpha_bar: alpha_bar_t; model_beta: beta of the network's own step (``schedule.model_betas`` at t:
    on a respaced schedule the original step t_k -> t_k - 1 the network was trained on; used for mu).
    """
    sqrt_ab, sqrt_1m_ab = _sqrt(alpha_bar), _sqrt(1.0 - alpha_bar)
    if parameterization == "x0":
        return eps_from_x0(xt, output, sqrt_ab, sqrt_1m_ab), output
    if parameterization == "v":
        return eps_from_v(xt, output, sqrt_ab, sqrt_1m_ab), x0_from_v(xt, output, sqrt_ab, sqrt_1m_ab)
    if parameterization == "mu":
        output = eps_from_mean(xt, output, _sqrt(1.0 - model_beta), model_beta, sqrt_1m_ab)
    elif parameterization != "eps":
        raise ValueError(f"unknown parameterization {parameterization!r}; {_VALID}")
    return output, x0_from_eps(xt, output, sqrt_ab, sqrt_1m_ab)


# ---------------------------------------------------------------------------------------------
# Noise, and the checked public functions.
# ---------------------------------------------------------------------------------------------


def randn_on(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``. With a ``generator`` the noise is drawn on the
    generator's own device and then moved to ``device``: a CPU generator draws on the CPU (the same
    numbers on every machine, whatever the model's device), a CUDA generator draws on its GPU. A
    generator never draws on a device other than its own (PyTorch refuses: "Expected a 'cuda' device
    type for generator")."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return z.to(device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` on ``x``'s device, drawn from ``generator`` when given
    (reproducible; drawn on the generator's device, see :func:`randn_on`)."""
    return randn_on(x.shape, generator, x.device, x.dtype)


def _noise(x: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    if noise is None:
        return randn_like(x, generator)
    if noise.shape != x.shape:
        raise ValueError(f"noise must have the images' shape {tuple(x.shape)}, got {tuple(noise.shape)}")
    return noise


def q_step(
    x_prev: torch.Tensor,
    t: torch.Tensor | int,
    schedule: NoiseSchedule,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One Markov step of the forward process, x_{t-1} -> x_t (Ho et al. Eq. 2; book eq. q-step).

    q(x_t | x_{t-1}) = N(x_t; sqrt(alpha_t) x_{t-1}, beta_t I),
    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps,  eps ~ N(0, I).

    x_prev: (B, C, H, W); t: 1..T. Returns x_t with the same shape.
    """
    check_images(x_prev, "x_prev")
    t = check_timesteps(t, schedule.T, batch=x_prev.shape[0])
    eps = _noise(x_prev, noise, generator)
    return schedule.at(schedule.alphas, t, x_prev).sqrt() * x_prev + schedule.at(schedule.betas, t, x_prev).sqrt() * eps


def q_sample(
    x0: torch.Tensor,
    t: torch.Tensor | int,
    schedule: NoiseSchedule,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Jump straight from x_0 to x_t (Ho et al. Eq. 4; book eq. q-sample).

    q(x_t | x_0) = N(x_t; sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

    x0: (B, C, H, W); t: 0..T (t = 0 returns x0 unchanged); noise: optional eps of x0's shape.
    """
    check_images(x0, "x0")
    t = check_timesteps(t, schedule.T, batch=x0.shape[0], allow_zero=True)
    eps = _noise(x0, noise, generator)
    ab = schedule.at(schedule.alpha_bar, t, x0)  # (B, 1, 1, 1)
    return xt_from_x0(x0, eps, ab.sqrt(), (1.0 - ab).sqrt())


def q_mean_variance(
    x0: torch.Tensor, t: torch.Tensor | int, schedule: NoiseSchedule
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, C, H, W) and variance (B, 1, 1, 1) of q(x_t | x_0) (Ho et al. Eq. 4)."""
    check_images(x0, "x0")
    t = check_timesteps(t, schedule.T, batch=x0.shape[0], allow_zero=True)
    ab = schedule.at(schedule.alpha_bar, t, x0)
    return ab.sqrt() * x0, 1.0 - ab


def q_posterior(
    x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor | int, schedule: NoiseSchedule
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward-process posterior q(x_{t-1} | x_t, x_0) (Ho et al. Eqs. 6-7; book eq. posterior).

    mu_tilde = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
               + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
    beta_tilde = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

    x0, xt: (B, C, H, W); t: 1..T. Returns (mean (B, C, H, W), variance (B, 1, 1, 1)).
    At t = 1 the mean is x_0 and the variance 0.
    """
    check_images(x0, "x0")
    check_images(xt, "xt")
    if x0.shape != xt.shape:
        raise ValueError(f"x0 and xt must have the same shape, got {tuple(x0.shape)} and {tuple(xt.shape)}")
    t = check_timesteps(t, schedule.T, batch=x0.shape[0])
    mean = posterior_mean(
        x0, xt, schedule.at(schedule.posterior_mean_coef_x0, t, x0), schedule.at(schedule.posterior_mean_coef_xt, t, xt)
    )
    return mean, schedule.at(schedule.beta_tilde, t, x0)


def predict_x0_from_eps(
    xt: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor, schedule: NoiseSchedule
) -> torch.Tensor:
    """Invert Ho et al. Eq. 4 for x_0 given the noise (book eq. x0-from-eps).

    x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t).   t: 1..T.
    """
    t = check_timesteps(t, schedule.T, batch=xt.shape[0])
    ab = schedule.at(schedule.alpha_bar, t, xt)
    return x0_from_eps(xt, eps, ab.sqrt(), (1.0 - ab).sqrt())


def predict_eps_from_x0(
    xt: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor, schedule: NoiseSchedule
) -> torch.Tensor:
    """Invert Ho et al. Eq. 4 for the noise given x_0: eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
    t = check_timesteps(t, schedule.T, batch=xt.shape[0])
    ab = schedule.at(schedule.alpha_bar, t, xt)
    return eps_from_x0(xt, x0, ab.sqrt(), (1.0 - ab).sqrt())


def posterior_mean_from_eps(
    xt: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor, schedule: NoiseSchedule
) -> torch.Tensor:
    """The reverse-step mean written with the noise (Ho et al. Eq. 11; book eq. mu-from-eps).

    mu = 1 / sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps).   t: 1..T.
    Equal to q_posterior's mean with x_0 = predict_x0_from_eps(x_t, t, eps).
    """
    t = check_timesteps(t, schedule.T, batch=xt.shape[0])
    a = schedule.at(schedule.alphas, t, xt)
    b = schedule.at(schedule.betas, t, xt)
    ab = schedule.at(schedule.alpha_bar, t, xt)
    return mean_from_eps(xt, eps, a.sqrt(), b, (1.0 - ab).sqrt())


def eps_from_posterior_mean(
    xt: torch.Tensor, t: torch.Tensor | int, mu: torch.Tensor, schedule: NoiseSchedule
) -> torch.Tensor:
    """Invert Ho et al. Eq. 11: eps = (x_t - sqrt(alpha_t) mu) * sqrt(1 - alpha_bar_t) / beta_t.

    alpha_t and beta_t are those of the network's own step (``schedule.model_betas``): on a respaced
    schedule, the original step t_k -> t_k - 1 the network was trained on, not the respaced jump."""
    t = check_timesteps(t, schedule.T, batch=xt.shape[0])
    assert schedule.model_betas is not None  # NoiseSchedule fills it (betas for an ordinary schedule)
    b = schedule.at(schedule.model_betas, t, xt)
    ab = schedule.at(schedule.alpha_bar, t, xt)
    return eps_from_mean(xt, mu, (1.0 - b).sqrt(), b, (1.0 - ab).sqrt())


def eps_and_x0_from_output(
    output: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor | int,
    schedule: NoiseSchedule,
    parameterization: Parameterization = "eps",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a network's output into (eps, x0) whichever quantity it predicts.

    parameterization: ``"eps"`` (output is the noise), ``"x0"`` (the clean image), ``"mu"``
    (the posterior mean, Ho et al. Eq. 11 inverted with the network's own step ``model_betas``) or
    ``"v"`` (the velocity, Salimans & Ho 2022).
    Shapes: all (B, C, H, W).
    """
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {parameterization!r}; {_VALID}")
    t = check_timesteps(t, schedule.T, batch=xt.shape[0])
    assert schedule.model_betas is not None  # NoiseSchedule fills it (betas for an ordinary schedule)
    ab, beta = schedule.at(schedule.alpha_bar, t, xt), schedule.at(schedule.model_betas, t, xt)
    return eps_and_x0(output, xt, parameterization, ab, beta)
