"""Properties of the noise schedules, each test saying why it matters."""

import math

import pytest
import torch

from diffusion_edu import SCHEDULES, make_schedule, respace, schedule_from_betas, spaced_steps
from diffusion_edu.schedules import linear_betas


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("T", [1, 10, 400, 1000, 4000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(name, T):
    """alpha_bar_t is the fraction of signal variance left at step t: it must fall at every step
    (each step adds noise) and stay strictly inside (0, 1) for t >= 1, or x_t would be pure signal
    or carry no signal at all, and the model could not learn that step."""
    s = make_schedule(name, T)
    ab = s.alpha_bar
    assert ab[0] == 1.0
    assert torch.all(ab[1:] > 0) and torch.all(ab[1:] < 1)
    assert torch.all(ab[1:] < ab[:-1])
    assert s.T == T and ab.shape == (T + 1,)


def _ref_alpha_bar(name, T, t):
    """alpha_bar_t computed from the papers' formulas with the math module only (no torch)."""
    if name == "cosine":  # Nichol & Dhariwal (2021) Eq. 17, betas clipped at 0.999

        def f(u):
            return math.cos(((u / T) + 0.008) / 1.008 * math.pi / 2) ** 2

        prod = 1.0
        for u in range(1, t + 1):
            prod *= 1 - min(1 - f(u) / f(u - 1), 0.999)
        return prod
    b0, b1 = 1e-4, 0.02
    prod = 1.0
    for u in range(1, t + 1):
        r = (u - 1) / (T - 1)
        if name == "linear":
            beta = b0 + (b1 - b0) * r
        elif name == "quadratic":
            beta = (math.sqrt(b0) + (math.sqrt(b1) - math.sqrt(b0)) * r) ** 2
        else:  # sigmoid in beta space
            beta = b0 + (b1 - b0) / (1 + math.exp(-(-6 + 12 * r)))
        prod *= 1 - beta
    return prod


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("T", [400, 1000])
def test_alpha_bar_matches_independent_reference(name, T):
    """The four schedules are what the papers define: compare alpha_bar at fixed t with a plain-Python
    product of the papers' betas."""
    s = make_schedule(name, T)
    for t in (1, T // 4, T // 2, T - 1, T):
        assert s.alpha_bar[t].item() == pytest.approx(_ref_alpha_bar(name, T, t), rel=1e-9, abs=1e-15)


def test_known_values_from_the_literature():
    """Ho et al.'s linear schedule at T=1000 leaves alpha_bar_T ~ 4.04e-5 (signal amplitude ~0.6%), a
    figure quoted throughout the literature; the cosine schedule at t = T/2 has alpha_bar ~ 0.49."""
    assert make_schedule("linear", 1000).alpha_bar[1000].item() == pytest.approx(4.035e-5, rel=1e-3)

    def f(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    assert make_schedule("cosine", 1000).alpha_bar[500].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-9)


def test_linear_endpoints_and_scaling():
    """Unscaled, the linear schedule uses 1e-4..0.02 at any T (as the reports do); scale_to_T
    multiplies both by 1000/T (improved-diffusion)."""
    b = linear_betas(400)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    b = linear_betas(4000, scale_to_T=True)
    assert b[0].item() == pytest.approx(2.5e-5) and b[-1].item() == pytest.approx(0.005)


def test_derived_quantities_follow_their_definitions():
    """alphas, alpha_bar_prev, beta_tilde and SNR are derived from the betas by Ho et al.'s formulas."""
    s = make_schedule("cosine", 50)
    assert torch.allclose(s.alphas, 1 - s.betas)
    assert torch.allclose(s.alpha_bar, torch.cumprod(s.alphas, 0))
    assert torch.allclose(s.alpha_bar_prev[1:], s.alpha_bar[:-1])
    t = torch.arange(2, 51)
    expect = s.betas[t] * (1 - s.alpha_bar[t - 1]) / (1 - s.alpha_bar[t])
    assert torch.allclose(s.beta_tilde[t], expect)
    assert s.beta_tilde[1] == 0
    assert torch.allclose(s.snr[1:], s.alpha_bar[1:] / (1 - s.alpha_bar[1:]))
    assert torch.all(s.beta_tilde[1:] <= s.betas[1:])  # posterior variance never exceeds beta_t


def test_respacing_with_all_steps_is_identity():
    """Sub-sampling that keeps every step must change nothing: same betas, same model times."""
    s = make_schedule("linear", 400)
    r = respace(s, list(range(1, 401)))
    assert torch.allclose(r.betas, s.betas, rtol=1e-12, atol=1e-15)
    assert torch.allclose(r.alpha_bar, s.alpha_bar, rtol=1e-12)
    assert torch.equal(r.timesteps, s.timesteps)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_respacing_keeps_alpha_bar_at_kept_steps(name):
    """Report A's sub-sampling: alpha'_k = product of alphas between kept steps, so alpha_bar' at step
    k equals the original alpha_bar at t_k and the trained network sees the marginals it was trained on."""
    s = make_schedule(name, 400)
    kept = spaced_steps(400, 5)
    assert kept == [80, 160, 240, 320, 400]
    r = respace(s, kept)
    assert r.T == 5
    assert torch.allclose(r.alpha_bar[1:], s.alpha_bar[kept], rtol=1e-12)
    assert r.timesteps.tolist() == [0] + kept
    # alpha'_k is literally the product of the original alphas between kept steps
    assert r.alphas[2].item() == pytest.approx(torch.prod(s.alphas[81:161]).item(), rel=1e-12)


def test_schedule_moves_to_device_and_keeps_values():
    s = make_schedule("linear", 10).to("cpu")
    assert s.device.type == "cpu" and s.betas.dtype == torch.float64


# --- bad input -----------------------------------------------------------------------------------


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="cosine.*linear.*quadratic.*sigmoid"):
        make_schedule("exponential", 100)


@pytest.mark.parametrize("T", [0, -5])
def test_T_below_one_is_refused(T):
    with pytest.raises(ValueError, match="T must be at least 1"):
        make_schedule("linear", T)


def test_T_must_be_int():
    with pytest.raises(TypeError, match="T must be an int"):
        make_schedule("linear", 10.0)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [-0.1], [0.1, float("nan")]])
def test_betas_outside_open_unit_interval_are_refused(betas):
    with pytest.raises(ValueError, match="betas|beta"):
        schedule_from_betas(betas)


def test_bad_endpoints_are_refused():
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        linear_betas(10, beta_end=1.5)
    with pytest.raises(ValueError, match="after scaling"):
        linear_betas(10, scale_to_T=True)  # 0.02 * 100 = 2 > 1


def test_bad_respacing_is_refused():
    s = make_schedule("linear", 100)
    with pytest.raises(ValueError, match="1..T=100"):
        respace(s, [0, 50])
    with pytest.raises(ValueError, match="strictly increasing"):
        respace(s, [50, 20])
    with pytest.raises(ValueError, match="K must be in 1..T=100"):
        respace(s, 101)
    with pytest.raises(ValueError, match="K must be in 1..T=100"):
        respace(s, 0)


def test_respaced_schedule_keeps_the_original_steps_betas():
    """model_betas[k] is beta of the original step t_k (what a mean-predicting network was trained with),
    through a respacing of a respacing too; an ordinary schedule's model_betas are its betas."""
    s = make_schedule("cosine", 100)
    assert torch.equal(s.model_betas, s.betas)
    kept = [10, 40, 70, 100]
    r = respace(s, kept)
    assert torch.allclose(r.model_betas[1:], s.betas[kept]) and r.model_betas[0] == 0
    assert not torch.allclose(r.betas[1:], s.betas[kept])  # the jumps' betas are larger
    rr = respace(r, [2, 4])
    assert torch.allclose(rr.model_betas[1:], s.betas[[40, 100]]) and rr.timesteps.tolist() == [0, 40, 100]
    assert torch.equal(r.to("cpu").model_betas, r.model_betas)
    with pytest.raises(ValueError, match="model_betas"):
        schedule_from_betas([0.1, 0.2], model_betas=[0.1])


# ---- zero terminal SNR (Lin et al. 2024, Algorithm 1) ----------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "quadratic", "cosine", "sigmoid"])
def test_zero_terminal_snr_keeps_the_first_step_and_leaves_no_signal_at_T(name):
    from diffusion_edu.schedules import ZERO_SNR_ALPHA_BAR_T

    base, zs = make_schedule(name, 400), make_schedule(name, 400, zero_terminal_snr=True)
    assert zs.name == f"{name}+zsnr" and zs.T == 400
    assert zs.alpha_bar[1].item() == pytest.approx(base.alpha_bar[1].item(), rel=1e-12)  # a'_1 = a_1
    end = min(ZERO_SNR_ALPHA_BAR_T, base.alpha_bar[-1].item())  # cosine already ends at 1.5e-8
    assert zs.alpha_bar[-1].item() == pytest.approx(end, rel=1e-9)  # SNR(T) <= 6e-8
    if name != "cosine":
        assert base.alpha_bar[-1].item() > 1e3 * zs.alpha_bar[-1].item()
    assert (zs.alpha_bar[1:] < zs.alpha_bar[:-1]).all()  # still a diffusion: the signal only decays
    for f in ("betas", "alpha_bar", "beta_tilde", "posterior_mean_coef_x0", "posterior_mean_coef_xt"):
        assert torch.isfinite(getattr(zs, f)).all(), f


def test_zero_terminal_snr_is_an_affine_map_of_sqrt_alpha_bar():
    """Between the ends, sqrt(alpha_bar') = (a - a_T) a_1 / (a_1 - a_T) with a = sqrt(alpha_bar): computed
    here from the unscaled schedule independently of the package's code path."""
    base, zs = make_schedule("linear", 400), make_schedule("linear", 400, zero_terminal_snr=True)
    a = base.alpha_bar[1:].sqrt()
    expected = (a - a[-1]) * a[0] / (a[0] - a[-1])
    got = zs.alpha_bar[1:].sqrt()
    assert torch.allclose(got[:-1], expected[:-1], rtol=1e-10, atol=1e-12)
    assert expected[-1].item() == 0.0 and got[-1].item() > 0.0  # the floor replaces the exact zero


def test_zero_terminal_snr_start_matches_the_sampler_start():
    """What the rescale is for: q(x_T | x_0) of real-looking data is N(0, I) to within the floor, so that a
    sampler's x_T ~ N(0, I) is the distribution the network saw at t = T (the linear schedule's is not)."""
    x0 = torch.ones(4096) * 0.8  # a bright pixel
    for zero_snr, expect_close in ((True, True), (False, False)):
        s = make_schedule("linear", 400, zero_terminal_snr=zero_snr)
        mean_T = s.alpha_bar[-1].sqrt() * x0
        assert (mean_T.abs().max().item() < 1e-3) is expect_close


def test_zero_terminal_snr_rejects_bad_input():
    from diffusion_edu.schedules import rescale_zero_terminal_snr

    with pytest.raises(ValueError, match="T >= 2"):
        rescale_zero_terminal_snr(torch.tensor([0.1]))
    with pytest.raises(ValueError, match="open interval"):
        rescale_zero_terminal_snr(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="alpha_bar_T"):
        rescale_zero_terminal_snr(linear_betas(10), alpha_bar_T=0.5)
    with pytest.raises(TypeError, match="zero_terminal_snr"):
        make_schedule("linear", 10, zero_terminal_snr="yes")
