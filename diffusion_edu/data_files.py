"""The reader's own images as datasets: a folder of image files, or an array in an ``.npz`` / ``.npy`` file.

Both give an :class:`~diffusion_edu.data.ImageDataset` (uint8 in memory, items in [-1, 1]) and check their
input first, so that bad data stops with a message naming the file and the fix, before anything trains:

- ``image-folder``: torchvision's ``ImageFolder`` layout. Class subfolders (``DIR/cat/*.png``,
  ``DIR/dog/*.png``) become labels 0, 1, ... in sorted folder order; a flat folder (``DIR/*.png``) is
  unlabelled. Files with other extensions are ignored, as ``ImageFolder`` does. Every image is
  centre-cropped to a square and resized to ``image_size`` (PIL's ``ImageOps.fit``, bilinear), in grey
  or RGB by ``channels`` (default: as the files are; a folder that mixes grey and colour needs it set).
- ``array-file``: ``images`` of shape (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3, uint8
  pixels or floats in [0, 1] or [-1, 1], and optionally integer ``labels`` (N,) >= 0 (an ``.npz``;
  an ``.npy`` holds the images alone). Floats are stored as uint8 pixels (steps of 1/255).

Splits (fixed, no randomness): within each class, every tenth image in file order is held out, as in
:func:`~diffusion_edu.data.load_embedded_mnist`; ``train`` is the rest, ``heldout`` (or ``test``) the tenth
and ``all`` both. The held-out part is what the feature classifier is scored on and the FID reference.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .data import BadDataError, DatasetNotAvailableError, ImageDataset, fit_images

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder", "load_array_file", "split_indices"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def split_indices(labels: torch.Tensor, split: str) -> torch.Tensor:
    """Indices of ``split``: within each class every tenth item in order (positions 0, 10, 20, ...) is
    held out; ``train`` the others, ``heldout`` / ``test`` those, ``all`` every index. labels: (N,)."""
    if split not in ("train", "heldout", "test", "all"):
        raise ValueError(f"split must be 'train', 'heldout' (or 'test') or 'all', got {split!r}")
    if split == "all":
        return torch.arange(labels.shape[0])
    pos = torch.zeros_like(labels)
    for c in labels.unique():
        m = labels == c
        pos[m] = torch.arange(int(m.sum()))
    held = pos % 10 == 0
    return torch.nonzero(held if split in ("heldout", "test") else ~held).flatten()


def _existing(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetNotAvailableError(f"{what}: {p} does not exist (check data_path)")
    return p


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def _folder_layout(root: Path) -> tuple[list[Path], list[int], list[str] | None]:
    """The image files, their labels and the class names (None for a flat folder)."""
    loose = _image_files(root)
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [d for d in subdirs if _image_files(d)]
    if loose and classes:
        raise BadDataError(
            f"{root} mixes image files ({loose[0].name}, ...) with class subfolders "
            f"({classes[0].name}/, ...): put every image into a class subfolder, or all in one "
            "flat folder (unlabelled)"
        )
    if loose:
        return loose, [0] * len(loose), None
    if not classes:
        raise BadDataError(
            f"{root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}), neither directly nor in class subfolders"
        )
    files, labels = [], []
    for k, d in enumerate(classes):
        found = _image_files(d)
        files += found
        labels += [k] * len(found)
    return files, labels, [d.name for d in classes]


def load_image_folder(
    path: str | os.PathLike, split: str = "train", image_size: int | None = None, channels: int | None = None
) -> ImageDataset:
    """A folder of images (class subfolders = labels; flat = unlabelled) as an ``ImageDataset``.

    image_size: centre-crop and resize every image to image_size x image_size (None: the files' own size,
    which must then be one square size). channels: 1 (grey) or 3 (RGB), None: as the files are.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    root = _existing(path, "image-folder")
    if not root.is_dir():
        raise BadDataError(f"image-folder: {root} is a file, not a folder (for an array file use dataset=array-file)")
    files, labels, classes = _folder_layout(root)
    idx = split_indices(torch.tensor(labels), split)
    opened = []
    for i in idx.tolist():
        try:
            with Image.open(files[i]) as im:
                im.load()
                opened.append((files[i], im.copy()))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise BadDataError(
                f"cannot read {files[i]} as an image ({type(e).__name__}: {e}); remove or replace it"
            ) from e
    modes = {("grey" if im.mode in _GREY_MODES else "RGB") for _, im in opened}
    if channels is None and len(modes) > 1:
        grey = next(f for f, im in opened if im.mode in _GREY_MODES)
        colour = next(f for f, im in opened if im.mode not in _GREY_MODES)
        raise BadDataError(
            f"{root} mixes grey and colour images ({grey.name} is grey, {colour.name} is colour): "
            "set channels=1 (all grey) or channels=3 (all RGB)"
        )
    c = channels if channels is not None else (1 if modes == {"grey"} else 3)
    sizes = {im.size for _, im in opened}
    if image_size is None:
        if len(sizes) > 1 or any(w != h for w, h in sizes):
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
            raise BadDataError(
                f"the images in {root} are not all one square size ({shown}{', ...' if len(sizes) > 3 else ''}): "
                "set image_size=N to centre-crop and resize them to NxN (e.g. image_size=32)"
            )
        image_size = next(iter(sizes))[0]
    arrays = []
    for _, im in opened:
        im = im.convert("L" if c == 1 else "RGB")
        if im.size != (image_size, image_size):
            im = ImageOps.fit(im, (image_size, image_size), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if c == 1 else a.transpose(2, 0, 1))  # (C, H, W)
    images = (
        torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, c, image_size, image_size, dtype=torch.uint8)
    )
    name = f"image-folder/{root.name}/{split}"
    return ImageDataset(images, torch.tensor(labels)[idx], name, len(classes) if classes else None, classes)


def _layout(shape: tuple[int, ...]) -> str:
    """'NHW', 'NHWC' or 'NCHW' for an images array, else a BadDataError."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        last, second = shape[3] in (1, 3), shape[1] in (1, 3)
        if last and second:  # e.g. (N, 3, 32, 3): take the layout whose spatial part is square
            last, second = shape[1] == shape[2], shape[2] == shape[3]
        if last != second:
            return "NHWC" if last else "NCHW"
    raise BadDataError(f"images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3, got {shape}")


def _to_uint8(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 pixels as they are; floats in [0, 1] times 255, floats in [-1, 1] as (x + 1) * 127.5; rounded."""
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise BadDataError(
            f"{where}: images must be uint8 pixels (0..255) or floats in [0, 1] or [-1, 1], got "
            f"dtype {images.dtype} (for integer pixels 0..255 use images.astype(np.uint8))"
        )
    if images.size and not np.isfinite(images).all():
        raise BadDataError(f"{where}: images hold NaN or infinite values")
    lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 1.0)
    if 0.0 <= lo and hi <= 1.0:
        scaled = images.astype(np.float64) * 255.0
    elif -1.0 <= lo and hi <= 1.0:
        scaled = (images.astype(np.float64) + 1.0) * 127.5
    else:
        raise BadDataError(f"{where}: float images must lie in [0, 1] or [-1, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _check_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise BadDataError(f"{where}: labels must be integers (class indices 0, 1, ...), got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise BadDataError(f"{where}: labels must have shape ({n},), one per image, got {labels.shape}")
    if n and int(labels.min()) < 0:
        raise BadDataError(f"{where}: labels must be class indices >= 0, got values down to {int(labels.min())}")
    return labels.astype(np.int64)


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as d:
            if "images" not in d.files:
                raise BadDataError(
                    f"{path} holds no array named 'images' (it has {sorted(d.files)}): save it with "
                    "np.savez(path, images=..., labels=...)"
                )
            return d["images"], d["labels"] if "labels" in d.files else None
    except BadDataError:
        raise
    except (ValueError, OSError, EOFError) as e:  # object arrays (pickles), truncated or foreign files
        raise BadDataError(f"cannot read {path} as a numpy array file ({type(e).__name__}: {e})") from e


def load_array_file(
    path: str | os.PathLike, split: str = "train", image_size: int | None = None, channels: int | None = None
) -> ImageDataset:
    """Images (and optional labels) from an ``.npz`` (arrays ``images``, ``labels``) or an ``.npy`` (images).

    images: (N, H, W), (N, H, W, C) or (N, C, H, W), C in {1, 3}; uint8, or float in [0, 1] / [-1, 1].
    labels: integers >= 0, shape (N,); without them the data is unlabelled. image_size / channels as in
    :func:`~diffusion_edu.data.fit_images` (None: as the array is; non-square images need image_size).
    """
    file = _existing(path, "array-file")
    if file.suffix not in (".npz", ".npy") or not file.is_file():
        raise BadDataError(f"array-file: {file} must be an .npz or .npy file")
    images, labels = _read_arrays(file)
    layout = _layout(images.shape)
    if images.shape[0] == 0:
        raise BadDataError(f"{file}: images holds no images (shape {images.shape})")
    images = _to_uint8(images, str(file))
    images = images[:, None] if layout == "NHW" else images.transpose(0, 3, 1, 2) if layout == "NHWC" else images
    lab = _check_labels(labels, images.shape[0], str(file)) if labels is not None else None
    y = torch.from_numpy(lab) if lab is not None else torch.zeros(images.shape[0], dtype=torch.int64)
    idx = split_indices(y, split)
    x = fit_images(torch.from_numpy(np.ascontiguousarray(images))[idx], image_size, channels)  # (n, C, S, S)
    num_classes = int(lab.max()) + 1 if lab is not None else None
    return ImageDataset(x, y[idx], f"array-file/{file.name}/{split}", num_classes)
