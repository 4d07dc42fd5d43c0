"""The training loop: exact resume, NaN handling, logging, callbacks, sample grids, cold diffusion,
the discriminator and auxiliary terms, and the errors for configurations a network cannot train.

The networks here are tiny stand-ins defined in this file (two convolutions and a time embedding), so
that the loop is tested on its own, in about a second per run on 2 CPU cores. ``TinyNet`` and
``tiny_config`` are imported by test_checkpoint.py and test_cli.py.
"""

from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffusion_edu import NonFiniteLossError, TrainConfig, make_schedule, train
from diffusion_edu.checkpoint import CheckpointError, load_checkpoint
from diffusion_edu.training import TrainingRun


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The networks here are tiny: one thread is faster than two, and avoids OpenMP spinning when the
    2-core machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(nn.Module):
    """A 2-layer conv net with a sinusoidal time embedding, an optional label embedding (null label =
    num_classes) and dropout (so that resuming must restore the global RNG too)."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int | None = None,
        hidden: int = 8,
        dropout: float = 0.1,
        parameterization: str | None = None,
        **_ignored,
    ):
        super().__init__()
        if parameterization is not None:  # declared only when given: the loop must cope with both
            self.parameterization = parameterization
        self.in_channels, self.image_size, self.num_classes, self.hidden = in_channels, image_size, num_classes, hidden
        self.time = nn.Linear(hidden, hidden)
        self.label = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, in_channels, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.seen_labels: list[torch.Tensor] = []

    def forward(self, x, t, y=None):
        if y is not None and self.num_classes is None:
            raise ValueError("unconditional TinyNet got labels")
        half = self.hidden // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=x.device) / half)
        angle = t.float()[:, None] * freqs[None]  # (B, half)
        emb = self.time(torch.cat([angle.sin(), angle.cos()], dim=1))  # (B, hidden)
        if self.label is not None:
            y = y if y is not None else torch.full_like(t, self.num_classes)
            if self.training:
                self.seen_labels.append(y.detach().clone())
            emb = emb + self.label(y)
        h = F.silu(self.conv1(x) + emb[:, :, None, None])
        return self.conv2(self.drop(h))


def tiny_net(seed: int = 0, **kwargs) -> TinyNet:
    """A TinyNet with initial weights fixed by ``seed`` (a network passed to train() is used as is)."""
    torch.manual_seed(seed)
    return TinyNet(**kwargs)


def tiny_config(**changes) -> TrainConfig:
    """A run of a few steps on 64 embedded MNIST digits, in batches of 8."""
    base = dict(
        dataset="mnist-embedded",
        subset=64,
        batch_size=8,
        steps=12,
        T=50,
        lr=1e-3,
        ema_decay=0.9,
        log_every=2,
        checkpoint_every=4,
        callback_every=0,
        device="cpu",
    )
    return TrainConfig(**{**base, **changes})


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# A run that uses every random stream: dropout (global RNG), flips and label drops (the run's generator),
# t and eps (the generator), the data order (seed, epoch), plus warm-up, clipping and EMA.
_FULL = dict(hflip=True, p_uncond=0.3, warmup_steps=5, grad_clip=0.5, ema_start=2)


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted 12-step run with every option above, shared by the tests that compare to it."""
    out = tmp_path_factory.mktemp("reference")
    return train(tiny_config(**_FULL), out, model=tiny_net(num_classes=10), progress=False)


def test_resume_after_interruption_equals_an_uninterrupted_run_bit_for_bit(tmp_path, reference_run):
    """The promise of checkpoints: a run killed at step 8 and resumed ends with exactly the weights,
    EMA, optimizer state and logged losses of a run that never stopped (12 steps cross an epoch
    boundary at step 8: 64 images / 8)."""
    cfg, ref = tiny_config(**_FULL), reference_run

    def stop_at_8(step, model, ema):
        if step == 8:
            raise _Stop

    with pytest.raises(_Stop):
        train(
            cfg.replace(callback_every=4),
            tmp_path / "cut",
            model=tiny_net(num_classes=10),
            progress=False,
            callbacks=stop_at_8,
        )
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["step"] == 8
    resumed = train(cfg, tmp_path / "cut", model=tiny_net(num_classes=10), progress=False)
    assert resumed.step == ref.step == 12
    assert _same(_weights(resumed.model), _weights(ref.model))
    assert _same(_weights(resumed.ema), _weights(ref.ema))
    opt_a = load_checkpoint(ref.checkpoint)["optimizer"]["state"]
    opt_b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["optimizer"]["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    losses = [
        [json.loads(ln)["loss"] for ln in (tmp_path / d / "log.jsonl").read_text().splitlines()]
        for d in (ref.out_dir, tmp_path / "cut")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 6  # the resumed log has no duplicated lines


def test_the_seed_alone_fixes_the_run(tmp_path, reference_run):
    """Guard for the test above: the final weights depend on the run's seed, and on nothing else (the
    caller's global RNG state before the call does not matter: dropout draws from the run's seed)."""
    b = train(tiny_config(**_FULL, seed=1), tmp_path / "b", model=tiny_net(num_classes=10), progress=False)
    assert not _same(_weights(reference_run.model), _weights(b.model))
    net = tiny_net(num_classes=10)
    torch.manual_seed(999)
    c = train(tiny_config(**_FULL), tmp_path / "c", model=net, progress=False)
    assert _same(_weights(reference_run.model), _weights(c.model))


def test_callbacks_see_eval_mode_and_do_not_disturb_training(tmp_path, reference_run):
    """Callbacks (e.g. FID every epoch) get (step, model, ema) every callback_every steps with the
    networks in eval mode, and whatever randomness they use leaves the training run unchanged."""
    calls = []

    def noisy_callback(step, model, ema):
        calls.append((step, model.training, ema is not None and not ema.training))
        torch.randn(1000)  # consumes the global RNG that dropout uses

    plain = reference_run
    hooked = train(
        tiny_config(**_FULL, callback_every=3),
        tmp_path / "hooked",
        model=tiny_net(num_classes=10),
        progress=False,
        callbacks=[noisy_callback],
    )
    assert calls == [(3, False, True), (6, False, True), (9, False, True), (12, False, True)]
    assert _same(_weights(plain.model), _weights(hooked.model))


def test_callbacks_need_an_interval(tmp_path):
    """Callbacks with callback_every=0 would silently never run: that is an error."""
    with pytest.raises(ValueError, match="callbacks were given but TrainConfig.callback_every is 0"):
        train(tiny_config(callback_every=0), tmp_path, model=TinyNet(), callbacks=lambda *a: None, progress=False)


def test_caller_random_state_is_left_alone(tmp_path):
    """train() seeds its own streams; a notebook's global RNG must be where it was before the call."""
    net = TinyNet()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train(tiny_config(steps=2), tmp_path, model=net, progress=False)
    assert torch.equal(torch.get_rng_state(), before)


class _NaNAfter(TinyNet):
    def __init__(self, bad_call: int, value: float = float("nan"), **kw):
        super().__init__(**kw)
        self.calls, self.bad_call, self.value = 0, bad_call, value

    def forward(self, x, t, y=None):
        self.calls += 1 if self.training else 0
        out = super().forward(x, t, y)
        return out * self.value if self.calls >= self.bad_call else out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, value):
    """A NaN (or inf) loss at step 6 is reported as step 6 even though it is only read back at the
    next check (step 8, log_every=8); the checkpoint of step 4 stays on disk with finite weights."""
    cfg = tiny_config(log_every=8, checkpoint_every=4, steps=12)
    with pytest.raises(NonFiniteLossError, match=r"at step 6\b.*step 4"):
        train(cfg, tmp_path, model=_NaNAfter(bad_call=6, value=value), progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_log_lines(tmp_path):
    """log.jsonl gets one line per log interval and at the last step, with the mean loss and the
    warmed-up learning rate; the loss values are finite and the epoch counter advances."""
    train(tiny_config(steps=11, log_every=4, warmup_steps=8, grad_clip=1.0), tmp_path, model=TinyNet(), progress=False)
    rows = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 11]
    assert [r["lr"] for r in rows] == pytest.approx([0.5e-3, 1e-3, 1e-3])
    assert [r["epoch"] for r in rows] == [0, 0, 1]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] >= 0 and r["img_per_s"] > 0 for r in rows)
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 11


def test_loss_goes_down_on_real_digits(tmp_path):
    """The objective and the update point the right way: 60 steps on real digits lower the mean
    eps-prediction loss (Ho et al. Eq. 14) well below its starting value (~1 for an untrained net)."""
    cfg = tiny_config(subset=256, batch_size=16, steps=60, lr=5e-3, log_every=20, checkpoint_every=0, T=100)
    train(cfg, tmp_path, model=tiny_net(hidden=8, dropout=0.0), progress=False)
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0]


def test_label_dropout_rate_and_unconditional_models(tmp_path):
    """p_uncond replaces labels by the null label (num_classes) at that rate (Ho & Salimans 2022); a
    network without classes gets y=None."""
    net = TinyNet(num_classes=10, dropout=0.0)
    run = TrainingRun(tiny_config(p_uncond=0.25, subset=640, batch_size=64), model=net)
    for _ in range(10):
        run.train_step()
    y = torch.cat(net.seen_labels)
    rate = (y == 10).float().mean().item()
    assert abs(rate - 0.25) < 4 * (0.25 * 0.75 / y.numel()) ** 0.5
    assert set(y[y != 10].tolist()) == set(range(10))
    run = TrainingRun(tiny_config(), model=TinyNet(num_classes=None))
    run.train_step()  # TinyNet raises if an unconditional model is given labels


def test_gradient_clipping_bounds_the_gradient_norm():
    """grad_clip rescales the gradients to a global norm of at most grad_clip (Ho et al.: 1.0)."""
    run = TrainingRun(tiny_config(grad_clip=0.01), model=TinyNet())
    run.train_step()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in run.model.parameters()]))
    assert float(run.last_grad_norm) > 0.01 and norm.item() == pytest.approx(0.01, rel=1e-4)


def test_aux_loss_is_added_with_its_weight():
    """A network that sets aux_loss (the VAE's KL term) adds aux_weight * aux_loss to the loss."""

    class WithAux(TinyNet):
        def forward(self, x, t, y=None):
            self.aux_loss = torch.tensor(0.75)
            return super().forward(x, t, y)

    losses = []
    for w in (0.0, 2.0):
        run = TrainingRun(tiny_config(aux_weight=w), model=WithAux(dropout=0.0))
        torch.manual_seed(0)
        losses.append(run.train_step().item())
    assert losses[1] - losses[0] == pytest.approx(1.5, abs=1e-5)


class _FakeDiscriminator(nn.Module):
    """A linear 'MNIST classifier' standing in for metrics.load_mnist_classifier()."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("disc_input", ["x0", "mu"])
def test_discriminator_term_changes_the_update_and_stays_frozen(disc_input):
    """Report A's gamma term (Eqs. 8-9) reaches the network's gradients, while the frozen classifier D
    is neither trained nor given gradients."""
    results = []
    for gamma in (0.0, 5.0):
        d = _FakeDiscriminator()
        d_before = _weights(d)
        run = TrainingRun(
            tiny_config(disc_weight=gamma, disc_input=disc_input), model=TinyNet(num_classes=10), discriminator=d
        )
        torch.manual_seed(0)
        results.append((run.train_step().item(), _weights(run.model)))
        assert _same(_weights(d), d_before) and all(p.grad is None for p in d.parameters())
    assert results[1][0] > results[0][0]
    assert not _same(results[0][1], results[1][1])


class _ColumnMean:
    """A stand-in cold degradation: the first t columns (of 4 groups of 7) replaced by their mean."""

    T = 4

    def degrade(self, x0, t):
        out = x0.clone()
        for i, ti in enumerate(t.tolist()):
            cols = out[i, :, :, : 7 * ti]
            out[i, :, :, : 7 * ti] = cols.mean(dim=-2, keepdim=True).expand_as(cols)
        return out


def test_cold_diffusion_trains_with_an_injected_degradation(tmp_path):
    """process='cold' regresses the network on x0 from D(x0, t) (Bansal et al.); T must match D."""
    cfg = tiny_config(process="cold", parameterization="x0", T=4, loss="l1", steps=4)
    result = train(cfg, tmp_path, model=TinyNet(), degradation=_ColumnMean(), progress=False)
    assert isinstance(result.schedule, _ColumnMean) and result.step == 4
    with pytest.raises(ValueError, match="T=5 but the degradation has T=4"):
        train(cfg.replace(T=5), tmp_path / "b", model=TinyNet(), degradation=_ColumnMean(), progress=False)


def test_sample_grids_use_the_ema_network_and_the_samplers_contract(tmp_path, monkeypatch):
    """Every sample_every steps a PNG grid is written from the EMA network, sampled with DDIM in
    sample_steps steps, labels 0..9 cycling for a conditional model (a fake samplers module records
    the call, so this runs before the real samplers land)."""
    calls = []

    def fake_sample(model, schedule, n, *, method, steps, y, generator, **kw):
        calls.append(dict(model=model, T=schedule.T, n=n, method=method, steps=steps, y=y.tolist()))
        return torch.rand(n, 1, 28, 28, generator=generator) * 2 - 1

    monkeypatch.setitem(sys.modules, "diffusion_edu.samplers", types.SimpleNamespace(sample=fake_sample))
    result = train(
        tiny_config(steps=6, sample_every=3, sample_n=12, sample_steps=10),
        tmp_path,
        model=tiny_net(num_classes=10),
        progress=False,
    )
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_0000003.png", "step_0000006.png"]
    assert [c["model"] is result.ema for c in calls] == [True, True]
    assert calls[0]["T"] == 50 and calls[0]["method"] == "ddim" and calls[0]["steps"] == 10
    assert calls[0]["y"] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_bf16_autocast_and_channels_last_run_on_cpu(tmp_path):
    """The CUDA options (bf16 autocast, channels-last) also work on CPU when asked for explicitly."""
    result = train(
        tiny_config(steps=2, precision="bf16", channels_last=True), tmp_path, model=TinyNet(), progress=False
    )
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast keeps fp32 weights
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_gaussian_run_returns_its_schedule_and_keeps_the_declared_parameterization(tmp_path):
    result = train(
        tiny_config(steps=2, parameterization="mu", schedule="cosine"),
        tmp_path,
        model=TinyNet(parameterization="mu"),
        progress=False,
    )
    assert torch.equal(result.schedule.alpha_bar, make_schedule("cosine", 50).alpha_bar)
    assert result.model.parameterization == result.ema.parameterization == "mu"
    assert not result.model.training


def test_a_network_declaring_another_output_is_refused(tmp_path):
    """Training an eps-declaring network on the x0 objective would make its samples wrong: refused."""
    with pytest.raises(ValueError, match="parameterization='x0' but the network declares 'eps'"):
        train(
            tiny_config(steps=1, parameterization="x0"), tmp_path, model=TinyNet(parameterization="eps"), progress=False
        )


def test_configurations_a_network_cannot_train(tmp_path):
    """Each impossible combination fails before training with an error that says what to change."""
    with pytest.raises(ValueError, match="p_uncond > 0.*class-conditional"):
        TrainingRun(tiny_config(p_uncond=0.1), model=TinyNet())
    with pytest.raises(ValueError, match="disc_weight > 0.*class-conditional"):
        TrainingRun(tiny_config(disc_weight=0.1), model=TinyNet(), discriminator=_FakeDiscriminator())
    with pytest.raises(ValueError, match="takes 3-channel 32x32 images.*shape \\(1, 28, 28\\)"):
        TrainingRun(tiny_config(), model=TinyNet(in_channels=3, image_size=32))
    with pytest.raises(ValueError, match="num_classes=5 but the dataset's labels reach 9"):
        TrainingRun(tiny_config(), model=TinyNet(num_classes=5))
    with pytest.raises(ValueError, match="batch_size=128 is larger than the dataset \\(64 images\\)"):
        TrainingRun(tiny_config(batch_size=128), model=TinyNet())


def test_resume_refuses_a_checkpoint_of_another_run_but_accepts_more_steps(tmp_path):
    """Resuming into an out_dir that holds a different run is an error (it would silently mix two
    runs); raising ``steps`` continues the run; resume=False refuses to replace a run, overwrite=True
    starts over, and a fresh start that dies before its first checkpoint neither mixes the old run
    into the new one nor loses it (it waits in .previous)."""
    train(tiny_config(steps=4), tmp_path, model=TinyNet(), progress=False)
    with pytest.raises(CheckpointError, match=r"different config \(fields \['lr'\] differ\).*--overwrite"):
        train(tiny_config(steps=4, lr=1e-2), tmp_path, model=TinyNet(), progress=False)
    assert train(tiny_config(steps=6), tmp_path, model=TinyNet(), progress=False).step == 6
    with pytest.raises(ValueError, match="already holds a run.*overwrite=True"):
        train(tiny_config(steps=2), tmp_path, model=TinyNet(), resume=False, progress=False)
    with pytest.raises(_Stop):  # a fresh start that dies before its first checkpoint...
        train(
            tiny_config(steps=4, callback_every=1),
            tmp_path,
            model=TinyNet(),
            overwrite=True,
            progress=False,
            callbacks=lambda *a: (_ for _ in ()).throw(_Stop()),
        )
    assert not (tmp_path / "checkpoint.pt").exists()  # ...leaves nothing of the old run to resume into the new
    assert load_checkpoint(tmp_path / ".previous" / "checkpoint.pt")["step"] == 6  # ...and keeps the old run
    assert train(tiny_config(steps=2), tmp_path, model=TinyNet(), overwrite=True, progress=False).step == 2
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / ".previous").exists()


def test_learning_rate_schedules():
    """Warm-up rises linearly to lr; 'constant' then stays there (every report); 'cosine' (the book's
    short cpu-tier runs) follows (1 + cos(pi * progress)) / 2 down to exactly 0 at the last step, and the
    optimizer really uses the scheduled value."""
    run = TrainingRun(tiny_config(warmup_steps=4, steps=12, lr=1e-3), "cpu", model=TinyNet())
    assert [run.lr_at(s) for s in (1, 2, 4, 12)] == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-3])
    run = TrainingRun(tiny_config(warmup_steps=4, steps=12, lr=1e-3, lr_schedule="cosine"), "cpu", model=TinyNet())
    assert run.lr_at(2) == pytest.approx(5e-4)
    assert run.lr_at(4) == pytest.approx(1e-3)
    assert run.lr_at(8) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert run.lr_at(12) == pytest.approx(0.0, abs=1e-12)
    run.train_step()
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(run.lr_at(1))
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny_config(lr_schedule="linear")
