"""Noise schedules: the betas, and every quantity derived from them.

Time convention (used everywhere in the package and the book)
--------------------------------------------------------------
``t`` is **1-based**, as in Ho et al. (2020): the forward process runs ``x_0 -> x_1 -> ... -> x_T``.
``t = 0`` means the clean data ``x_0``; the model is only ever asked about ``t = 1, ..., T``.
Every per-step array in :class:`NoiseSchedule` has length ``T + 1`` and is indexed by ``t`` itself,
so ``schedule.alpha_bar[t]`` is the book's :math:`\\bar\\alpha_t`. Index 0 holds the value for clean
data: ``alpha_bar[0] = 1``, ``betas[0] = 0`` (no noise before the first step).

Names follow the papers in plain ASCII. ``alpha_bar`` is what diffusers and improved-diffusion call
``alphas_cumprod``; ``beta_tilde`` (the posterior variance) is their ``posterior_variance``.
Report D (following Prince's textbook) writes ``alpha_t`` for what is ``alpha_bar_t`` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch

from ._checks import check_timesteps

__all__ = [
    "NoiseSchedule",
    "SCHEDULES",
    "linear_betas",
    "quadratic_betas",
    "cosine_betas",
    "sigmoid_betas",
    "make_schedule",
    "rescale_zero_terminal_snr",
    "schedule_from_betas",
    "respace",
    "spaced_steps",
]


# ---------------------------------------------------------------------------------------------
# Beta schedules. Each returns a float64 tensor of shape (T,): beta_1, ..., beta_T.
# ---------------------------------------------------------------------------------------------


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int number of diffusion steps, got {type(T).__name__}")
    if T < 1:
        raise ValueError(f"T must be at least 1 (number of diffusion steps), got T={T}")


def _endpoints(T: int, beta_start: float, beta_end: float, scale_to_T: bool) -> tuple[float, float]:
    if scale_to_T:
        # Nichol & Dhariwal (2021), improved-diffusion `get_named_beta_schedule`: keep the total
        # amount of noise comparable across T by scaling Ho et al.'s endpoints (set for T=1000).
        scale = 1000.0 / T
        beta_start, beta_end = scale * beta_start, scale * beta_end
    if not (0.0 < beta_start < 1.0 and 0.0 < beta_end < 1.0):
        raise ValueError(
            f"betas must lie in (0, 1); got beta_start={beta_start}, beta_end={beta_end}"
            + (" after scaling to T" if scale_to_T else "")
        )
    return beta_start, beta_end


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02, scale_to_T: bool = False) -> torch.Tensor:
    """Ho et al. (2020) Sec. 4: betas rising linearly from ``beta_start`` to ``beta_end``.

    beta_t = beta_start + (beta_end - beta_start) * (t - 1) / (T - 1),  t = 1..T   (book eq. linear-betas)

    The endpoints do **not** scale with T by default: the reports use 1e-4..0.02 at every T
    (Report A at T=400, Report D at T=100 and 1000, Report E at T=1000 and 4000). With
    ``scale_to_T=True`` both endpoints are multiplied by 1000/T, as improved-diffusion does.
    """
    _check_T(T)
    b0, b1 = _endpoints(T, beta_start, beta_end, scale_to_T)
    return torch.linspace(b0, b1, T, dtype=torch.float64)


def quadratic_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02, scale_to_T: bool = False) -> torch.Tensor:
    """Quadratic schedule: sqrt(beta_t) rises linearly from sqrt(beta_start) to sqrt(beta_end).

    beta_t = (sqrt(b0) + (sqrt(b1) - sqrt(b0)) * (t - 1) / (T - 1))^2                 (book eq. quadratic-betas)
    """
    _check_T(T)
    b0, b1 = _endpoints(T, beta_start, beta_end, scale_to_T)
    return torch.linspace(math.sqrt(b0), math.sqrt(b1), T, dtype=torch.float64) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021) Eq. 17: a cosine-shaped alpha_bar, turned into betas.

    alpha_bar(t) = f(t) / f(0),  f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2
    beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), max_beta)                        (book eq. cosine-betas)

    The clip at 0.999 stops the last step from being a pure-noise reset (beta_T = 1).
    """
    _check_T(T)
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((steps / T) + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def sigmoid_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02, scale_to_T: bool = False) -> torch.Tensor:
    """Report A's sigmoid schedule, defined in *beta space*: a logistic ramp from b0 to b1.

    beta_t = b0 + (b1 - b0) * sigmoid(-6 + 12 (t - 1) / (T - 1))                        (book eq. sigmoid-betas)

    Note the other meaning of "sigmoid schedule": some libraries (e.g. lucidrains'
    ``sigmoid_beta_schedule``, after Jabri et al. 2022) define a sigmoid-shaped *alpha_bar* and
    derive betas from it, which gives a very different schedule. This one is the beta-space ramp.
    """
    _check_T(T)
    b0, b1 = _endpoints(T, beta_start, beta_end, scale_to_T)
    x = torch.linspace(-6.0, 6.0, T, dtype=torch.float64)
    return b0 + (b1 - b0) * torch.sigmoid(x)


# alpha_bar_T after the zero-terminal-SNR rescale: 2^-24 instead of exactly 0, so that beta_T stays below 1
# and every quantity of the schedule (and x0 recovered from a v-prediction) stays finite. The signal left in
# x_T is then sqrt(2^-24) ~ 2.4e-4 of the digit, against 13% for the linear schedule at T = 400.
ZERO_SNR_ALPHA_BAR_T = 2.0**-24


def rescale_zero_terminal_snr(betas: torch.Tensor, alpha_bar_T: float = ZERO_SNR_ALPHA_BAR_T) -> torch.Tensor:
    """Lin et al. (2024) Algorithm 1: the betas rescaled so that x_T holds (almost) no signal.

    With a = sqrt(alpha_bar) of the given betas, the rescaled schedule is the affine map
    a'_t = (a_t - a_T) * a_1 / (a_1 - a_T): a'_1 = a_1 (the first step is unchanged) and a'_T = 0 (zero
    terminal SNR), so that q(x_T | x_0) = N(0, I) exactly, the distribution every sampler starts from.
    Then beta'_t = 1 - alpha_bar'_t / alpha_bar'_{t-1}. Exactly zero would make beta_T = 1 and x_0 from eps
    undefined at t = T, so alpha_bar'_T is set to ``alpha_bar_T`` (2^-24) instead, a signal of 2.4e-4 (or
    to the schedule's own alpha_bar_T where that is lower already, as for the cosine schedule's 1.5e-8).
    A network for such a schedule should predict v (or x0): eps carries no information about x_0 at
    t = T (Lin et al. Sec. 3.2).

    betas: (T,) in (0, 1), T >= 2. Returns (T,) float64.
    """
    betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if betas.numel() < 2:
        raise ValueError("the zero-terminal-SNR rescale needs T >= 2 steps (it keeps step 1 and zeroes step T)")
    if (betas <= 0).any() or (betas >= 1).any():
        raise ValueError("every beta must lie in the open interval (0, 1)")
    if not 0.0 < alpha_bar_T < 1e-3:
        raise ValueError(f"alpha_bar_T must lie in (0, 1e-3): a (nearly) zero terminal SNR; got {alpha_bar_T}")
    a = torch.cumprod(1.0 - betas, dim=0).sqrt()  # sqrt(alpha_bar_t), t = 1..T
    floor = min(alpha_bar_T, a[-1].item() ** 2)  # a schedule that already ends lower (cosine) keeps its end
    a = (a - a[-1]) * a[0] / (a[0] - a[-1])
    alpha_bar = a**2
    alpha_bar[-1] = floor
    if alpha_bar[-1] >= alpha_bar[-2]:
        raise ValueError(
            f"alpha_bar_T={floor} is not below alpha_bar_(T-1)={alpha_bar[-2].item():.3g} after the rescale: "
            "use more steps T or a smaller alpha_bar_T"
        )
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    return 1.0 - alpha_bar / prev


SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "linear": linear_betas,
    "quadratic": quadratic_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}


# ---------------------------------------------------------------------------------------------
# The schedule object.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseSchedule:
    """All per-step quantities of a Gaussian diffusion, indexed by t = 0..T (length T + 1).

    Attributes (float64 tensors of shape (T + 1,) unless stated):
        betas:            beta_t; betas[0] = 0.
        alphas:           alpha_t = 1 - beta_t (Ho et al. Sec. 2); alphas[0] = 1.
        alpha_bar:        prod_{s<=t} alpha_s (Ho et al. Eq. 4); alpha_bar[0] = 1.
        alpha_bar_prev:   alpha_bar[t - 1]; alpha_bar_prev[0] = 1.
        beta_tilde:       posterior variance (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t
                          (Ho et al. Eq. 7); beta_tilde[0] = 0, beta_tilde[1] = 0.
        posterior_mean_coef_x0, posterior_mean_coef_xt: the two weights of Ho et al. Eq. 7,
                          mu_tilde = coef_x0 * x_0 + coef_xt * x_t.
        snr:              alpha_bar / (1 - alpha_bar) (Kingma et al. 2021); snr[0] = inf.
        timesteps:        int64, the *model* time of each index. Identity (0..T) for an ordinary
                          schedule; for a respaced one, timesteps[k] = the original t_k.
        name:             a label for plots, e.g. "linear" or "linear/respaced-5".
        model_betas:      beta of the *original* step each index stands for: equal to ``betas`` for an
                          ordinary schedule; for a respaced one, model_betas[k] = beta of the original
                          schedule at t_k. A network that predicts the posterior mean (Ho et al. Eq. 11)
                          was trained on one step t_k -> t_k - 1 of the original chain, so its output is
                          converted with these, not with the respaced step's long jump.
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor
    beta_tilde: torch.Tensor
    posterior_mean_coef_x0: torch.Tensor
    posterior_mean_coef_xt: torch.Tensor
    snr: torch.Tensor
    timesteps: torch.Tensor
    name: str = "custom"
    model_betas: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.model_betas is None:
            object.__setattr__(self, "model_betas", self.betas)  # frozen dataclass
        elif self.model_betas.shape != self.betas.shape:
            raise ValueError(
                f"model_betas must have the shape of betas {tuple(self.betas.shape)}, "
                f"got {tuple(self.model_betas.shape)}"
            )

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.betas.shape[0] - 1

    @property
    def log_snr(self) -> torch.Tensor:
        """log(alpha_bar / (1 - alpha_bar)); +inf at t = 0."""
        return torch.log(self.snr)

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy with every tensor on ``device`` (kept in float64 where the device allows)."""
        device = torch.device(device)
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                if device.type == "mps" and v.dtype == torch.float64:
                    v = v.to(torch.float32)  # MPS has no float64
                v = v.to(device)
            out[f.name] = v
        return NoiseSchedule(**out)

    def at(self, values: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        """Gather ``values[t]`` for a batch and shape it to broadcast against ``x``.

        values: (T + 1,); t: int or (B,) integers in 0..T; x: (B, ...). Returns (B, 1, ..., 1)
        in ``x``'s dtype and device.
        """
        t = check_timesteps(t, self.T, batch=x.shape[0], device=values.device, allow_zero=True)
        out = values[t].to(device=x.device, dtype=x.dtype)  # (B,)
        return out.reshape(-1, *([1] * (x.dim() - 1)))  # (B, 1, 1, 1)

    def model_time(self, t: torch.Tensor | int, batch: int | None = None) -> torch.Tensor:
        """The timestep to feed the network at schedule index ``t`` (differs after respacing)."""
        t = check_timesteps(t, self.T, batch=batch, device=self.timesteps.device, allow_zero=True)
        return self.timesteps[t]

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(name={self.name!r}, T={self.T}, beta_1={self.betas[1].item():.3g}, "
            f"beta_T={self.betas[-1].item():.3g}, alpha_bar_T={self.alpha_bar[-1].item():.3g})"
        )


def schedule_from_betas(
    betas: torch.Tensor | Sequence[float],
    name: str = "custom",
    timesteps: torch.Tensor | Sequence[int] | None = None,
    model_betas: torch.Tensor | Sequence[float] | None = None,
) -> NoiseSchedule:
    """Build a :class:`NoiseSchedule` from ``beta_1..beta_T`` (shape (T,), each in (0, 1)).

    ``timesteps`` (shape (T + 1,)) and ``model_betas`` (shape (T,)) describe, for a respaced schedule,
    the original step each index stands for (see :class:`NoiseSchedule`); by default the identity."""
    betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if betas.numel() < 1:
        raise ValueError("betas must hold at least one step (T >= 1)")
    if not torch.isfinite(betas).all():
        raise ValueError("betas must be finite")
    if (betas <= 0).any() or (betas >= 1).any():
        bad = betas[(betas <= 0) | (betas >= 1)]
        raise ValueError(f"every beta must lie in the open interval (0, 1); got e.g. {bad[0].item()}")
    T = betas.numel()
    betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])  # index by t = 0..T
    alphas = 1.0 - betas
    alpha_bar = torch.cumprod(alphas, dim=0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    one_minus = 1.0 - alpha_bar
    safe = torch.where(one_minus > 0, one_minus, torch.ones_like(one_minus))
    # Ho et al. Eq. 7; zero at t = 0 (no step) and at t = 1 (x_0 is known given x_1 and x_0).
    beta_tilde = torch.where(one_minus > 0, betas * (1.0 - alpha_bar_prev) / safe, torch.zeros_like(betas))
    coef_x0 = torch.where(one_minus > 0, betas * alpha_bar_prev.sqrt() / safe, torch.ones_like(betas))
    coef_xt = torch.where(one_minus > 0, (1.0 - alpha_bar_prev) * alphas.sqrt() / safe, torch.zeros_like(betas))
    snr = alpha_bar / one_minus  # inf at t = 0
    if timesteps is None:
        timesteps = torch.arange(T + 1, dtype=torch.int64)
    else:
        timesteps = torch.as_tensor(timesteps, dtype=torch.int64)
        if timesteps.shape != (T + 1,):
            raise ValueError(f"timesteps must have shape ({T + 1},), got {tuple(timesteps.shape)}")
    if model_betas is not None:
        model_betas = torch.as_tensor(model_betas, dtype=torch.float64).flatten()
        if model_betas.shape != (T,):
            raise ValueError(f"model_betas must hold one beta per step, shape ({T},), got {tuple(model_betas.shape)}")
        if (model_betas <= 0).any() or (model_betas >= 1).any():
            raise ValueError("every model_betas value must lie in the open interval (0, 1)")
        model_betas = torch.cat([torch.zeros(1, dtype=torch.float64), model_betas])
    return NoiseSchedule(
        betas=betas,
        alphas=alphas,
        alpha_bar=alpha_bar,
        alpha_bar_prev=alpha_bar_prev,
        beta_tilde=beta_tilde,
        posterior_mean_coef_x0=coef_x0,
        posterior_mean_coef_xt=coef_xt,
        snr=snr,
        timesteps=timesteps,
        name=name,
        model_betas=model_betas,
    )


def make_schedule(name: str, T: int, **kwargs) -> NoiseSchedule:
    """The named schedule with T steps, e.g. ``make_schedule("cosine", 1000)``.

    Names: ``linear``, ``quadratic``, ``cosine``, ``sigmoid``. Extra keyword arguments go to the
    beta function (``beta_start``, ``beta_end``, ``scale_to_T`` or, for cosine, ``s``), except
    ``zero_terminal_snr=True``, which rescales the betas with :func:`rescale_zero_terminal_snr` (Lin et
    al. 2024; the schedule's name gets "+zsnr").
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid names are {sorted(SCHEDULES)}")
    zero_snr = kwargs.pop("zero_terminal_snr", False)
    if not isinstance(zero_snr, bool):
        raise TypeError(f"zero_terminal_snr must be True or False, got {zero_snr!r}")
    betas = SCHEDULES[name](T, **kwargs)
    if zero_snr:
        return schedule_from_betas(rescale_zero_terminal_snr(betas), name=f"{name}+zsnr")
    return schedule_from_betas(betas, name=name)


def spaced_steps(T: int, K: int) -> list[int]:
    """K kept steps out of 1..T, evenly spaced and always including T (the start of sampling).

    Returns the increasing list t_1 < ... < t_K with t_K = T, e.g. ``spaced_steps(400, 5)`` =
    [80, 160, 240, 320, 400].
    """
    _check_T(T)
    if isinstance(K, bool) or not isinstance(K, int):
        raise TypeError(f"the number of sampling steps K must be an int, got {type(K).__name__}")
    if not 1 <= K <= T:
        raise ValueError(f"the number of sampling steps K must be in 1..T={T}, got K={K}")
    # Round T * k / K for k = 1..K: distinct because consecutive values differ by T/K >= 1.
    return [int(round(T * k / K)) for k in range(1, K + 1)]


def respace(schedule: NoiseSchedule, kept: Sequence[int] | int) -> NoiseSchedule:
    """A K-step schedule that visits only the kept steps of ``schedule`` (Report A Sec. 3.4).

    For kept steps t_1 < ... < t_K (t_0 = 0) the new step k merges the original steps
    t_{k-1}+1 .. t_k: alpha'_k = prod alpha_t over those steps = alpha_bar[t_k] / alpha_bar[t_{k-1}],
    beta'_k = 1 - alpha'_k. Therefore alpha_bar'_k = alpha_bar[t_k]: the marginals q(x_{t_k} | x_0)
    are unchanged, and a network trained on the full schedule can be used as is, fed the original
    time ``timesteps[k] = t_k`` (improved-diffusion's ``space_timesteps`` does the same).

    ``kept`` is either a list of steps in 1..T or an int K (then :func:`spaced_steps` picks them).
    """
    if isinstance(kept, bool):
        raise TypeError("kept must be a list of steps in 1..T or an int K, got a bool")
    if isinstance(kept, int):
        kept = spaced_steps(schedule.T, kept)
    kept = [int(k) for k in kept]
    if len(kept) == 0:
        raise ValueError("respace needs at least one kept step")
    if any(k < 1 or k > schedule.T for k in kept):
        raise ValueError(f"kept steps must lie in 1..T={schedule.T}; got {kept}")
    if any(b <= a for a, b in zip(kept, kept[1:])):
        raise ValueError(f"kept steps must be strictly increasing; got {kept}")
    ab = schedule.alpha_bar
    prev = torch.cat([ab[:1], ab[torch.tensor(kept[:-1], dtype=torch.int64)]])  # alpha_bar[t_{k-1}]
    new_alphas = ab[torch.tensor(kept, dtype=torch.int64)] / prev  # alpha'_k
    new_betas = 1.0 - new_alphas
    orig_time = schedule.timesteps.cpu()
    timesteps = torch.cat([orig_time[:1], orig_time[torch.tensor(kept, dtype=torch.int64)]])
    name = f"{schedule.name}/respaced-{len(kept)}"
    assert schedule.model_betas is not None  # __post_init__ fills it with betas
    model_betas = schedule.model_betas.cpu()[torch.tensor(kept, dtype=torch.int64)]  # the original steps' betas
    out = schedule_from_betas(new_betas.cpu(), name=name, timesteps=timesteps, model_betas=model_betas)
    return out.to(schedule.device)
