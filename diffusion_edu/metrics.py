"""Measuring samples: FID, IS and KID with the package's MNIST classifier, conditional accuracy, floors.

(Longer than the package's usual ~400 lines: FID, KID, IS, precision / recall and the Inception kit
share the feature pass, the reference features and the input checks defined here; splitting them would
make every metric import the others' private helpers.)

All functions take images (B, C, H, W) in [-1, 1], the package's convention, and return plain floats.
The features come from a pluggable :class:`FeatureExtractor` (the ``classifier=`` argument): the shipped
MNIST classifier by default, which reads (B, 1, 28, 28); a classifier that ``python -m diffusion_edu
train-classifier --dataset ...`` trained on other images (grey or colour, any size); or any module with
``features_and_logits`` (its ``input_shape``, when it has one, is checked; without one it takes any shape).
The metrics themselves are torchmetrics' (``FrechetInceptionDistance``, ``InceptionScore``,
``KernelInceptionDistance``) with the classifier of :mod:`diffusion_edu.classifier` in place of
Inception-v3, as Report E did for IS:

- FID (Heusel et al. 2017, the Frechet distance of two Gaussians fitted to the 128 penultimate features):
  ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)).
- KID (Binkowski et al. 2018, 'Demystifying MMD GANs'): the unbiased MMD^2 with kernel
  k(a, b) = (a.b / d + 1)^3 over the same features, averaged over random subsets (mean and spread).
- IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) from the classifier's 10 class probabilities,
  averaged over 10 splits.

torchmetrics' input conventions, and what this module does about them: with a custom ``feature``
module, FID and KID pass ``update(imgs)`` straight to the module (``normalize`` only picks the dtype of
the probe image, and giving the module a ``num_features`` attribute skips the probe); but
``InceptionScore(normalize=True)`` turns images into bytes even for a custom module, so keep the default
``normalize=False``. IS applies ``softmax`` itself: its feature module must return *logits*. Here every
image goes through the classifier once (:func:`classifier_outputs`); the torchmetrics metrics then get
the features / logits through an identity module, which gives the same numbers as handing them
:class:`ClassifierFeatures` / :class:`ClassifierLogits` (a test checks it).

Inception-based FID / IS (the numbers the reports quote) need torch-fidelity and downloaded weights,
LPIPS needs downloaded AlexNet / VGG weights (:func:`inception_metrics` and :func:`inception_fid_is` here,
:func:`diffusion_edu.memorisation.lpips_nearest_neighbours`): offline they raise
:class:`WeightsNotAvailableError`, which says what to do. Nearest training neighbours (memorisation)
live in :mod:`diffusion_edu.memorisation`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ._checks import check_images
from .classifier import ClassifierFeatures, ClassifierLogits, MNISTClassifier, load_mnist_classifier

__all__ = [
    "MNISTClassifier",
    "load_mnist_classifier",
    "ClassifierFeatures",
    "ClassifierLogits",  # from classifier.py
    "ReferenceStats",
    "check_metric_images",
    "classifier_outputs",
    "reference_stats",
    "fid",
    "kid",
    "inception_score",
    "conditional_accuracy",
    "evaluate",
    "noise_images",
    "real_vs_real",
    "noise_ceiling",
    "WeightsNotAvailableError",
    "download_guard",
    "inception_fid_is",
    "inception_metrics",
    "feature_extractor_name",
    "to_uint8",
    "FeatureExtractor",
]


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the metrics need of a feature network (an ``nn.Module``): ``features_and_logits(x)`` maps images
    (B, C, H, W) in [-1, 1] to features (B, d) (FID, KID, precision / recall) and logits (B, K) (IS,
    conditional accuracy). Optional: ``input_shape`` (C, H, W) it reads (checked when given),
    ``trained_on`` and ``describe()`` (recorded in results files, see :func:`feature_extractor_name`)."""

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


FEATURE_EXTRACTOR = "diffusion_edu MNIST classifier (128 penultimate features; logits for IS)"


def feature_extractor_name(classifier: Any) -> str:
    """What a results file records as the feature extractor: :data:`FEATURE_EXTRACTOR` for the shipped MNIST
    classifier, else the classifier's own description (its training data, features and input shape)."""
    if getattr(classifier, "trained_on", None) == "mnist-embedded" and tuple(
        getattr(classifier, "input_shape", ())
    ) == (1, 28, 28):
        return FEATURE_EXTRACTOR
    describe = getattr(classifier, "describe", None)
    return describe() if callable(describe) else type(classifier).__name__


IS_SPLITS = 10  # Salimans et al.'s and torchmetrics' choice
KID_SUBSETS = 10  # torchmetrics defaults to 100; each subset's MMD^2 is unbiased, so fewer only add spread
KID_SUBSET_SIZE = 1000  # Binkowski et al.'s and torchmetrics' choice (capped at the set sizes)


class WeightsNotAvailableError(RuntimeError):
    """Pretrained weights (Inception-v3, AlexNet / VGG for LPIPS) are neither cached nor downloadable."""


@contextlib.contextmanager
def download_guard(what: str, hint: str):
    """Turn a failed weights download (no internet, blocked host, bad file) into :class:`WeightsNotAvailableError`."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # URLError, HTTPError, socket errors are OSErrors; torch.hub: RuntimeError
        raise WeightsNotAvailableError(
            f"{what} needs pretrained weights that are downloaded on first use, and they could not be loaded "
            f"({type(e).__name__}: {e}). {hint}"
        ) from e


class _Precomputed(nn.Module):
    """Identity 'feature extractor': torchmetrics receives features already computed by the classifier."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f


def check_metric_images(
    x: torch.Tensor, name: str = "samples", min_count: int = 1, tol: float = 1e-3, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Check a batch of images (B, C, H, W) in [-1, 1] with at least ``min_count`` images (and, when
    ``shape`` is given, (C, H, W) == shape; the classifier's input shape is checked where it is known)."""
    check_images(x, name)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    if x.shape[0] < min_count:
        raise ValueError(f"{name} holds {x.shape[0]} images; this metric needs at least {min_count}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - tol or hi > 1 + tol:
        raise ValueError(
            f"{name} must lie in [-1, 1] (the package's image range), got values in [{lo:.3g}, {hi:.3g}]; "
            "clamp sampler output with x.clamp(-1, 1), map [0, 1] images with 2 * x - 1 and uint8 "
            "pixels with diffusion_edu.data.to_model_range"
        )
    if lo >= 0:
        warnings.warn(f"{name} lies in [0, 1], not [-1, 1]: did you forget 2 * x - 1?", stacklevel=3)
    return x


def _classifier(classifier: FeatureExtractor | None, device: torch.device) -> FeatureExtractor:
    """The given classifier, or the shipped one loaded on ``device`` (no module-level cache: a caller
    that scores many sets passes one classifier, or a :func:`reference_stats`, to every call). Loading
    leaves the global random state as it was (building the network draws initial weights that the
    shipped ones replace), so a metric's random subsets never depend on whether it loaded one."""
    if classifier is not None:
        return classifier
    with torch.random.fork_rng(devices=[]):
        return load_mnist_classifier(device)


@contextlib.contextmanager
def _rng(generator: torch.Generator | None):
    """Run torchmetrics' random subsets / splits (global ``torch.randperm``) from ``generator``, leaving the
    global random state untouched; with ``generator=None`` the global state is used as usual."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_input_shape(images: torch.Tensor, clf: Any, name: str) -> None:
    """Images must have the shape the extractor reads (its ``input_shape``; (1, 28, 28) for MNIST); an
    extractor without ``input_shape`` takes any shape."""
    if not isinstance(clf, FeatureExtractor):
        raise TypeError(f"classifier must be a feature extractor with features_and_logits(x), got {type(clf).__name__}")
    want = getattr(clf, "input_shape", None)
    if want is not None and tuple(images.shape[1:]) != tuple(want):
        trained = getattr(clf, "trained_on", "MNIST")
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, want))}) (what the feature classifier "
            f"trained on {trained} reads), got {tuple(images.shape)}. For other images train a "
            "classifier on their dataset (python -m diffusion_edu train-classifier --dataset ...) and "
            "pass it: classifier=diffusion_edu.classifier.load_classifier(FILE)"
        )


@torch.no_grad()
def classifier_outputs(
    images: torch.Tensor, classifier: FeatureExtractor | None = None, batch_size: int = 1000, name: str = "images"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, 128) and logits (N, K) of images (N, C, H, W) in [-1, 1], float32 on the CPU.

    One pass through the classifier, in batches of ``batch_size`` on the classifier's device; the images
    must have the classifier's input shape ((1, 28, 28) for the shipped MNIST classifier).
    """
    check_metric_images(images, name)
    clf = _classifier(classifier, images.device)
    _check_input_shape(images, clf, name)
    param = next(iter(clf.parameters()), None) if isinstance(clf, nn.Module) else None
    device = param.device if param is not None else images.device
    was_training = getattr(clf, "training", False)
    if isinstance(clf, nn.Module):
        clf.eval()
    feats, logits = [], []
    for i in range(0, images.shape[0], batch_size):
        f, lg = clf.features_and_logits(images[i : i + batch_size].to(device, torch.float32))
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    if isinstance(clf, nn.Module):
        clf.train(was_training)
    return torch.cat(feats), torch.cat(logits)  # (N, d), (N, K)


@dataclass
class ReferenceStats:
    """Classifier features (N, d) of a reference set, computed once and reused by every :func:`evaluate`,
    with the classifier that computed them (samples must go through the same one)."""

    features: torch.Tensor
    name: str
    classifier: FeatureExtractor = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])


def reference_stats(
    reference: Any, classifier: FeatureExtractor | None = None, batch_size: int = 1000
) -> ReferenceStats:
    """Features of a reference set: images (N, 1, 28, 28) in [-1, 1], an ``ImageDataset``, or a dataset name
    such as ``"mnist-embedded/heldout"`` (the book's default reference: the 1,005 held-out digits)."""
    from .data import ImageDataset, load_dataset

    if isinstance(reference, ReferenceStats):
        return reference
    if isinstance(reference, str):
        dataset, _, split = reference.partition("/")
        ds = load_dataset(dataset, split or "train")
        images, name = ds.tensors()[0], ds.name
    elif isinstance(reference, ImageDataset):
        images, name = reference.tensors()[0], reference.name
    elif isinstance(reference, torch.Tensor):
        images, name = reference, f"tensor of {reference.shape[0] if reference.dim() else 0} images"
    else:
        raise TypeError(
            "reference must be images (N, 1, 28, 28) in [-1, 1], an ImageDataset, a dataset name "
            f"like 'mnist-embedded/heldout' or a ReferenceStats, got {type(reference).__name__}"
        )
    check_metric_images(images, "reference", min_count=2)
    clf = _classifier(classifier, images.device)
    feats, _ = classifier_outputs(images, clf, batch_size, name="reference")
    return ReferenceStats(feats, name, clf)


def _features(
    samples: torch.Tensor, reference: Any, classifier: FeatureExtractor | None, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, ReferenceStats]:
    """Sample features (N, d), sample logits (N, 10) and the reference's features, through one classifier
    (the reference's are computed here unless it is a :func:`reference_stats` already)."""
    ref = reference_stats(reference, classifier, batch_size)
    if classifier is not None and classifier is not ref.classifier:
        raise ValueError(
            "reference was computed with a different classifier than `classifier`: "
            "build it with reference_stats(images, classifier) using the same one"
        )
    f, logits = classifier_outputs(samples, ref.classifier, batch_size, name="samples")
    return f, logits, ref


def _fid_from_features(f_samples: torch.Tensor, f_ref: torch.Tensor) -> float:
    """torchmetrics FID between two feature sets (N, d) and (M, d), computed in float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    d = f_ref.shape[1]
    if min(f_samples.shape[0], f_ref.shape[0]) <= d:
        warnings.warn(
            f"FID from {f_samples.shape[0]} samples and {f_ref.shape[0]} reference images with {d} features: "
            "a covariance from no more images than features is singular and FID is strongly biased upwards",
            stacklevel=3,
        )
    m = FrechetInceptionDistance(feature=_Precomputed(d))
    m.update(f_ref.double(), real=True)
    m.update(f_samples.double(), real=False)
    return float(m.compute())


# The closed forms of the two distances, in float64 over given features: the same numbers as the
# torchmetrics-backed fid / kid (tests pin both), cheap enough to recompute a thousand times.


def frechet_distance(f_a: torch.Tensor, f_b: torch.Tensor) -> float:
    """FID's Frechet distance ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets
    (N, d), (M, d), in float64: the same number as :func:`fid` on those features (a test
    pins it), fast enough for a bootstrap (:mod:`diffusion_edu.intervals` resamples with it). Tr (S_a S_b)^(1/2) = sum of sqrt(eig(S_a^(1/2) S_b S_a^(1/2)))."""
    a, b = f_a.double(), f_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(s_a)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + s_a.trace() + s_b.trace() - 2 * cross)


def mmd2_unbiased(f_a: torch.Tensor, f_b: torch.Tensor) -> float:
    """KID's unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 over all rows (Binkowski et al. 2018, Eq. 3):
    sum_{i!=j} k(a_i, a_j) / (n(n-1)) + sum_{i!=j} k(b_i, b_j) / (m(m-1)) - 2 sum k(a_i, b_j) / (nm).
    With one subset holding every row, :func:`kid` gives the same number."""
    a, b = f_a.double(), f_b.double()
    d, n, m = a.shape[1], a.shape[0], b.shape[0]
    k_aa, k_bb, k_ab = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
    return float(
        (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
        + (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
        - 2 * k_ab.sum() / (n * m)
    )


def _kid_from_features(
    f_samples: torch.Tensor, f_ref: torch.Tensor, subsets: int, subset_size: int, generator: torch.Generator | None
) -> tuple[float, float]:
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, f_samples.shape[0], f_ref.shape[0])
    with warnings.catch_warnings():  # "will save all extracted features in buffer": we hand it the features
        warnings.simplefilter("ignore", UserWarning)
        m = KernelInceptionDistance(feature=_Precomputed(f_ref.shape[1]), subsets=subsets, subset_size=size)
    m.update(f_ref, real=True)
    m.update(f_samples, real=False)
    with _rng(generator):
        mean, std = m.compute()
    return float(mean), float(std)


def _is_from_logits(logits: torch.Tensor, splits: int, generator: torch.Generator | None) -> tuple[float, float]:
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():  # "will save all extracted features in buffer": 10 logits per image here
        warnings.simplefilter("ignore", UserWarning)
        m = InceptionScore(feature=_Precomputed(logits.shape[1]), splits=splits, normalize=False)
    m.update(logits.double())
    with _rng(generator), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # splits=1: the std of one value is NaN
        mean, std = m.compute()
    return float(mean), float(std)


def fid(
    samples: torch.Tensor, reference: Any, classifier: FeatureExtractor | None = None, batch_size: int = 1000
) -> float:
    """FID between samples (N, 1, 28, 28) in [-1, 1] and a reference, on classifier features.

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) (Heusel et al. 2017), means and covariances of
    the 128 features. Biased upwards when few images are used; below ~128 images the covariance is singular.
    """
    check_metric_images(samples, "samples", min_count=2)
    f, _, ref = _features(samples, reference, classifier, batch_size)
    return _fid_from_features(f, ref.features)


def kid(
    samples: torch.Tensor,
    reference: Any,
    classifier: FeatureExtractor | None = None,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, mean and std over
    ``subsets`` random subsets of min(subset_size, N, M) images, on classifier features.
    samples: (N, 1, 28, 28) in [-1, 1].

    Each subset costs three kernel matrices of subset_size^2 entries, so 10 subsets (not torchmetrics' 100)
    keep per-epoch evaluation cheap; every subset's estimate is unbiased, so fewer subsets only add spread.
    The std is the spread over subsets: when the subsets hold nearly all images it is close to 0 and says
    nothing about the estimate's error."""
    check_metric_images(samples, "samples", min_count=2)
    f, _, ref = _features(samples, reference, classifier, batch_size)
    return _kid_from_features(f, ref.features, subsets, subset_size, generator)


def inception_score(
    samples: torch.Tensor,
    classifier: FeatureExtractor | None = None,
    splits: int = IS_SPLITS,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over ``splits`` random splits.

    1 when every image gets the same confident class; 10 (the number of classes) at best.
    samples: (N, 1, 28, 28) in [-1, 1] with N >= splits.
    """
    check_metric_images(samples, "samples", min_count=max(2, splits))
    _, logits = classifier_outputs(samples, classifier, batch_size, name="samples")
    return _is_from_logits(logits, splits, generator)


def _check_labels(labels: Any, n: int, num_classes: int = 10) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(
            f"labels must be an integer tensor of shape ({n},), got "
            f"{type(labels).__name__ if not isinstance(labels, torch.Tensor) else labels.dtype}"
        )
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one per sample), got {tuple(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() > num_classes - 1):
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1} (the asked class; the null label {num_classes} has "
            f"no class to check), got values in {int(labels.min())}..{int(labels.max())}"
        )
    return labels.cpu().to(torch.int64)


def conditional_accuracy(
    samples: torch.Tensor, labels: torch.Tensor, classifier: FeatureExtractor | None = None, batch_size: int = 1000
) -> float:
    """Fraction of class-conditional samples (N, C, H, W) that the classifier assigns to the asked label (N,)."""
    check_metric_images(samples, "samples")
    labels = _check_labels(labels, samples.shape[0], getattr(classifier, "num_classes", 10))
    _, logits = classifier_outputs(samples, classifier, batch_size, name="samples")
    return float((logits.argmax(1) == labels).float().mean())


def evaluate(
    samples: torch.Tensor,
    reference: Any,
    labels: torch.Tensor | None = None,
    *,
    classifier: FeatureExtractor | None = None,
    is_splits: int = IS_SPLITS,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """FID, IS, KID (and conditional accuracy when ``labels`` are given) of samples against a reference.

    samples: (N, 1, 28, 28) in [-1, 1], N >= max(2, is_splits). reference: images, an ``ImageDataset``, a
    dataset name (``"mnist-embedded/heldout"``) or :func:`reference_stats`. Pass a :func:`reference_stats`
    when calling this repeatedly (every K training steps): each call then costs one classifier pass over
    the samples plus the metrics; images or a dataset name are passed through the classifier each call.
    Returns plain numbers: fid, is, is_std, kid_mean, kid_std, [conditional_accuracy], n_samples,
    n_reference, reference, feature_extractor.
    """
    check_metric_images(samples, "samples", min_count=max(2, is_splits))
    judge = classifier if classifier is not None else getattr(reference, "classifier", None)
    if labels is not None:
        labels = _check_labels(labels, samples.shape[0], getattr(judge, "num_classes", 10))
    f, logits, ref = _features(samples, reference, classifier, batch_size)
    is_mean, is_std = _is_from_logits(logits, is_splits, generator)
    kid_mean, kid_std = _kid_from_features(f, ref.features, kid_subsets, kid_subset_size, generator)
    out: dict[str, Any] = {
        "fid": _fid_from_features(f, ref.features),
        "is": is_mean,
        "is_std": is_std,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
    }
    if labels is not None:
        out["conditional_accuracy"] = float((logits.argmax(1) == labels).float().mean())
    out.update(
        n_samples=int(samples.shape[0]),
        n_reference=ref.n,
        reference=ref.name,
        feature_extractor=feature_extractor_name(ref.classifier),
    )
    return out


def noise_images(
    n: int,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    shape: tuple[int, int, int] = (1, 28, 28),
) -> torch.Tensor:
    """The noise ceiling's images (n, *shape): N(0, I) pixels clamped to [-1, 1] (a sampler that learned nothing)."""
    return torch.randn(n, *shape, generator=generator).clamp(-1.0, 1.0).to(device or "cpu")


def real_vs_real(
    n: int, reference: Any = "mnist-embedded/heldout", generator: torch.Generator | None = None, **kwargs: Any
) -> dict[str, Any]:
    """The floor: :func:`evaluate` of ``n`` random digits of the embedded training part (with their true
    labels) against the reference, the best a model of the training data can score with ``n`` samples."""
    from .data import load_embedded_mnist

    train = load_embedded_mnist("train")
    if not 2 <= n <= len(train):
        raise ValueError(f"n must lie in 2..{len(train)} (the size of the embedded training part), got {n}")
    idx = torch.randperm(len(train), generator=generator)[:n]
    images, labels = train.batch(idx)
    return evaluate(images, reference, labels, generator=generator, **kwargs)


def noise_ceiling(
    n: int, reference: Any = "mnist-embedded/heldout", generator: torch.Generator | None = None, **kwargs: Any
) -> dict[str, Any]:
    """The ceiling: :func:`evaluate` of ``n`` clamped Gaussian-noise images against the reference."""
    return evaluate(noise_images(n, generator), reference, generator=generator, **kwargs)


_OFFLINE_HINT = (
    "Run where the internet is reachable (Colab), or put the weights file into torch's cache "
    "({cache}). Offline, the MNIST-classifier metrics work: "
    "diffusion_edu.metrics.evaluate(samples, reference)."
)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> uint8 pixels 0..255 (what Inception metrics read): round((x + 1) * 127.5)."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _inception_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 images as they are, [-1, 1] images as uint8 (:func:`to_uint8`); grey repeated to RGB."""
    x = x if x.dtype == torch.uint8 else to_uint8(x)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def _inception_modules(splits: int, device: torch.device, references: list[str]) -> tuple[dict[str, Any], Any]:
    """torchmetrics' FID (one per reference set, keeping its reference features) and IS, on Inception-v3
    through torch-fidelity; offline or without torch-fidelity: :class:`WeightsNotAvailableError`."""
    import importlib.util

    import torch.hub

    hint = _OFFLINE_HINT.format(cache=f"{torch.hub.get_dir()}/checkpoints")
    if importlib.util.find_spec("torch_fidelity") is None:
        raise WeightsNotAvailableError(
            "Inception FID / IS need the torch-fidelity package, which torchmetrics uses to build Inception-v3 and "
            f"download its weights; it is not installed: `pip install torch-fidelity` (then online). {hint}"
        )
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    with download_guard("Inception FID / IS (torch-fidelity's Inception-v3)", hint), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fids = {
            name: FrechetInceptionDistance(feature=2048, reset_real_features=False).to(device) for name in references
        }
        is_metric = InceptionScore(feature="logits_unbiased", splits=splits, normalize=False).to(device)
    return fids, is_metric


@torch.no_grad()
def inception_metrics(
    samples: torch.Tensor,
    references: dict[str, torch.Tensor],
    ns: list[int],
    splits: int = IS_SPLITS,
    batch_size: int = 200,
    device: str | torch.device | None = None,
) -> dict[int, dict[str, Any]]:
    """Inception-v3 IS and FID (torchmetrics' defaults: torch-fidelity's weights, 2048 pool features for FID,
    logits for IS over ``splits`` splits) of the first n samples for each n in ``ns``, FID against each
    reference set, in one pass over the references. The numbers the reports quote; online only.

    samples: (N, C, H, W) uint8 or in [-1, 1], C = 1 (grey, repeated to RGB) or 3; references: name ->
    images of the same kind. Returns {n: {"status": "measured", "is", "is_std", "fid_<name>" ...}}.
    """
    if max(ns) > samples.shape[0]:
        raise ValueError(f"ns asks for {max(ns)} samples but only {samples.shape[0]} were given")
    if samples.shape[1] not in (1, 3):
        raise ValueError(f"samples must have 1 (grey) or 3 (RGB) channels for Inception, got {samples.shape[1]}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fids, is_metric = _inception_modules(splits, dev, list(references))
    for name, ref in references.items():
        for i in range(0, ref.shape[0], batch_size):
            fids[name].update(_inception_input(ref[i : i + batch_size].to(dev)), real=True)
    out = {}
    for n in sorted(ns):
        for m in (*fids.values(), is_metric):
            m.reset()  # FID keeps its reference features (reset_real_features=False)
        for i in range(0, n, batch_size):
            x = _inception_input(samples[i : min(i + batch_size, n)].to(dev))
            for m in fids.values():
                m.update(x, real=False)
            is_metric.update(x)
        is_mean, is_std = is_metric.compute()
        out[n] = {
            "status": "measured",
            "is": float(is_mean),
            "is_std": float(is_std),
            **{f"fid_{name}": float(m.compute()) for name, m in fids.items()},
        }
    return out


def inception_fid_is(
    samples: torch.Tensor, reference: torch.Tensor, splits: int = IS_SPLITS, batch_size: int = 100
) -> dict[str, Any]:
    """Inception-v3 FID and IS of all ``samples`` against one reference set (:func:`inception_metrics`),
    on the samples' device: the numbers the reports quote, for comparison with them.

    samples, reference: (N, C, H, W) and (M, C, H, W) in [-1, 1] with C = 1 (grey, repeated to RGB) or 3,
    N >= max(2, splits), M >= 2.
    """
    check_metric_images(samples, "samples", min_count=max(2, splits))
    check_metric_images(reference, "reference", min_count=2, shape=tuple(samples.shape[1:]))
    n = int(samples.shape[0])
    r = inception_metrics(samples, {"reference": reference}, [n], splits, batch_size, device=samples.device)[n]
    return {
        "fid_inception": r["fid_reference"],
        "is_inception": r["is"],
        "is_inception_std": r["is_std"],
        "n_samples": n,
        "n_reference": int(reference.shape[0]),
        "feature_extractor": "Inception-v3 (torch-fidelity weights; pool3 2048 for FID, logits for IS)",
    }


# ---------------------------------------------------------------------------------------------
# Precision and recall (Kynkaanniemi et al. 2019) on the classifier's features.
# ---------------------------------------------------------------------------------------------

PR_K = 3  # Kynkaanniemi et al.'s choice


def _kth_radii(f: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance (N,) from each feature row to its k-th nearest *other* row of f (N, d)."""
    out = []
    for i in range(0, f.shape[0], chunk):
        d = torch.cdist(f[i : i + chunk], f)  # (chunk, N); each row holds its own 0 once
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _inside(f_query: torch.Tensor, f_ball: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Bool (Q,): whether each query row lies in some ball ||q - b|| <= r_b around the rows of f_ball."""
    out = []
    for i in range(0, f_query.shape[0], chunk):
        d = torch.cdist(f_query[i : i + chunk], f_ball)  # (chunk, M)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def _check_k(k: Any, *counts: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if min(counts) <= k:
        raise ValueError(f"precision / recall with k={k} need more than k images in each set, got {list(counts)}")
    return k


def precision_recall_from_features(f_samples: torch.Tensor, f_ref: torch.Tensor, k: int = PR_K) -> dict[str, float]:
    """Precision and recall of generated features (N, d) against reference features (M, d).

    Kynkaanniemi et al. (2019), Eq. 1-3: the manifold of a set Phi is the union of balls around its points,
    each with the radius to that point's k-th nearest neighbour in Phi; f(phi, Phi) = 1 when phi lies in it.
    precision = mean over samples of f(phi_g, Phi_r) (how many samples look real);
    recall = mean over reference images of f(phi_r, Phi_g) (how much of the real data the samples cover).
    """
    if f_samples.dim() != 2 or f_ref.dim() != 2 or f_samples.shape[1] != f_ref.shape[1]:
        raise ValueError(
            f"f_samples and f_ref must be (N, d) and (M, d) with the same d, got "
            f"{tuple(f_samples.shape)} and {tuple(f_ref.shape)}"
        )
    k = _check_k(k, f_samples.shape[0], f_ref.shape[0])
    f_samples, f_ref = f_samples.double(), f_ref.double()
    precision = _inside(f_samples, f_ref, _kth_radii(f_ref, k)).double().mean()
    recall = _inside(f_ref, f_samples, _kth_radii(f_samples, k)).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def precision_recall(
    samples: torch.Tensor,
    reference: Any,
    classifier: FeatureExtractor | None = None,
    k: int = PR_K,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Precision and recall (Kynkaanniemi et al. 2019, k-NN manifolds, k = 3) of samples (N, 1, 28, 28) in
    [-1, 1] against a reference, in the same 128 classifier features as :func:`fid`.

    High precision with low recall is a sampler that draws good digits of too few kinds (mode collapse);
    FID mixes the two into one number. Returns {"precision", "recall", "k"}.
    """
    check_metric_images(samples, "samples", min_count=2)
    f, _, ref = _features(samples, reference, classifier, batch_size)
    return {**precision_recall_from_features(f, ref.features, k), "k": k}


__all__ += ["precision_recall", "precision_recall_from_features", "frechet_distance", "mmd2_unbiased"]
