"""The training objectives (diffusion_edu.losses) and the EMA update, against the forward-process
formulas of diffusion_edu.forward (Ho et al. 2020 Eqs. 4, 7, 11, 14)."""

import pytest
import torch
import torch.nn as nn

from diffusion_edu import make_schedule, posterior_mean_from_eps, q_posterior, q_sample
from diffusion_edu.losses import (
    DiffusionTables,
    augment_batch,
    cold_loss,
    discriminator_term,
    gaussian_loss,
    pixel_loss,
    sample_timesteps,
)
from diffusion_edu.training import ema_update


@pytest.fixture
def setting():
    """A cosine schedule (its coefficients vary the most), a batch of 'images' and every t class."""
    s = make_schedule("cosine", 200)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 5, 5, generator=g) * 2 - 1
    eps = torch.randn(6, 1, 5, 5, generator=g)
    t = torch.tensor([1, 2, 50, 100, 199, 200])
    return s, DiffusionTables.from_schedule(s), x0, eps, t


def test_tables_hold_the_schedules_coefficients(setting):
    """The tables are the schedule's Eq. 4 and Eq. 7 weights in float32, each in its own place."""
    s, tab, x0, eps, t = setting
    for got, want in (
        (tab.sqrt_alpha_bar, s.alpha_bar.sqrt()),
        (tab.sqrt_one_minus_alpha_bar, (1 - s.alpha_bar).sqrt()),
        (tab.posterior_mean_coef_x0, s.posterior_mean_coef_x0),
        (tab.posterior_mean_coef_xt, s.posterior_mean_coef_xt),
    ):
        assert got.dtype == torch.float32 and torch.allclose(got.double(), want, atol=1e-7)
    assert tab.T == s.T


def test_targets_are_eps_x0_and_the_posterior_mean(setting):
    """The three regression targets: eps (Eq. 14), x0, and mu_tilde(x_t, x_0) of Eq. 7 (q_posterior)."""
    s, tab, x0, eps, t = setting
    xt = tab.q_sample(x0, t, eps)
    assert torch.equal(tab.target("eps", x0, eps, xt, t), eps)
    assert torch.equal(tab.target("x0", x0, eps, xt, t), x0)
    mu, _ = q_posterior(x0, xt, t, s)
    assert torch.allclose(tab.target("mu", x0, eps, xt, t), mu.float(), atol=1e-6)
    with pytest.raises(ValueError, match="parameterization must be 'eps', 'x0', 'mu' or 'v', got 'score'"):
        tab.target("score", x0, eps, xt, t)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "mu"])
def test_the_true_target_implies_the_true_x0_and_mean(setting, parameterization):
    """An output equal to its training target (eps, x0 or mu_tilde) implies the true clean image and the
    true posterior mean: what Report A's discriminator term is fed (x0_pred or mu)."""
    s, tab, x0, eps, t = setting
    x0, eps = x0.double(), eps.double()
    tab = DiffusionTables(
        s.alpha_bar.sqrt(), (1 - s.alpha_bar).sqrt(), s.posterior_mean_coef_x0, s.posterior_mean_coef_xt
    )  # float64: cosine's alpha_bar_200 is ~1e-9
    xt = q_sample(x0, t, s, noise=eps)
    output = tab.target(parameterization, x0, eps, xt, t)
    assert torch.allclose(tab.x0_from_output(output, xt, t, parameterization), x0, atol=1e-6)
    mu_true, _ = q_posterior(x0, xt, t, s)
    assert torch.allclose(tab.mu_from_output(output, xt, t, parameterization), mu_true, atol=1e-8)
    assert torch.allclose(mu_true, posterior_mean_from_eps(xt, t, eps, s), atol=1e-8)  # and Eq. 11 agrees
    with pytest.raises(ValueError, match="parameterization"):
        tab.x0_from_output(output, xt, t, "score")


def test_pixel_losses():
    """l2 is the mean squared error (Ho et al. Eq. 14), l1 the mean absolute error (Report E)."""
    a, b = torch.tensor([[1.0, -2.0], [0.5, 0.0]]), torch.tensor([[0.0, 0.0], [0.5, 1.0]])
    assert pixel_loss(a, b, "l2").item() == pytest.approx((1 + 4 + 0 + 1) / 4)
    assert pixel_loss(a, b, "l1").item() == pytest.approx((1 + 2 + 0 + 1) / 4)
    with pytest.raises(ValueError, match="loss must be 'l2' or 'l1', got 'huber'"):
        pixel_loss(a, b, "huber")


@pytest.mark.parametrize("parameterization", ["eps", "x0", "mu"])
def test_an_oracle_network_has_zero_loss(setting, parameterization):
    """A network that outputs the true target (known here because we chose x0 and eps) scores 0,
    and one that outputs zeros does not: the loss compares the output with the right quantity."""
    s, tab, x0, eps, t = setting

    class Oracle(nn.Module):
        def forward(self, xt, t_in):
            assert torch.equal(t_in, t)
            return {"eps": eps, "x0": x0, "mu": q_posterior(x0, xt, t_in, s)[0].float()}[parameterization]

    loss, output, xt = gaussian_loss(Oracle(), x0, t, eps, tab, parameterization, "l2")
    assert loss.item() < 1e-10
    assert torch.allclose(xt, q_sample(x0, t, s, noise=eps).float(), atol=1e-6)
    zero, _, _ = gaussian_loss(lambda xt, t: torch.zeros_like(xt), x0, t, eps, tab, parameterization, "l1")
    assert zero.item() > 0.05


def test_cold_loss_compares_the_restoration_with_x0():
    """Bansal et al. Eq. 2: the network sees D(x0, t) and is scored against x0 itself."""
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1

    class Blackout:
        T = 4

        def degrade(self, x, t):
            return x * (1 - t.view(-1, 1, 1, 1) / 4)

    t = torch.tensor([1, 2, 4])
    seen = []
    perfect = lambda xt, t_in: seen.append(xt) or x0  # noqa: E731
    loss, pred = cold_loss(perfect, x0, t, Blackout(), "l1")
    assert loss.item() == 0 and torch.equal(pred, x0)
    assert torch.allclose(seen[0], Blackout().degrade(x0, t))
    identity = lambda xt, t_in: xt  # noqa: E731  (no restoration at all)
    assert cold_loss(identity, x0, t, Blackout(), "l2")[0].item() > 0


def test_timesteps_are_uniform_on_1_to_T():
    """t ~ U{1..T}: never 0 (t is 1-based), reaches T, reproducible from a generator."""
    t = sample_timesteps(20_000, 10, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() == 1 and t.max() == 10
    counts = torch.bincount(t, minlength=11)[1:].float()
    assert ((counts - 2000).abs() < 6 * 2000**0.5).all()
    assert torch.equal(t, sample_timesteps(20_000, 10, torch.Generator().manual_seed(0)))


def test_flips_mirror_images_and_labels_drop_to_the_null_label():
    """Flipped images are exact left-right mirrors, about half of them; dropped labels become
    num_classes, about p_uncond of them; without p_uncond labels are untouched."""
    x0 = torch.arange(4000 * 4, dtype=torch.float32).reshape(4000, 1, 2, 2)
    y = torch.arange(4000) % 10
    x, yy = augment_batch(x0, y, hflip=True, p_uncond=0.2, null_label=10, generator=torch.Generator().manual_seed(1))
    flipped = (x != x0).flatten(1).any(1)
    assert torch.equal(x[flipped], x0[flipped].flip(-1)) and torch.equal(x[~flipped], x0[~flipped])
    assert abs(flipped.float().mean().item() - 0.5) < 0.04
    dropped = yy == 10
    assert abs(dropped.float().mean().item() - 0.2) < 0.03 and torch.equal(yy[~dropped], y[~dropped])
    x, yy = augment_batch(x0, y, hflip=False, p_uncond=0.0, null_label=None)
    assert x is x0 and yy is y
    with pytest.raises(ValueError, match="p_uncond > 0.*class-conditional"):
        augment_batch(x0, y, hflip=False, p_uncond=0.1, null_label=None)


def test_discriminator_term_values():
    """|| softmax(D(x)) - onehot(y) ||^2: 0 for a certain and correct D, (K-1)/K for a uniform D, 2 for a
    certain and wrong D; images whose label was dropped (y = num_classes) are left out."""
    K = 10
    x = torch.zeros(4, 1, 28, 28)
    y = torch.tensor([3, 7, 10, 1])

    def logits_for(classes, scale=1e4):
        return lambda _x: nn.functional.one_hot(torch.tensor(classes), K).float() * scale

    assert discriminator_term(logits_for([3, 7, 0, 1]), x, y, K).item() == pytest.approx(0.0, abs=1e-6)
    assert discriminator_term(lambda _x: torch.zeros(4, K), x, y, K).item() == pytest.approx((K - 1) / K)
    assert discriminator_term(logits_for([0, 0, 0, 0]), x, y, K).item() == pytest.approx(2.0)
    all_null = torch.full((4,), K)
    assert discriminator_term(lambda _x: torch.zeros(4, K), x, all_null, K).item() == 0.0


def test_ema_update_matches_its_formula():
    """theta_ema <- decay * theta_ema + (1 - decay) * theta, parameter by parameter; buffers copied;
    decay 0 copies the weights (what happens before ema_start)."""
    torch.manual_seed(0)
    model, ema = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.normal_(), model.bias.normal_(), model.running_mean.normal_()
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(ema, model, 0.9)
    assert torch.allclose(ema.weight, 0.9 * before["weight"] + 0.1 * model.weight)
    assert torch.allclose(ema.bias, 0.9 * before["bias"] + 0.1 * model.bias)
    assert torch.equal(ema.running_mean, model.running_mean)
    ema_update(ema, model, 0.0)
    assert torch.equal(ema.weight, model.weight) and torch.equal(ema.bias, model.bias)
