"""The ``score`` command: FID, KID and IS of saved samples against a dataset's held-out split, on the
features of a feature classifier (the shipped MNIST one, or one that ``train-classifier`` trained on the
data), written to a results file that names the classifier::

    python -m diffusion_edu sample --checkpoint runs/mine/checkpoint.pt --n 200 --tensor samples.pt
    python -m diffusion_edu train-classifier --dataset image-folder --data-path photos/ --image-size 32
    python -m diffusion_edu score samples.pt --dataset image-folder --data-path photos/ --image-size 32 \\
        --classifier classifier_image-folder.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_samples", "score_samples", "add_cli"]


def load_samples(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, C, H, W) in [-1, 1] and labels (N,) or None from a ``sample --tensor`` file (``torch.save``
    of ``{"images", "labels"}``) or an ``.npz`` / ``.npy`` array file (the ``array-file`` format)."""
    from .data import BadDataError, DatasetNotAvailableError, to_model_range

    path = Path(path)
    if not path.is_file():
        raise DatasetNotAvailableError(f"no samples file {path}")
    if path.suffix in (".npz", ".npy"):
        from .data_files import load_array_file

        ds = load_array_file(path, "all")
        return to_model_range(ds.images), (ds.labels if ds.num_classes is not None else None)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one holding pickled code
        raise BadDataError(f"cannot read {path} as samples saved by `sample --tensor` ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("images"), torch.Tensor):
        raise BadDataError(
            f"{path} holds no 'images' tensor: write it with python -m diffusion_edu sample --tensor FILE"
        )
    labels = obj.get("labels")
    return obj["images"].float(), labels if isinstance(labels, torch.Tensor) else None


def score_samples(
    samples: torch.Tensor,
    reference,
    classifier=None,
    labels: torch.Tensor | None = None,
    is_splits: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`diffusion_edu.metrics.evaluate` of samples against a reference (images, an ``ImageDataset``),
    on ``classifier``'s features (None: the shipped MNIST classifier), with a seeded generator."""
    from .metrics import evaluate

    return evaluate(
        samples,
        reference,
        labels,
        classifier=classifier,
        is_splits=is_splits,
        generator=torch.Generator().manual_seed(seed),
    )


def _cmd_score(args: argparse.Namespace) -> int:
    from .classifier import load_classifier
    from .data import BadDataError, DatasetNotAvailableError, load_dataset
    from .results import current_tier, write_results

    t0 = time.perf_counter()
    try:
        samples, labels = load_samples(args.samples)
        reference = load_dataset(
            args.dataset, args.split, path=args.data_path, image_size=args.image_size, channels=args.channels
        )
        classifier = load_classifier(args.classifier) if args.classifier else None
        if classifier is None and reference.image_shape != (1, 28, 28):
            raise BadDataError(
                f"{reference.name!r} has images of shape {reference.image_shape}; the shipped classifier "
                "reads 1x28x28 digits. Train one on this data (python -m diffusion_edu train-classifier "
                "--dataset ...) and pass it with --classifier FILE"
            )
        if (
            labels is not None
            and classifier is not None
            and getattr(classifier, "num_classes", 10) < int(labels.max()) + 1
        ):
            labels = None  # the samples' labels are not the classifier's classes: no conditional accuracy
        data = score_samples(
            samples, reference, classifier, labels if args.accuracy else None, args.is_splits, args.seed
        )
    except (BadDataError, ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DatasetNotAvailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    data["classifier_file"] = (
        str(args.classifier) if args.classifier else "shipped (diffusion_edu/assets/mnist_classifier.pt)"
    )
    data["samples_file"] = str(args.samples)
    out = Path(args.out) if args.out else Path(args.samples).with_suffix(".scores.json")
    config = {k: v for k, v in vars(args).items() if k != "func"}
    write_results(out, "score", data, config, current_tier(), time.perf_counter() - t0)
    print(
        json.dumps(
            {k: data[k] for k in ("fid", "kid_mean", "is", "n_samples", "n_reference", "feature_extractor")}
            | {"results": str(out)}
        )
    )
    return 0


def add_cli(subparsers) -> None:
    """The ``score`` command."""
    from .data import DATASETS

    p = subparsers.add_parser(
        "score",
        help="FID / KID / IS of saved samples against a dataset's held-out split",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("samples", help="samples saved by `sample --tensor FILE` (or an .npz / .npy array file)")
    p.add_argument("--dataset", choices=list(DATASETS), default="mnist-embedded", help="the reference data")
    p.add_argument("--split", default="heldout", help="its split (default heldout: the test set where there is one)")
    p.add_argument("--data-path", default=None, help="folder or array file (image-folder, array-file)")
    p.add_argument("--image-size", type=int, default=None, help="as in training (centre-crop and resize)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="as in training")
    p.add_argument(
        "--classifier", default=None, help="a train-classifier weights file (default: the shipped MNIST one)"
    )
    p.add_argument("--is-splits", type=int, default=10, help="IS splits (needs at least this many samples)")
    p.add_argument("--accuracy", action="store_true", help="also the conditional accuracy of labelled samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results file (default: SAMPLES.scores.json)")
    p.set_defaults(func=_cmd_score)
