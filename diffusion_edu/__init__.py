"""diffusion_edu: the tested package under the diffusion-edu book.

Import it before torchvision or torchmetrics: importing the package applies the torchvision
import fix described in :mod:`diffusion_edu._compat` (a no-op where torchvision's extension loads).
Nothing else happens at import time: no seeding, no device choice, no downloads.

Time convention: ``t`` is 1-based (x_0 -> x_1 -> ... -> x_T) and ``t = 0`` is clean data; see
:mod:`diffusion_edu.schedules`.
"""

from . import _compat  # noqa: F401  (must run before anything imports torchvision)
from .classifier import MNISTClassifier, load_mnist_classifier, train_classifier
from .cold import DegradedPrior, RowColumnAveraging, cold_sample, fit_degraded_prior, line_order
from .data import (
    DatasetNotAvailableError,
    ImageDataset,
    load_cifar10,
    load_dataset,
    load_embedded_mnist,
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
from .guidance import combine_guidance, guided_output, interpolate, slerp
from .intervals import Interval, bootstrap, judge_order, seed_spread
from .memorisation import lpips_nearest_neighbours, nearest_neighbours
from .metrics import (
    WeightsNotAvailableError,
    conditional_accuracy,
    evaluate,
    fid,
    inception_fid_is,
    inception_score,
    kid,
    noise_ceiling,
    precision_recall,
    real_vs_real,
    reference_stats,
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
    build_model_preset,
    count_parameters,
)
from .presets import TRAINING_PRESETS, TrainConfig, training_preset
from .samplers import StepOutput, Trajectory, ddim_step, ddpm_step, sample
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
from .training import LoadedModel, NonFiniteLossError, TrainResult, load_model, train

__version__ = "0.1.0"

__all__ = [
    # data
    "DatasetNotAvailableError",
    "load_embedded_mnist",
    "ImageDataset",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
    "to_model_range",
    "to_unit_range",
    # forward process
    "eps_and_x0_from_output",
    "eps_from_posterior_mean",
    "posterior_mean_from_eps",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_mean_variance",
    "q_posterior",
    "q_sample",
    "q_step",
    # samplers and guidance
    "StepOutput",
    "Trajectory",
    "ddim_step",
    "ddpm_step",
    "sample",
    "combine_guidance",
    "guided_output",
    "interpolate",
    "slerp",
    # cold diffusion
    "DegradedPrior",
    "RowColumnAveraging",
    "cold_sample",
    "fit_degraded_prior",
    "line_order",
    # metrics (+ classifier, memorisation)
    "MNISTClassifier",
    "load_mnist_classifier",
    "train_classifier",
    "WeightsNotAvailableError",
    "conditional_accuracy",
    "evaluate",
    "fid",
    "inception_fid_is",
    "inception_score",
    "kid",
    "noise_ceiling",
    "real_vs_real",
    "reference_stats",
    "nearest_neighbours",
    "lpips_nearest_neighbours",
    # intervals and precision / recall
    "Interval",
    "bootstrap",
    "judge_order",
    "seed_spread",
    "precision_recall",
    # networks
    "CNN",
    "MODEL_PRESETS",
    "MODELS",
    "VAE",
    "Autoencoder",
    "SmallUNet",
    "UNet",
    "build_model",
    "build_model_preset",
    "count_parameters",
    # schedules
    "SCHEDULES",
    "NoiseSchedule",
    "cosine_betas",
    "linear_betas",
    "make_schedule",
    "quadratic_betas",
    "respace",
    "schedule_from_betas",
    "sigmoid_betas",
    "spaced_steps",
    # training
    "TRAINING_PRESETS",
    "TrainConfig",
    "training_preset",
    "LoadedModel",
    "NonFiniteLossError",
    "TrainResult",
    "load_model",
    "train",
]
