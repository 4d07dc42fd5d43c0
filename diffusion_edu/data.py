"""Datasets: the embedded MNIST sample (offline default), real MNIST / Fashion-MNIST / CIFAR-10 via
torchvision, and the reader's own images (a folder of image files or an array file, :mod:`.data_files`).

(A little over the package's ~400 lines: the four dataset sources share ImageDataset and its checks,
so they stay together; the reader's own files live in data_files.py.)

Every dataset here returns ``(image, label)`` with ``image`` a float32 tensor of shape (C, H, W)
scaled to [-1, 1] (Ho et al. Sec. 4: "data scaled linearly to [-1, 1]") and ``label`` an int.
Images are kept in memory as uint8 and converted per item or per batch (:meth:`ImageDataset.batch`),
which keeps CIFAR-10 at 150 MB instead of 600 MB and lets the training loop skip DataLoader
overhead on CPU.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal, cast

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "ImageDataset",
    "load_embedded_mnist",
    "DatasetNotAvailableError",
    "BadDataError",
    "DATASETS",
    "load_dataset",
    "load_mnist",
    "load_fashion_mnist",
    "load_cifar10",
    "write_fake_cifar10",
    "write_idx_files",
    "fit_images",
    "to_model_range",
    "to_unit_range",
    "default_data_root",
]

DATASETS = ("mnist-embedded", "mnist", "cifar10", "fashion-mnist", "image-folder", "array-file")
EmbeddedSplit = Literal["train", "heldout", "all"]  # the splits of the shipped digits
NEEDS_PATH = ("image-folder", "array-file")  # datasets that are the reader's own files (``path`` / ``data_path``)


class DatasetNotAvailableError(RuntimeError):
    """A dataset is neither on disk nor downloadable (e.g. no internet), or its path does not exist."""


class BadDataError(ValueError):
    """A dataset's files exist but cannot be used as asked (unreadable or mixed files, a bad array shape,
    dtype or labels, too few images), or the data does not fit the network; the message says what to change."""


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 -> float32 in [-1, 1]: x = p / 127.5 - 1."""
    return images_uint8.to(torch.float32) / 127.5 - 1.0


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model-range images in [-1, 1] -> [0, 1] for display and metrics (clamped)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class ImageDataset(Dataset):
    """In-memory images (N, C, H, W) uint8 with labels (N,) int64; items come out in [-1, 1].

    ``num_classes`` is the number of labels (10 for MNIST and CIFAR-10), or None for unlabelled images
    (a flat folder; the labels are then all 0 and carry nothing); ``name`` says where the data came
    from, for results files; ``classes`` optionally names the labels (a folder's class subfolders).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        name: str,
        num_classes: int | None = 10,
        classes: Sequence[str] | None = None,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.name = name
        self.num_classes = num_classes
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_model_range(self.images[i]), int(self.labels[i])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.images.shape  # 4-d, checked in __init__
        return (c, h, w)

    def batch(self, idx: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] and labels (B,) for the given indices."""
        idx = torch.as_tensor(idx, dtype=torch.int64)
        return to_model_range(self.images[idx]), self.labels[idx]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (N, C, H, W) in [-1, 1] and all labels (N,)."""
        return to_model_range(self.images), self.labels

    def subset(self, n: int) -> ImageDataset:
        """The first ``n`` items of a class-balanced interleaving (useful for quick tiers)."""
        order = _class_interleaved_order(self.labels)[:n]
        return ImageDataset(
            self.images[order], self.labels[order], f"{self.name}[:{n}]", self.num_classes, self.classes
        )

    def __repr__(self) -> str:
        return f"ImageDataset({self.name!r}, n={len(self)}, shape={self.image_shape})"


def _class_interleaved_order(labels: torch.Tensor) -> torch.Tensor:
    """Indices ordered class 0, 1, ..., 9, 0, 1, ... (round-robin), so any prefix is balanced."""
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        m = labels == c
        rank[m] = torch.arange(int(m.sum()))
    key = rank * (int(labels.max()) + 1) + labels  # (N,)
    return torch.argsort(key, stable=True)


def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    with resources.files("diffusion_edu").joinpath("assets/mnist10k.npz").open("rb") as f:
        d = np.load(f)
        return d["images"], d["labels"]


def load_embedded_mnist(split: EmbeddedSplit = "train") -> ImageDataset:
    """The 10,000 real MNIST digits shipped in the package (see ``diffusion_edu/assets/README.md``).

    Split (fixed, no randomness): within each class, every tenth digit in file order is held out
    (1,005 digits); the other 8,995 are the training part. ``split="all"`` returns all 10,000.
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    images_np, labels_np = _embedded_arrays()
    images = torch.from_numpy(images_np).unsqueeze(1)  # (N, 1, 28, 28)
    labels = torch.from_numpy(labels_np.astype(np.int64))
    if split != "all":
        pos_in_class = torch.zeros_like(labels)
        for c in range(10):
            m = labels == c
            pos_in_class[m] = torch.arange(int(m.sum()))
        heldout = pos_in_class % 10 == 0
        keep = heldout if split == "heldout" else ~heldout
        images, labels = images[keep], labels[keep]
    return ImageDataset(images, labels, name=f"mnist-embedded/{split}")


def default_data_root() -> Path:
    """Where real datasets are looked for and downloaded: ``$DIFFUSION_EDU_DATA`` or ``~/.cache/diffusion_edu``."""
    return Path(os.environ.get("DIFFUSION_EDU_DATA", Path.home() / ".cache" / "diffusion_edu")).expanduser()


_OFFLINE_HINT = (
    "To work offline, use the MNIST digits shipped with the package instead: "
    "diffusion_edu.data.load_embedded_mnist('train') (or dataset='mnist-embedded' in presets and the CLI)."
)


def _not_available(
    what: str, root: Path, files: Sequence[str], download: bool, cause: BaseException, hint: str = ""
) -> DatasetNotAvailableError:
    looked = ", ".join(files)
    how = "download was attempted and failed" if download else "download=False, so nothing was fetched"
    return DatasetNotAvailableError(
        f"{what} is not available: looked for {looked} under {root}, and {how} "
        f"({type(cause).__name__}: {cause}). Put the files there, set $DIFFUSION_EDU_DATA to a folder "
        f"that holds them, or run where the internet is reachable (Colab). {hint}{_OFFLINE_HINT}"
    )


def load_mnist(train: bool = True, root: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """Real MNIST (60,000 training or 10,000 test digits) through ``torchvision.datasets.MNIST``.

    Looks in ``root/MNIST/raw`` for the four IDX files; downloads them when missing and
    ``download`` is true. Offline and not found: :class:`DatasetNotAvailableError`.
    """
    from torchvision import datasets

    root = Path(root) if root is not None else default_data_root()
    files = [
        f"MNIST/raw/{r}"
        for r in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    ]
    try:
        ds = datasets.MNIST(str(root), train=train, download=download)
    except Exception as e:  # URLError, RuntimeError('Dataset not found'), ...
        raise _not_available("MNIST", root, files, download, e) from e
    images = ds.data.unsqueeze(1).to(torch.uint8)  # (N, 1, 28, 28)
    return ImageDataset(images, torch.as_tensor(ds.targets), name=f"mnist/{'train' if train else 'test'}")


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _gunzip_missing(raw: Path, what: str) -> None:
    """Decompress ``raw/NAME.gz`` to ``raw/NAME`` for each IDX file that is there only gzipped (torchvision
    reads the uncompressed files; Debian's ``dataset-fashion-mnist`` and the original site ship .gz)."""
    import gzip

    from .results import atomic_write_bytes

    for name in _IDX_FILES:
        target, packed = raw / name, raw / f"{name}.gz"
        if target.is_file() or not packed.is_file():
            continue
        try:
            data = gzip.decompress(packed.read_bytes())
        except (OSError, EOFError) as e:
            raise BadDataError(
                f"{packed} is not a readable gzip file ({type(e).__name__}: {e}); "
                f"replace it with a good copy of the {what} file"
            ) from e
        try:
            atomic_write_bytes(target, data)
        except OSError as e:
            raise DatasetNotAvailableError(
                f"{what}: {packed} has to be decompressed next to itself (torchvision reads {name}), but "
                f"{raw} is not writable ({e}). Copy or link the .gz files into a folder you can write, "
                "e.g. $DIFFUSION_EDU_DATA/FashionMNIST/raw/"
            ) from e


def load_fashion_mnist(
    train: bool = True, root: str | os.PathLike | None = None, download: bool = True
) -> ImageDataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT licence): 60,000 training or 10,000 test 28x28 grey
    images of clothing in 10 classes, through ``torchvision.datasets.FashionMNIST``.

    Looks in ``root/FashionMNIST/raw`` for the four IDX files, uncompressed or gzipped (``.gz`` files are
    decompressed there first); downloads them when missing and ``download`` is true. Offline and not
    found: :class:`DatasetNotAvailableError`.
    """
    from torchvision import datasets

    root = Path(root) if root is not None else default_data_root()
    raw = root / "FashionMNIST" / "raw"
    _gunzip_missing(raw, "Fashion-MNIST")
    files = [f"FashionMNIST/raw/{r}[.gz]" for r in _IDX_FILES]
    try:
        ds = datasets.FashionMNIST(str(root), train=train, download=download)
    except Exception as e:  # URLError, RuntimeError('Dataset not found'), ...
        hint = (
            "Offline on Debian or Ubuntu: apt-get install dataset-fashion-mnist, then link its .gz files "
            "(dpkg -L dataset-fashion-mnist lists them) into that folder. "
        )
        raise _not_available("Fashion-MNIST", root, files, download, e, hint) from e
    images = ds.data.unsqueeze(1).to(torch.uint8)  # (N, 1, 28, 28)
    return ImageDataset(
        images,
        torch.as_tensor(ds.targets),
        name=f"fashion-mnist/{'train' if train else 'test'}",
        classes=list(ds.classes),
    )


def write_idx_files(
    raw: str | os.PathLike, images: np.ndarray, labels: np.ndarray, prefix: str = "train", gz: bool = True
) -> list[Path]:
    """Write images (N, H, W) uint8 and labels (N,) uint8 as the two IDX files ``PREFIX-images-idx3-ubyte``
    and ``PREFIX-labels-idx1-ubyte`` (gzipped when ``gz``) under ``raw``: MNIST's file format, for tests
    and the smoke tier (prefix ``t10k`` for the test split)."""
    import gzip

    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 3 or labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"images must be uint8 (N, H, W) and labels uint8 (N,), got {images.dtype} "
            f"{images.shape} and {labels.dtype} {labels.shape}"
        )
    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    out = []
    for kind, magic, arr in (("images", 2051, images), ("labels", 2049, labels)):
        header = np.array([magic, *arr.shape], dtype=">i4").tobytes()  # big-endian magic and sizes
        data = header + arr.tobytes()
        path = raw / f"{prefix}-{kind}-idx{arr.ndim}-ubyte{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(data) if gz else data)
        out.append(path)
    return out


def load_cifar10(
    train: bool = True,
    root: str | os.PathLike | None = None,
    download: bool = True,
    check_integrity: bool = True,
) -> ImageDataset:
    """Real CIFAR-10 (50,000 training or 10,000 test images) through ``torchvision.datasets.CIFAR10``.

    ``check_integrity=False`` skips torchvision's MD5 check of the pickled batches; it exists only
    for the small fake batches that tests and the smoke tier write with :func:`write_fake_cifar10`.
    """
    from torchvision import datasets

    root = Path(root) if root is not None else default_data_root()
    cls = datasets.CIFAR10
    if not check_integrity:

        class _Unchecked(datasets.CIFAR10):  # deliberate: fake batches have no official MD5
            meta = {**datasets.CIFAR10.meta, "md5": None}  # check_integrity(path, None): file exists

            def _check_integrity(self) -> bool:
                folder = os.path.join(self.root, self.base_folder)
                return all(os.path.isfile(os.path.join(folder, f)) for f, _ in self.train_list + self.test_list)

        cls = _Unchecked
    files = ["cifar-10-batches-py/data_batch_1..5", "cifar-10-batches-py/test_batch"]
    try:
        ds = cls(str(root), train=train, download=download)
    except Exception as e:
        raise _not_available("CIFAR-10", root, files, download, e) from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return ImageDataset(images, torch.as_tensor(ds.targets), name=f"cifar10/{'train' if train else 'test'}")


def write_fake_cifar10(root: str | os.PathLike, per_batch: int = 20, seed: int = 0) -> Path:
    """Write tiny random CIFAR-10-format batch files under ``root/cifar-10-batches-py`` (smoke tier, tests).

    The files have the real format (pickled dicts with ``data`` (n, 3072) uint8 and ``labels``) so
    that :func:`load_cifar10` goes through torchvision's real loader; load them with
    ``check_integrity=False``. The images are noise: nothing learned from them means anything.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, size=per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return folder


def fit_images(images: torch.Tensor, image_size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) converted to ``channels`` (1: grey, luma L = (299 R + 587 G + 114 B) / 1000
    as PIL's ``convert("L")``; 3: grey repeated) and centre-cropped to a square and resized (bilinear,
    antialiased) to ``image_size`` x ``image_size``. None keeps what the images have; returns uint8."""
    import torch.nn.functional as F

    n, c, h, w = images.shape
    if channels is not None and channels != c:
        if (c, channels) == (3, 1):
            weights = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
            images = ((images.to(torch.int32) * weights).sum(1, keepdim=True) + 500).div(1000, rounding_mode="floor")
            images = images.to(torch.uint8)  # (N, 1, H, W)
        elif (c, channels) == (1, 3):
            images = images.repeat(1, 3, 1, 1)  # (N, 3, H, W)
        else:
            raise BadDataError(f"cannot convert {c}-channel images to channels={channels}: use 1 (grey) or 3 (RGB)")
    size = image_size if image_size is not None else (h if h == w else None)
    if size is None:
        raise BadDataError(
            f"the images are {h}x{w}, not square, and the networks take square images: set "
            f"image_size=N to centre-crop and resize them to NxN (e.g. image_size={min(h, w)})"
        )
    if (h, w) == (size, size):
        return images.contiguous()
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[:, :, top : top + side, left : left + side]  # (N, C, side, side)
    out = []
    for i in range(0, n, 4096):  # chunks keep the float copy small
        x = images[i : i + 4096].to(torch.float32)
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out).contiguous()  # (N, C, size, size)


def load_dataset(
    name: str,
    split: str = "train",  # "train", "heldout", "test" or "all" (checked per dataset)
    root: str | os.PathLike | None = None,
    download: bool = True,
    check_integrity: bool = True,
    *,
    path: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageDataset:
    """One entry point for presets, the CLI and the metrics.

    name: ``mnist-embedded`` (splits train / heldout / all), ``mnist``, ``fashion-mnist`` or ``cifar10``
    (splits train / test; ``heldout`` means test), ``image-folder`` or ``array-file`` (the reader's own
    files at ``path``; splits train / heldout / all, see :mod:`diffusion_edu.data_files`).
    path: the folder or file of ``image-folder`` / ``array-file``; for the torchvision datasets a data
    root instead of ``root`` / ``$DIFFUSION_EDU_DATA``. image_size, channels: centre-crop and resize to
    image_size x image_size, convert to 1 (grey) or 3 (RGB) channels (None: as the data is).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names are {list(DATASETS)}")
    if image_size is not None and (type(image_size) is not int or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey), 3 (RGB) or None (as the data is), got {channels!r}")
    if name in NEEDS_PATH:
        from .data_files import load_array_file, load_image_folder

        if path is None:
            raise ValueError(
                f"dataset {name!r} reads your own files: give path= (data_path=... in presets "
                f"and the CLI) naming the {'folder' if name == 'image-folder' else '.npz or .npy file'}"
            )
        loader = load_image_folder if name == "image-folder" else load_array_file
        return loader(path, split, image_size=image_size, channels=channels)
    root = path if path is not None else root
    if name == "mnist-embedded":
        # load_embedded_mnist checks the split's value
        ds = load_embedded_mnist(cast(EmbeddedSplit, "heldout" if split == "test" else split))
    else:
        if split not in ("train", "test", "heldout"):
            raise ValueError(f"{name} has splits 'train' and 'test' (or 'heldout', the same), got {split!r}")
        train = split == "train"
        if name == "mnist":
            ds = load_mnist(train, root, download)
        elif name == "fashion-mnist":
            ds = load_fashion_mnist(train, root, download)
        else:
            ds = load_cifar10(train, root, download, check_integrity)
    if image_size is None and channels is None:
        return ds
    images = fit_images(ds.images, image_size, channels)
    if images.shape == ds.images.shape:
        return ds
    shape = "x".join(str(v) for v in images.shape[1:])
    return ImageDataset(images, ds.labels, f"{ds.name} ({shape})", ds.num_classes, ds.classes)
