"""TrainConfig validation (every bad value names its field), JSON round trips, device choice, and the
reports' presets: the numbers each report states are what the preset trains with."""

import json

import pytest
import torch

from diffusion_edu import TRAINING_PRESETS, TrainConfig, training_preset
from diffusion_edu.devices import resolve_device


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("process", "blur", r"process must be one of 'gaussian', 'cold'"),
        ("parameterization", "score", r"parameterization must be one of 'eps', 'x0', 'mu', 'v'"),
        ("loss", "huber", r"loss must be one of 'l2', 'l1'"),
        ("optimizer", "sgd", r"optimizer must be one of 'adam', 'adamw'"),
        ("precision", "fp8", r"precision must be one of 'auto', 'fp32', 'bf16', 'fp16'"),
        ("disc_input", "xt", r"disc_input must be one of 'x0', 'mu'"),
        ("cold_axis", "diagonal", r"cold_axis must be one of 'rows', 'columns', 'both'"),
        ("cold_order", "spiral", r"cold_order must be one of 'random', 'outside-in', 'inside-out'"),
        ("T", 0, r"T must be a positive int"),
        ("batch_size", -4, r"batch_size must be a positive int"),
        ("steps", 2.5, r"steps must be an int, got float"),
        ("log_every", 0, r"log_every must be a positive int"),
        ("checkpoint_every", -1, r"checkpoint_every must be an int >= 0"),
        ("seed", True, r"seed must be an int, got bool"),
        ("hflip", "yes", r"hflip must be true or false"),
        ("channels_last", 1, r"channels_last must be true, false or null"),
        ("model_kwargs", [1], r"model_kwargs must be a dict of keyword arguments"),
        ("model_kwargs", {"f": float("nan")}, r"model_kwargs must hold JSON-able values"),
        ("dataset", "imagenet", r"dataset must be one of mnist-embedded, mnist, cifar10"),
        ("split", "val", r"split must be 'train', 'heldout', 'test' or 'all'"),
        ("subset", 0, r"subset must be a positive int or None"),
        ("device", "tpu", r"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
        ("model", "", r"model must be a non-empty string"),
        ("lr", 0, r"lr must be a positive learning rate"),
        ("lr", "fast", r"lr must be a number, got str"),
        ("weight_decay", -0.1, r"weight_decay must be a number >= 0"),
        ("p_uncond", 1.0, r"p_uncond must be a probability in \[0, 1\)"),
        ("grad_clip", 0.0, r"grad_clip must be a positive max gradient norm"),
        ("ema_decay", 1.0, r"ema_decay must be a decay in \[0, 1\)"),
        ("schedule", "exponential", r"schedule must be one of cosine, linear, quadratic, sigmoid"),
    ],
)
def test_each_bad_value_is_refused_with_its_field_named(field, value, message):
    """A typo in a config must fail at once, naming the field and what it accepts, not hours later."""
    with pytest.raises((ValueError, TypeError), match=r"TrainConfig\." + message):
        TrainConfig(**{field: value})


def test_cross_field_rules():
    """Cold diffusion predicts x0 (Bansal et al.); Report A's discriminator term needs Gaussian noise."""
    with pytest.raises(ValueError, match="process='cold'.*parameterization='x0'"):
        TrainConfig(process="cold", T=28)
    with pytest.raises(ValueError, match="disc_weight.*needs process='gaussian'"):
        TrainConfig(process="cold", T=28, parameterization="x0", disc_weight=0.1)


def test_json_round_trip_and_unknown_fields():
    """Checkpoints store the config as plain JSON data and get the same config back; unknown keys
    (typos such as 'learning_rate') are an error, and ints are accepted where floats are expected."""
    cfg = training_preset("c_cifar10")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(TypeError, match="built from a dict"):
        TrainConfig.from_dict([("lr", 1)])
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0 and isinstance(TrainConfig.from_dict({"lr": 1}).lr, float)
    assert cfg.replace(steps=5).steps == 5 and cfg.steps == 800_000


def test_every_preset_is_valid_and_described_in_one_line():
    for name, preset in TRAINING_PRESETS.items():
        assert preset.name == name and isinstance(preset.config, TrainConfig)
        assert preset.description and "\n" not in preset.description
        assert TrainConfig.from_dict(preset.config.to_dict()) == preset.config


def test_get_preset_returns_a_fresh_validated_copy():
    """Changing a returned config must not change the preset; overrides are validated; bad names say
    where to look."""
    cfg = training_preset("e_unet")
    cfg.model_kwargs["num_classes"] = 3
    assert training_preset("e_unet").model_kwargs == {"num_classes": 10}
    assert training_preset("e_unet", steps=7, dataset="mnist-embedded").steps == 7
    with pytest.raises(ValueError, match="TrainConfig.lr"):
        training_preset("e_unet", lr=-1.0)
    with pytest.raises(ValueError, match="unknown preset 'e_net'.*python -m diffusion_edu presets"):
        training_preset("e_net")


def test_report_c_preset_is_ho_et_al_cifar10_setup():
    """Report C replicates Ho et al. (2020) App. B on CIFAR-10."""
    c = training_preset("c_cifar10")
    assert (c.dataset, c.model, c.model_kwargs) == ("cifar10", "unet_cifar10", {"dropout": 0.1})
    assert (c.schedule, c.T, c.schedule_kwargs, c.parameterization, c.loss) == ("linear", 1000, {}, "eps", "l2")
    assert (c.optimizer, c.lr, c.batch_size, c.ema_decay) == ("adam", 2e-4, 128, 0.9999)
    assert (c.warmup_steps, c.grad_clip, c.hflip, c.steps, c.p_uncond) == (5000, 1.0, True, 800_000, 0.0)


def test_report_b_preset_is_the_cfg_cifar10_setup():
    b = training_preset("b_cifar10_cfg")
    assert (b.dataset, b.model, b.model_kwargs["num_classes"]) == ("cifar10", "unet_cifar10_improved", 10)
    assert (b.schedule, b.p_uncond, b.optimizer, b.lr, b.batch_size, b.steps) == (
        "cosine",
        0.1,
        "adamw",
        3e-4,
        14,
        1_000_000,
    )


def test_report_a_presets():
    """Report A: T=400, linear betas, eps-prediction, its U-Net (conditional, one label per image),
    the mean-prediction variant, the discriminator term and the autoencoder / VAE denoisers."""
    a = training_preset("a_unet")
    assert (a.T, a.schedule, a.parameterization, a.model, a.model_kwargs) == (
        400,
        "linear",
        "eps",
        "unet_mnist",
        {"num_classes": 10},
    )
    assert training_preset("a_unet_mu").parameterization == "mu"
    assert training_preset("a_unet_disc").disc_weight > 0
    assert {training_preset(n).model for n in ("a_autoencoder", "a_vae")} == {"autoencoder_mnist", "vae_mnist"}
    assert all(training_preset(n).T == 400 for n in TRAINING_PRESETS if n.startswith("a_"))


def test_report_d_presets():
    """Report D: the GELU CNN at T=1000, lr 2e-4; the SELU variant at T=100, lr 6e-4; both batch 128 for
    100 epochs of MNIST's 60,000 digits; cold diffusion by single columns in random order (T=28)."""
    d, v, cold = training_preset("d_cnn"), training_preset("d_cnn_selu"), training_preset("d_cold_columns")
    assert (d.model, d.T, d.lr, d.batch_size, d.loss, d.steps) == ("cnn_mnist", 1000, 2e-4, 128, "l2", 100 * 468)
    assert (v.model, v.T, v.lr, v.batch_size, v.steps) == ("cnn_mnist_selu", 100, 6e-4, 128, 100 * 468)
    assert (cold.process, cold.T, cold.cold_axis, cold.cold_order, cold.cold_group) == (
        "cold",
        28,
        "columns",
        "random",
        1,
    )
    assert (cold.parameterization, cold.model) == ("x0", "cnn_mnist")


def test_report_e_presets_and_sweep():
    """Report E: small U-Net, L1, batch 32, 100k iterations, linear T=1000; sweep T x schedule."""
    e = training_preset("e_unet")
    assert (e.model, e.loss, e.batch_size, e.steps, e.schedule, e.T) == (
        "small_unet_mnist",
        "l1",
        32,
        100_000,
        "linear",
        1000,
    )
    assert e.p_uncond > 0 and e.model_kwargs == {"num_classes": 10}
    sweep = {(training_preset(n).schedule, training_preset(n).T) for n in TRAINING_PRESETS if n.startswith("e_unet")}
    assert sweep == {("linear", 1000), ("linear", 4000), ("cosine", 1000), ("cosine", 4000)}


def test_quick_preset_runs_offline():
    """The out-of-the-box demo uses only the digits shipped with the package."""
    assert training_preset("quick_mnist").dataset == "mnist-embedded"


def test_device_resolution():
    """'auto' takes what exists (here the CPU); asking for a missing accelerator is an error, not a
    silent fallback to a 1000x slower device."""
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(3)
