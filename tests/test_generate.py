"""The ``sample`` command and ``generate``: the right reverse process for each kind of network,
reproducible by seed, labels by class, and clear errors for a missing network."""

import json

import pytest
import torch

from diffusion_edu import TrainConfig, sample
from diffusion_edu.checkpoint import load_model
from diffusion_edu.cli import main
from diffusion_edu.experiments.ten_minutes import chunk_times
from diffusion_edu.generate import CPU_IMAGES_PER_CALL, OTHER_DEVICE_CHUNK, default_chunk, default_labels, generate
from diffusion_edu.results import results_dir
from diffusion_edu.training import train

TINY = dict(
    dataset="mnist-embedded",
    subset=32,
    batch_size=8,
    steps=2,
    log_every=1,
    checkpoint_every=0,
    callback_every=0,
    sample_every=0,
    device="cpu",
)


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    """A conditional network trained for two steps (its samples are noise, but the code path is real)."""
    cfg = TrainConfig(
        model="small_unet",
        model_kwargs=dict(in_channels=1, image_size=28, ch=8, depth=1, time_dim=16, num_classes=10),
        T=20,
        p_uncond=0.1,
        **TINY,
    )
    return train(cfg, tmp_path_factory.mktemp("gauss") / "run", progress=False).checkpoint


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    cfg = TrainConfig(
        model="cnn",
        model_kwargs=dict(in_channels=1, image_size=28, hidden=[4, 4], kernel_size=3, time_dim=8),
        process="cold",
        T=28,
        parameterization="x0",
        loss="l1",
        **TINY,
    )
    return train(cfg, tmp_path_factory.mktemp("cold") / "run", progress=False).checkpoint


def test_default_labels_cycle_through_the_classes():
    assert default_labels(12, 10).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert default_labels(5, None) is None


def test_generate_is_the_package_sampler_with_a_seeded_generator(gaussian_run):
    """generate(...) adds nothing to the maths: the same images as samplers.sample with the same seed."""
    loaded = load_model(gaussian_run, ema=False, device="cpu")
    images, labels = generate(loaded, 6, steps=5, w=0.5, seed=3)
    expected = sample(
        loaded.model,
        loaded.schedule,
        6,
        steps=5,
        w=0.5,
        y=default_labels(6, 10),
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(images, expected) and labels.tolist() == [0, 1, 2, 3, 4, 5]
    again, _ = generate(loaded, 6, steps=5, w=0.5, seed=3)
    other, _ = generate(loaded, 6, steps=5, w=0.5, seed=4)
    assert torch.equal(images, again) and not torch.equal(images, other)
    one, labels = generate(loaded, 4, steps=5, labels=7)
    assert labels.tolist() == [7, 7, 7, 7] and one.shape == (4, 1, 28, 28)


def test_cold_networks_generate_from_the_fitted_prior(cold_run):
    loaded = load_model(cold_run, ema=False, device="cpu")
    images, labels = generate(loaded, 5, seed=0)
    assert labels is None and images.shape == (5, 1, 28, 28)
    assert torch.isfinite(images).all() and images.abs().max() <= 1
    assert not torch.equal(images[0], images[1])  # drawn from a distribution, not one fixed x_T


def test_generate_samples_in_the_devices_default_chunks(gaussian_run, monkeypatch):
    """On a CPU generate runs CPU_IMAGES_PER_CALL network inputs per call: half as many images when guidance
    evaluates each twice; an explicit batch_size wins, and a bad one is refused by the sampler."""
    import diffusion_edu.samplers as samplers

    seen = []
    real = samplers.sample

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(samplers, "sample", spy)
    loaded = load_model(gaussian_run, ema=False, device="cpu")
    generate(loaded, 3, steps=2, w=1.0)
    generate(loaded, 3, steps=2, w=0.0)
    generate(loaded, 3, steps=2, w=1.0, batch_size=2)
    assert seen == [CPU_IMAGES_PER_CALL // 2, CPU_IMAGES_PER_CALL, 2]
    assert default_chunk("meta", 1.0) == default_chunk("cuda", 0.0) == OTHER_DEVICE_CHUNK
    with pytest.raises(ValueError, match="batch_size"):
        generate(loaded, 3, steps=2, batch_size=0)


def test_the_cpu_chunk_is_the_fastest_measured():
    """CPU_IMAGES_PER_CALL is what ``bench_recipe.py chunks`` measured: guided and unguided, the default
    chunk samples within 5% of the fastest chunk size tried, and faster than the old default of 500."""
    path = results_dir() / "benchmarks" / "recipe_cpu.json"
    measured = chunk_times(json.loads(path.read_text())["data"]["chunks"]["recipe_v"])
    for w, chunk in ((0.0, CPU_IMAGES_PER_CALL), (1.0, CPU_IMAGES_PER_CALL // 2)):
        times = measured[w]
        assert chunk in times, (w, sorted(times))
        assert times[chunk] <= 1.05 * min(times.values()), (w, times)
        assert times[chunk] < times[500], (w, times)


def test_sample_command_writes_a_grid_and_a_summary(gaussian_run, tmp_path, capsys):
    out, tensor = tmp_path / "grid.png", tmp_path / "samples.pt"
    code = main(
        [
            "sample",
            "--checkpoint",
            str(gaussian_run),
            "--n",
            "10",
            "--steps",
            "4",
            "--w",
            "1",
            "--out",
            str(out),
            "--tensor",
            str(tensor),
            "--no-progress",
            "--raw-weights",
            "--device",
            "cpu",
        ]
    )
    assert code == 0 and out.stat().st_size > 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 10 and summary["steps"] == 4 and summary["w"] == 1.0 and summary["sampler"] == "ddpm"
    saved = torch.load(tensor, weights_only=True)
    assert saved["images"].shape == (10, 1, 28, 28) and saved["labels"].tolist() == list(range(10))


def test_missing_networks_are_clear_errors(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
    assert main(["sample", "--pretrained", "no_such_net", "--out", str(tmp_path / "x.png")]) == 2
    assert "no pretrained network 'no_such_net'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "--out", str(tmp_path / "x.png")])  # one of --pretrained / --checkpoint is required


def test_bad_n_is_refused(gaussian_run):
    loaded = load_model(gaussian_run, ema=False, device="cpu")
    with pytest.raises(ValueError, match="n .the number of images. must be an int >= 1"):
        generate(loaded, 0)


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """A run whose config recommends its own sampler settings (as the ten-minute recipe does)."""
    cfg = TrainConfig(
        model="small_unet",
        model_kwargs=dict(in_channels=1, image_size=28, ch=8, depth=1, time_dim=16, num_classes=10),
        T=20,
        p_uncond=0.1,
        sample_defaults={"method": "dpm_solver_2m", "steps": 3, "w": 0.5},
        **TINY,
    )
    return train(cfg, tmp_path_factory.mktemp("recipe") / "run", progress=False).checkpoint


def _summary(capsys, checkpoint, tmp_path, *extra):
    args = ["sample", "--checkpoint", str(checkpoint), "--n", "4", "--out", str(tmp_path / "g.png")]
    assert main([*args, "--no-progress", "--device", "cpu", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sample_uses_the_settings_the_run_recommends(recipe_run, gaussian_run, tmp_path, capsys):
    s = _summary(capsys, recipe_run, tmp_path)
    assert (s["sampler"], s["steps"], s["w"]) == ("dpm_solver_2m", 3, 0.5)
    assert "recommended" in s["settings_from"]
    s = _summary(capsys, recipe_run, tmp_path, "--method", "ddim", "--w", "0")  # the command line wins
    assert (s["sampler"], s["steps"], s["w"]) == ("ddim", 3, 0.0)
    s = _summary(capsys, gaussian_run, tmp_path)  # a run without recommendations: the book's settings
    assert (s["sampler"], s["steps"], s["w"]) == ("ddpm", 20, 0.0) and "book" in s["settings_from"]


def test_sampler_defaults_merge_and_validate():
    from diffusion_edu.generate import BOOK_SAMPLER, sampler_defaults

    assert sampler_defaults(TrainConfig()) == BOOK_SAMPLER
    assert sampler_defaults(TrainConfig(sample_defaults={"steps": 10}))["steps"] == 10
    with pytest.raises(ValueError, match="unknown setting"):
        TrainConfig(sample_defaults={"stepz": 10})
    with pytest.raises(ValueError, match=r"sample_defaults\['method'\] must be one of"):
        TrainConfig(sample_defaults={"method": "euler"})
    with pytest.raises(ValueError, match=r"\['w'\] must be a guidance weight"):
        TrainConfig(sample_defaults={"w": -1})
