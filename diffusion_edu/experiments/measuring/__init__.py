"""Chapter 2, measuring generative models: how the number of samples biases FID, KID and IS, which
degradations of real digits each metric catches (and why Inception features mislead on MNIST), and
whether a model's samples copy its training digits.

Parts, each writing ``results/measuring/<part>.json``:

- ``sample_size_bias``: FID, KID and IS at several sample counts, several seeds each (mean and spread),
  for real digits and for a trained model's samples, against the held-out digits and the training part.
- ``inception_vs_classifier``: degraded real digits (blurred, noised, shifted, classes dropped, a few
  digits copied many times) measured in three feature spaces: the book's MNIST classifier, the same
  network with random weights, and 4x4-averaged pixels. Inception-v3 runs only where its weights can be
  downloaded (colab / gpu tiers).
- ``memorisation``: each sample's nearest training digit by pixel distance, against the same distance
  for held-out digits (real digits the model never saw) and for near-copies of training digits.

The model measured is Report E's ``T1000_linear`` network, trained by
``python -m diffusion_edu experiment report_e --tier TIER --only training``; this chapter only loads
its finished checkpoint (the parts that sample it need that one run: at the smoke and colab tiers it is
trained first when missing, elsewhere they stop with the command). Its samples come from one
pool drawn once per tier (respaced DDPM, beta_tilde variance, labels 0..9 in turn, no guidance),
cached in ``runs/<tier>/measuring/pool.pt`` and subsampled by every part.
"""

from __future__ import annotations

from ..common import Part, chapter_parts
from .bias import run_sample_size_bias
from .comparison import fid_comparison, fid_gap_threshold, fid_spread
from .kit import (
    BACKGROUND,
    BUDGETS,
    CHAPTER,
    DEGRADATIONS,
    MNIST_SHAPE,
    MODEL_CHAPTER,
    MODEL_RUN,
    POOL_SEED,
    MeasuringBudget,
    add_noise,
    colab_plan,
    degraded_set,
    draw_subsets,
    figure_path,
    fit_inverse_n,
    gaussian_blur,
    load_measured_model,
    model_pool,
    pixel_features,
    random_classifier,
    shift_images,
)
from .memorisation import CONTROL_SIGMA, run_memorisation
from .precision_recall import PR_SETS, run_precision_recall
from .spaces import FEATURE_SPACES, run_inception_vs_classifier

__all__ = [
    "CHAPTER",
    "PARTS",
    "MeasuringBudget",
    "BUDGETS",
    "DEGRADATIONS",
    "gaussian_blur",
    "add_noise",
    "shift_images",
    "degraded_set",
    "draw_subsets",
    "fit_inverse_n",
    "pixel_features",
    "random_classifier",
    "load_measured_model",
    "model_pool",
    "figure_path",
    "fid_spread",
    "fid_gap_threshold",
    "fid_comparison",
    "PR_SETS",
    "run_precision_recall",
    "colab_plan",
    "FEATURE_SPACES",
    "BACKGROUND",
    "MNIST_SHAPE",
    "POOL_SEED",
    "CONTROL_SIGMA",
]

_MODEL = ([f"{MODEL_CHAPTER}/training"], (MODEL_RUN,))  # what the parts that sample the model need

PARTS: dict[str, Part] = chapter_parts(
    CHAPTER,
    Part(
        "sample_size_bias",
        "FID / KID / IS against the number of samples (real digits and Report E's "
        "T1000_linear samples), five seeds each",
        run_sample_size_bias,
        *_MODEL,
    ),
    Part(
        "inception_vs_classifier",
        "degraded real digits in three feature spaces: which degradations each metric catches",
        run_inception_vs_classifier,
    ),
    Part("memorisation", "nearest training digits (pixel L2) of samples vs held-out digits", run_memorisation, *_MODEL),
    Part(
        "precision_recall",
        "precision and recall (k-NN manifolds) of real, collapsed and degraded digits, with bootstrap intervals",
        run_precision_recall,
    ),
)
