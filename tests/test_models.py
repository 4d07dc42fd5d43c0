"""The denoising networks: the call contract, the paper's parameter count, conditioning, and bad input.

Tiny configurations keep every test fast; the full-size CIFAR-10 networks are built on the meta device
(parameter shapes only, no memory and no arithmetic).
"""

import json

import pytest
import torch

from diffusion_edu.models import (
    MODEL_PRESETS,
    MODELS,
    VAE,
    Autoencoder,
    UNet,
    build_model,
    build_model_preset,
    count_parameters,
    one_hot_labels,
    sinusoidal_embedding,
)
from diffusion_edu.models.unet_blocks import AttentionBlock, Downsample, ResBlock, Upsample

# Tiny versions of every network: (model name, kwargs). Conditional ones have 3 classes.
TINY = {
    "unet": (
        "unet",
        dict(
            in_channels=1,
            image_size=8,
            ch=8,
            ch_mult=(1, 2),
            num_res_blocks=1,
            attn_resolutions=(4,),
            dropout=0.0,
            norm_groups=4,
        ),
    ),
    "unet_improved": (
        "unet",
        dict(
            in_channels=3,
            image_size=8,
            ch=8,
            ch_mult=(1, 2),
            num_res_blocks=1,
            attn_resolutions=(8, 4),
            dropout=0.1,
            norm_groups=4,
            num_classes=3,
            num_head_channels=4,
            use_scale_shift_norm=True,
            resblock_updown=True,
        ),
    ),
    "unet_label_middle": (
        "unet",
        dict(
            in_channels=1,
            image_size=8,
            ch=8,
            ch_mult=(1, 2),
            num_res_blocks=1,
            attn_resolutions=(),
            norm_groups=4,
            num_classes=3,
            label_at="middle",
        ),
    ),
    "small_unet": ("small_unet", dict(in_channels=1, image_size=8, ch=4, depth=2, time_dim=8, num_classes=3)),
    "small_unet_attn": (
        "small_unet",
        dict(in_channels=1, image_size=8, ch=4, depth=2, time_dim=8, num_classes=3, attention=True),
    ),
    "cnn": ("cnn", dict(in_channels=1, image_size=8, hidden=(4, 8, 4), kernel_size=3, time_dim=8)),
    "cnn_selu": ("cnn", dict(in_channels=3, image_size=8, hidden=(4, 8), kernel_size=7, act="selu", num_classes=3)),
    "autoencoder": (
        "autoencoder",
        dict(in_channels=1, image_size=8, ch=4, ch_mult=(1, 2), latent_dim=4, time_dim=8, norm_groups=2, num_classes=3),
    ),
    "vae": ("vae", dict(in_channels=3, image_size=8, ch=4, ch_mult=(1, 2), latent_dim=4, time_dim=8, norm_groups=2)),
}


def tiny(key: str, **overrides) -> torch.nn.Module:
    name, kwargs = TINY[key]
    return build_model(name, **{**kwargs, **overrides})


def with_random_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values: the U-Net's last layers start at zero (Ho et al.), so a fresh
    U-Net outputs zeros whatever its inputs; conditioning tests need a network that is not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def batch(model, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, model.in_channels, model.image_size, model.image_size, generator=g)
    t = torch.randint(1, 1000, (B,), generator=g)
    return x, t


CONDITIONAL = [k for k, (_, kw) in TINY.items() if kw.get("num_classes")]


@pytest.mark.parametrize("key", list(TINY))
def test_output_has_the_input_shape(key):
    """The contract every sampler relies on: model(x, t, y) returns a finite tensor shaped like x."""
    model = tiny(key).eval()
    x, t = batch(model)
    out = model(x, t)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    if model.num_classes:
        assert model(x, t, torch.tensor([0, 1, model.num_classes])).shape == x.shape


@pytest.mark.parametrize("preset", list(MODEL_PRESETS))
def test_every_preset_builds_and_keeps_the_shape(preset):
    """Each preset builds from its JSON round trip (what a checkpoint stores: lists, not tuples) and maps
    a batch at its natural resolution to the same shape; rebuilding from model_kwargs gives the same network.
    The CIFAR-10 networks run on the meta device (shapes only, no arithmetic) to keep the test fast."""
    spec = json.loads(json.dumps(MODEL_PRESETS[preset]))
    with torch.device("meta" if "cifar" in preset else "cpu"):
        model = build_model(**spec).eval()
        x = torch.randn(2, model.in_channels, model.image_size, model.image_size)
        with torch.no_grad():
            out = model(x, torch.tensor([1, 999]))
        rebuilt = build_model(model.model_name, **model.model_kwargs)
    assert out.shape == x.shape
    assert model.model_name == spec.pop("name") and model.model_kwargs == spec
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]


def test_cifar10_unet_has_the_papers_35_7M_parameters():
    """Ho et al. (2020) report 35.7M parameters for the CIFAR-10 model; an off-by-one in the skip channels,
    a missing attention layer or a wrong number of up-path blocks changes the count by far more than 1%.
    35,746,307 is the exact count of their released model (as reproduced by independent ports).
    Built on the meta device: only the parameter shapes are needed."""
    with torch.device("meta"):
        n = count_parameters(build_model_preset("unet_cifar10"))
    assert abs(n - 35.7e6) / 35.7e6 < 0.01
    assert n == 35_746_307


def test_improved_options_change_the_network_as_documented():
    """The improved options must really be wired in: scale-shift norm doubles each embedding projection,
    resblock_updown replaces the conv resamplers by residual blocks, num_head_channels sets the heads."""
    base = dict(TINY["unet"][1], ch_mult=(1, 2, 2), image_size=16, attn_resolutions=(8, 4))
    plain, ss = UNet(**base), UNet(**base, use_scale_shift_norm=True)
    blocks = [m for m in plain.modules() if isinstance(m, ResBlock)]
    extra = sum(b.emb_proj.out_features * (b.emb_proj.in_features + 1) for b in blocks)
    assert count_parameters(ss) - count_parameters(plain) == extra
    updown = UNet(**base, resblock_updown=True)
    assert not any(isinstance(m, (Downsample, Upsample)) for m in updown.modules())
    assert sum(isinstance(m, (Downsample, Upsample)) for m in plain.modules()) == 4
    assert sum(getattr(m, "updown", None) is not None for m in updown.modules()) == 4
    heads = UNet(**base, num_head_channels=4)
    assert {(m.qkv.in_channels, m.num_heads) for m in heads.modules() if isinstance(m, AttentionBlock)} == {(16, 4)}


def test_fresh_unet_outputs_zero():
    """Ho et al. initialise the last layer of every residual branch and the output conv (near) zero: a
    fresh U-Net predicts eps = 0, the safe starting point; Xavier init elsewhere keeps the inner layers live."""
    model = tiny("unet_improved").eval()
    x, t = batch(model)
    assert torch.equal(model(x, t), torch.zeros_like(x))
    assert model.conv_in.weight.abs().sum() > 0


@pytest.mark.parametrize("key", CONDITIONAL)
def test_no_label_means_the_null_label(key):
    """Classifier-free guidance needs one network for both models: y=None must be exactly the null label
    index num_classes (what training's label dropout feeds), not some other default."""
    model = with_random_weights(tiny(key)).eval()
    x, t = batch(model)
    null = torch.full((3,), model.num_classes)
    assert torch.equal(model(x, t), model(x, t, null))


@pytest.mark.parametrize("key", CONDITIONAL)
def test_labels_change_the_output(key):
    """A conditional network must use its label: different classes (and the null label) give different outputs."""
    model = with_random_weights(tiny(key)).eval()
    x, t = batch(model)
    outs = [model(x, t, torch.full((3,), c)) for c in range(model.num_classes + 1)]
    for i in range(len(outs)):
        for j in range(i):
            assert (outs[i] - outs[j]).abs().max() > 1e-4


@pytest.mark.parametrize("key", list(TINY))
def test_time_changes_the_output(key):
    """The denoiser must know the noise level: the same x at t=10 and t=900 gives different outputs; an
    int t is the same as a constant tensor."""
    model = with_random_weights(tiny(key)).eval()
    x, _ = batch(model)
    a, b = model(x, torch.full((3,), 10)), model(x, torch.full((3,), 900))
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(model(x, 10), a)


def test_vae_aux_loss_in_training_and_determinism_in_eval():
    """The VAE samples its bottleneck only in training mode and reports the KL term there (the training
    loop adds it); in eval mode it uses the mean, so sampling is deterministic, and aux_loss is None.
    The KL must equal torch.distributions' KL(N(mu, sigma^2) || N(0, 1)), per image value."""
    model = with_random_weights(tiny("vae"), seed=1)
    x, t = batch(model)
    model.train()
    out1 = model(x, t, generator=torch.Generator().manual_seed(5))
    out2 = model(x, t, generator=torch.Generator().manual_seed(5))
    out3 = model(x, t, generator=torch.Generator().manual_seed(6))
    assert torch.equal(out1, out2) and (out1 - out3).abs().max() > 1e-6
    aux = model.aux_loss
    assert aux is not None and aux.dim() == 0 and aux.requires_grad and aux > 0
    mu, logvar = model.encode(x, model.time_embed(t)).chunk(2, dim=1)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(aux, kl / x[0].numel())
    model.eval()
    assert torch.equal(model(x, t), model(x, t)) and model.aux_loss is None


def test_autoencoder_is_deterministic_and_sets_no_aux_loss():
    """The plain autoencoder has no sampled bottleneck: identical outputs in training mode, no aux_loss."""
    model = tiny("autoencoder").train()
    x, t = batch(model)
    assert torch.equal(model(x, t), model(x, t)) and model.aux_loss is None
    assert isinstance(model, Autoencoder) and not isinstance(model, VAE)


@pytest.mark.parametrize("key", list(TINY))
def test_gradient_reaches_every_parameter(key):
    """No dead branches: with real and null labels in the batch, every parameter gets a non-zero gradient
    (a label embedding never used, an unused attention layer or a detached skip would show up here)."""
    model = with_random_weights(tiny(key, **({"dropout": 0.0} if key.startswith("unet") else {})))
    model.train()
    x, t = batch(model, B=4)
    y = torch.tensor([0, 1, 2, 3]) if model.num_classes else None
    out = model(x, t, y)
    loss = out.pow(2).mean() + (model.aux_loss if model.aux_loss is not None else 0.0)
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"parameters with no gradient: {dead}"


@pytest.mark.parametrize("key", ["unet_improved", "small_unet", "autoencoder"])
def test_channels_last_gives_the_same_output(key):
    """Training may switch to channels_last memory for speed; the network's function must not change."""
    model = with_random_weights(tiny(key)).eval()
    x, t = batch(model)
    ref = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last), t), ref, rtol=1e-4, atol=1e-5)


def test_small_unet_attention_starts_as_the_network_without_it():
    """The attention block's output projection starts at zero (Ho et al.), so a fresh SmallUNet with
    attention computes what the same weights compute without it; once the projection is trained the
    block changes the output, and the network without attention has none of its parameters (Report E's
    checkpoints load unchanged)."""
    with_attn = with_random_weights(tiny("small_unet_attn"))
    plain = tiny("small_unet")
    assert not any(k.startswith("attention.") for k in plain.state_dict())
    plain.load_state_dict({k: v for k, v in with_attn.state_dict().items() if not k.startswith("attention.")})
    with torch.no_grad():
        with_attn.attention.proj.weight.zero_()
        with_attn.attention.proj.bias.zero_()
    x, t = batch(plain)
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(with_attn(x, t, y), plain(x, t, y))
    with torch.no_grad():
        with_attn.attention.proj.weight.normal_(0.0, 0.3)
    assert (with_attn(x, t, y) - plain(x, t, y)).abs().max() > 1e-3


def test_small_unet_attention_mixes_positions_of_the_bottleneck():
    """Without attention a change to one corner pixel of a 64x64 image cannot reach the opposite corner
    of the output (the receptive field of two levels of 3x3 convolutions is smaller than the image);
    self-attention over the bottleneck's positions lets every position see every other."""
    kw = dict(in_channels=1, image_size=64, ch=4, depth=2, time_dim=8, num_classes=3)
    for attention, reaches in ((False, False), (True, True)):
        model = with_random_weights(build_model("small_unet", **kw, attention=attention)).eval()
        x, t = batch(model, B=1)
        y = torch.tensor([1])
        x2 = x.clone()
        x2[..., 0, 0] += 5.0
        far = (model(x2, t, y) - model(x, t, y))[..., -1, -1].abs().item()
        assert (far > 1e-6) is reaches, (attention, far)


def test_sinusoidal_embedding_formula():
    """Vaswani et al.'s encoding as Ho et al. code it: sin(t f_i) then cos(t f_i), f_i = 10000^(-i/(half-1));
    distinct time steps must get distinct embeddings (else the network cannot tell noise levels apart)."""
    t = torch.tensor([0, 1, 7, 999])
    emb = sinusoidal_embedding(t, 8)
    f = 10_000.0 ** (-torch.arange(4) / 3.0)
    expected = torch.cat([torch.sin(t[:, None] * f), torch.cos(t[:, None] * f)], dim=1)
    torch.testing.assert_close(emb, expected.float())
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert sinusoidal_embedding(t, 7).shape == (4, 7) and (sinusoidal_embedding(t, 7)[:, -1] == 0).all()
    e = sinusoidal_embedding(torch.arange(1, 1001), 32)
    assert torch.cdist(e, e).add(torch.eye(1000) * 1e9).min() > 1e-3


def test_one_hot_null_label_is_all_zeros():
    """Report A feeds the label one-hot; the null label must carry no class, i.e. the zero vector."""
    oh = one_hot_labels(torch.tensor([0, 2, 3]), 3)
    assert torch.equal(oh, torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 0, 0]]))


# ------------------------------------------------------------------------------------------------
# Bad input: each error names the argument and what was expected.
# ------------------------------------------------------------------------------------------------

CONSTRUCTION_ERRORS = [
    ("unet", dict(image_size=28, ch_mult=(1, 2, 2, 2)), ValueError, r"image_size=28 is not divisible by 2\^3"),
    ("small_unet", dict(image_size=30, depth=2), ValueError, r"image_size=30 is not divisible by 2\^2"),
    ("autoencoder", dict(image_size=30, ch_mult=(1, 2, 2)), ValueError, r"image_size=30 is not divisible"),
    ("unet", dict(ch=48), ValueError, r"norm_groups=32 does not divide the 48 channels"),
    ("unet", dict(ch=8, norm_groups=3, attn_resolutions=()), ValueError, r"norm_groups=3 does not divide"),
    ("autoencoder", dict(ch=6, norm_groups=4), ValueError, r"norm_groups=4 does not divide the 6 channels"),
    ("unet", dict(ch=8, norm_groups=4, num_heads=3), ValueError, r"num_heads=3 does not divide the 16 channels"),
    ("unet", dict(ch=8, norm_groups=4, num_head_channels=3), ValueError, r"num_head_channels=3 does not divide"),
    ("unet", dict(image_size=32, attn_resolutions=(7,)), ValueError, r"attn_resolutions contains 7.*\[32, 16, 8, 4\]"),
    ("unet", dict(dropout=1.5), ValueError, r"dropout must be a probability"),
    ("unet", dict(label_at="input"), ValueError, r"label_at must be 'embedding' or 'middle', got 'input'"),
    ("unet", dict(ch_mult=()), ValueError, r"ch_mult must not be empty"),
    ("unet", dict(ch_mult=(1, 0)), ValueError, r"ch_mult\[1\] must be at least 1"),
    ("unet", dict(ch=0), ValueError, r"ch must be at least 1"),
    ("unet", dict(ch="32"), TypeError, r"ch must be an int"),
    ("unet", dict(num_res_blocks=0), ValueError, r"num_res_blocks must be at least 1"),
    ("unet", dict(num_classes=0), ValueError, r"num_classes must be at least 1"),
    ("cnn", dict(act="tanh"), ValueError, r"act must be one of \['gelu', 'relu', 'selu', 'silu'\]"),
    ("cnn", dict(kernel_size=4), ValueError, r"kernel_size must be odd"),
    ("cnn", dict(hidden="16"), TypeError, r"hidden must be a list or tuple"),
    ("cnn", dict(in_channels=0), ValueError, r"in_channels must be at least 1"),
    ("small_unet", dict(depth=0), ValueError, r"depth must be at least 1"),
    ("small_unet", dict(attention="yes"), TypeError, r"attention must be True or False, got 'yes'"),
    ("vae", dict(latent_dim=0), ValueError, r"latent_dim must be at least 1"),
]


@pytest.mark.parametrize("name,kwargs,exc,match", CONSTRUCTION_ERRORS)
def test_impossible_networks_fail_at_construction(name, kwargs, exc, match):
    """Sizes the network cannot take must fail when it is built, with a message saying what to change,
    not later with a shape mismatch deep inside a training run."""
    with pytest.raises(exc, match=match):
        build_model(name, **kwargs)


def test_build_model_errors():
    """build_model takes only known names and JSON-able, known kwargs (checkpoints store them)."""
    with pytest.raises(
        ValueError, match=r"name must be one of the models \['autoencoder', 'cnn', 'small_unet', 'unet', 'vae'\]"
    ):
        build_model("transformer")
    with pytest.raises(TypeError, match=r"hidden\[0\] is a Tensor: build_model takes only JSON-able kwargs"):
        build_model("cnn", hidden=[torch.tensor(4)])
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['channels'\] for model 'cnn'"):
        build_model("cnn", channels=4)
    with pytest.raises(ValueError, match=r"preset must be one of"):
        build_model_preset("unet_imagenet")
    with pytest.raises(TypeError, match=r"preset fixes the model name"):
        build_model_preset("cnn_mnist", name="unet")
    assert set(MODELS) == {"unet", "small_unet", "cnn", "autoencoder", "vae"}


@pytest.mark.parametrize("key", ["unet", "cnn", "vae"])
def test_labels_for_an_unconditional_network_are_refused(key):
    """Silently ignoring labels would make 'conditional' samples from an unconditional model look valid."""
    model = tiny(key)
    x, t = batch(model)
    with pytest.raises(ValueError, match=r"y: this network is unconditional \(num_classes=None\)"):
        model(x, t, torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("key", CONDITIONAL)
def test_bad_labels_are_refused(key):
    """Labels must be integers in 0..num_classes (num_classes = null label), one per image."""
    model = tiny(key)
    x, t = batch(model)
    for bad in ([-1, 0, 1], [0, 1, 4]):
        with pytest.raises(ValueError, match=r"y must hold labels in 0..2, or 3 for the null label"):
            model(x, t, torch.tensor(bad))
    with pytest.raises(TypeError, match=r"y must hold integer class labels"):
        model(x, t, torch.zeros(3))
    with pytest.raises(ValueError, match=r"y must have shape \(B,\) = \(3,\)"):
        model(x, t, torch.zeros(2, dtype=torch.int64))


def test_bad_images_and_times_are_refused():
    """x must match the network's channels and size; t must be one model time per image."""
    model = tiny("cnn")
    x, t = batch(model)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 8, 8\) for this network"):
        model(torch.randn(3, 3, 8, 8), t)
    with pytest.raises(ValueError, match=r"x must be a float tensor of shape \(B, C, H, W\)"):
        model(torch.randn(1, 8, 8), t)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(3,\)"):
        model(x, torch.ones(2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"t must be an int or a tensor"):
        model(x, 1.5)
    with pytest.raises(TypeError, match=r"got a bool"):
        model(x, True)
    with pytest.raises(ValueError, match=r"dim must be at least 2"):
        sinusoidal_embedding(t, 1)
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        sinusoidal_embedding(t[None], 8)


def test_cli_lists_the_presets(capsys):
    """`python -m diffusion_edu models` shows every preset with its parameter count (the 35.7M model included)."""
    from diffusion_edu.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(p in out for p in MODEL_PRESETS) and "35,746,307" in out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["preset"]: r["params"] for r in rows}["unet_cifar10"] == 35_746_307
    assert main(["models", "--preset", "cnn_mnist"]) == 0
    assert "CNN(" in capsys.readouterr().out


def test_benchmark_script_writes_a_results_file(tmp_path):
    """The benchmark (the only place speed is measured) must keep running: a tiny run writes a results
    file with the envelope and one entry per preset and mode."""
    import importlib.util
    from pathlib import Path

    from diffusion_edu.results import read_results

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"
    spec = importlib.util.spec_from_file_location("bench_models", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "models_cpu.json"
    args = [
        "--presets",
        "cnn_mnist",
        "--modes",
        "fp32",
        "--batch",
        "2",
        "--forward-batch",
        "2",
        "--warmup",
        "1",
        "--windows",
        "1",
        "--window-s",
        "0.01",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--in-process",
    ]
    threads = torch.get_num_threads()
    try:
        assert bench.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    record = read_results(out)
    [r] = record["data"]["rows"]
    assert record["name"] == "benchmarks/models" and r["params"] == 114_081
    assert (r["preset"], r["mode"], r["threads"]) == ("cnn_mnist", "fp32", 1)
    assert r["train_img_s"] > 0 and r["forward_img_s"] > 0 and r["peak_memory_kind"] == "cpu_maxrss_growth_training"
