"""The evaluation pipeline of the MNIST chapters: samples -> metrics (with their intervals) -> the
columns a results file holds.

:func:`measure` scores samples against the 1,005 held-out digits with the book's kit (classifier-
feature FID, KID, IS, precision and recall, conditional accuracy) and adds each metric's bootstrap
interval; :func:`metric_columns` turns {setting: record} into the {metric: {setting: value}} layout that the
ledger and the notebooks read. The classifier and the reference's features come from an explicit
:class:`~.store.Cache` when one is passed (computed once per chapter run), else are made per call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..results import current_tier

__all__ = [
    "heldout_reference",
    "book_classifier",
    "reference_features",
    "measure",
    "metric_columns",
    "seed_columns",
    "SEED_METRICS",
    "for_metrics",
    "images_only",
    "real_data_floor",
    "fitted_gaussian",
    "gaussian_baseline",
    "beats_baseline",
    "DIGITS_WITHIN",
    "reads_as_digits",
    "with_baseline",
    "baseline_record",
    "BASELINE",
    "INTERVAL_KEYS",
]

# the metrics whose percentile-bootstrap interval every results file keeps (<metric>_interval)
INTERVAL_KEYS = ("fid", "kid_mean", "is", "precision", "recall", "conditional_accuracy")


def _memo(cache: Any, key: tuple, make):
    return make() if cache is None else cache.get(key, make)


def heldout_reference(cache: Any = None) -> torch.Tensor:
    """The 1,005 held-out embedded digits in [-1, 1]: the reference set of every MNIST FID in the book."""
    from ..data import load_embedded_mnist

    return _memo(cache, ("reference", "heldout"), lambda: load_embedded_mnist("heldout").tensors()[0])


def book_classifier(cache: Any = None):
    """The shipped MNIST classifier on the CPU (the feature extractor of every MNIST metric)."""
    from ..metrics import load_mnist_classifier

    return _memo(cache, ("classifier", "cpu"), lambda: load_mnist_classifier(torch.device("cpu")))


def reference_features(classifier: Any = None, cache: Any = None):
    """:func:`~diffusion_edu.metrics.reference_stats` of the held-out digits through ``classifier``
    (default :func:`book_classifier`)."""
    from ..metrics import reference_stats

    if classifier is not None:  # a caller's own classifier: its features are not cached
        return reference_stats(heldout_reference(cache), classifier)
    clf = book_classifier(cache)
    return _memo(cache, ("reference", "heldout_stats"), lambda: reference_stats(heldout_reference(cache), clf))


def measure(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    intervals: bool = True,
    level: float = 0.95,
    cache: Any = None,
    reference: Any = None,
    **kwargs,
) -> dict[str, Any]:
    """The evaluation kit on samples vs the held-out digits (or ``reference``: a
    :func:`~diffusion_edu.metrics.reference_stats`, or images or a dataset for it to pass through the
    ``classifier`` in ``kwargs``, for other data): classifier-feature FID, KID, IS, precision
    and recall (k = 3), and the conditional accuracy when ``labels`` are given, as plain floats; with
    ``intervals`` also each metric's ``level`` percentile-bootstrap interval over the samples
    (``fid_interval``, ...: {estimate, low, high, level, method, n_boot, n};
    :func:`diffusion_edu.intervals.evaluation_intervals`), so every results file keeps its noise.
    ``kwargs`` go to :func:`diffusion_edu.metrics.evaluate` (``classifier``, ``generator``, ...)."""
    from ..intervals import evaluation_intervals
    from ..metrics import classifier_outputs, evaluate, precision_recall_from_features, reference_stats

    x, y = images.float().cpu(), None if labels is None else labels.cpu()
    clf = kwargs.pop("classifier", None)
    ref = reference_stats(reference, clf) if reference is not None else reference_features(clf, cache)
    out = evaluate(x, ref, labels=y, **kwargs)
    f, logits = classifier_outputs(x, ref.classifier)
    out.update(precision_recall_from_features(f, ref.features), pr_k=3)
    if intervals:
        gen = kwargs.get("generator")
        seed = int(torch.randint(0, 2**62, (1,), generator=gen)) if gen is not None else 0
        n_boot = {k: 50 for k in INTERVAL_KEYS} if current_tier() == "smoke" else None  # smoke numbers are never shown
        out.update(
            evaluation_intervals(
                f,
                logits,
                ref.features,
                y,
                estimates={k: out[k] for k in INTERVAL_KEYS if k in out},
                n_boot=n_boot,
                level=level,
                generator=torch.Generator().manual_seed(seed),
            )
        )
    return out


def metric_columns(records: dict[str, dict], keys: Iterable[str] | None = None) -> dict[str, dict]:
    """{setting: record} -> {metric: {setting: value}}: the layout the ledger and the notebooks read.

    ``keys`` None: every key of the first record (all records hold the same keys). Else those keys, then
    ``precision`` / ``recall`` where a record holds them, then the ``<key>_interval`` of each key that
    has one; a record without a key gives None."""
    if keys is None:
        metrics = next(iter(records.values())).keys()
        return {m: {k: r[m] for k, r in records.items()} for m in metrics}
    keys = [*keys, *(k for k in ("precision", "recall") if any(k in r for r in records.values()))]
    keys += [f"{k}_interval" for k in keys if any(f"{k}_interval" in r for r in records.values())]
    return {k: {name: rec.get(k) for name, rec in records.items()} for k in keys}


# the metrics whose spread over training seeds the chapters judge rankings by (seed_columns)
SEED_METRICS = ("fid", "is", "conditional_accuracy")


def seed_columns(
    per_seed: dict[int, dict[str, dict[str, Any]]], keys: Iterable[str], metrics: Iterable[str] = SEED_METRICS
) -> dict[str, Any]:
    """{training seed: {setting: measured record}} (two seeds or more) -> the layout of a results file's
    ``seeds``: for each metric, ``<metric>`` {setting: mean over the seeds}, ``<metric>_interval`` {setting:
    Student's t interval over the seeds (:func:`~diffusion_edu.intervals.seed_spread`)} and
    ``<metric>_per_seed`` {setting: [the value of each seed]}, plus ``training_seeds``."""
    from ..intervals import seed_spread

    seeds, keys = sorted(per_seed), list(keys)
    out: dict[str, Any] = {"training_seeds": seeds}
    for metric in metrics:
        values = {k: [float(per_seed[s][k][metric]) for s in seeds] for k in keys}
        spreads = {k: seed_spread(v) for k, v in values.items()}
        out[metric] = {k: iv.estimate for k, iv in spreads.items()}
        out[f"{metric}_interval"] = {k: iv.to_dict() for k, iv in spreads.items()}
        out[f"{metric}_per_seed"] = values
    return out


def for_metrics(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Samples made measurable (non-finite values zeroed, all clamped to [-1, 1]) and how much that changed:
    the fractions of non-finite pixels and of pixels outside [-1, 1], and the largest |pixel|."""
    finite = torch.isfinite(x)
    out_of_range = finite & (x.abs() > 1.0 + 1e-6)
    stats = {
        "non_finite": float((~finite).float().mean()),
        "out_of_range": float(out_of_range.float().mean()),
        "max_abs": float(x[finite].abs().max()) if finite.any() else float("nan"),
    }
    return torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0), stats


def images_only(out: Any) -> torch.Tensor:
    """A sampler's output when no trajectory was asked for: the images (typed for the checker)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"expected the sampler's images, got {type(out).__name__} (was a trajectory asked for?)")
    return out


def real_data_floor(n: int) -> dict[str, Any] | None:
    """The real-vs-real FID floor at n samples (mean and spread over its seeds) and at the largest n
    measured, from results/metrics/floors.json; None when that file or that n is missing."""
    from ..results import read_results, results_dir

    path = results_dir() / "metrics" / "floors.json"
    if not path.is_file():
        return None
    rec = read_results(path)
    rows = {int(r["n"]): r for r in rec["data"]["floor"]}
    if n not in rows:
        return None
    big = max(rows)
    return {
        "n": n,
        "fid_mean": rows[n]["fid_mean"],
        "fid_std": rows[n]["fid_std"],
        "n_largest": big,
        "fid_mean_largest": rows[big]["fid_mean"],
        "source": "metrics/floors.json",
        "tier": rec["tier"],
        "created": rec.get("created"),
    }


BASELINE = "a Gaussian fitted to the training digits' pixels (their mean and covariance)"


def fitted_gaussian(images: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws x = mu + (X - mu)^T w / sqrt(N), w ~ N(0, I_N), from ``images`` X (N, C, H, W): a Gaussian
    with exactly the images' empirical mean mu and covariance, in float64, shaped like the images.

    The yardstick of "has the network learned digits at all": these draws know every pixel's mean,
    spread and pairwise correlation, and nothing more (grey blurs in the shape of an average digit)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of draws) must be an int >= 1, got {n!r}")
    if images.dim() < 2 or images.shape[0] < 2:
        raise ValueError(f"images must hold at least 2 images (N, ...), got shape {tuple(images.shape)}")
    import math

    X = images.flatten(1).double()  # (N, D)
    mu = X.mean(0)
    w = torch.randn(n, X.shape[0], generator=generator, dtype=torch.float64)  # (n, N)
    return (mu + w @ (X - mu) / math.sqrt(X.shape[0])).reshape(n, *images.shape[1:])


def gaussian_baseline(n: int, cache: Any = None, seed: int = 0) -> dict[str, Any]:
    """:func:`measure` of n draws of :func:`fitted_gaussian` fitted to the embedded training digits, clipped
    to [-1, 1] like samples: the score of a model that learned the pixels' first two moments only
    (:data:`BASELINE`). A network whose FID interval does not lie wholly below this one's has not been
    shown to draw digits (:func:`beats_baseline`); the chapters rank no such networks."""
    from ..data import load_embedded_mnist

    def make() -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        x = fitted_gaussian(load_embedded_mnist("train").tensors()[0], n, gen).float().clamp(-1, 1)
        out = measure(x, cache=cache, generator=torch.Generator().manual_seed(seed + 1))
        out.update(what=BASELINE, n=n, seed=seed)
        return out

    return _memo(cache, ("baseline", "gaussian", n, seed), make)


def beats_baseline(record: dict[str, Any], baseline: dict[str, Any]) -> bool | None:
    """Whether a measured record's FID interval lies wholly below the baseline's (None: either lacks one)."""
    from ..intervals import interval_from

    mine, base = interval_from(record.get("fid_interval")), interval_from(baseline.get("fid_interval"))
    if mine is None or base is None:
        return None
    return mine.high < base.low


# A grid whose FID is more than this many times the n-matched real-digit floor (floors.json) shows strokes
# rather than digits: a threshold set by eye on the book's grids (chapter 4), which are shown beside every verdict.
DIGITS_WITHIN = 20.0


def reads_as_digits(record: dict[str, Any], floor_fid: float, within: float = DIGITS_WITHIN) -> str | None:
    """Whether a measured record's samples read as digits, judged from its FID interval against ``within``
    times the real-digit floor ``floor_fid`` at the same n: "digits" when the whole interval lies at or below
    it, "strokes" when the whole interval lies above it, "undecided" when the interval straddles it (the
    book then does not say the network draws digits). None when the record holds no FID interval."""
    from ..intervals import interval_from

    if not (isinstance(floor_fid, (int, float)) and floor_fid > 0):
        raise ValueError(f"floor_fid must be a positive FID (the real-digit floor at the same n), got {floor_fid!r}")
    if not within > 0:
        raise ValueError(f"within must be > 0, got {within!r}")
    one = interval_from(record.get("fid_interval"))
    if one is None:
        return None
    line = within * floor_fid
    if one.high <= line:
        return "digits"
    if one.low > line:
        return "strokes"
    return "undecided"


def with_baseline(data: dict[str, Any], key: str, records: dict[str, dict[str, Any]], baseline: dict[str, Any]) -> None:
    """Mark each of ``records`` with ``beats_baseline`` (:func:`beats_baseline`) and store the baseline with
    those flags under ``data[key + "_baseline"]``, beside the ranking at ``data[key]``: the ledger ranks no
    entries that all fail it (:func:`diffusion_edu.ledger.baseline_key`)."""
    for r in records.values():
        r["beats_baseline"] = beats_baseline(r, baseline)
    data[key + "_baseline"] = {**baseline, "beats": {k: r["beats_baseline"] for k, r in records.items()}}


def baseline_record(n: int, cache: Any = None) -> dict[str, Any]:
    """The yardstick that the chapters' rankings are checked against (:func:`gaussian_baseline` at n samples),
    as results files store it: what it is, its n, FID and FID interval, IS, precision and recall."""
    b = gaussian_baseline(n, cache)
    keep = ("what", "n", "fid", "fid_interval", "precision", "recall", "is")
    return {k: b[k] for k in keep if k in b}
