"""The unchecked cores of diffusion_edu.forward, each formula once: its math, with the coefficients as
Python floats (how the sampling loop passes them) and as (B, 1, 1, 1) tensors (training and checked use)."""

import math

import pytest
import torch

from diffusion_edu import make_schedule, respace
from diffusion_edu.forward import (
    eps_and_x0,
    eps_from_mean,
    eps_from_v,
    eps_from_x0,
    mean_from_eps,
    posterior_mean,
    v_from_eps_x0,
    x0_from_eps,
    x0_from_posterior_mean,
    x0_from_v,
    xt_from_x0,
)

F64 = torch.float64


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 1, 5, 5, generator=g, dtype=F64) * 2 - 1, torch.randn(4, 1, 5, 5, generator=g, dtype=F64)


def _coefficients(s, t: int, as_tensor: bool) -> dict:
    names = (
        "alphas",
        "betas",
        "alpha_bar",
        "alpha_bar_prev",
        "posterior_mean_coef_x0",
        "posterior_mean_coef_xt",
        "model_betas",
    )
    v = {k: float(getattr(s, k)[t]) for k in names}
    return {k: torch.full((4, 1, 1, 1), x, dtype=F64) for k, x in v.items()} if as_tensor else v


def _sqrt(v):
    return math.sqrt(v) if isinstance(v, float) else v.sqrt()


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("t", [1, 2, 37, 200])
def test_round_trips_through_eq_4(t, as_tensor):
    """x0 -> x_t (Eq. 4) -> x0 and -> eps recover what went in, at every t including the last step."""
    s = make_schedule("cosine", 200)
    v = _coefficients(s, t, as_tensor)
    a, b = _sqrt(v["alpha_bar"]), _sqrt(1.0 - v["alpha_bar"])
    x0, eps = _pair()
    xt = xt_from_x0(x0, eps, a, b)
    assert torch.allclose(x0_from_eps(xt, eps, a, b), x0, atol=1e-9)
    assert torch.allclose(eps_from_x0(xt, x0, a, b), eps, atol=1e-6)
    # the two weights of Eq. 4 keep the variance at 1: Var(x_t) = alpha_bar Var(x0) + (1 - alpha_bar)
    assert math.isclose(
        float(a if isinstance(a, float) else a.flatten()[0]) ** 2
        + float(b if isinstance(b, float) else b.flatten()[0]) ** 2,
        1.0,
        rel_tol=1e-12,
    )


@pytest.mark.parametrize("t", [2, 10, 500, 1000])
def test_posterior_mean_is_bayes_rule(t):
    """mu_tilde from the schedule's Eq. 7 weights equals the mean of q(x_{t-1} | x_t, x_0) ∝
    q(x_t | x_{t-1}) q(x_{t-1} | x_0), a product of two Gaussians in x_{t-1}, computed here directly:
    precision = alpha_t / beta_t + 1 / (1 - alpha_bar_{t-1}), mean = (sqrt(alpha_t) x_t / beta_t
    + sqrt(alpha_bar_{t-1}) x_0 / (1 - alpha_bar_{t-1})) / precision; and Eq. 7 solved for x_0 inverts it."""
    s = make_schedule("linear", 1000)
    v = _coefficients(s, t, False)
    x0, xt = _pair(1)
    alpha, beta, abp = v["alphas"], v["betas"], v["alpha_bar_prev"]
    precision = alpha / beta + 1.0 / (1.0 - abp)
    bayes = (math.sqrt(alpha) * xt / beta + math.sqrt(abp) * x0 / (1.0 - abp)) / precision
    mu = posterior_mean(x0, xt, v["posterior_mean_coef_x0"], v["posterior_mean_coef_xt"])
    assert torch.allclose(mu, bayes, rtol=1e-10, atol=1e-12)
    assert math.isclose(float(s.beta_tilde[t]), 1.0 / precision, rel_tol=1e-10)
    back = x0_from_posterior_mean(mu, xt, v["posterior_mean_coef_x0"], v["posterior_mean_coef_xt"])
    assert torch.allclose(back, x0, atol=1e-8)


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("t", [1, 3, 150])
def test_eq_11_is_eq_7_at_the_predicted_x0(t, as_tensor):
    """Ho et al. Eq. 11 (mean from eps) is the posterior mean of Eq. 7 at x0 = Eq. 4 solved for x0;
    Eq. 11 solved for eps inverts it."""
    s = make_schedule("cosine", 150)
    v = _coefficients(s, t, as_tensor)
    a, b = _sqrt(v["alpha_bar"]), _sqrt(1.0 - v["alpha_bar"])
    xt, eps = _pair(2)
    mu = mean_from_eps(xt, eps, _sqrt(v["alphas"]), v["betas"], b)
    ref = posterior_mean(x0_from_eps(xt, eps, a, b), xt, v["posterior_mean_coef_x0"], v["posterior_mean_coef_xt"])
    assert torch.allclose(mu, ref, atol=1e-9)
    assert torch.allclose(eps_from_mean(xt, mu, _sqrt(v["alphas"]), v["betas"], b), eps, atol=1e-8)


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("parameterization", ["eps", "x0", "mu", "v"])
def test_eps_and_x0_recover_the_truth_on_a_respaced_schedule(parameterization, as_tensor):
    """On a respaced schedule a mu-network predicts the mean of its own (original) step, so Eq. 11 is
    inverted with model_betas; whichever quantity the exact network outputs, (eps, x0) come out right.
    With the respaced jump's beta instead, the mu case would fail: that is checked too."""
    base = make_schedule("linear", 1000)
    s = respace(base, 10)
    k = 4  # a kept step: index 4 of the respaced schedule stands for original step timesteps[4]
    t0 = int(s.timesteps[k])
    v = _coefficients(s, k, as_tensor)
    x0, eps = _pair(3)
    a, b = _sqrt(v["alpha_bar"]), _sqrt(1.0 - v["alpha_bar"])
    xt = xt_from_x0(x0, eps, a, b)
    orig = _coefficients(base, t0, as_tensor)  # the network's own step t0 -> t0 - 1 of the base chain
    mu_true = mean_from_eps(xt, eps, _sqrt(orig["alphas"]), orig["betas"], b)
    v_true = a * eps - b * x0  # Salimans & Ho (2022) Sec. 4, written out here independently of the core
    out = {"eps": eps, "x0": x0, "mu": mu_true, "v": v_true}[parameterization]
    e, x = eps_and_x0(out, xt, parameterization, v["alpha_bar"], v["model_betas"])
    assert torch.allclose(e, eps, atol=1e-6) and torch.allclose(x, x0, atol=1e-6)
    if parameterization == "mu":
        wrong, _ = eps_and_x0(out, xt, "mu", v["alpha_bar"], v["betas"])
        assert not torch.allclose(wrong, eps, atol=1e-3)


def test_eps_and_x0_refuses_an_unknown_output_type():
    xt, out = _pair()
    with pytest.raises(ValueError, match="unknown parameterization 'score'"):
        eps_and_x0(out, xt, "score", 0.5, 0.01)


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("t", [1, 37, 999])
def test_velocity_is_the_rotation_of_eps_and_x0(t, as_tensor):
    """(x_t, v) is (x_0, eps) rotated by the angle phi_t with cos phi = sqrt(alpha_bar), sin phi =
    sqrt(1 - alpha_bar): x_t = cos x_0 + sin eps, v = cos eps - sin x_0 (Salimans & Ho 2022). A rotation
    keeps norms, and the inverse rotation gives x_0 and eps back."""
    s = make_schedule("cosine", 1000)
    v = _coefficients(s, t, as_tensor)
    a, b = _sqrt(v["alpha_bar"]), _sqrt(1.0 - v["alpha_bar"])
    x0, eps = _pair(t)
    xt = xt_from_x0(x0, eps, a, b)
    vel = v_from_eps_x0(eps, x0, a, b)
    assert torch.allclose(xt.square() + vel.square(), x0.square() + eps.square(), atol=1e-10)
    assert torch.allclose(x0_from_v(xt, vel, a, b), x0, atol=1e-10)
    assert torch.allclose(eps_from_v(xt, vel, a, b), eps, atol=1e-10)
