"""Min-SNR-gamma loss weighting (Hang et al. 2023) and the v-prediction target in training.

The weighting is defined on the x_0 error: weight min(SNR_t, gamma). Whatever the network predicts, its
own weighted error must equal that x_0-space loss (for the L2 loss), which these tests check against the
x_0 error computed independently, and v-prediction must train as a real target."""

import pytest
import torch

from diffusion_edu import make_schedule
from diffusion_edu.losses import DiffusionTables, gaussian_loss, pixel_loss, snr_weight
from diffusion_edu.presets import TrainConfig

F64 = torch.float64


@pytest.fixture(scope="module")
def tables():
    return DiffusionTables.from_schedule(make_schedule("linear", 1000))


def _batch(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
    eps = torch.randn(n, 1, 4, 4, generator=g)
    t = torch.randint(1, 1001, (n,), generator=g)
    return x0, eps, t


class _Noisy(torch.nn.Module):
    """A 'network' that outputs the target plus fixed noise: its error is known exactly."""

    def __init__(self, tables, parameterization, x0, eps, t, seed=1):
        super().__init__()
        self.tables, self.p, self.x0, self.eps, self.t = tables, parameterization, x0, eps, t
        self.err = 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))

    def forward(self, xt, t):
        return self.tables.target(self.p, self.x0, self.eps, xt, self.t) + self.err


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_min_snr_loss_is_the_clipped_snr_times_the_x0_error(tables, parameterization):
    x0, eps, t = _batch()
    net = _Noisy(tables, parameterization, x0, eps, t)
    loss, out, xt = gaussian_loss(net, x0, t, eps, tables, parameterization, "l2", weighting="min_snr", min_snr_gamma=5)
    x0_err = (tables.x0_from_output(out, xt, t, parameterization) - x0).square()  # per pixel
    snr = tables.snr(t)
    expected = (snr.clamp(max=5) * x0_err).mean()
    assert torch.allclose(loss, expected, rtol=1e-4), (float(loss), float(expected))
    uniform, _, _ = gaussian_loss(net, x0, t, eps, tables, parameterization, "l2")
    assert not torch.allclose(loss, uniform, rtol=1e-2)  # the weighting changes the loss


def test_snr_weight_for_eps_is_one_at_low_snr_and_falls_as_gamma_over_snr():
    snr = torch.tensor([0.01, 1.0, 5.0, 50.0, 5000.0], dtype=F64)
    w = snr_weight(snr, "eps", gamma=5.0)
    assert torch.allclose(w[:3], torch.ones(3, dtype=F64))
    assert torch.allclose(w[3:], 5.0 / snr[3:])


def test_snr_weight_refuses_mu_and_a_bad_gamma():
    with pytest.raises(ValueError, match="not 'mu'"):
        snr_weight(torch.ones(2), "mu")
    with pytest.raises(ValueError, match="min_snr_gamma must be > 0"):
        snr_weight(torch.ones(2), "eps", gamma=0)


def test_snr_table_matches_the_schedule(tables):
    s = make_schedule("linear", 1000)
    t = torch.tensor([1, 10, 500, 1000])
    ab = s.alpha_bar[t].double()
    assert torch.allclose(tables.snr(t).view(-1).double(), ab / (1 - ab), rtol=1e-4)


def test_v_target_is_sqrt_ab_eps_minus_sqrt_1m_ab_x0(tables):
    x0, eps, t = _batch(3, 8)
    xt = tables.q_sample(x0, t, eps)
    ab = make_schedule("linear", 1000).alpha_bar[t].float().view(-1, 1, 1, 1)
    want = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    assert torch.allclose(tables.target("v", x0, eps, xt, t), want, atol=1e-6)
    assert torch.allclose(tables.x0_from_output(want, xt, t, "v"), x0, atol=1e-5)


def test_weighted_pixel_loss_scales_each_image():
    out, target = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    w = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    assert float(pixel_loss(out, target, "l1", w)) == pytest.approx(2.0)
    assert float(pixel_loss(out, target, "l2")) == pytest.approx(1.0)


def test_config_validates_the_weighting():
    assert TrainConfig(loss_weighting="min_snr", parameterization="v").min_snr_gamma == 5.0
    with pytest.raises(ValueError, match="loss_weighting"):
        TrainConfig(loss_weighting="snr")
    with pytest.raises(ValueError, match="not parameterization='mu'"):
        TrainConfig(loss_weighting="min_snr", parameterization="mu")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        TrainConfig(min_snr_gamma=-1.0)


@pytest.mark.parametrize("kw", [{"parameterization": "v"}, {"loss_weighting": "min_snr"}])
def test_a_short_run_learns(tmp_path, kw):
    """v-prediction and Min-SNR are wired into the training loop: 60 steps lower the loss."""
    from diffusion_edu.training import train

    cfg = TrainConfig(
        subset=64,
        T=100,
        steps=60,
        batch_size=16,
        lr=2e-3,
        log_every=10,
        ema_decay=None,
        checkpoint_every=0,
        model_kwargs={"ch": 8},
        **kw,
    )
    train(cfg, tmp_path / "run", progress=False)
    import json

    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0], losses
