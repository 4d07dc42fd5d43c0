"""The forward process: closed form vs Markov chain, posterior formulas, and the conversions."""

import pytest
import torch

from diffusion_edu import (
    eps_and_x0_from_output,
    eps_from_posterior_mean,
    load_embedded_mnist,
    make_schedule,
    posterior_mean_from_eps,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    q_step,
)


def test_iterated_steps_match_closed_form_statistically():
    """Ho et al. Eq. 4 says t Markov steps (Eq. 2) compose to one Gaussian with mean sqrt(alpha_bar_t) x0
    and variance 1 - alpha_bar_t. Check it on 40,000 chains: the tolerance is 6 standard errors, so a
    wrong coefficient (beta_t instead of sqrt(beta_t), Report A's erratum) fails by a wide margin."""
    s = make_schedule("linear", 100)
    x0 = torch.tensor([[-1.0, -0.3], [0.4, 1.0]], dtype=torch.float64).reshape(1, 1, 2, 2)
    n, t = 40_000, 60
    g = torch.Generator().manual_seed(1)
    x = x0.expand(n, 1, 2, 2).clone()
    for step in range(1, t + 1):
        x = q_step(x, step, s, generator=g)
    ab = s.alpha_bar[t].item()
    mean_expect, var_expect = ab**0.5 * x0[0], 1 - ab
    se_mean = (var_expect / n) ** 0.5
    se_var = var_expect * (2 / (n - 1)) ** 0.5
    assert torch.all((x.mean(0) - mean_expect).abs() < 6 * se_mean)
    assert torch.all((x.var(0) - var_expect).abs() < 6 * se_var)
    # and the closed form itself has the same statistics
    xc = q_sample(x0.expand(n, 1, 2, 2), t, s, generator=g)
    assert torch.all((xc.mean(0) - mean_expect).abs() < 6 * se_mean)
    assert torch.all((xc.var(0) - var_expect).abs() < 6 * se_var)


def test_wrong_step_coefficient_would_fail_the_statistical_check():
    """Guard that the tolerance above can fail: with Report A's x_t = sqrt(1-beta) x + beta eps the
    variance after 60 steps is far from 1 - alpha_bar_t."""
    s = make_schedule("linear", 100)
    n, t = 40_000, 60
    x = torch.zeros(n, 1, 1, 1, dtype=torch.float64)
    for step in range(1, t + 1):
        x = s.alphas[step].sqrt() * x + s.betas[step] * torch.randn_like(x)  # the erratum
    var_expect = 1 - s.alpha_bar[t].item()
    assert abs(x.var().item() - var_expect) > 6 * var_expect * (2 / (n - 1)) ** 0.5


def test_q_sample_on_real_digits_uses_given_noise():
    s = make_schedule("cosine", 400)
    x0, _ = load_embedded_mnist("heldout").batch(range(8))
    eps = torch.randn_like(x0)
    t = torch.tensor([1, 50, 100, 200, 300, 350, 399, 400])
    xt = q_sample(x0, t, s, noise=eps)
    ab = s.alpha_bar[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(xt, ab.sqrt() * x0 + (1 - ab).sqrt() * eps, atol=1e-6)
    assert torch.equal(q_sample(x0, 0, s), x0)  # t = 0 is clean data


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid", "quadratic"])
def test_predict_x0_inverts_q_sample(name):
    """Given the exact noise, predict_x0_from_eps recovers x0, and predict_eps_from_x0 recovers eps."""
    s = make_schedule(name, 400)
    x0 = torch.rand(6, 1, 8, 8, dtype=torch.float64) * 2 - 1
    eps = torch.randn_like(x0)
    t = torch.tensor([1, 7, 100, 250, 399, 300])
    xt = q_sample(x0, t, s, noise=eps)
    assert torch.allclose(predict_x0_from_eps(xt, t, eps, s), x0, atol=1e-9)
    assert torch.allclose(predict_eps_from_x0(xt, t, x0, s), eps, atol=1e-6)


def test_posterior_matches_ho_eq_6_7():
    """q(x_{t-1} | x_t, x_0) by Bayes' rule on two Gaussians: precision 1/(1-ab_{t-1}) + alpha_t/beta_t,
    mean = variance * (sqrt(ab_{t-1}) x0 / (1 - ab_{t-1}) + sqrt(alpha_t) x_t / beta_t). This is
    computed here from first principles and compared with the package's Eq. 7 coefficients."""
    s = make_schedule("linear", 1000)
    x0 = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    xt = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor([2, 10, 500, 999, 1000])
    mean, var = q_posterior(x0, xt, t, s)
    abp, a, b = s.alpha_bar[t - 1], s.alphas[t], s.betas[t]
    prec = 1 / (1 - abp) + a / b
    v = (1 / prec).view(-1, 1, 1, 1)
    m = v * (
        abp.sqrt().view(-1, 1, 1, 1) * x0 / (1 - abp).view(-1, 1, 1, 1)
        + a.sqrt().view(-1, 1, 1, 1) * xt / b.view(-1, 1, 1, 1)
    )
    assert torch.allclose(var, v, rtol=1e-10)
    assert torch.allclose(mean, m, rtol=1e-10, atol=1e-12)
    # at t = 1 the posterior is a point mass at x0
    mean1, var1 = q_posterior(x0, xt, 1, s)
    assert torch.allclose(mean1, x0) and torch.all(var1 == 0)


def test_mean_from_eps_is_posterior_mean_at_predicted_x0():
    """Ho et al. Eq. 11 is Eq. 7 with x0 replaced by its eps-prediction; and the inverse recovers eps."""
    s = make_schedule("cosine", 200)
    xt = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    eps = torch.randn_like(xt)
    t = torch.tensor([3, 50, 150, 200])
    mu = posterior_mean_from_eps(xt, t, eps, s)
    mu_ref, _ = q_posterior(predict_x0_from_eps(xt, t, eps, s), xt, t, s)
    assert torch.allclose(mu, mu_ref, atol=1e-9)
    assert torch.allclose(eps_from_posterior_mean(xt, t, mu, s), eps, atol=1e-8)


@pytest.mark.parametrize("kind", ["eps", "x0", "mu"])
def test_parameterizations_agree(kind):
    """Whatever the network predicts, converting it gives the same (eps, x0) pair."""
    s = make_schedule("linear", 100)
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(x0)
    t = torch.tensor([5, 50, 100])
    xt = q_sample(x0, t, s, noise=eps)
    out = {"eps": eps, "x0": x0, "mu": posterior_mean_from_eps(xt, t, eps, s)}[kind]
    e, x = eps_and_x0_from_output(out, xt, t, s, kind)
    assert torch.allclose(e, eps, atol=1e-7) and torch.allclose(x, x0, atol=1e-7)


# --- bad input -----------------------------------------------------------------------------------


def test_t_out_of_range_is_refused():
    s = make_schedule("linear", 10)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"t must lie in 0..T=10"):
        q_sample(x, 11, s)
    with pytest.raises(ValueError, match=r"t must lie in 1..T=10"):
        q_step(x, 0, s)
    with pytest.raises(TypeError, match="integer"):
        q_sample(x, torch.tensor([0.5, 1.0]), s)
    with pytest.raises(ValueError, match="2 images"):
        q_sample(x, torch.tensor([1, 2, 3]), s)


def test_images_of_wrong_rank_or_non_finite_are_refused():
    s = make_schedule("linear", 10)
    with pytest.raises(ValueError, match=r"x0 must be a batch of images of shape \(B, C, H, W\).*rank 3.*x\[None\]"):
        q_sample(torch.zeros(1, 28, 28), 1, s)
    bad = torch.zeros(2, 1, 4, 4)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x0 holds 1 non-finite"):
        q_sample(bad, 1, s)
    with pytest.raises(TypeError, match="floating-point"):
        q_sample(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 1, s)
    with pytest.raises(ValueError, match="noise must have the images' shape"):
        q_sample(torch.zeros(2, 1, 4, 4), 1, s, noise=torch.zeros(2, 1, 4, 5))
