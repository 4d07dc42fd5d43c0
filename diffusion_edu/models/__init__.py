"""The denoising networks of the five reports, all called as ``model(x, t, y=None)``.

``x`` (B, C, H, W) noisy images, ``t`` (B,) int64 model time, ``y`` None or (B,) int64 labels in
``0..num_classes`` (``num_classes`` is the null label: a conditional network given ``y=None`` uses it).
The output has the shape of ``x``. Build a network by name from JSON-able keyword arguments (that is
what checkpoints store) with :func:`build_model`, or from a named set of them in :data:`MODEL_PRESETS`::

    model = build_model(**MODEL_PRESETS["unet_mnist"])   # {"name": "unet", "ch": 16, ...}
    model = build_model_preset("unet_mnist", num_classes=None)  # the same, with some kwargs changed

===============  ========================================================  =======
name             network                                                   report
===============  ========================================================  =======
``unet``         Ho et al. (2020) U-Net, with Dhariwal & Nichol's options  A, B, C
``small_unet``   two-level U-Net with time and label in every block        E
``cnn``          plain 7x7 CNN, hidden channels (16, 32, 32, 16)           D
``autoencoder``  conv autoencoder + input skip + output convs              A
``vae``          the same with a sampled (VAE) bottleneck and a KL term    A
===============  ========================================================  =======
"""

from __future__ import annotations

import copy
import inspect
import json
from typing import Any

from torch import nn

from .autoencoder import VAE, Autoencoder
from .base import Denoiser
from .cnn import CNN
from .embeddings import LabelEmbedding, TimeEmbedding, one_hot_labels, sinusoidal_embedding
from .small_unet import SmallUNet
from .unet import UNet

__all__ = [
    "MODELS",
    "MODEL_PRESETS",
    "build_model",
    "build_model_preset",
    "count_parameters",
    "Denoiser",
    "UNet",
    "SmallUNet",
    "CNN",
    "Autoencoder",
    "VAE",
    "sinusoidal_embedding",
    "TimeEmbedding",
    "LabelEmbedding",
    "one_hot_labels",
]

MODELS: dict[str, type[Denoiser]] = {
    "unet": UNet,
    "small_unet": SmallUNet,
    "cnn": CNN,
    "autoencoder": Autoencoder,
    "vae": VAE,
}

# Named keyword-argument sets for build_model, the model's name included: build_model(**MODEL_PRESETS[p]). The MNIST presets are sized for the
# book's "cpu" tier (about 10 minutes of training on 2 CPU cores); benchmarks/bench_models.py measures them.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Ho et al. (2020) CIFAR-10 model, 35.7M parameters (Report C).
    "unet_cifar10": {
        "name": "unet",
        "in_channels": 3,
        "image_size": 32,
        "ch": 128,
        "ch_mult": [1, 2, 2, 2],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "dropout": 0.1,
    },
    # Report B: Ho's size with the OpenAI improvements (Dhariwal & Nichol 2021) and a class embedding.
    # Report B does not state its sizes; these follow guided-diffusion's defaults at 32x32.
    "unet_cifar10_improved": {
        "name": "unet",
        "in_channels": 3,
        "image_size": 32,
        "ch": 128,
        "ch_mult": [1, 2, 2, 2],
        "num_res_blocks": 2,
        "attn_resolutions": [16, 8],
        "dropout": 0.1,
        "num_classes": 10,
        "num_head_channels": 64,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
    },
    # Ho-style U-Net for 28x28 MNIST, sized for the cpu tier: 16 channels at 28x28, 32 at 14x14 and 7x7,
    # one block per level, attention only in the middle (7x7). Wider variants (16-32-64, 32-64-64) cost
    # 1.3x and 3x more per image and trailed it in held-out loss in short equal-CPU-time trial runs.
    "unet_mnist": {
        "name": "unet",
        "in_channels": 1,
        "image_size": 28,
        "ch": 16,
        "ch_mult": [1, 2, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "mid_attention": True,
        "dropout": 0.0,
        "num_classes": 10,
        "norm_groups": 8,
    },
    # Report E: the two-level U-Net (16-32-64 channels), conditional on the digit. Report E gives no widths;
    # 16 suits the cpu tier: ch=32 costs ~3.5x more per image and trailed it in equal-CPU-time trial runs.
    "small_unet_mnist": {
        "name": "small_unet",
        "in_channels": 1,
        "image_size": 28,
        "ch": 16,
        "depth": 2,
        "num_classes": 10,
    },
    # Report D: hidden (16, 32, 32, 16), kernel 7, GELU; and its SELU variant. Unconditional.
    "cnn_mnist": {
        "name": "cnn",
        "in_channels": 1,
        "image_size": 28,
        "hidden": [16, 32, 32, 16],
        "kernel_size": 7,
        "act": "gelu",
    },
    "cnn_mnist_selu": {
        "name": "cnn",
        "in_channels": 1,
        "image_size": 28,
        "hidden": [16, 32, 32, 16],
        "kernel_size": 7,
        "act": "selu",
    },
    # Report A: the autoencoder and VAE denoisers, one-hot label in the middle.
    "autoencoder_mnist": {
        "name": "autoencoder",
        "in_channels": 1,
        "image_size": 28,
        "ch": 32,
        "ch_mult": [1, 2, 2],
        "latent_dim": 32,
        "num_classes": 10,
    },
    "vae_mnist": {
        "name": "vae",
        "in_channels": 1,
        "image_size": 28,
        "ch": 32,
        "ch_mult": [1, 2, 2],
        "latent_dim": 32,
        "num_classes": 10,
    },
}


def _check_jsonable(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_jsonable(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}: model kwargs must be JSON-able")
            _check_jsonable(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}: build_model takes only JSON-able kwargs "
        f"(None, bool, int, float, str, lists and dicts of them), because checkpoints store them"
    )


def build_model(name: str, **kwargs: Any) -> Denoiser:
    """Build the network ``name`` (a key of :data:`MODELS`) from JSON-able keyword arguments.

    The returned module also carries ``model_name`` and ``model_kwargs`` (a JSON round-trip copy of
    ``kwargs``), so a checkpoint can rebuild it with ``build_model(model.model_name, **model.model_kwargs)``.
    """
    if name not in MODELS:
        raise ValueError(
            f"name must be one of the models {sorted(MODELS)}, got {name!r} (presets: {sorted(MODEL_PRESETS)})"
        )
    cls = MODELS[name]
    for key, value in kwargs.items():
        _check_jsonable(value, key)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"unknown argument(s) {unknown} for model {name!r}; it accepts {accepted}")
    model = cls(**kwargs)
    model.model_name = name  # type: ignore[assignment]  # torch's __setattr__ stub admits only Tensor / Module
    model.model_kwargs = json.loads(json.dumps(kwargs))
    return model


def build_model_preset(preset: str, **overrides: Any) -> Denoiser:
    """Build the network of a named preset (a key of :data:`MODEL_PRESETS`), with some kwargs overridden."""
    if preset not in MODEL_PRESETS:
        raise ValueError(f"preset must be one of {sorted(MODEL_PRESETS)}, got {preset!r}")
    if "name" in overrides:
        raise TypeError("build_model_preset: the preset fixes the model name; use build_model to build another model")
    return build_model(**{**copy.deepcopy(MODEL_PRESETS[preset]), **overrides})


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
