"""Shipping a trained network: export strips the optimizer, keeps the config, and loads back exactly."""

import pytest
import torch

from diffusion_edu import TrainConfig
from diffusion_edu.checkpoint import load_checkpoint, load_model
from diffusion_edu.pretrained import export_pretrained
from diffusion_edu.training import train


def test_export_then_load_gives_the_same_network(tmp_path):
    cfg = TrainConfig(
        dataset="mnist-embedded",
        subset=64,
        batch_size=8,
        steps=3,
        T=20,
        model="cnn_mnist",
        ema_decay=0.5,
        log_every=1,
        checkpoint_every=0,
        callback_every=0,
        device="cpu",
    )
    run = train(cfg, tmp_path / "run", progress=False)
    dest = export_pretrained(run.checkpoint, "tiny", source={"tier": "smoke"}, folder=tmp_path)
    state = load_checkpoint(dest)
    assert "optimizer" not in state and state["source"]["tier"] == "smoke" and state["step"] == 3
    model, schedule, config = load_model(dest, ema=False, device="cpu")
    ema, _, _ = load_model(run.checkpoint, ema=True, device="cpu")  # export takes the EMA weights
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([1, 20])
    assert torch.equal(model(x, t), ema(x, t))
    assert config == cfg and schedule.T == 20


def test_bad_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="plain file stem"):
        export_pretrained(tmp_path / "nope.pt", "../evil")
