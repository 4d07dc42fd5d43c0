"""diffusion_edu: the tested package under the diffusion-edu book.

Import it before torchvision or torchmetrics: importing the package applies the torchvision
import fix described in :mod:`diffusion_edu._compat` (a no-op where torchvision's extension loads).
Nothing else happens at import time: no seeding, no device choice, no downloads.

Time convention: ``t`` is 1-based (x_0 -> x_1 -> ... -> x_T) and ``t = 0`` is clean data; see
:mod:`diffusion_edu.schedules`.
"""

from . import _compat  # noqa: F401  (must run before anything imports torchvision)
from .data import (
    DatasetNotAvailableError,
    EmbeddedMNIST,
    ImageDataset,
    load_cifar10,
    load_dataset,
    load_mnist,
    to_model_range,
    to_unit_range,
)
from .forward import (
    eps_and_x0_from_output,
    eps_from_posterior_mean,
    posterior_mean_from_eps,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_mean_variance,
    q_posterior,
    q_sample,
    q_step,
)
from .models import (
    CNN,
    MODEL_PRESETS,
    MODELS,
    VAE,
    Autoencoder,
    SmallUNet,
    UNet,
    build_model,
    build_preset,
    count_parameters,
)
from .schedules import (
    SCHEDULES,
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    make_schedule,
    quadratic_betas,
    respace,
    schedule_from_betas,
    sigmoid_betas,
    spaced_steps,
)

__version__ = "0.1.0"

__all__ = [
    # data
    "DatasetNotAvailableError", "EmbeddedMNIST", "ImageDataset", "load_cifar10", "load_dataset",
    "load_mnist", "to_model_range", "to_unit_range",
    # forward process
    "eps_and_x0_from_output", "eps_from_posterior_mean", "posterior_mean_from_eps",
    "predict_eps_from_x0", "predict_x0_from_eps", "q_mean_variance", "q_posterior", "q_sample", "q_step",
    # networks
    "CNN", "MODEL_PRESETS", "MODELS", "VAE", "Autoencoder", "SmallUNet", "UNet", "build_model", "build_preset",
    "count_parameters",
    # schedules
    "SCHEDULES", "NoiseSchedule", "cosine_betas", "linear_betas", "make_schedule", "quadratic_betas",
    "respace", "schedule_from_betas", "sigmoid_betas", "spaced_steps",
]
