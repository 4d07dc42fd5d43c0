"""The book's feature classifier: a small CNN whose features and class probabilities drive the metrics.

(Longer than the package's usual ~400 lines once formatted: the network, its training, its file format
and its command are one contract, that the metrics' judge is the classifier the file describes.)

Inception-v3 features were made for 299x299 colour photographs; on 28x28 grey digits they mislead
(Reports A and E). Report E replaced Inception with a small MNIST CNN (two conv + pool layers and a
linear layer, about 99% accurate). The network here follows that recipe with one more conv + pool
stage, batch norm (faster training) and a 128-unit hidden layer, whose activations are the
*penultimate features* used by FID and KID (:mod:`diffusion_edu.metrics`); the final linear layer gives
the logits used by IS and by the conditional accuracy. 128 features keep FID's covariance matrices well
estimated from a few hundred samples; in a two-stage design the layer before the logits is the flattened
conv map (3,136 values for 64 channels at 7 x 7), far too many for that.

Input: images (B, 1, 28, 28) in [-1, 1] (the package's image convention). Output: logits (B, 10).
The shipped weights (``diffusion_edu/assets/mnist_classifier.pt``, about 0.4 MB) come from
``python -m diffusion_edu train-classifier``; its results file (``results/metrics/mnist_classifier.json``)
states the held-out accuracy, and a test re-measures it.

The same network, built with ``in_channels``, ``image_size`` and ``num_classes`` of another dataset, is the
feature classifier for any data the package trains on (``train-classifier --dataset fashion-mnist``,
``--dataset image-folder --data-path DIR``, ...): it is trained on the dataset's training split and scored
on its held-out split, and the metrics use it for images of its shape. After the third pooling an adaptive
average pool brings the map to 3 x 3 (the identity at 28 x 28, so the shipped weights are unchanged).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_images

__all__ = [
    "FeatureClassifier",
    "MNISTClassifier",
    "ClassifierFeatures",
    "ClassifierLogits",
    "ClassifierConfig",
    "train_classifier",
    "classifier_accuracy",
    "save_classifier",
    "load_classifier",
    "load_mnist_classifier",
    "shipped_classifier_path",
    "random_shift",
    "add_cli",
]


def _stage(c_in: int, c_out: int) -> list[nn.Module]:
    """conv 3x3 (same size) -> batch norm -> ReLU -> 2x2 max-pool (halves H and W, rounding down)."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]


class FeatureClassifier(nn.Module):
    """Three conv 3x3 + batch-norm + ReLU + max-pool stages, a hidden linear layer (the features), a linear head.

    Shapes (MNIST): x (B, 1, 28, 28) in [-1, 1] -> conv stages (B, c1, 14, 14) -> (B, c2, 7, 7) -> (B, c3, 3, 3)
    -> features (B, num_features) -> logits (B, 10). Other data: x (B, in_channels, image_size, image_size),
    the last map average-pooled to 3 x 3, logits (B, num_classes). ``trained_on`` names the training data.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64),  # three stages, checked below
        num_features: int = 128,
        dropout: float = 0.25,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        trained_on: str = "mnist-embedded",
    ):
        super().__init__()
        if len(channels) != 3 or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be three positive ints (one per conv stage), got {channels!r}")
        if num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels!r}")
        if type(image_size) is not int or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8 (three 2x2 poolings), got {image_size!r}")
        if type(num_classes) is not int or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (a classifier needs two classes), got {num_classes!r}")
        c1, c2, c3 = (int(c) for c in channels)
        self.channels = (c1, c2, c3)
        self.num_features = int(num_features)  # torchmetrics reads this instead of probing with a 299x299 image
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.trained_on = str(trained_on)
        self.conv = nn.Sequential(
            *_stage(in_channels, c1),  # (B, c1, 14, 14) at 28 x 28
            *_stage(c1, c2),  # (B, c2, 7, 7)
            *_stage(c2, c3),  # (B, c3, 3, 3)
            nn.AdaptiveAvgPool2d(3),  # (B, c3, 3, 3) at any size (the identity at 28 x 28)
        )
        self.hidden = nn.Linear(c3 * 3 * 3, self.num_features)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, num_features), after the ReLU: what FID and KID compare."""
        h = self.conv(x).flatten(1)  # (B, c3 * 9)
        return F.relu(self.hidden(h))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs from one pass: features (B, num_features) and logits (B, 10)."""
        f = self.features(x)
        return f, self.head(self.dropout(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for images (B, in_channels, image_size, image_size) in [-1, 1]."""
        return self.features_and_logits(x)[1]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it reads."""
        return (self.in_channels, self.image_size, self.image_size)

    def describe(self) -> str:
        """What results files record as the feature extractor."""
        return (
            f"diffusion_edu feature classifier trained on {self.trained_on} ({self.num_features} penultimate "
            f"features; logits over {self.num_classes} classes for IS; input {'x'.join(map(str, self.input_shape))})"
        )

    def arch(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able (saved with the weights)."""
        return {
            "channels": list(self.channels),
            "num_features": self.num_features,
            "dropout": self.dropout.p,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "trained_on": self.trained_on,
        }


MNISTClassifier = FeatureClassifier  # the name from when the metrics read MNIST only


class ClassifierFeatures(nn.Module):
    """torchmetrics feature module for FID / KID: images (B, C, H, W) in [-1, 1] -> features (B, 128)."""

    def __init__(self, classifier: FeatureClassifier):
        super().__init__()
        self.classifier, self.num_features = classifier, classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


class ClassifierLogits(nn.Module):
    """torchmetrics feature module for IS: images (B, C, H, W) in [-1, 1] -> logits (B, K) (IS applies softmax)."""

    def __init__(self, classifier: FeatureClassifier):
        super().__init__()
        self.classifier, self.num_features = classifier, classifier.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


@dataclass
class ClassifierConfig:
    """Everything that defines a classifier training run (JSON-able; stored in the results file).
    ``dataset``, ``data_path``, ``image_size``, ``channels``: as in :func:`diffusion_edu.data.load_dataset`."""

    dataset: str = "mnist-embedded"
    data_path: str | None = None
    image_size: int | None = None
    image_channels: int | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    max_shift: int = 2  # augmentation: random shifts of up to this many pixels in x and y
    channels: tuple[int, int, int] = (16, 32, 64)
    num_features: int = 128
    dropout: float = 0.25
    seed: int = 0
    max_steps: int | None = None  # stop early (smoke tier and tests)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by its own random offset in -max_shift..max_shift pixels, filling with background -1.

    x: (B, C, H, W) in [-1, 1]; returns the same shape.
    """
    if max_shift <= 0:
        return x
    B, C, H, W = x.shape
    s = int(max_shift)
    xp = F.pad(x, (s, s, s, s), value=-1.0)  # (B, C, H + 2s, W + 2s)
    off = torch.randint(0, 2 * s + 1, (2, B), generator=generator).to(x.device)
    rows = off[0][:, None] + torch.arange(H, device=x.device)[None]  # (B, H)
    cols = off[1][:, None] + torch.arange(W, device=x.device)[None]  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return xp[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def _splits(config: ClassifierConfig):
    """The training split and the held-out split (the official test set where there is one)."""
    from .data import DATASETS, BadDataError, load_dataset

    if config.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {config.dataset!r}")
    opts: dict[str, Any] = {
        "path": config.data_path,
        "image_size": config.image_size,
        "channels": config.image_channels,
    }
    train, heldout = load_dataset(config.dataset, "train", **opts), load_dataset(config.dataset, "heldout", **opts)
    if train.num_classes is None:
        raise BadDataError(
            f"{train.name!r} is unlabelled, and the feature classifier learns from labels: sort the "
            "images into class subfolders (or give an array file labels); without a classifier, "
            "Inception features (online) still score RGB images"
        )
    if len(heldout) == 0 or len(train) == 0:
        raise BadDataError(
            f"{train.name!r} needs images in both its training and held-out split (got {len(train)} and {len(heldout)})"
        )
    return train, heldout


@torch.no_grad()
def classifier_accuracy(
    classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> dict[str, Any]:
    """Fraction of images (N, C, H, W) in [-1, 1] whose arg-max class is ``labels`` (N,), overall and per class."""
    check_images(images, "images")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    pred = torch.cat(
        [
            classifier(images[i : i + batch_size].to(device)).argmax(1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )  # (N,)
    classifier.train(was_training)
    labels = labels.cpu()
    correct = pred == labels
    k_max = getattr(classifier, "num_classes", 10)
    per_class = [float(correct[labels == k].float().mean()) if (labels == k).any() else None for k in range(k_max)]
    return {
        "accuracy": float(correct.float().mean()),
        "correct": int(correct.sum()),
        "n": int(labels.numel()),
        "per_class_accuracy": per_class,
    }


def train_classifier(
    config: ClassifierConfig | None = None, device: str | torch.device | None = None, progress: bool = True
) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Train the classifier with cross-entropy (Adam, cosine-decayed learning rate, random shifts).

    Returns the trained network (eval mode) and a summary: held-out accuracy overall and per class,
    the loss per epoch and the number of steps. Deterministic given ``config.seed`` on one device;
    the global random state is left as it was.
    """
    config = config if config is not None else ClassifierConfig()
    device = torch.device(device or "cpu")
    train_set, eval_set = _splits(config)
    c, h, _ = train_set.image_shape
    n = len(train_set)
    steps_per_epoch = (n + config.batch_size - 1) // config.batch_size
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(config.max_steps, total)
    g = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # weight init and dropout draw from a seeded global state
        torch.manual_seed(config.seed)
        model = FeatureClassifier(
            tuple(config.channels),
            config.num_features,
            config.dropout,
            in_channels=c,
            image_size=h,
            num_classes=max(train_set.num_classes, 2),
            trained_on=train_set.name,
        ).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(total, 1), pct_start=0.15)
        model.train()
        step, losses = 0, []
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=g)
            epoch_loss, seen = 0.0, 0
            for i in range(0, n, config.batch_size):
                if step >= total:
                    break
                x, y = train_set.batch(order[i : i + config.batch_size])
                x = random_shift(x, config.max_shift, g).to(device)
                loss = F.cross_entropy(model(x), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                epoch_loss += loss.item() * y.numel()
                seen += y.numel()
            if seen:
                losses.append(epoch_loss / seen)
                if progress:
                    print(f"epoch {epoch + 1}/{config.epochs}: train loss {losses[-1]:.4f}", flush=True)
    model.eval()
    images, labels = eval_set.tensors()
    acc = classifier_accuracy(model, images, labels)
    summary = {
        "heldout_accuracy": acc["accuracy"],
        "heldout_correct": acc["correct"],
        "heldout_n": acc["n"],
        "per_class_accuracy": acc["per_class_accuracy"],
        "eval_split": eval_set.name,
        "train_split": train_set.name,
        "n_train": n,
        "steps": step,
        "train_loss_per_epoch": losses,
    }
    return model, summary


def save_classifier(model: FeatureClassifier, path: str | Path) -> str:
    """Save architecture and float32 weights (``torch.load(weights_only=True)`` reads them); return the sha256."""
    import io

    from .results import atomic_write_bytes

    buf = io.BytesIO()
    sd = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    torch.save({"format": 1, "arch": model.arch(), "state_dict": sd}, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_classifier(path: str | Path, device: str | torch.device | None = None) -> FeatureClassifier:
    """Load a classifier saved by :func:`save_classifier`: eval mode, gradients off (frozen)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no classifier file {path}: train one with python -m diffusion_edu train-classifier")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != 1:
        raise ValueError(f"{path} is not a classifier file written by diffusion_edu.classifier.save_classifier")
    arch = obj["arch"]
    extra = {k: arch[k] for k in ("in_channels", "image_size", "num_classes", "trained_on") if k in arch}
    model = FeatureClassifier(tuple(arch["channels"]), arch["num_features"], arch["dropout"], **extra)
    model.load_state_dict(obj["state_dict"])
    model.eval().requires_grad_(False)
    return model.to(torch.device(device or "cpu"))


def shipped_classifier_path() -> Path:
    """Where the package's trained weights live (``diffusion_edu/assets/mnist_classifier.pt``)."""
    return Path(str(resources.files("diffusion_edu").joinpath("assets/mnist_classifier.pt")))


def load_mnist_classifier(device: str | torch.device | None = None) -> FeatureClassifier:
    """The shipped classifier (eval mode, frozen): (B, 1, 28, 28) in [-1, 1] -> logits (B, 10); ``.features(x)``."""
    path = shipped_classifier_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped classifier weights at {path}: train them with "
            f"`python -m diffusion_edu train-classifier --out {path}`"
        )
    return load_classifier(path, device)


def _cmd_train(args: argparse.Namespace) -> int:
    import sys

    from .data import BadDataError, DatasetNotAvailableError
    from .results import current_tier, results_dir, write_results

    if args.threads:
        torch.set_num_threads(args.threads)
    tier = current_tier()
    mnist = args.dataset in ("mnist-embedded", "mnist")
    config = ClassifierConfig(
        dataset=args.dataset,
        data_path=args.data_path,
        image_size=args.image_size,
        image_channels=args.channels,
        epochs=args.epochs,
        seed=args.seed,
        max_steps=args.max_steps if args.max_steps else (20 if tier == "smoke" else None),
    )
    start = time.perf_counter()
    try:
        model, summary = train_classifier(config, device=args.device, progress=not args.quiet)
    except (BadDataError, DatasetNotAvailableError) as e:  # nothing has been written
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, BadDataError) else 1
    wall = time.perf_counter() - start
    out = Path(args.out or ("mnist_classifier.pt" if mnist else f"classifier_{args.dataset}.pt"))
    sha = save_classifier(model, out)
    if args.results:
        res_path = Path(args.results)
    elif tier == "smoke" or not mnist:  # smoke numbers never go into results/; the reader's data: beside the weights
        res_path = out.with_suffix(".json")
    else:
        res_path = (
            results_dir()
            / "metrics"
            / ("mnist_classifier.json" if args.dataset == "mnist-embedded" else f"mnist_classifier_{args.dataset}.json")
        )
    data = {
        **summary,
        "weights_file": out.name,
        "weights_sha256": sha,
        "weights_bytes": out.stat().st_size,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "classifier": model.describe(),
    }
    write_results(
        res_path,
        "metrics/mnist_classifier" if mnist else "metrics/classifier",
        data,
        asdict(config),
        tier,
        wall,
        device=args.device,
    )
    print(
        f"held-out accuracy {summary['heldout_accuracy']:.4f} on {summary['eval_split']} "
        f"({summary['heldout_correct']}/{summary['heldout_n']}); weights {out}; results {res_path}; {wall:.1f} s"
    )
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train-classifier`` to ``python -m diffusion_edu``."""
    from ._errors import int_at_least
    from .data import DATASETS

    p = subparsers.add_parser(
        "train-classifier",
        help="train the feature classifier used by the metrics (any dataset)",
        description="Train the feature classifier on a dataset's training split and score it on "
        "its held-out split; FID, KID and IS of samples shaped like that data use it "
        "(score --classifier FILE).",
    )
    p.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default="mnist-embedded",
        help="mnist-embedded: the 8,995 shipped training digits (offline); mnist, fashion-mnist, cifar10: "
        "torchvision (downloads); image-folder, array-file: your files (--data-path)",
    )
    p.add_argument("--data-path", default=None, help="the folder (image-folder) or .npz/.npy file (array-file)")
    p.add_argument("--image-size", type=int, default=None, help="centre-crop and resize to this size (default: as is)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="1 grey, 3 RGB (default: as the data is)")
    p.add_argument("--epochs", type=int, default=ClassifierConfig.epochs)
    p.add_argument(
        "--out", default=None, help="where to write the weights (default mnist_classifier.pt, or classifier_DATASET.pt)"
    )
    p.add_argument(
        "--results",
        default=None,
        help="results file (default: results/metrics/mnist_classifier.json for MNIST, else next to the weights)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)
