"""DDPM / DDIM steps, the sampling loop, respacing, classifier-free guidance and interpolation.

Tiny deterministic models stand in for the networks: a fixed function of x, t and y, and an oracle
that returns the exact E[eps | x_t] for Gaussian data, so every property is checked against math.
"""

import math

import pytest
import torch

from diffusion_edu import make_schedule, posterior_mean_from_eps, predict_x0_from_eps, q_posterior, respace
from diffusion_edu.guidance import combine_guidance, guided_output, interpolate, slerp
from diffusion_edu.samplers import ddim_step, ddpm_step, sample

F64 = torch.float64


class Tiny(torch.nn.Module):
    """eps = tanh(weight * x + 0.5 cos(t / 10) + 0.2 (y - 1)); y = num_classes (null) adds nothing."""

    def __init__(self, num_classes=None, parameterization="eps", scale=1.0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([0.9, -0.4, 0.3, 0.7], dtype=F64).reshape(1, 1, 2, 2))
        self.num_classes, self.parameterization, self.scale = num_classes, parameterization, scale
        self.in_channels, self.image_size = 1, 2
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append((x.shape[0], t.clone(), None if y is None else y.clone(), self.training))
        h = self.weight * x + 0.5 * torch.cos(t.to(x.dtype) / 10).reshape(-1, 1, 1, 1)
        if self.num_classes is not None and y is not None:
            h = h + torch.where(y == self.num_classes, 0.0, 0.2 * (y.to(x.dtype) - 1)).reshape(-1, 1, 1, 1)
        return self.scale * torch.tanh(h)


class GaussianOracle(torch.nn.Module):
    """Exact E[eps | x_t] when the data are x0 ~ N(m, s^2 I): x_t ~ N(sqrt(ab) m, ab s^2 + 1 - ab), so
    E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) m) / (ab s^2 + 1 - ab). Fed the *model* time t, it
    reads alpha_bar from the original schedule, which also tests respacing's time mapping."""

    def __init__(self, schedule, m=0.3, s=0.5, parameterization="eps", size=2):
        super().__init__()
        self.schedule, self.m, self.s, self.parameterization = schedule, m, s, parameterization
        self.in_channels, self.image_size, self.num_classes = 1, size, None

    def forward(self, x, t, y=None):
        ab = self.schedule.alpha_bar[t].to(x.dtype).reshape(-1, 1, 1, 1)
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * self.m) / (ab * self.s**2 + 1 - ab)
        if self.parameterization == "x0":
            return predict_x0_from_eps(x, t, eps, self.schedule)
        if self.parameterization == "mu":
            return posterior_mean_from_eps(x, t, eps, self.schedule)
        if self.parameterization == "v":  # v = sqrt(ab) eps - sqrt(1 - ab) x0, x0 from Eq. 4
            return ab.sqrt() * eps - (1 - ab).sqrt() * predict_x0_from_eps(x, t, eps, self.schedule)
        return eps


def _x(n=3, seed=0):
    return torch.randn(n, 1, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ steps


@pytest.mark.parametrize("step", [ddpm_step, ddim_step])
def test_step_returns_x_prev_and_x0_pred(step):
    """A step hands back both the next image and the network's x0 guess (the book plots both); x0_pred
    must be Ho et al. Eq. 4 solved for x0 with the network's eps."""
    s, model, xt = make_schedule("cosine", 20), Tiny(), _x()
    out = step(model, xt, 12, s, clip_x0=False, generator=torch.Generator().manual_seed(0))
    x_prev, x0_pred = out  # a NamedTuple unpacks
    assert x_prev.shape == x0_pred.shape == xt.shape
    eps = Tiny()(xt, torch.full((3,), 12))
    assert torch.allclose(out.x0_pred, predict_x0_from_eps(xt, 12, eps, s))
    assert not torch.allclose(out.x_prev, xt)


def test_ddpm_mean_without_clipping_is_ho_eq_11():
    """The step computes the mean via the posterior at the predicted x0 (Eq. 7); without clipping this
    must equal Ho et al. Eq. 11, the form the papers and Report E write."""
    s, model, xt = make_schedule("linear", 50), Tiny(), _x()
    for t in (2, 25, 50):
        out = ddpm_step(model, xt, t, s, variance="zero", clip_x0=False)
        eps = model(xt, torch.full((3,), t))
        assert torch.allclose(out.x_prev, posterior_mean_from_eps(xt, t, eps, s), atol=1e-12)


def test_clip_x0_clips_and_mean_uses_clipped_x0():
    """With a network whose x0 guess is far outside [-1, 1], clipping must bound x0_pred and the mean
    must be the posterior mean (Ho et al. Eq. 7) at the clipped x0, as the reference implementation does."""
    s, model, xt = make_schedule("linear", 50), Tiny(scale=-3.0), _x() * 3
    raw = ddpm_step(model, xt, 10, s, variance="zero", clip_x0=False)
    assert raw.x0_pred.abs().max() > 1.5
    out = ddpm_step(model, xt, 10, s, variance="zero", clip_x0=True)
    assert out.x0_pred.abs().max() <= 1.0 and torch.equal(out.x0_pred, raw.x0_pred.clamp(-1, 1))
    assert torch.allclose(out.x_prev, q_posterior(raw.x0_pred.clamp(-1, 1), xt, 10, s)[0])
    ddim = ddim_step(model, xt, 10, s, clip_x0=True)
    assert ddim.x0_pred.abs().max() <= 1.0


@pytest.mark.parametrize("variance", ["beta", "beta_tilde", "zero"])
def test_ddpm_noise_scale_is_the_chosen_sigma(variance):
    """x_{t-1} - mu = sigma_t z with sigma_t^2 = beta_t, beta_tilde_t or 0 (Report A's deterministic
    process); and no noise at the last step t = 1 (Ho et al. Algorithm 2, line 3)."""
    s, model, xt = make_schedule("linear", 50), Tiny(), _x()
    z = torch.randn_like(xt)
    mean = ddpm_step(model, xt, 30, s, variance="zero").x_prev
    got = ddpm_step(model, xt, 30, s, variance=variance, noise=z).x_prev
    var = {"beta": s.betas[30], "beta_tilde": s.beta_tilde[30], "zero": 0.0}[variance]
    assert torch.allclose(got - mean, math.sqrt(var) * z, atol=1e-12)
    last = ddpm_step(model, xt, 1, s, variance=variance, noise=z)
    assert torch.allclose(last.x_prev, ddpm_step(model, xt, 1, s, variance="zero").x_prev)


def test_ddim_sigma_follows_song_eq_16():
    """The DDIM noise scale is eta sqrt((1 - ab_prev)/(1 - ab)) sqrt(1 - ab/ab_prev) (Song et al. Eq. 16):
    read it off as the change of x_{t-1} per unit of z."""
    s = respace(make_schedule("cosine", 100), 10)  # any schedule: here a respaced one
    model, xt, z = Tiny(), _x(), torch.ones(3, 1, 2, 2, dtype=F64)
    for eta, t in ((0.5, 7), (1.0, 3), (0.2, 10)):
        a = ddim_step(model, xt, t, s, eta=eta, noise=z).x_prev
        b = ddim_step(model, xt, t, s, eta=eta, noise=torch.zeros_like(z)).x_prev
        ab, abp = s.alpha_bar[t].item(), s.alpha_bar_prev[t].item()
        sigma = eta * math.sqrt((1 - abp) / (1 - ab)) * math.sqrt(1 - ab / abp)
        assert torch.allclose(a - b, torch.full_like(a, sigma), atol=1e-12)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta_1_takes_the_ddpm_beta_tilde_step(clip_x0):
    """Song et al. Sec. 4.1: with eta = 1, sigma_t^2 = beta_tilde_t and Eq. 12 is the DDPM posterior
    step. Given the same noise z, the two updates must agree at every t (clipped or not)."""
    s, model = make_schedule("linear", 40), Tiny(scale=2.0)
    xt, z = _x() * 2, _x(seed=1)
    for t in range(1, 41, 3):
        a = ddim_step(model, xt, t, s, eta=1.0, clip_x0=clip_x0, noise=z)
        b = ddpm_step(model, xt, t, s, variance="beta_tilde", clip_x0=clip_x0, noise=z)
        assert torch.allclose(a.x_prev, b.x_prev, atol=1e-10) and torch.allclose(a.x0_pred, b.x0_pred)


def test_full_loop_ddim_eta_1_equals_ddpm_beta_tilde():
    """The whole chain: same generator seed, same draws, same samples."""
    s, model = make_schedule("cosine", 30), Tiny()
    a = sample(model, s, 4, method="ddim", eta=1.0, generator=torch.Generator().manual_seed(5))
    b = sample(model, s, 4, method="ddpm", variance="beta_tilde", generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("step,kw", [(ddpm_step, {"variance": "beta"}), (ddim_step, {"eta": 0.7})])
def test_batch_of_different_t_matches_one_t_at_a_time(step, kw):
    """A step also accepts one t per image (tensor path); it must agree with the scalar path used in the
    sampling loop, including the noise-free last step for the image at t = 1."""
    s, model, xt, z = make_schedule("cosine", 30), Tiny(), _x(4), _x(4, seed=2)
    t = torch.tensor([1, 7, 19, 30])
    got = step(model, xt, t, s, noise=z, **kw)
    for i, ti in enumerate(t.tolist()):
        one = step(model, xt[i : i + 1], ti, s, noise=z[i : i + 1], **kw)
        assert torch.allclose(got.x_prev[i], one.x_prev[0], atol=1e-12)
        assert torch.allclose(got.x0_pred[i], one.x0_pred[0], atol=1e-12)


def test_parameterization_is_read_from_the_model():
    """An oracle predicting eps, x0, mu or v describes the same reverse process: with one generator seed
    the four must produce the same samples (the sampler reads model.parameterization)."""
    s = make_schedule("cosine", 25)
    outs = [
        sample(
            GaussianOracle(s, parameterization=p),
            s,
            6,
            x_T=_x(6),
            clip_x0=False,
            generator=torch.Generator().manual_seed(0),
        )
        for p in ("eps", "x0", "mu", "v")
    ]
    assert all(torch.allclose(outs[0], o, atol=1e-8) for o in outs[1:])


# ------------------------------------------------------------------------------------ the loop


@pytest.mark.parametrize(
    "kw", [dict(method="ddpm"), dict(method="ddpm", variance="beta"), dict(method="ddim"), dict(method="ddim", eta=1.0)]
)
def test_oracle_samples_have_the_data_distribution(kw):
    """With the exact eps of Gaussian data N(0.3, 0.5^2), every sampler must return that distribution.
    8,000 values: standard errors ~0.006 (mean) and ~0.004 (std); the 0.02 allowance covers the
    discretisation error of 200 steps (measured <= 0.01 on std). A wrong coefficient misses by far more."""
    s = make_schedule("cosine", 200)
    n, m, sd = 2000, 0.3, 0.5
    g = torch.Generator().manual_seed(11)
    x = sample(
        GaussianOracle(s, m, sd),
        s,
        n,
        x_T=torch.randn(n, 1, 2, 2, dtype=F64, generator=g),
        clip_x0=False,
        generator=g,
        **kw,
    )
    se_mean, se_std = sd / math.sqrt(4 * n), sd / math.sqrt(8 * n)
    assert abs(x.mean().item() - m) < 5 * se_mean + 0.01
    assert abs(x.std().item() - sd) < 5 * se_std + 0.02


def test_report_a_deterministic_ddpm_is_not_ddim():
    """Report A's sigma = 0 DDPM is *not* the DDIM (probability-flow) ODE: dropping the noise from
    Algorithm 2 collapses Gaussian data onto its mean (std 0.0001 instead of 0.5), whereas DDIM with
    eta = 0 keeps the spread. The book uses this to explain Report A's deterministic samples."""
    s = make_schedule("cosine", 200)
    x_T = torch.randn(2000, 1, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    oracle = GaussianOracle(s, 0.3, 0.5)
    zero = sample(oracle, s, 2000, method="ddpm", variance="zero", x_T=x_T, clip_x0=False)
    ddim = sample(oracle, s, 2000, method="ddim", x_T=x_T, clip_x0=False)
    assert zero.std() < 0.05 and abs(zero.mean().item() - 0.3) < 0.01 and abs(ddim.std().item() - 0.5) < 0.03


# Reference values: generated once (torch 2.13 CPU, float64) by running this file's `_reference_runs()`
# and printing `[round(v, 12) for v in out.flatten().tolist()]`. Two of them were also reproduced by a
# separate 15-line loop written straight from Ho et al. Eq. 11 and Song et al. Eq. 12 with the same
# generator. They pin the whole update rule: a changed coefficient, noise order or guidance formula
# changes them.
REFERENCE = {
    "ddpm_beta_tilde_clip": [
        -0.150040317226,
        0.881144485018,
        -1.0,
        -0.49390824897,
        -0.047469174615,
        -0.990553501154,
        -1.0,
        -0.398920484137,
    ],
    "ddpm_beta_noclip": [
        0.06797277839,
        8.900669106999,
        -4.148601279809,
        -0.610255845158,
        0.001563979363,
        -2.36967875358,
        -2.087013974555,
        -0.460529133203,
    ],
    "ddim_eta0_respaced5": [
        -0.581158940223,
        1.151279559585,
        -3.21857222951,
        -0.489501225771,
        -1.005272143307,
        1.880207873623,
        -0.44810432334,
        0.192762896878,
    ],
    "ddim_eta05_guided": [0.077209023184, 1.0, -1.0, 0.01340067717, -0.693330127527, -1.0, -1.0, -0.171722163031],
}


def _reference_runs():
    s = make_schedule("linear", 10, beta_start=0.05, beta_end=0.4)
    g = lambda: torch.Generator().manual_seed(1234)  # noqa: E731
    return {
        "ddpm_beta_tilde_clip": sample(Tiny(), s, 2, generator=g()),
        "ddpm_beta_noclip": sample(Tiny(), s, 2, variance="beta", clip_x0=False, generator=g()),
        "ddim_eta0_respaced5": sample(Tiny(), s, 2, method="ddim", steps=5, clip_x0=False, generator=g()),
        "ddim_eta05_guided": sample(
            Tiny(num_classes=3), s, 2, method="ddim", eta=0.5, y=torch.tensor([0, 2]), w=0.5, generator=g()
        ),
    }


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_full_loop_matches_stored_reference(name):
    """A full sampling loop with a tiny fixed model must reproduce numbers stored when the sampler was
    written (diffusers pins its schedulers the same way)."""
    got = _reference_runs()[name].flatten()
    assert torch.allclose(got, torch.tensor(REFERENCE[name], dtype=F64), rtol=1e-9, atol=1e-11)


def test_respacing_with_all_steps_changes_nothing():
    """respace(schedule, T) keeps every step: alpha'_t = alpha_t, so sampling on it must give the same
    images as the original schedule (for DDPM and DDIM, same seeds)."""
    s, model = make_schedule("linear", 30), Tiny()
    for kw in (dict(method="ddpm", variance="beta"), dict(method="ddim", eta=0.3)):
        a = sample(model, s, 3, generator=torch.Generator().manual_seed(2), **kw)
        b = sample(model, respace(s, 30), 3, generator=torch.Generator().manual_seed(2), **kw)
        c = sample(model, s, 3, steps=30, generator=torch.Generator().manual_seed(2), **kw)
        assert torch.allclose(a, b, atol=1e-12) and torch.allclose(a, c, atol=1e-12)


def test_respaced_sampling_feeds_the_original_times():
    """On K kept steps the network must be asked about the original steps t_k (schedule.model_time),
    down to 5 steps (Report A's sub-sampling): for T = 400 that is 400, 320, 240, 160, 80."""
    model = Tiny()
    sample(model, make_schedule("linear", 400), 2, steps=5, method="ddpm")
    assert [c[1][0].item() for c in model.calls] == [400, 320, 240, 160, 80]


@pytest.mark.parametrize("kw", [dict(method="ddpm"), dict(method="ddpm", variance="beta"), dict(method="ddim")])
def test_a_mean_network_samples_like_an_eps_network_after_respacing(kw):
    """A network predicting the posterior mean (Ho et al. Eq. 11) was trained on the steps t -> t-1 of the
    full chain; on 5 respaced steps its output must be converted with the original step's alpha_t, beta_t
    (schedule.model_betas), not the long jump's. Then the eps, x0 and mu oracles of one distribution give
    the same samples; converting with the jump's betas would give samples of noise (Report A's mu runs)."""
    s = make_schedule("linear", 400)
    outs = [
        sample(
            GaussianOracle(s, parameterization=p),
            s,
            6,
            steps=5,
            x_T=_x(6),
            clip_x0=False,
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
        for p in ("eps", "x0", "mu", "v")
    ]
    assert all(torch.allclose(outs[0], o, atol=1e-8) for o in outs[1:])


def test_trajectory_has_every_kth_state_and_the_end():
    """trajectory_every = k records x_T, x_{T-k}, ... and always the final x_0: ceil(T / k) + 1 frames,
    with the x0 prediction made from each recorded x_t."""
    s, model = make_schedule("cosine", 10), Tiny()
    x_T = _x(3)
    img, traj = sample(model, s, 3, method="ddim", x_T=x_T, trajectory_every=3, clip_x0=False)
    assert traj.t == [10, 7, 4, 1, 0] and len(traj) == math.ceil(10 / 3) + 1
    assert traj.xt.shape == traj.x0_pred.shape == (5, 3, 1, 2, 2)
    assert torch.equal(traj.xt[0], x_T) and torch.equal(traj.xt[-1], img) and torch.equal(traj.x0_pred[-1], img)
    eps = model(traj.xt[1], torch.full((3,), 7))
    assert torch.allclose(traj.x0_pred[1], predict_x0_from_eps(traj.xt[1], 7, eps, s))
    _, full = sample(model, s, 3, trajectory_every=1)
    assert len(full) == 11
    _, resp = sample(model, s, 3, steps=5, trajectory_every=2)
    assert resp.t == [5, 3, 1, 0] and resp.model_t == [10, 6, 2, 0]


def test_generator_makes_samples_reproducible():
    s, model = make_schedule("cosine", 20), Tiny()
    a = sample(model, s, 4, generator=torch.Generator().manual_seed(7))
    b = sample(model, s, 4, generator=torch.Generator().manual_seed(7))
    c = sample(model, s, 4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_ddim_eta_0_is_deterministic():
    """DDIM with eta = 0 maps x_T to one image: different generators must not change it (Song et al. Sec. 4.1)."""
    s, model, x_T = make_schedule("cosine", 20), Tiny(), _x(4)
    a = sample(model, s, 4, method="ddim", x_T=x_T, generator=torch.Generator().manual_seed(1))
    b = sample(model, s, 4, method="ddim", x_T=x_T, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    one = ddim_step(model, x_T, 9, s, generator=torch.Generator().manual_seed(3))
    assert torch.equal(one.x_prev, ddim_step(model, x_T, 9, s, generator=torch.Generator().manual_seed(4)).x_prev)


def test_batch_size_chunks_the_work():
    """batch_size splits n into chunks (for thousands of evaluation images); a deterministic sampler must
    give the same images, and the network must never see more than batch_size images at once."""
    s, model, x_T = make_schedule("cosine", 10), Tiny(), _x(7)
    whole = sample(model, s, 7, method="ddim", x_T=x_T)
    model.calls.clear()
    chunked = sample(model, s, 7, method="ddim", x_T=x_T, batch_size=3)
    assert torch.allclose(whole, chunked) and max(c[0] for c in model.calls) == 3
    assert sample(model, s, 7, batch_size=3).shape == (7, 1, 2, 2)


def test_sampling_runs_without_gradients_in_eval_mode():
    """Sampling must not build an autograd graph (memory) and must run the network in eval mode
    (dropout off), then give the model back in the mode it was in."""
    s, model = make_schedule("cosine", 5), Tiny()
    model.train()
    out = sample(model, s, 2)
    assert not out.requires_grad and out.dtype == F64  # the model's dtype
    assert not any(c[3] for c in model.calls) and model.training


# ------------------------------------------------------------------------------------ guidance


def test_guidance_runs_both_branches_in_one_forward_pass():
    """Classifier-free guidance must cost one network call per step on a doubled batch: the labels,
    then the null label (num_classes)."""
    s, model = make_schedule("cosine", 6), Tiny(num_classes=3)
    sample(model, s, 2, y=torch.tensor([0, 2]), w=2.0)
    assert len(model.calls) == 6
    b, _, y, _ = model.calls[0]
    assert b == 4 and y.tolist() == [0, 2, 3, 3]


def test_guidance_with_w_0_equals_the_conditional_model():
    """w = 0 is the plain conditional model; and the batched path with a tiny w must be nearly it too
    (this fails if the conditional and unconditional halves were swapped)."""
    model, xt, t, y = Tiny(num_classes=3), _x(), torch.tensor([5, 5, 5]), torch.tensor([0, 1, 2])
    cond = model(xt, t, y)
    assert torch.equal(guided_output(model, xt, t, y, 0.0), cond)
    assert torch.allclose(guided_output(model, xt, t, y, 1e-9), cond, atol=1e-8)
    s = make_schedule("cosine", 8)
    a = sample(model, s, 3, y=y, w=0.0, generator=torch.Generator().manual_seed(0))
    uncond = sample(model, s, 3, y=torch.full((3,), 3), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, uncond)


def test_guidance_formula_and_report_b_reading():
    """(1 + w) eps_c - w eps_u (Report E Eq. 6) is Report B's "from the unconditional towards the
    conditional prediction", eps_u + (1 + w)(eps_c - eps_u); w = -1 is the unconditional model."""
    model, xt, t, y = Tiny(num_classes=3), _x(), torch.tensor([5, 5, 5]), torch.tensor([0, 1, 2])
    ec, eu = model(xt, t, y), model(xt, t, torch.full((3,), 3))
    for w in (0.2, 0.5, 3.0):
        got = guided_output(model, xt, t, y, w)
        assert torch.allclose(got, (1 + w) * ec - w * eu) and torch.allclose(got, eu + (1 + w) * (ec - eu))
    assert torch.allclose(guided_output(model, xt, t, y, -1.0), eu)
    assert torch.equal(combine_guidance(ec, eu, 0.0), ec)


@pytest.mark.parametrize("param", ["eps", "x0"])
def test_report_e_mean_space_guidance_is_the_same_update(param):
    """Report E's Algorithm 2 combines the means, mu = (1 + w) mu_c - w mu_u, then adds sqrt(beta_tilde) z.
    mu is affine in eps with weights summing to 1, so it must equal our eps-space step, and guiding an
    x0-predicting network's raw output must too."""
    s, w, z = make_schedule("linear", 100), 0.5, _x(seed=4)
    eps_model, xt, y = Tiny(num_classes=3), _x(), torch.tensor([0, 1, 2])
    for t in (2, 40, 100):
        tt = torch.full((3,), t)
        mu_c = posterior_mean_from_eps(xt, t, eps_model(xt, tt, y), s)
        mu_u = posterior_mean_from_eps(xt, t, eps_model(xt, tt, torch.full((3,), 3)), s)
        report_e = (1 + w) * mu_c - w * mu_u + s.beta_tilde[t].sqrt() * z
        model = eps_model
        if param == "x0":  # the same network, predicting x0 instead
            model = lambda x, t_, y_=None, t=t: predict_x0_from_eps(x, t, eps_model(x, t_, y_), s)  # noqa: E731
            model.num_classes, model.parameterization = 3, "x0"
        ours = ddpm_step(model, xt, t, s, y=y, w=w, clip_x0=False, noise=z).x_prev
        assert torch.allclose(ours, report_e, atol=1e-10)


# ------------------------------------------------------------------------------------ interpolation


def test_slerp_endpoints_norm_and_midpoint():
    """slerp starts at a, ends at b, keeps the norm between two equal-norm vectors (a straight line
    would shrink it, giving atypical, washed-out starting noise) and gives (a + b)/sqrt(2) halfway
    between orthogonal ones."""
    a = torch.tensor([3.0, 0.0, 0.0, 0.0]).reshape(1, 2, 2)
    b = torch.tensor([0.0, 3.0, 0.0, 0.0]).reshape(1, 2, 2)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (5, 1, 2, 2)
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path.flatten(1).norm(dim=1), torch.full((5,), 3.0))
    assert torch.allclose(slerp(a, b, 0.5), (a + b) / math.sqrt(2))
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear fallback


def test_interpolate_decodes_the_endpoints_with_deterministic_ddim():
    s, model = make_schedule("cosine", 10), Tiny()
    xa, xb = _x(1, seed=5)[0], _x(1, seed=6)[0]
    imgs = interpolate(model, s, xa, xb, 4, steps=5)
    assert imgs.shape == (4, 1, 2, 2)
    ends = sample(model, s, 2, method="ddim", steps=5, x_T=torch.stack([xa, xb]))
    assert torch.allclose(imgs[0], ends[0]) and torch.allclose(imgs[-1], ends[1])


# ------------------------------------------------------------------------------------ bad input


S10 = make_schedule("cosine", 10)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(method="euler"), ValueError, "unknown method 'euler'"),
        (dict(variance="learned"), ValueError, "unknown variance 'learned'"),
        (dict(steps=11), ValueError, "steps \\(the number of sampling steps, at most T=10\\) must be an int in 1..10"),
        (dict(steps=0), ValueError, "steps \\(the number of sampling steps, at most T=10\\) must be an int in 1..10"),
        (dict(steps=2.5), ValueError, "must be an int in 1..10 \\(or None\\), got 2.5"),
        (dict(n=0), ValueError, "n \\(the number of images\\) must be an int >= 1"),
        (dict(batch_size=0), ValueError, "batch_size must be an int >= 1"),
        (dict(trajectory_every=0), ValueError, "trajectory_every must be an int >= 1"),
        (dict(method="ddim", eta=1.5), ValueError, "eta must be a number in \\[0, 1\\]"),
        (dict(method="ddpm", eta=0.5), ValueError, "eta=0.5 only applies to method='ddim'"),
        (dict(method="ddim", variance="beta"), ValueError, "only applies to method='ddpm'"),
        (dict(w=1.0), ValueError, "the model is unconditional"),
        (dict(y=1), ValueError, "labels y were given but the model is unconditional"),
        (dict(x_T=torch.zeros(3, 1, 2, 2)), ValueError, "x_T must hold n=2 images"),
        (dict(w=float("nan")), TypeError, "w \\(the guidance weight\\) must be a finite float"),
    ],
)
def test_sample_rejects_bad_input(kwargs, exc, match):
    n = kwargs.pop("n", 2)
    with pytest.raises(exc, match=match):
        sample(Tiny(), S10, n, **kwargs)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(y=torch.tensor([0, 4])), ValueError, "labels y must lie in 0..2 \\(or 3, the null label\\)"),
        (dict(y=-1), ValueError, "labels y must lie in 0..2"),
        (dict(y=torch.tensor([0, 1, 2])), ValueError, "y must have shape \\(2,\\)"),
        (dict(y=torch.tensor([0.0, 1.0])), TypeError, "y must be an int label or an integer tensor"),
        (dict(w=0.5), ValueError, "which needs labels y"),
    ],
)
def test_labels_are_checked(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sample(Tiny(num_classes=3), S10, 2, **kwargs)


def test_model_without_shape_attributes_needs_x_T():
    model = lambda x, t, y=None: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="pass x_T, or give the model the attributes in_channels and image_size"):
        sample(model, S10, 2, parameterization="eps")
    assert sample(model, S10, 2, x_T=torch.zeros(2, 1, 3, 3), parameterization="eps").shape == (2, 1, 3, 3)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (
            lambda m, x: ddpm_step(m, x, 0, S10),
            ValueError,
            "t \\(a step goes from x_t to x_\\(t-1\\)\\) must be an int",
        ),
        (lambda m, x: ddim_step(m, x, 11, S10), ValueError, "must be an int in 1..10, got 11"),
        (lambda m, x: ddpm_step(m, x, torch.tensor([1, 2, 0]), S10), ValueError, "t must lie in 1..T=10"),
        (lambda m, x: ddpm_step(m, x, 3, S10, variance="big"), ValueError, "unknown variance 'big'"),
        (lambda m, x: ddim_step(m, x, 3, S10, eta=-0.1), ValueError, "eta must be a number in \\[0, 1\\]"),
        (lambda m, x: ddpm_step(m, x, 3, S10, noise=torch.zeros(1, 1, 2, 2)), ValueError, "noise must have the shape"),
        (lambda m, x: ddpm_step(m, x[0], 3, S10), ValueError, "xt must be a batch of images"),
        (lambda m, x: ddim_step(m, x, 3, S10, w=2.0), ValueError, "the model is unconditional"),
        (lambda m, x: slerp(x[0], x, 0.5), ValueError, "a and b must have the same shape"),
        (lambda m, x: interpolate(m, S10, x[0], x[1], 0), ValueError, "n_points must be an int >= 1"),
    ],
)
def test_steps_reject_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call(Tiny(), _x())


def test_unknown_parameterization_is_refused():
    model = Tiny(parameterization="score")
    with pytest.raises(ValueError, match="unknown Tiny.parameterization 'score'"):
        sample(model, S10, 2)
    with pytest.raises(ValueError, match="unknown Tiny.parameterization 'score'"):
        ddpm_step(model, _x(), 3, S10)
    with pytest.raises(ValueError, match="unknown parameterization 'score'"):
        sample(Tiny(), S10, 2, parameterization="score")


class _HandBuiltX0(torch.nn.Module):
    """A network written by hand that predicts x0 and declares nothing."""

    in_channels, image_size, num_classes = 1, 2, None

    def forward(self, x, t, y=None):
        return 0.5 * torch.tanh(x)


@pytest.mark.parametrize("method", ["ddpm", "ddim", "dpm_solver_2m", "heun"])
def test_a_network_that_declares_nothing_is_never_taken_for_an_eps_network(method):
    """A hand-built x0 network that declares nothing is refused (not silently read as eps); told with
    parameterization= it samples exactly as the same network declaring x0, and differently from eps;
    a declaration that contradicts the argument is refused."""
    net, s = _HandBuiltX0(), make_schedule("linear", 20)
    x_T = _x(3, seed=1).float()
    with pytest.raises(ValueError, match="_HandBuiltX0 does not declare what it outputs"):
        sample(net, s, 3, method=method, x_T=x_T)
    with pytest.raises(ValueError, match="does not declare"):
        ddpm_step(net, x_T, 5, s)
    told = sample(net, s, 3, method=method, x_T=x_T, parameterization="x0", generator=torch.Generator().manual_seed(0))
    declared = _HandBuiltX0()
    declared.parameterization = "x0"
    same = sample(declared, s, 3, method=method, x_T=x_T, generator=torch.Generator().manual_seed(0))
    as_eps = sample(
        net, s, 3, method=method, x_T=x_T, parameterization="eps", generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(told, same) and not torch.allclose(told, as_eps, atol=1e-3)
    with pytest.raises(ValueError, match="parameterization='eps' but the network declares 'x0'"):
        sample(declared, s, 3, method=method, x_T=x_T, parameterization="eps")


def test_the_package_networks_declare_their_output():
    """A Denoiser declares what it outputs when built (default eps); an unknown value is refused."""
    from diffusion_edu.models import build_model_preset

    assert build_model_preset("cnn_mnist").parameterization == "eps"
    assert build_model_preset("cnn_mnist", parameterization="x0").parameterization == "x0"
    with pytest.raises(ValueError, match="parameterization must be one of"):
        build_model_preset("cnn_mnist", parameterization="score")


def test_benchmark_script_runs_and_writes_a_results_file(tmp_path):
    """benchmarks/bench_samplers.py is how the 5% overhead target is checked; run it at toy size so it
    cannot rot, and check the results file it writes."""
    import importlib.util
    from pathlib import Path

    from diffusion_edu.results import read_results

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_samplers.py"
    spec = importlib.util.spec_from_file_location("bench_samplers", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        args = [
            "--T",
            "5",
            "--n",
            "1",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--preset",
            "small_unet_mnist",
            "--preset",
            "cnn_mnist",
            "--eval-n",
            "3",
            "--eval-steps",
            "2",
            "--out",
            str(tmp_path / "b.json"),
        ]
        assert bench.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    rec = read_results(tmp_path / "b.json")
    assert rec["tier"] == "smoke" and rec["name"] == "samplers/benchmark"
    models = rec["data"]["models"]
    assert set(models) == {"small_unet_mnist", "cnn_mnist"}
    assert models["cnn_mnist"]["params"] == 114081  # the preset itself, not a stand-in
    assert models["small_unet_mnist"]["evaluation"]["n"] == 3 and models["small_unet_mnist"]["evaluation"]["steps"] == 2
    assert set(rec["data"]["evaluation_within_target"]) == {"small_unet_mnist", "cnn_mnist"}
    assert models["cnn_mnist"]["respaced_5"]["steps"] == 5 and rec["data"]["sampler_overhead_fraction"] > 0
