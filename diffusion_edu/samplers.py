"""The reverse process: DDPM and DDIM steps, two fast ODE solvers, the sampling loop and respacing.

(Longer than the package's usual ~400 lines: one loop drives the four steps, which share the
per-step values and conversions defined here, so they stay in one file.)

The model is an argument, never part of the sampler (diffusers' scheduler design): every network
is called as ``model(x, t, y=None)`` with ``t`` the *model time* ``schedule.model_time(t)``. What it
outputs (eps, x0 or mu) is part of its interface: the ``parameterization`` it declares, or the
``parameterization=`` argument of each sampler (:func:`~diffusion_edu.forward.declared_parameterization`;
a network that declares nothing and is not told is refused, never guessed to be an eps network).

``t`` is 1-based: a step goes from x_t to x_{t-1}, t = T..1, and x_0 is the generated image.
Sampling on fewer steps means sampling on a respaced schedule (``diffusion_edu.schedules.respace``,
Report A's sub-sampling): both DDPM and DDIM steps work on any schedule.

Besides the ancestral DDPM step and DDIM, two solvers of the probability-flow ODE take fewer steps
for the same error: DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), a second-order multistep method in
log-SNR time, and Heun's second-order step (Karras et al. 2022, Algorithm 1). Both are deterministic
(x_T fixes the sample) and work on respaced schedules and with guidance.

Each step function numbers its steps with the equation each follows. Inside :func:`sample` the
per-step schedule values are plain Python floats (no host-device copies or syncs per step).
Classifier-free guidance and interpolation between samples live in :mod:`diffusion_edu.guidance`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from ._checks import check_images, check_timesteps
from .forward import (
    Parameterization,
    _sqrt,
    declared_parameterization,
    eps_and_x0,
    eps_from_x0,
    posterior_mean,
    randn_on,
)
from .guidance import check_guidance, guided_output
from .schedules import NoiseSchedule, respace

__all__ = [
    "METHODS",
    "VARIANCES",
    "StepOutput",
    "Trajectory",
    "ddpm_step",
    "ddim_step",
    "dpm_solver_2m_step",
    "heun_step",
    "network_evaluations",
    "sample",
]

Method = Literal["ddpm", "ddim", "dpm_solver_2m", "heun"]
Variance = Literal["beta_tilde", "beta", "zero"]
METHODS: tuple[str, ...] = ("ddpm", "ddim", "dpm_solver_2m", "heun")
VARIANCES: tuple[str, ...] = ("beta_tilde", "beta", "zero")


class StepOutput(NamedTuple):
    """What one reverse step returns: the next image x_{t-1} and the network's x0 prediction at t."""

    x_prev: torch.Tensor
    x0_pred: torch.Tensor


@dataclass
class Trajectory:
    """Every k-th state of a sampling run, for plots and the reverse-process animation.

    t: the schedule indices recorded, T, T - k, ..., and finally 0 (always included).
    model_t: the network time of each entry (the original step for a respaced schedule; 0 at the end).
    xt: (F, n, C, H, W) the images x_t; x0_pred: (F, n, C, H, W) the x0 predicted from each x_t
    (the last entry, t = 0, is the final image itself). F = ceil(T / k) + 1.
    """

    t: list[int]
    model_t: list[int]
    xt: torch.Tensor
    x0_pred: torch.Tensor

    def __len__(self) -> int:
        return len(self.t)


# ---------------------------------------------------------------------------------------------
# Schedule values for one step: Python floats for an int t (cheap, no device syncs), or tensors of
# shape (B, 1, 1, 1) for a batch of different t.
# ---------------------------------------------------------------------------------------------


def _values(schedule: NoiseSchedule, t: int | torch.Tensor, x: torch.Tensor) -> dict[str, Any]:
    names = (
        "alphas",
        "betas",
        "alpha_bar",
        "alpha_bar_prev",
        "beta_tilde",
        "posterior_mean_coef_x0",
        "posterior_mean_coef_xt",
        "model_betas",
    )
    if isinstance(t, int):
        v: dict[str, Any] = {k: float(getattr(schedule, k)[t]) for k in names}
        v["first"] = t == 1  # the last step of the chain, t = 1 -> 0
        v["model_t"] = torch.full((x.shape[0],), int(schedule.timesteps[t]), dtype=torch.int64, device=x.device)
    else:
        v = {k: schedule.at(getattr(schedule, k), t, x) for k in names}
        v["first"] = (t == 1).to(x.device).reshape(-1, *([1] * (x.dim() - 1)))
        v["model_t"] = schedule.model_time(t).to(x.device)
    return v


def _add_noise(x: torch.Tensor, sigma, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """x + sigma z, z ~ N(0, I) (or the given ``noise``); nothing is drawn when sigma is the float 0."""
    if isinstance(sigma, float) and sigma == 0.0:
        return x
    if noise is None:
        noise = randn_on(x.shape, generator, x.device, x.dtype)
    return x + sigma * noise


@dataclass(frozen=True)
class _Net:
    """The network as a step sees it: called as ``model(x_t, model_t, y)`` (guided with ``w``), its output
    read as ``parameterization`` and turned into (eps, x0) by :func:`~diffusion_edu.forward.eps_and_x0`."""

    model: torch.nn.Module
    parameterization: str
    y: torch.Tensor | None
    w: float
    clip_x0: bool

    def predict(
        self, xt: torch.Tensor, t: int | torch.Tensor, schedule: NoiseSchedule
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(eps, x0_pred, values) at step t: the output as eps and x0 (Ho et al. Eqs. 4 and 11 solved);
        with ``clip_x0`` x0 is clipped to the data range [-1, 1] and eps recomputed from it (Eq. 4)."""
        v = _values(schedule, t, xt)
        out = guided_output(self.model, xt, v["model_t"], self.y, self.w)
        eps, x0_pred = eps_and_x0(out, xt, self.parameterization, v["alpha_bar"], v["model_betas"])
        if self.clip_x0:
            x0_pred = x0_pred.clamp(-1.0, 1.0)
            eps = eps_from_x0(xt, x0_pred, _sqrt(v["alpha_bar"]), _sqrt(1.0 - v["alpha_bar"]))
        return eps, x0_pred, v


# ---------------------------------------------------------------------------------------------
# The four steps. The public functions check their input; the loop calls the unchecked cores.
# ---------------------------------------------------------------------------------------------


def _ddpm_core(net: _Net, xt, t, schedule, variance, noise, generator) -> StepOutput:
    # 1. Network output (guided if w != 0) as x0, clipped to [-1, 1] if clip_x0 (Ho et al. Eqs. 4 and 11 solved).
    _, x0_pred, v = net.predict(xt, t, schedule)
    # 2. Mean of p(x_{t-1} | x_t): the posterior mean at the predicted x0 (Ho et al. Eq. 7). Without
    #    clipping it equals 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) (Ho et al. Eq. 11).
    mean = posterior_mean(x0_pred, xt, v["posterior_mean_coef_x0"], v["posterior_mean_coef_xt"])
    # 3. Variance sigma_t^2 (Ho et al. Sec. 3.2): beta_t, beta_tilde_t (Eq. 7) or 0 (Report A);
    #    no noise on the last step t = 1 (Algorithm 2, line 3).
    var = {"beta": v["betas"], "beta_tilde": v["beta_tilde"], "zero": 0.0}[variance]
    if isinstance(v["first"], bool):
        sigma = 0.0 if v["first"] else _sqrt(float(var))
    else:
        sigma = torch.where(v["first"], 0.0, _sqrt(torch.as_tensor(var, dtype=xt.dtype, device=xt.device)))
    # 4. x_{t-1} = mu + sigma_t z, z ~ N(0, I) (Algorithm 2, line 4).
    return StepOutput(_add_noise(mean, sigma, noise, generator), x0_pred)


def _ddim_core(net: _Net, xt, t, schedule, eta, noise, generator) -> StepOutput:
    # 1. Network output (guided if w != 0) as eps and x0 (Song et al. Eq. 12, "predicted x0"); with clip_x0
    #    x0 is clipped to [-1, 1] and eps recomputed to point from it to x_t (Ho et al. Eq. 4).
    eps, x0_pred, v = net.predict(xt, t, schedule)
    ab, ab_prev = v["alpha_bar"], v["alpha_bar_prev"]
    # 2. sigma_t(eta) = eta sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_{t-1})
    #    (Song et al. Eq. 16). eta = 1 gives sigma^2 = beta_tilde (DDPM), eta = 0 a deterministic step.
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    # 3. x_{t-1} = sqrt(alpha_bar_{t-1}) x0 + sqrt(1 - alpha_bar_{t-1} - sigma^2) eps + sigma z (Song et al. Eq. 12).
    direction = 1.0 - ab_prev - var
    direction = max(direction, 0.0) if isinstance(direction, float) else direction.clamp(min=0.0)
    x_prev = _sqrt(ab_prev) * x0_pred + _sqrt(direction) * eps
    return StepOutput(_add_noise(x_prev, _sqrt(var), noise, generator), x0_pred)


def _half_log_snr(alpha_bar: float) -> float:
    """lambda = log(alpha / sigma) with alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) (Lu et al. Sec. 3)."""
    return 0.5 * math.log(alpha_bar / (1.0 - alpha_bar))


def _dpm2m_core(net: _Net, xt, t: int, schedule, x0_last) -> StepOutput:
    # 1. Data prediction x0_theta(x_t, t) (the "++": the solver integrates in x0, which clipping keeps in range).
    _, x0_pred, v = net.predict(xt, t, schedule)
    ab, ab_prev = v["alpha_bar"], v["alpha_bar_prev"]
    # 2. The last step to t = 0 has sigma = 0 (lambda = inf): x_0 = x0_pred, the first-order step.
    if ab_prev >= 1.0:
        return StepOutput(x0_pred, x0_pred)
    # 3. Step size in log-SNR time, h = lambda_{t-1} - lambda_t (Lu et al. Algorithm 2).
    lam_t, lam_prev = _half_log_snr(ab), _half_log_snr(ab_prev)
    h = lam_prev - lam_t
    # 4. D = (1 + 1/(2r)) x0_t - 1/(2r) x0_{t+1}, r = h_last / h (Algorithm 2, line 5); D = x0_t on the
    #    first step, where there is no earlier prediction (then the step is DDIM's, eta = 0).
    if x0_last is None or t == schedule.T:
        d = x0_pred
    else:
        r = (lam_t - _half_log_snr(float(schedule.alpha_bar[t + 1]))) / h
        d = (1.0 + 0.5 / r) * x0_pred - (0.5 / r) * x0_last
    # 5. x_{t-1} = (sigma_{t-1} / sigma_t) x_t - alpha_{t-1} (e^{-h} - 1) D (Algorithm 2, line 6).
    sigma_ratio = math.sqrt((1.0 - ab_prev) / (1.0 - ab))
    return StepOutput(sigma_ratio * xt - math.sqrt(ab_prev) * math.expm1(-h) * d, x0_pred)


def _heun_core(net: _Net, xt, t: int, schedule) -> StepOutput:
    # In Karras et al.'s variables y = x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar), the
    # probability-flow ODE reads dy/dsigma = (y - x0_pred) / sigma = eps (their Eq. 3 with s(t) = 1).
    eps, x0_pred, v = net.predict(xt, t, schedule)
    ab, ab_prev = v["alpha_bar"], v["alpha_bar_prev"]
    sigma, sigma_prev = math.sqrt((1.0 - ab) / ab), math.sqrt((1.0 - ab_prev) / ab_prev)
    y_t = xt / math.sqrt(ab)
    # 1. Euler step to sigma_{t-1} (Algorithm 1, lines 5-6): this alone is DDIM with eta = 0.
    y_euler = y_t + (sigma_prev - sigma) * eps
    # 2. On the last step sigma_{t-1} = 0 and the Euler step is kept (Algorithm 1, line 7): x_0 = x0_pred.
    if ab_prev >= 1.0:
        return StepOutput(y_euler, x0_pred)
    # 3. Heun's correction: average the slopes at both ends (Algorithm 1, lines 8-9); one more network call.
    x_euler = math.sqrt(ab_prev) * y_euler
    eps_prev, _, _ = net.predict(x_euler, t - 1, schedule)
    y_prev = y_t + (sigma_prev - sigma) * 0.5 * (eps + eps_prev)
    return StepOutput(math.sqrt(ab_prev) * y_prev, x0_pred)


def network_evaluations(method: str, steps: int) -> int:
    """How many network calls (per image, before guidance doubles them) ``steps`` steps of ``method`` take:
    one per step, except Heun's, which calls the network twice on every step but the last."""
    _check_choice(method, METHODS, "method")
    _check_int(steps, "steps")
    return 2 * steps - 1 if method == "heun" else steps


def _check_choice(value: str, valid: tuple[str, ...], name: str) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(repr(v) for v in valid)}")


def _check_int(value, name: str, lo: int = 1, hi: int | None = None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        want = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an int {want}{' (or None)' if allow_none else ''}, got {value!r}")


def _check_eta(eta: float) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta!r}")


def _check_trained_T(model, schedule: NoiseSchedule) -> None:
    """A network loaded from a checkpoint carries ``trained_T``: a schedule (before any respacing) of
    another length feeds it times and noise levels it never learned, so the samples are not its own;
    that is said in a warning (a short chain can still be useful to test code, as chapter 5 does)."""
    trained = getattr(model, "trained_T", None)
    base = int(schedule.timesteps[-1])  # the original T, also after respacing
    if trained is not None and base != int(trained):
        warnings.warn(
            f"the network was trained with T={trained} steps but the schedule has T={base}: its samples "
            f"will not be what it learned; use make_schedule(..., {trained}) (or the schedule that "
            "load_model returned), respaced with steps= for a shorter chain",
            stacklevel=3,
        )


def _check_step(model, xt, t, schedule, y, w, noise, clip_x0: bool, parameterization: str | None) -> tuple[Any, _Net]:
    """The step's checked t (an int, or an int64 (B,) tensor) and the network as the step calls it."""
    check_images(xt, "xt")
    if isinstance(t, int) and not isinstance(t, bool):
        _check_int(t, "t (a step goes from x_t to x_(t-1))", 1, schedule.T)
    else:
        t = check_timesteps(t, schedule.T, batch=xt.shape[0])
    if noise is not None and noise.shape != xt.shape:
        raise ValueError(f"noise must have the shape of xt {tuple(xt.shape)}, got {tuple(noise.shape)}")
    y = check_guidance(model, y, w, xt.shape[0], xt.device)
    return t, _Net(model, declared_parameterization(model, parameterization), y, w, clip_x0)


def ddpm_step(
    model: torch.nn.Module,
    xt: torch.Tensor,
    t: int | torch.Tensor,
    schedule: NoiseSchedule,
    *,
    y: torch.Tensor | int | None = None,
    w: float = 0.0,
    variance: Variance = "beta_tilde",
    clip_x0: bool = True,
    parameterization: Parameterization | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One ancestral step x_t -> x_{t-1} (Ho et al. 2020 Algorithm 2; book eq. ddpm-step).

    x_{t-1} = mu_theta(x_t, t) + sigma_t z, with mu the posterior mean (Eq. 7) at the predicted x0
    (clipped to [-1, 1] if ``clip_x0``, as Ho et al.'s code does; without clipping it is Eq. 11) and
    sigma_t^2 = beta_t, beta_tilde_t or 0 (``variance``; 0 is Report A's deterministic reverse process).

    xt: (B, C, H, W); t: int or int64 (B,) in 1..T; y: labels (B,) or an int; w: guidance weight;
    noise: optional z of xt's shape (else drawn from ``generator``). parameterization: what the network
    outputs, ``"eps"``, ``"x0"`` or ``"mu"``; by default the one it declares (see
    :func:`~diffusion_edu.forward.declared_parameterization`). Returns StepOutput(x_prev, x0_pred).
    """
    _check_choice(variance, VARIANCES, "variance")
    t, net = _check_step(model, xt, t, schedule, y, w, noise, clip_x0, parameterization)
    return _ddpm_core(net, xt, t, schedule, variance, noise, generator)


def ddim_step(
    model: torch.nn.Module,
    xt: torch.Tensor,
    t: int | torch.Tensor,
    schedule: NoiseSchedule,
    *,
    y: torch.Tensor | int | None = None,
    w: float = 0.0,
    eta: float = 0.0,
    clip_x0: bool = True,
    parameterization: Parameterization | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One DDIM step x_t -> x_{t-1} (Song, Meng & Ermon 2021 Eq. 12 with sigma from Eq. 16; book eq. ddim-step).

    x_{t-1} = sqrt(alpha_bar_{t-1}) x0_pred + sqrt(1 - alpha_bar_{t-1} - sigma_t^2) eps + sigma_t z,
    sigma_t = eta sqrt(beta_tilde_t). On a respaced schedule "t - 1" is the previous kept step.
    Song et al. write alpha_t for what is alpha_bar_t here.

    Shapes and arguments as :func:`ddpm_step`; eta in [0, 1]. Returns StepOutput(x_prev, x0_pred).
    """
    _check_eta(eta)
    t, net = _check_step(model, xt, t, schedule, y, w, noise, clip_x0, parameterization)
    return _ddim_core(net, xt, t, schedule, float(eta), noise, generator)


def _check_int_t(t, name: str) -> int:
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(
            f"{name} takes one int t for the whole batch (it steps along one time grid), got {type(t).__name__}"
        )
    return t


def dpm_solver_2m_step(
    model: torch.nn.Module,
    xt: torch.Tensor,
    t: int,
    schedule: NoiseSchedule,
    *,
    x0_last: torch.Tensor | None = None,
    y: torch.Tensor | int | None = None,
    w: float = 0.0,
    clip_x0: bool = True,
    parameterization: Parameterization | None = None,
) -> StepOutput:
    """One DPM-Solver++(2M) step x_t -> x_{t-1} (Lu et al. 2022, "DPM-Solver++", Algorithm 2).

    In log-SNR time lambda = log(alpha / sigma), h = lambda_{t-1} - lambda_t:
    x_{t-1} = (sigma_{t-1} / sigma_t) x_t - alpha_{t-1} (e^{-h} - 1) D, where D extrapolates the data
    predictions linearly, D = (1 + 1/(2r)) x0_theta(x_t) - 1/(2r) x0_theta(x_{t+1}), r = h_last / h.
    ``x0_last`` is the x0 prediction the previous step returned (at t + 1); without it (the first step)
    D = x0_theta(x_t) and the step equals DDIM's with eta = 0. The step to t = 0 is first order.

    xt: (B, C, H, W); t: int in 1..T; y, w: labels and guidance weight; parameterization as
    :func:`ddpm_step`. Returns StepOutput(x_prev, x0_pred).
    """
    t, net = _check_step(
        model, xt, _check_int_t(t, "dpm_solver_2m_step"), schedule, y, w, None, clip_x0, parameterization
    )
    if x0_last is not None and x0_last.shape != xt.shape:
        raise ValueError(f"x0_last must have the shape of xt {tuple(xt.shape)}, got {tuple(x0_last.shape)}")
    return _dpm2m_core(net, xt, t, schedule, x0_last)


def heun_step(
    model: torch.nn.Module,
    xt: torch.Tensor,
    t: int,
    schedule: NoiseSchedule,
    *,
    y: torch.Tensor | int | None = None,
    w: float = 0.0,
    clip_x0: bool = True,
    parameterization: Parameterization | None = None,
) -> StepOutput:
    """One step of Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 1).

    With y = x / sqrt(alpha_bar) and sigma = sqrt((1 - alpha_bar) / alpha_bar) the ODE is dy/dsigma = eps:
    an Euler step to sigma_{t-1} (DDIM, eta = 0), then the slope there averaged with the slope at t.
    Two network calls per step; the last step (sigma_{t-1} = 0) is the Euler step alone.

    Shapes and arguments as :func:`dpm_solver_2m_step`. Returns StepOutput(x_prev, x0_pred).
    """
    t, net = _check_step(model, xt, _check_int_t(t, "heun_step"), schedule, y, w, None, clip_x0, parameterization)
    return _heun_core(net, xt, t, schedule)


# ---------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _inference(model) -> Iterator[None]:
    """No gradients, and the model in eval mode (dropout off) for the duration; its mode is restored."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _device_dtype(model, x_T: torch.Tensor | None, device) -> tuple[torch.device, torch.dtype]:
    p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    if device is not None:
        dev = torch.device(device)
    else:
        dev = p.device if p is not None else x_T.device if x_T is not None else torch.device("cpu")
    dtype = p.dtype if p is not None else x_T.dtype if x_T is not None else torch.float32
    return dev, dtype


Step = Callable[[_Net, torch.Tensor, int, "torch.Tensor | None"], StepOutput]


def _step_function(
    method: str, schedule: NoiseSchedule, eta: float, variance: str, generator: torch.Generator | None
) -> Step:
    """The unchecked step of ``method`` as ``step(net, x_t, t, x0_last) -> StepOutput``; x0_last (the x0
    prediction of the step before) is what DPM-Solver++(2M) extrapolates from, the others ignore it."""
    if method == "ddpm":
        return lambda net, x, t, x0_last: _ddpm_core(net, x, t, schedule, variance, None, generator)
    if method == "ddim":
        return lambda net, x, t, x0_last: _ddim_core(net, x, t, schedule, eta, None, generator)
    if method == "dpm_solver_2m":
        return lambda net, x, t, x0_last: _dpm2m_core(net, x, t, schedule, x0_last)
    return lambda net, x, t, x0_last: _heun_core(net, x, t, schedule)


class _Recorder:
    """Keeps every k-th (t, x_t, x0_pred) of each chunk of images for the :class:`Trajectory`."""

    def __init__(self, every: int | None) -> None:
        self.every = every
        self.t: list[int] = []
        self.xt: list[list[torch.Tensor]] = []  # one list of frames per chunk
        self.x0: list[list[torch.Tensor]] = []

    def start_chunk(self) -> None:
        if self.every is not None:
            self.t = []  # the same steps in every chunk
            self.xt.append([])
            self.x0.append([])

    def record(self, T: int, t: int, x: torch.Tensor, x0_pred: torch.Tensor) -> None:
        if self.every is not None and (T - t) % self.every == 0:
            self.t.append(t)
            self.xt[-1].append(x)
            self.x0[-1].append(x0_pred)

    def end_chunk(self, x0: torch.Tensor) -> None:
        self.record(0, 0, x0, x0)  # t = 0 closes the record: the image is its own x0

    def trajectory(self, schedule: NoiseSchedule) -> Trajectory:
        xt = torch.cat([torch.stack(f) for f in self.xt], dim=1)  # (F, n, C, H, W)
        x0 = torch.cat([torch.stack(f) for f in self.x0], dim=1)
        return Trajectory(t=self.t, model_t=[int(schedule.timesteps[t]) for t in self.t], xt=xt, x0_pred=x0)


def sample(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    n: int,
    *,
    method: Method = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    variance: Variance = "beta_tilde",
    y: torch.Tensor | int | None = None,
    w: float = 0.0,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    x_T: torch.Tensor | None = None,
    trajectory_every: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    parameterization: Parameterization | None = None,
) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
    """Generate n images by running the reverse process from x_T ~ N(0, I) down to x_0.

    method: ``"ddpm"`` (Ho et al. Algorithm 2, with ``variance``), ``"ddim"`` (Song et al. Eq. 12,
    with ``eta``), or one of the deterministic ODE solvers ``"dpm_solver_2m"`` (Lu et al. 2022) and
    ``"heun"`` (Karras et al. 2022; two network calls per step, see :func:`network_evaluations`). steps: sample on ``respace(schedule, steps)`` (1..T steps; None = all T).
    y, w: labels (int or (n,)) and classifier-free guidance weight. x_T: optional start (n, C, H, W);
    otherwise drawn from ``generator`` with the model's ``in_channels`` and ``image_size``.
    batch_size: run at most this many images at a time (for 1,000-10,000 evaluation samples); x_T and
    each step's noise are then drawn chunk by chunk. Runs without gradients, with the model in eval
    mode, on the model's device and dtype (``device`` overrides). ``generator`` may live on any device:
    every draw happens on the generator's own device and the noise then moves to the model's
    (:func:`~diffusion_edu.forward.randn_on`), so a CPU generator gives the same noise everywhere.
    parameterization: what the network outputs (default: what it declares; see :func:`ddpm_step`).

    The loop below is the whole algorithm: for each chunk of images, x_T is drawn and every step of
    ``method`` maps x_t to x_{t-1}, t = T..1 (indices of the possibly respaced schedule).

    Returns images (n, C, H, W), or (images, Trajectory) when ``trajectory_every = k`` is given.
    """
    dev, dtype = _device_dtype(model, x_T, device)
    schedule, shape, y = _check_sample(
        model, schedule, n, method, steps, eta, variance, y, w, x_T, trajectory_every, batch_size, dev
    )
    step = _step_function(method, schedule, float(eta), variance, generator)
    p = declared_parameterization(model, parameterization)
    bs = batch_size or n
    images, record = [], _Recorder(trajectory_every)
    bar = _progress_bar(progress, schedule.T * math.ceil(n / bs), f"{method} sampling")
    with _inference(model):
        for start in range(0, n, bs):  # at most bs images at a time
            b = min(bs, n - start)
            x = randn_on((b, *shape), generator, dev, dtype) if x_T is None else x_T[start : start + b].to(dev, dtype)
            net = _Net(model, p, None if y is None else y[start : start + b], w, clip_x0)
            x0_last = None
            record.start_chunk()
            for t in range(schedule.T, 0, -1):  # x_T -> x_{T-1} -> ... -> x_0 (schedule indices)
                out = step(net, x, t, x0_last)
                record.record(schedule.T, t, x, out.x0_pred)
                x, x0_last = out.x_prev, out.x0_pred
                bar.update(1)
            record.end_chunk(x)
            images.append(x)
    bar.close()
    if trajectory_every is None:
        return torch.cat(images)
    return torch.cat(images), record.trajectory(schedule)


class _NoBar:
    def update(self, k: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: bool, total: int, desc: str):
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _check_sample(
    model, schedule: NoiseSchedule, n, method, steps, eta, variance, y, w, x_T, every, batch_size, dev: torch.device
) -> tuple[NoiseSchedule, tuple[int, ...], torch.Tensor | None]:
    """Check :func:`sample`'s arguments; return the (respaced, CPU) schedule, the image shape (C, H, W)
    and the checked labels (n,) or None."""
    _check_choice(method, METHODS, "method")
    _check_choice(variance, VARIANCES, "variance")
    _check_eta(eta)
    if method == "ddpm" and eta != 0:
        raise ValueError(f"eta={eta} only applies to method='ddim'; DDPM's noise is chosen with variance=")
    if method in ("dpm_solver_2m", "heun") and eta != 0:
        raise ValueError(f"eta={eta} does not apply to method={method!r}, a deterministic ODE solver")
    if method != "ddpm" and variance != "beta_tilde":
        raise ValueError(
            f"variance={variance!r} only applies to method='ddpm'; "
            f"{'DDIM' if method == 'ddim' else method}'s noise is chosen with eta= (ODE solvers: none)"
        )
    _check_int(n, "n (the number of images)")
    _check_int(batch_size, "batch_size", allow_none=True)
    _check_int(every, "trajectory_every", allow_none=True)
    _check_int(steps, f"steps (the number of sampling steps, at most T={schedule.T})", 1, schedule.T, allow_none=True)
    _check_trained_T(model, schedule)
    if steps is not None:
        schedule = respace(schedule, steps)
    if x_T is not None:
        check_images(x_T, "x_T")
        if x_T.shape[0] != n:
            raise ValueError(f"x_T must hold n={n} images, got shape {tuple(x_T.shape)}")
        shape = tuple(x_T.shape[1:])
    else:
        c, s = getattr(model, "in_channels", None), getattr(model, "image_size", None)
        if c is None or s is None:
            raise ValueError("pass x_T, or give the model the attributes in_channels and image_size")
        shape = (c, s, s)
    y = check_guidance(model, y, w, n, dev)
    return schedule.to("cpu"), shape, y  # per-step values are read as Python floats: no device syncs
