"""The network and the forward process a training config names (what a run trains and what a
checkpoint's config rebuilds)."""

from __future__ import annotations

from typing import Any

import torch

from .presets import TrainConfig
from .schedules import make_schedule

__all__ = ["build_network", "build_process", "check_degradation"]


def build_network(config: TrainConfig) -> torch.nn.Module:
    """The network named by ``config.model``, imported lazily from :mod:`diffusion_edu.models`: a model
    preset such as ``unet_mnist`` (``build_model_preset(name, **model_kwargs)``, the kwargs overriding the
    preset's) or a model class name such as ``unet`` (``build_model(name, **model_kwargs)``)."""
    try:
        from . import models
    except ModuleNotFoundError as e:
        if e.name not in ("diffusion_edu.models", f"{__package__}.models"):
            raise
        raise ImportError(
            f"building the network {config.model!r} needs diffusion_edu.models, which is "
            "not installed here; pass your own network with model=..."
        ) from e
    kwargs = {**config.model_kwargs, "parameterization": config.parameterization}  # what it will output
    if config.model_kwargs.get("parameterization", config.parameterization) != config.parameterization:
        raise ValueError(
            f"model_kwargs['parameterization']={config.model_kwargs['parameterization']!r} contradicts "
            f"TrainConfig.parameterization={config.parameterization!r}; set only the latter"
        )
    if config.model in getattr(models, "MODEL_PRESETS", {}):
        return models.build_model_preset(config.model, **kwargs)
    return models.build_model(config.model, **kwargs)


def build_process(config: TrainConfig, image_size: int):
    """The forward process: the noise schedule, or for ``process="cold"`` the row/column averaging
    degradation of :mod:`diffusion_edu.cold` (its number of steps must equal ``config.T``)."""
    if config.process == "gaussian":
        try:
            return make_schedule(config.schedule, config.T, **config.schedule_kwargs)
        except TypeError as e:
            raise ValueError(
                f"TrainConfig.schedule_kwargs={config.schedule_kwargs} do not fit the "
                f"{config.schedule!r} schedule ({e})"
            ) from None
    from .cold import RowColumnAveraging

    degradation = RowColumnAveraging(
        axis=config.cold_axis, order=config.cold_order, group=config.cold_group, size=image_size, seed=config.cold_seed
    )
    check_degradation(degradation, config)
    return degradation


def check_degradation(degradation: Any, config: TrainConfig) -> None:
    """A degradation must have ``.T`` and ``.degrade(x0, t)``, and T must match the config (size / group
    steps for one axis, twice that for ``cold_axis="both"``)."""
    if not hasattr(degradation, "degrade") or not hasattr(degradation, "T"):
        raise TypeError(f"a cold-diffusion degradation needs .T and .degrade(x0, t); got {type(degradation).__name__}")
    if int(degradation.T) != config.T:
        raise ValueError(
            f"TrainConfig.T={config.T} but the degradation has T={degradation.T} steps "
            "(image size / cold_group); set T to match"
        )
