"""Fitting a training config to its data: the network takes the data's channels, image size and number of
classes unless the config fixes them, and an impossible combination fails before anything is trained.

A preset names a network (``model``, e.g. ``small_unet_mnist``) and may fix some of its keyword arguments
in ``model_kwargs``. :func:`fit_to_data` loads nothing itself; given the training data it returns the
config whose ``model_kwargs`` also hold the values that the data changes:

- ``in_channels`` and ``image_size`` follow the images (C, H, W) unless ``model_kwargs`` fixes them, in
  which case a mismatch is an error naming ``channels`` / ``image_size`` (convert the data) or
  ``model_kwargs.*`` (let the network follow);
- ``num_classes`` of a class-conditional network follows the labels; unlabelled data (a flat folder, an
  array file without labels) makes it unconditional, with no label dropout (``p_uncond = 0``: there is
  no label to drop). An unconditional network stays unconditional. A fixed ``num_classes`` must cover
  the labels.

Values that equal the network's own defaults are left out, so an MNIST preset on MNIST-shaped data keeps
its config unchanged (and its checkpoints resume). The fitted config is what ``config.json`` and the
checkpoint hold, so :func:`~diffusion_edu.checkpoint.load_model` rebuilds the same network.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .data import BadDataError, ImageDataset, load_dataset
from .presets import TrainConfig

__all__ = ["data_options", "load_training_data", "network_kwargs", "fit_to_data"]

_CONVERT = {"in_channels": "channels", "image_size": "image_size"}  # network argument -> data setting


def data_options(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`~diffusion_edu.data.load_dataset` that the config sets."""
    return {"path": config.data_path, "image_size": config.image_size, "channels": config.channels}


def load_training_data(config: TrainConfig, split: str | None = None) -> ImageDataset:
    """The config's dataset (``split`` defaults to ``config.split``), before ``subset`` is applied."""
    return load_dataset(config.dataset, split or config.split, **data_options(config))


def network_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments the config's network is built with: a model preset's own values (or the
    model class's defaults) updated with ``config.model_kwargs``."""
    from . import models

    presets, classes = getattr(models, "MODEL_PRESETS", {}), getattr(models, "MODELS", {})
    if config.model in presets:
        base = {k: v for k, v in presets[config.model].items() if k != "name"}
        cls = classes[presets[config.model]["name"]]
    elif config.model in classes:
        base, cls = {}, classes[config.model]
    else:  # not a known name: build_network reports it; nothing to fit
        return dict(config.model_kwargs)
    defaults = {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if k != "self" and p.default is not inspect.Parameter.empty
    }
    return {**defaults, **base, **config.model_kwargs}


def _class_changes(config: TrainConfig, current: dict[str, Any], ds: ImageDataset) -> tuple[dict[str, Any], float]:
    """num_classes of a conditional network from the labels, and the label-dropout rate that goes with it."""
    fixed = config.model_kwargs
    if current.get("num_classes") is None:  # an unconditional network ignores labels
        return {}, config.p_uncond
    top = int(ds.labels.max()) if len(ds) else -1
    if "num_classes" in fixed:
        if ds.num_classes is None:
            raise BadDataError(
                f"the data {ds.name!r} is unlabelled, but model_kwargs.num_classes={fixed['num_classes']} "
                "fixes a class-conditional network: set model_kwargs.num_classes=null and p_uncond=0, "
                "or sort the images into class subfolders"
            )
        if top >= fixed["num_classes"]:
            raise BadDataError(
                f"the labels of {ds.name!r} reach {top}, but model_kwargs.num_classes="
                f"{fixed['num_classes']} fixes {fixed['num_classes']} classes: raise it to {top + 1} "
                "or remove it (the network then follows the data)"
            )
        return {}, config.p_uncond
    if ds.num_classes is None:
        return {"num_classes": None}, 0.0
    k = max(ds.num_classes, top + 1)
    return ({"num_classes": k} if k != current["num_classes"] else {}), config.p_uncond


def fit_to_data(config: TrainConfig, dataset: ImageDataset, check_discriminator: bool = True) -> TrainConfig:
    """The config with the network fitted to ``dataset`` (see the module docstring), after checking that
    training can start: a square image, at least one batch of images, a network that can be built for
    this size, a cold-diffusion T that matches it. Every failure is a :class:`~diffusion_edu.data.BadDataError`
    naming the setting to change."""
    c, h, w = dataset.image_shape
    if h != w:
        raise BadDataError(
            f"the images of {dataset.name!r} are {h}x{w}; the networks take square images: set image_size"
        )
    n = len(dataset) if config.subset is None else min(config.subset, len(dataset))
    if n < config.batch_size:
        raise BadDataError(
            f"the training data {dataset.name!r} has {n} images, fewer than one batch "
            f"(batch_size={config.batch_size}): set batch_size={max(n, 1)} or less, or add images"
        )
    current = network_kwargs(config)
    changes: dict[str, Any] = {}
    for key, value in (("in_channels", c), ("image_size", h)):
        if key not in current:
            continue
        if key in config.model_kwargs and config.model_kwargs[key] != value:
            raise BadDataError(
                f"model_kwargs.{key}={config.model_kwargs[key]} fixes the network, but the data "
                f"{dataset.name!r} has {key}={value}: set {_CONVERT[key]}={config.model_kwargs[key]} "
                f"to convert the data, or remove model_kwargs.{key} so that the network follows it"
            )
        if current[key] != value:
            changes[key] = value
    class_changes, p_uncond = _class_changes(config, current, dataset)
    changes.update(class_changes)
    fitted = (
        config
        if not changes and p_uncond == config.p_uncond
        else config.replace(model_kwargs={**config.model_kwargs, **changes}, p_uncond=p_uncond)
    )
    _check_buildable(fitted, dataset, h)
    if check_discriminator and fitted.disc_weight > 0 and (c, h) != (1, 28):
        raise BadDataError(
            f"disc_weight > 0 scores predictions with the shipped MNIST classifier, which reads 1x28x28 "
            f"images, but the data is {c}x{h}x{h}: set disc_weight=0"
        )
    return fitted


def _check_buildable(config: TrainConfig, dataset: ImageDataset, size: int) -> None:
    """Build the network on the meta device (no memory, no random draws) and the cold degradation, so
    that their size checks run now, not after the output folder is written."""
    from .builders import build_network, build_process

    try:
        with torch.device("meta"):
            build_network(config)
        if config.process == "cold":
            build_process(config, size)
    except (ValueError, TypeError) as e:
        what = (
            "T (or cold_group)"
            if config.process == "cold" and "T=" in str(e)
            else "image_size (resize the data), or the network (model, model_kwargs)"
        )
        raise BadDataError(
            f"the network {config.model!r} cannot be trained on {dataset.name!r} "
            f"({'x'.join(map(str, dataset.image_shape))}): {e}. Change {what}"
        ) from e
