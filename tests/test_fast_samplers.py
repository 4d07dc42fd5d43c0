"""DPM-Solver++(2M) and Heun's second-order step, checked against the exact probability-flow ODE.

For Gaussian data x0 ~ N(m, s^2 I) the exact E[eps | x_t] is known (``GaussianOracle``) and so is the
exact probability-flow ODE: in y = x / sqrt(alpha_bar), sigma^2 = (1 - alpha_bar) / alpha_bar, the
quantity (y - m) / sqrt(s^2 + sigma^2) is constant along every trajectory. A solver of order p has a
global error ~ (step)^p: halving the step divides it by about 2^p.
"""

import math

import pytest
import torch
from test_samplers import F64, GaussianOracle, Tiny, _x

from diffusion_edu import make_schedule, respace
from diffusion_edu.samplers import (
    METHODS,
    ddim_step,
    dpm_solver_2m_step,
    heun_step,
    network_evaluations,
    sample,
)

M, S = 0.3, 0.5


def _exact_x(x_T: torch.Tensor, ab_T: float, ab: float) -> torch.Tensor:
    """The exact probability-flow ODE solution at alpha_bar = ab, started from x_T at alpha_bar = ab_T."""
    sig2_T, sig2 = (1 - ab_T) / ab_T, (1 - ab) / ab
    y = M + (x_T / math.sqrt(ab_T) - M) * math.sqrt((S**2 + sig2) / (S**2 + sig2_T))
    return math.sqrt(ab) * y


def _error(method: str, K: int, schedule, x_T) -> float:
    """Max error of K solver steps against the exact ODE, read through the same final denoising step.

    The K steps run on a grid uniform in t from T down to t_1 = T / 10, where the ODE is smooth (near
    t = 0 a grid uniform in t is coarse in log-SNR whatever K is, which hides the order). The last step
    t_1 -> 0 is the same map x -> x0_pred(x, t_1) for every method (first order, sigma_0 = 0), so the
    reference is that map applied to the exact state at t_1."""
    T = schedule.T
    t_1 = T // 10
    sub = respace(schedule, [t_1 + (T - t_1) * k // K for k in range(K + 1)])
    oracle = GaussianOracle(schedule, M, S)
    x = sample(oracle, sub, x_T.shape[0], method=method, x_T=x_T, clip_x0=False)
    ab_T, ab_1 = float(schedule.alpha_bar[T]), float(sub.alpha_bar[1])
    x1 = _exact_x(x_T, ab_T, ab_1)
    eps = oracle(x1, torch.full((x_T.shape[0],), t_1, dtype=torch.int64))
    ref = (x1 - math.sqrt(1 - ab_1) * eps) / math.sqrt(ab_1)
    return float((x - ref).abs().max())


@pytest.fixture(scope="module")
def linear():
    return make_schedule("linear", 1000)


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(32, 1, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("method, order", [("ddim", 1), ("dpm_solver_2m", 2), ("heun", 2)])
def test_convergence_order_on_gaussian_data(linear, x_T, method, order):
    errors = [_error(method, K, linear, x_T) for K in (9, 18, 36)]  # grid steps of 100, 50, 25
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    # Order p divides the error by about 2^p per halving of the step: first order ~2 (and not 4),
    # second order at least ~4 (3 leaves room for the pre-asymptotic range; first order would give ~2).
    for r in ratios:
        assert (1.6 < r < 2.6) if order == 1 else (r > 3.0), (method, errors, ratios)


def test_second_order_solvers_beat_ddim_at_equal_steps(linear, x_T):
    e_ddim, e_dpm, e_heun = (_error(m, 18, linear, x_T) for m in ("ddim", "dpm_solver_2m", "heun"))
    assert e_dpm < e_ddim / 4 and e_heun < e_ddim / 4, (e_ddim, e_dpm, e_heun)


def test_full_sampling_converges_to_the_ode_solution(linear, x_T):
    """The ordinary respaced grid (down to t = 0): every solver's error falls as K grows."""
    oracle = GaussianOracle(linear, M, S)
    x0_exact = M + (x_T / math.sqrt(float(linear.alpha_bar[linear.T])) - M) * S / math.sqrt(
        S**2 + (1 - float(linear.alpha_bar[linear.T])) / float(linear.alpha_bar[linear.T])
    )
    for method in ("dpm_solver_2m", "heun"):
        errs = [
            float((sample(oracle, linear, 32, steps=K, method=method, x_T=x_T, clip_x0=False) - x0_exact).abs().max())
            for K in (10, 100, 1000)
        ]
        assert errs[0] > errs[1] > errs[2] and errs[2] < 2e-3, (method, errs)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "mu"])
@pytest.mark.parametrize("clip_x0", [False, True])
def test_first_order_dpm_solver_is_ddim(parameterization, clip_x0):
    s = respace(make_schedule("cosine", 50), 10)
    model = Tiny(num_classes=3, parameterization=parameterization)
    x = _x(4)
    for t in (10, 6, 2, 1):
        a = dpm_solver_2m_step(model, x, t, s, y=1, w=0.5, clip_x0=clip_x0)
        b = ddim_step(model, x, t, s, y=1, w=0.5, eta=0.0, clip_x0=clip_x0)
        torch.testing.assert_close(a.x_prev, b.x_prev, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.x0_pred, b.x0_pred, rtol=1e-12, atol=1e-12)


def test_dpm_solver_uses_the_previous_prediction():
    s = make_schedule("linear", 20)
    model, x = Tiny(), _x(3)
    first = dpm_solver_2m_step(model, x, 20, s)
    plain = dpm_solver_2m_step(model, first.x_prev, 19, s)
    multi = dpm_solver_2m_step(model, first.x_prev, 19, s, x0_last=first.x0_pred)
    assert not torch.allclose(plain.x_prev, multi.x_prev)
    torch.testing.assert_close(plain.x0_pred, multi.x0_pred)  # same network call, different combination


def test_heun_last_step_is_the_euler_step_and_costs_one_call():
    s = make_schedule("linear", 20)
    model, x = Tiny(), _x(3)
    a = heun_step(model, x, 1, s)
    b = ddim_step(model, x, 1, s, eta=0.0)
    torch.testing.assert_close(a.x_prev, b.x_prev)
    model.calls.clear()
    heun_step(model, x, 5, s)
    assert len(model.calls) == 2
    model.calls.clear()
    sample(model, s, 3, steps=4, method="heun", x_T=x)
    assert len(model.calls) == network_evaluations("heun", 4) == 7


@pytest.mark.parametrize("method", ["dpm_solver_2m", "heun"])
def test_fast_solvers_are_deterministic_given_x_T_and_guided(method):
    s = make_schedule("cosine", 30)
    model = Tiny(num_classes=3)
    a = sample(model, s, 4, steps=6, method=method, x_T=_x(4), y=2, w=1.0)
    b = sample(model, s, 4, steps=6, method=method, x_T=_x(4), y=2, w=1.0)
    c = sample(model, s, 4, steps=6, method=method, x_T=_x(4), y=2, w=0.0)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)  # the guidance weight reaches the solver
    assert a.abs().max() <= 1.0 + 1e-12  # clipped x0 on the last step


def test_fast_solvers_refuse_noise_settings_and_batched_t():
    s = make_schedule("linear", 10)
    with pytest.raises(ValueError, match="eta"):
        sample(Tiny(), s, 2, method="dpm_solver_2m", eta=0.5)
    with pytest.raises(ValueError, match="variance"):
        sample(Tiny(), s, 2, method="heun", variance="zero")
    with pytest.raises(TypeError, match="one int t"):
        heun_step(Tiny(), _x(2), torch.tensor([3, 4]), s)
    with pytest.raises(ValueError, match="x0_last"):
        dpm_solver_2m_step(Tiny(), _x(2), 3, s, x0_last=_x(3))
    assert set(METHODS) == {"ddpm", "ddim", "dpm_solver_2m", "heun"}
