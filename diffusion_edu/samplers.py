"""The reverse process: DDPM and DDIM steps, two fast ODE solvers, the sampling loop and respacing.

(Longer than the package's usual ~400 lines: one loop drives the four steps, which share the
per-step values and conversions defined here, so they stay in one file.)

The model is an argument, never part of the sampler (diffusers' scheduler design): every network
is called as ``model(x, t, y=None)`` with ``t`` the *model time* ``schedule.model_time(t)``, and what
it outputs (eps, x0 or mu) is read from ``getattr(model, "parameterization", "eps")``.

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
from dataclasses import dataclass
from typing import Iterator, Literal, NamedTuple

import torch

from ._checks import check_images, check_timesteps
from .forward import PARAMETERIZATIONS, _sqrt, eps_and_x0, eps_from_x0, posterior_mean, randn_on
from .guidance import check_guidance, guided_output
from .schedules import NoiseSchedule, respace

__all__ = ["METHODS", "VARIANCES", "StepOutput", "Trajectory", "ddpm_step", "ddim_step",
           "dpm_solver_2m_step", "heun_step", "network_evaluations", "sample"]

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


def _values(schedule: NoiseSchedule, t: int | torch.Tensor, x: torch.Tensor) -> dict:
    names = ("alphas", "betas", "alpha_bar", "alpha_bar_prev", "beta_tilde",
             "posterior_mean_coef_x0", "posterior_mean_coef_xt", "model_betas")
    if isinstance(t, int):
        v = {k: float(getattr(schedule, k)[t]) for k in names}
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


# ---------------------------------------------------------------------------------------------
# The two steps. The public functions check their input; the loop calls the unchecked cores.
# ---------------------------------------------------------------------------------------------


def _ddpm_core(model, xt, t, schedule, y, w, variance, clip_x0, noise, generator) -> StepOutput:
    v = _values(schedule, t, xt)
    # 1. Network output (guided if w != 0), turned into eps and x0 (Ho et al. Eqs. 4 and 11 inverted).
    out = guided_output(model, xt, v["model_t"], y, w)
    eps, x0_pred = eps_and_x0(out, xt, getattr(model, "parameterization", "eps"), v["alpha_bar"], v["model_betas"])
    # 2. Optionally clip the x0 prediction to the data range [-1, 1].
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
    # 3. Mean of p(x_{t-1} | x_t): the posterior mean at the predicted x0 (Ho et al. Eq. 7). Without
    #    clipping it equals 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) (Ho et al. Eq. 11).
    mean = posterior_mean(x0_pred, xt, v["posterior_mean_coef_x0"], v["posterior_mean_coef_xt"])
    # 4. Variance sigma_t^2 (Ho et al. Sec. 3.2): beta_t, beta_tilde_t (Eq. 7) or 0 (Report A);
    #    no noise on the last step t = 1 (Algorithm 2, line 3).
    var = {"beta": v["betas"], "beta_tilde": v["beta_tilde"], "zero": 0.0}[variance]
    if isinstance(v["first"], bool):
        sigma = 0.0 if v["first"] else _sqrt(float(var))
    else:
        sigma = torch.where(v["first"], 0.0, _sqrt(torch.as_tensor(var, dtype=xt.dtype, device=xt.device)))
    # 5. x_{t-1} = mu + sigma_t z, z ~ N(0, I) (Algorithm 2, line 4).
    return StepOutput(_add_noise(mean, sigma, noise, generator), x0_pred)


def _ddim_core(model, xt, t, schedule, y, w, eta, clip_x0, noise, generator) -> StepOutput:
    v = _values(schedule, t, xt)
    ab, ab_prev = v["alpha_bar"], v["alpha_bar_prev"]
    # 1. Network output (guided if w != 0), turned into eps and x0 (Song et al. Eq. 12, "predicted x0").
    out = guided_output(model, xt, v["model_t"], y, w)
    eps, x0_pred = eps_and_x0(out, xt, getattr(model, "parameterization", "eps"), v["alpha_bar"], v["model_betas"])
    # 2. Optionally clip x0 to [-1, 1], then recompute the eps that points from it to x_t (Ho et al. Eq. 4).
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
        eps = eps_from_x0(xt, x0_pred, _sqrt(ab), _sqrt(1.0 - ab))
    # 3. sigma_t(eta) = eta sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_{t-1})
    #    (Song et al. Eq. 16). eta = 1 gives sigma^2 = beta_tilde (DDPM), eta = 0 a deterministic step.
    var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    # 4. x_{t-1} = sqrt(alpha_bar_{t-1}) x0 + sqrt(1 - alpha_bar_{t-1} - sigma^2) eps + sigma z (Song et al. Eq. 12).
    direction = 1.0 - ab_prev - var
    direction = max(direction, 0.0) if isinstance(direction, float) else direction.clamp(min=0.0)
    x_prev = _sqrt(ab_prev) * x0_pred + _sqrt(direction) * eps
    return StepOutput(_add_noise(x_prev, _sqrt(var), noise, generator), x0_pred)


def _prediction(model, xt, t: int, schedule, y, w, clip_x0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(eps, x0_pred, values) at step t, x0 optionally clipped and eps then recomputed from it (as DDIM)."""
    v = _values(schedule, t, xt)
    out = guided_output(model, xt, v["model_t"], y, w)
    eps, x0_pred = eps_and_x0(out, xt, getattr(model, "parameterization", "eps"), v["alpha_bar"], v["model_betas"])
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
        eps = eps_from_x0(xt, x0_pred, _sqrt(v["alpha_bar"]), _sqrt(1.0 - v["alpha_bar"]))
    return eps, x0_pred, v


def _half_log_snr(alpha_bar: float) -> float:
    """lambda = log(alpha / sigma) with alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) (Lu et al. Sec. 3)."""
    return 0.5 * math.log(alpha_bar / (1.0 - alpha_bar))


def _dpm2m_core(model, xt, t: int, schedule, y, w, clip_x0, x0_last) -> StepOutput:
    # 1. Data prediction x0_theta(x_t, t) (the "++": the solver integrates in x0, which clipping keeps in range).
    _, x0_pred, v = _prediction(model, xt, t, schedule, y, w, clip_x0)
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


def _heun_core(model, xt, t: int, schedule, y, w, clip_x0) -> StepOutput:
    # In Karras et al.'s variables y = x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar), the
    # probability-flow ODE reads dy/dsigma = (y - x0_pred) / sigma = eps (their Eq. 3 with s(t) = 1).
    eps, x0_pred, v = _prediction(model, xt, t, schedule, y, w, clip_x0)
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
    eps_prev, _, _ = _prediction(model, x_euler, t - 1, schedule, y, w, clip_x0)
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


def _check_model_and_eta(model, eta: float) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta!r}")
    _check_choice(getattr(model, "parameterization", "eps"), PARAMETERIZATIONS, "model.parameterization")


def _check_trained_T(model, schedule: NoiseSchedule) -> None:
    """A network loaded from a checkpoint carries ``trained_T``: a schedule (before any respacing) of
    another length feeds it times and noise levels it never learned, so the samples are not its own;
    that is said in a warning (a short chain can still be useful to test code, as chapter 5 does)."""
    trained = getattr(model, "trained_T", None)
    base = int(schedule.timesteps[-1])  # the original T, also after respacing
    if trained is not None and base != int(trained):
        warnings.warn(f"the network was trained with T={trained} steps but the schedule has T={base}: its samples "
                      f"will not be what it learned; use make_schedule(..., {trained}) (or the schedule that "
                      "load_model returned), respaced with steps= for a shorter chain", stacklevel=3)


def _check_step(model, xt, t, schedule, y, w, noise) -> tuple[int | torch.Tensor, torch.Tensor | None]:
    check_images(xt, "xt")
    if isinstance(t, int) and not isinstance(t, bool):
        _check_int(t, "t (a step goes from x_t to x_(t-1))", 1, schedule.T)
    else:
        t = check_timesteps(t, schedule.T, batch=xt.shape[0])
    if noise is not None and noise.shape != xt.shape:
        raise ValueError(f"noise must have the shape of xt {tuple(xt.shape)}, got {tuple(noise.shape)}")
    return t, check_guidance(model, y, w, xt.shape[0], xt.device)


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
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One ancestral step x_t -> x_{t-1} (Ho et al. 2020 Algorithm 2; book eq. ddpm-step).

    x_{t-1} = mu_theta(x_t, t) + sigma_t z, with mu the posterior mean (Eq. 7) at the predicted x0
    (clipped to [-1, 1] if ``clip_x0``, as Ho et al.'s code does; without clipping it is Eq. 11) and
    sigma_t^2 = beta_t, beta_tilde_t or 0 (``variance``; 0 is Report A's deterministic reverse process).

    xt: (B, C, H, W); t: int or int64 (B,) in 1..T; y: labels (B,) or an int; w: guidance weight;
    noise: optional z of xt's shape (else drawn from ``generator``). Returns StepOutput(x_prev, x0_pred).
    """
    _check_choice(variance, VARIANCES, "variance")
    _check_model_and_eta(model, 0.0)
    t, y = _check_step(model, xt, t, schedule, y, w, noise)
    return _ddpm_core(model, xt, t, schedule, y, w, variance, clip_x0, noise, generator)


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
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One DDIM step x_t -> x_{t-1} (Song, Meng & Ermon 2021 Eq. 12 with sigma from Eq. 16; book eq. ddim-step).

    x_{t-1} = sqrt(alpha_bar_{t-1}) x0_pred + sqrt(1 - alpha_bar_{t-1} - sigma_t^2) eps + sigma_t z,
    sigma_t = eta sqrt(beta_tilde_t). On a respaced schedule "t - 1" is the previous kept step.
    Song et al. write alpha_t for what is alpha_bar_t here.

    Shapes and arguments as :func:`ddpm_step`; eta in [0, 1]. Returns StepOutput(x_prev, x0_pred).
    """
    _check_model_and_eta(model, eta)
    t, y = _check_step(model, xt, t, schedule, y, w, noise)
    return _ddim_core(model, xt, t, schedule, y, w, float(eta), clip_x0, noise, generator)


def _check_int_t(t, name: str) -> int:
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"{name} takes one int t for the whole batch (it steps along one time grid), "
                        f"got {type(t).__name__}")
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
) -> StepOutput:
    """One DPM-Solver++(2M) step x_t -> x_{t-1} (Lu et al. 2022, "DPM-Solver++", Algorithm 2).

    In log-SNR time lambda = log(alpha / sigma), h = lambda_{t-1} - lambda_t:
    x_{t-1} = (sigma_{t-1} / sigma_t) x_t - alpha_{t-1} (e^{-h} - 1) D, where D extrapolates the data
    predictions linearly, D = (1 + 1/(2r)) x0_theta(x_t) - 1/(2r) x0_theta(x_{t+1}), r = h_last / h.
    ``x0_last`` is the x0 prediction the previous step returned (at t + 1); without it (the first step)
    D = x0_theta(x_t) and the step equals DDIM's with eta = 0. The step to t = 0 is first order.

    xt: (B, C, H, W); t: int in 1..T; y, w: labels and guidance weight. Returns StepOutput(x_prev, x0_pred).
    """
    _check_model_and_eta(model, 0.0)
    t, y = _check_step(model, xt, _check_int_t(t, "dpm_solver_2m_step"), schedule, y, w, None)
    if x0_last is not None and x0_last.shape != xt.shape:
        raise ValueError(f"x0_last must have the shape of xt {tuple(xt.shape)}, got {tuple(x0_last.shape)}")
    return _dpm2m_core(model, xt, t, schedule, y, w, clip_x0, x0_last)


def heun_step(
    model: torch.nn.Module,
    xt: torch.Tensor,
    t: int,
    schedule: NoiseSchedule,
    *,
    y: torch.Tensor | int | None = None,
    w: float = 0.0,
    clip_x0: bool = True,
) -> StepOutput:
    """One step of Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 1).

    With y = x / sqrt(alpha_bar) and sigma = sqrt((1 - alpha_bar) / alpha_bar) the ODE is dy/dsigma = eps:
    an Euler step to sigma_{t-1} (DDIM, eta = 0), then the slope there averaged with the slope at t.
    Two network calls per step; the last step (sigma_{t-1} = 0) is the Euler step alone.

    Shapes and arguments as :func:`dpm_solver_2m_step`. Returns StepOutput(x_prev, x0_pred).
    """
    _check_model_and_eta(model, 0.0)
    t, y = _check_step(model, xt, _check_int_t(t, "heun_step"), schedule, y, w, None)
    return _heun_core(model, xt, t, schedule, y, w, clip_x0)


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


def _chunk_run(model, schedule, x, method, eta, variance, y, w, clip_x0, generator, every, bar) -> tuple:
    frames_t, frames_x, frames_x0 = [], [], []
    x0_last = None  # DPM-Solver++(2M) reuses the previous step's x0 prediction
    for t in range(schedule.T, 0, -1):
        if method == "ddpm":
            out = _ddpm_core(model, x, t, schedule, y, w, variance, clip_x0, None, generator)
        elif method == "ddim":
            out = _ddim_core(model, x, t, schedule, y, w, eta, clip_x0, None, generator)
        elif method == "dpm_solver_2m":
            out = _dpm2m_core(model, x, t, schedule, y, w, clip_x0, x0_last)
            x0_last = out.x0_pred
        else:
            out = _heun_core(model, x, t, schedule, y, w, clip_x0)
        if every is not None and (schedule.T - t) % every == 0:
            frames_t.append(t)
            frames_x.append(x)
            frames_x0.append(out.x0_pred)
        x = out.x_prev
        if bar is not None:
            bar.update(1)
    if every is None:
        return x, None
    frames_t.append(0)
    frames_x.append(x)
    frames_x0.append(x)  # at t = 0 the image is its own x0
    return x, (frames_t, torch.stack(frames_x), torch.stack(frames_x0))  # (F, b, C, H, W)


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

    Returns images (n, C, H, W), or (images, Trajectory) when ``trajectory_every = k`` is given.
    """
    _check_choice(method, METHODS, "method")
    _check_choice(variance, VARIANCES, "variance")
    _check_model_and_eta(model, eta)
    if method == "ddpm" and eta != 0:
        raise ValueError(f"eta={eta} only applies to method='ddim'; DDPM's noise is chosen with variance=")
    if method in ("dpm_solver_2m", "heun") and eta != 0:
        raise ValueError(f"eta={eta} does not apply to method={method!r}, a deterministic ODE solver")
    if method != "ddpm" and variance != "beta_tilde":
        raise ValueError(f"variance={variance!r} only applies to method='ddpm'; "
                         f"{'DDIM' if method == 'ddim' else method}'s noise is chosen with eta= (ODE solvers: none)")
    _check_int(n, "n (the number of images)")
    _check_int(batch_size, "batch_size", allow_none=True)
    _check_int(trajectory_every, "trajectory_every", allow_none=True)
    _check_int(steps, f"steps (the number of sampling steps, at most T={schedule.T})", 1, schedule.T, allow_none=True)
    _check_trained_T(model, schedule)
    if steps is not None:
        schedule = respace(schedule, steps)
    dev, dtype = _device_dtype(model, x_T, device)
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
    schedule = schedule.to("cpu")  # per-step values are read as Python floats: no device syncs
    bs = batch_size or n
    images, traj = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=schedule.T * math.ceil(n / bs), desc=f"{method} sampling", leave=False)
    with _inference(model):
        for start in range(0, n, bs):
            b = min(bs, n - start)
            if x_T is None:
                x = randn_on((b, *shape), generator, dev, dtype)
            else:
                x = x_T[start:start + b].to(device=dev, dtype=dtype)
            yb = None if y is None else y[start:start + b]
            x, frames = _chunk_run(model, schedule, x, method, float(eta), variance, yb, w, clip_x0, generator,
                                   trajectory_every, bar)
            images.append(x)
            traj.append(frames)
    if bar is not None:
        bar.close()
    images = torch.cat(images)
    if trajectory_every is None:
        return images
    t_list = traj[0][0]
    model_t = [int(schedule.timesteps[t]) for t in t_list]
    xs = torch.cat([f[1] for f in traj], dim=1)  # (F, n, C, H, W)
    x0s = torch.cat([f[2] for f in traj], dim=1)
    return images, Trajectory(t=t_list, model_t=model_t, xt=xs, x0_pred=x0s)
