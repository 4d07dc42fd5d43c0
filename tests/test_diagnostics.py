"""The exact computations behind the book's corrections (diffusion_edu.diagnostics)."""

import math

import pytest
import torch

from diffusion_edu import make_schedule, respace
from diffusion_edu.diagnostics import (
    ema_weights,
    eps_minimisers,
    eps_posterior,
    mean_within_class_diversity,
    within_class_diversity,
    zero_variance_noise_scale,
)
from diffusion_edu.samplers import ddim_step, ddpm_step


def test_ema_weights_match_running_the_update():
    """The weights are those of the EMA computed step by step on one-hot 'parameters'."""
    steps, decay, every, start = 57, 0.9, 4, 9
    psi = None
    for s in range(steps + 1):
        theta = torch.zeros(steps + 1, dtype=torch.float64)
        theta[s] = 1.0
        if s == start:
            psi = theta.clone()
        elif s > start and (s - start) % every == 0:
            psi = decay * psi + (1 - decay) * theta
    w = ema_weights(steps, decay, every, start)
    assert torch.allclose(w, psi)
    assert w[:start].abs().sum() == 0 and math.isclose(float(w.sum()), 1.0)


def test_ema_weights_report_c_schedule():
    """Updated every 10 steps from step 2,000 to 100,000: 9,800 updates leave 0.9999^9800 of theta_2000."""
    w = ema_weights(100_000, 0.9999, every=10, start=2000)
    assert math.isclose(float(w[2000]), 0.9999**9800, rel_tol=1e-9)
    assert 0.37 < float(w[2000]) < 0.38
    ho = ema_weights(100_000, 0.9999)
    assert float(ho[:2001].sum()) < 1e-4  # every step from 0: the first 2,000 steps are forgotten


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=-1, decay=0.9), "steps"),
        (dict(steps=10, decay=1.0), "decay"),
        (dict(steps=10, decay=0.9, every=0), "every"),
        (dict(steps=10, decay=0.9, start=11), "start"),
    ],
)
def test_ema_weights_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ema_weights(**kwargs)


MIX = dict(weights=[0.7, 0.3], means=[-0.8, 0.9], stds=[0.1, 0.1])


def test_eps_mean_is_the_score_and_minimises_the_squared_error():
    """Tweedie: E[eps | x_t] = -sqrt(1 - ab) d/dx log p(x_t); the score checked by finite differences."""
    ab, xt = 0.3, 0.05
    post, score_eps = eps_posterior(xt, ab, **MIX)
    a, b = math.sqrt(ab), math.sqrt(1 - ab)

    def log_p(x):
        v = [ab * s**2 + b**2 for s in MIX["stds"]]
        return math.log(
            sum(
                w * math.exp(-0.5 * (x - a * m) ** 2 / vk) / math.sqrt(2 * math.pi * vk)
                for w, m, vk in zip(MIX["weights"], MIX["means"], v)
            )
        )

    h = 1e-5
    fd = -b * (log_p(xt + h) - log_p(xt - h)) / (2 * h)
    assert math.isclose(score_eps, fd, rel_tol=1e-6) and math.isclose(post.mean(), score_eps, rel_tol=1e-9)


def test_eps_posterior_matches_monte_carlo():
    """Samples of (x0, eps) with x_t in a thin slab around the chosen value have the posterior's mean."""
    g = torch.Generator().manual_seed(0)
    ab, xt, n = 0.3, 0.05, 4_000_000
    comp = (torch.rand(n, generator=g) < MIX["weights"][1]).long()
    x0 = torch.tensor(MIX["means"])[comp] + 0.1 * torch.randn(n, generator=g)
    eps = torch.randn(n, generator=g)
    x = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    sel = eps[(x - xt).abs() < 0.01].double()
    post, _ = eps_posterior(xt, ab, **MIX)
    assert sel.numel() > 10_000
    assert abs(float(sel.mean()) - post.mean()) < 0.02
    assert abs(float(sel.median()) - post.median()) < 0.03


def test_l1_minimiser_is_the_median_and_differs_from_the_mean_for_a_bimodal_posterior():
    ab, xt = 0.3, 0.05
    post, _ = eps_posterior(xt, ab, **MIX)
    out = eps_minimisers(xt, ab, **MIX)
    assert math.isclose(post.cdf(out["l1"]), 0.5, abs_tol=1e-9)
    grid = torch.linspace(out["l1"] - 1, out["l1"] + 1, 2001)
    best = float(grid[torch.tensor([post.abs_error(float(c)) for c in grid]).argmin()])
    assert abs(best - out["l1"]) < 2e-3
    assert abs(out["l1"] - out["l2"]) > 0.3  # the two losses' networks disagree at this x_t


def test_median_equals_mean_for_one_gaussian():
    out = eps_minimisers(0.4, 0.5, [1.0], [0.2], [0.3])
    assert math.isclose(out["l1"], out["l2"], abs_tol=1e-9)


@pytest.mark.parametrize(
    "args, match",
    [
        ((0.0, 1.0, [1.0], [0.0], [1.0]), "alpha_bar"),
        ((0.0, 0.5, [0.5, 0.4], [0.0, 1.0], [1.0, 1.0]), "sum to 1"),
        ((0.0, 0.5, [1.0], [0.0], [0.0]), "stds"),
        ((0.0, 0.5, [0.5, 0.5], [0.0], [1.0, 1.0]), "one entry per component"),
    ],
)
def test_eps_posterior_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        eps_posterior(*args)


class PointOracle(torch.nn.Module):
    """The exact eps for data that is one point x0 (any noise scale): (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""

    parameterization = "eps"

    def __init__(self, schedule, x0):
        super().__init__()
        self.ab, self.x0 = schedule.alpha_bar.double(), x0

    def forward(self, x, t, y=None):
        ab = self.ab[t].view(-1, 1, 1, 1)
        return ((x.double() - ab.sqrt() * self.x0) / (1 - ab).sqrt()).to(x.dtype)


@pytest.mark.parametrize("steps", [None, 20])
def test_zero_variance_noise_scale_is_what_the_ddpm_step_does(steps):
    """With sigma_t = 0 the noise in x_t shrinks to rho_t = sqrt(SNR_T / SNR_t) of its nominal size;
    DDIM (eta = 0) keeps it at 1. Checked on the package's own steps with an exact eps."""
    full = make_schedule("linear", 400)
    s = respace(full, steps) if steps else full
    rho = zero_variance_noise_scale(s)
    snr = s.alpha_bar.double() / (1 - s.alpha_bar.double())
    assert torch.allclose(rho[1:], (snr[-1] / snr[1:]).sqrt(), rtol=1e-9)
    x0 = torch.full((1, 1, 2, 2), 0.3, dtype=torch.float64)
    model = PointOracle(full, x0)  # the network sees the original step (model time)
    z = torch.randn((1, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ab_T = s.alpha_bar[-1].double()
    x_ddpm = x_ddim = ab_T.sqrt() * x0 + (1 - ab_T).sqrt() * z  # x_T on the forward process
    for t in range(s.T, 1, -1):
        x_ddpm = ddpm_step(model, x_ddpm, t, s, variance="zero", clip_x0=False).x_prev
        x_ddim = ddim_step(model, x_ddim, t, s, eta=0.0, clip_x0=False).x_prev
        ab = s.alpha_bar[t - 1].double()
        nominal = (1 - ab).sqrt() * z
        assert torch.allclose(x_ddpm - ab.sqrt() * x0, rho[t - 1] * nominal, rtol=1e-6, atol=1e-9)
        assert torch.allclose(x_ddim - ab.sqrt() * x0, nominal, rtol=1e-6, atol=1e-9)


def test_within_class_diversity():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0], [7.0, 7.0]])
    y = torch.tensor([0, 0, 1, 1, 2])
    d = within_class_diversity(f, y, num_classes=4)
    assert d[0] == 5.0 and d[1] == 0.0 and d[2:].isnan().all()
    assert mean_within_class_diversity(torch.cat([f, y[:, None].double()], 1), num_classes=4) == 2.5
    with pytest.raises(ValueError, match="labels"):
        within_class_diversity(f, y[:3])
