"""The command line: ``python -m diffusion_edu presets`` and ``... train --preset NAME``, in-process.

The network comes from a fake ``diffusion_edu.models`` (the tiny net of test_training.py), so these
tests run before the real networks land; the last test trains the real quick_mnist network when the
models package is installed.
"""

import importlib.util
import json
import os
import sys
import types

import pytest
import torch

import diffusion_edu
from diffusion_edu import TRAINING_PRESETS
from diffusion_edu.checkpoint import load_checkpoint
from diffusion_edu.cli import main

sys.path.insert(0, os.path.dirname(__file__))
from test_training import TinyNet  # noqa: E402


@pytest.fixture
def fake_models(monkeypatch):
    built = []

    def build_model(name, **kwargs):
        built.append((name, kwargs))
        return TinyNet(**kwargs)

    fake = types.SimpleNamespace(build_model=build_model)
    # ``from . import models`` reads the package attribute once the real module has been imported
    # by another test, so both the module table and the attribute are replaced.
    monkeypatch.setitem(sys.modules, "diffusion_edu.models", fake)
    monkeypatch.setattr(diffusion_edu, "models", fake, raising=False)
    threads = torch.get_num_threads()
    yield built
    torch.set_num_threads(threads)


TINY = ["--set", "subset=16", "--set", "batch_size=4", "--set", "sample_every=0", "--no-progress", "--threads", "1"]


def test_presets_command_lists_one_line_per_preset(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(TRAINING_PRESETS)
    for line, preset in zip(lines, TRAINING_PRESETS.values()):
        assert line.split()[0] == preset.name and line.endswith(preset.description)


def test_train_help_explains_every_preset(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for preset in TRAINING_PRESETS.values():
        assert f"{preset.name:<20} {preset.description}" in out
    for flag in ("--preset", "--steps", "--out", "--resume", "--no-resume", "--device", "--set"):
        assert flag in out


def test_train_runs_offline_then_resumes(tmp_path, fake_models, capsys):
    """A run of the offline preset with a tiny override writes its outputs and prints a JSON summary;
    the same command with more steps resumes from the checkpoint instead of starting over."""
    out = tmp_path / "run"
    args = ["train", "--preset", "quick_mnist", "--out", str(out), "--device", "cpu", *TINY]
    args += ["--set", "model_kwargs.num_classes=10"]  # the fake network is unconditional unless told
    assert main([*args, "--steps", "3", "--set", "model_kwargs.hidden=4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3 and summary["checkpoint"] == str(out / "checkpoint.pt")
    # built twice: once on the meta device (does it fit the data?), once to train
    # the network is told the preset's prediction target (quick_mnist predicts v)
    assert fake_models == [("small_unet_mnist", {"num_classes": 10, "hidden": 4, "parameterization": "v"})] * 2
    assert {p.name for p in out.iterdir()} >= {"config.json", "log.jsonl", "checkpoint.pt"}
    assert main([*args, "--steps", "5", "--set", "model_kwargs.hidden=4"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 5
    assert (
        len(fake_models) == 4
    )  # the second call built the network once (plus the size check) and loaded the checkpoint
    capsys.readouterr()
    assert main([*args, "--steps", "2", "--set", "model_kwargs.hidden=4", "--no-resume"]) == 2  # would replace it
    assert "--overwrite" in capsys.readouterr().err and load_checkpoint(out / "checkpoint.pt")["step"] == 5
    assert main([*args, "--steps", "2", "--set", "model_kwargs.hidden=4", "--overwrite"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert not (out / ".previous").exists()  # the replaced run is gone once the new one has a checkpoint


@pytest.mark.parametrize(
    "override, message",
    [
        ("lr=-1", "TrainConfig.lr must be a positive learning rate"),
        ("learning_rate=0.1", "unknown TrainConfig field(s) ['learning_rate']"),
        ("lr", "--set expects KEY=VALUE, got 'lr'"),
        ("schedule.beta=1", "'schedule' is not a dict field of TrainConfig"),
        ("hflip=maybe", "TrainConfig.hflip must be true or false"),
    ],
)
def test_bad_overrides_exit_2_with_the_reason(tmp_path, fake_models, capsys, override, message):
    code = main(["train", "--preset", "quick_mnist", "--out", str(tmp_path), "--set", override, "--no-progress"])
    assert code == 2 and message in capsys.readouterr().err
    assert not fake_models  # nothing was built or trained


def test_missing_dataset_exits_1_with_the_offline_hint(tmp_path, fake_models, capsys, monkeypatch):
    """Report presets train on full MNIST; offline, the error says how to use the embedded digits."""
    monkeypatch.setenv("DIFFUSION_EDU_DATA", str(tmp_path / "empty"))
    code = main(
        [
            "train",
            "--preset",
            "d_cnn",
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
            "--no-progress",
            "--set",
            "model_kwargs.hidden=4",
        ]
    )
    assert code == 1 and "mnist-embedded" in capsys.readouterr().err


def test_unknown_preset_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--preset", "nope"])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec("diffusion_edu.models") is None,
    reason="the networks (diffusion_edu.models) are not installed yet",
)
def test_quick_preset_trains_the_real_network_offline(tmp_path):
    """Out of the box: the offline preset with its real network trains a few steps and resumes."""
    args = [
        "train",
        "--preset",
        "quick_mnist",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        "batch_size=4",
        "--set",
        "sample_every=0",
        "--threads",
        "1",
    ]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3"]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
