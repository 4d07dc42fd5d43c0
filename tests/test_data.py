"""The embedded MNIST sample and the real torchvision loaders (on files the tests write)."""

import pickle
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from diffusion_edu import DatasetNotAvailableError, load_cifar10, load_dataset, load_embedded_mnist, load_mnist
from diffusion_edu.data import to_model_range, to_unit_range, write_fake_cifar10


def test_embedded_split_is_fixed_disjoint_and_balanced():
    """The documented split: every tenth digit of each class is held out -> 8,995 / 1,005, all classes
    in both parts, and together they are the whole file."""
    tr, ho, al = load_embedded_mnist("train"), load_embedded_mnist("heldout"), load_embedded_mnist("all")
    assert (len(tr), len(ho), len(al)) == (8995, 1005, 10000)
    assert torch.bincount(ho.labels).tolist() == [101, 113, 100, 104, 98, 87, 102, 107, 95, 98]
    assert set(tr.labels.tolist()) == set(range(10))
    # disjoint: no held-out image appears in the training part
    tr_keys = {bytes(im.numpy().tobytes()) for im in tr.images}
    assert not any(bytes(im.numpy().tobytes()) in tr_keys for im in ho.images[:200])
    # the first held-out digit is the first digit of class 0 in the file
    assert torch.equal(ho.images[0], al.images[0])


def test_embedded_items_are_scaled_to_minus_one_one():
    ds = load_embedded_mnist("heldout")
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    xb, yb = ds.batch(range(16))
    assert xb.shape == (16, 1, 28, 28) and xb.min() == -1.0 and xb.max() == 1.0
    assert torch.allclose(to_unit_range(xb), (xb + 1) / 2)
    assert torch.equal(to_model_range(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))


def test_subset_is_class_balanced():
    sub = load_embedded_mnist("train").subset(100)
    assert len(sub) == 100 and torch.bincount(sub.labels).tolist() == [10] * 10


def test_bad_split_names():
    with pytest.raises(ValueError, match="split must be 'train', 'heldout' or 'all'"):
        load_embedded_mnist("test")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = 0x0800 + arr.ndim  # unsigned byte, ndim dims
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for d in arr.shape:
            f.write(struct.pack(">I", d))
        f.write(arr.tobytes())


def test_real_mnist_loader_reads_idx_files(tmp_path):
    """The torchvision path, exercised on tiny IDX files written here (same format as the real ones)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(7, 28, 28))
    test = rng.integers(0, 256, size=(3, 28, 28))
    _write_idx(raw / "train-images-idx3-ubyte", train)
    _write_idx(raw / "train-labels-idx1-ubyte", [3, 1, 4, 1, 5, 9, 2])
    _write_idx(raw / "t10k-images-idx3-ubyte", test)
    _write_idx(raw / "t10k-labels-idx1-ubyte", [6, 5, 3])
    ds = load_mnist(train=True, root=tmp_path, download=False)
    assert len(ds) == 7 and ds.image_shape == (1, 28, 28)
    assert ds.labels.tolist() == [3, 1, 4, 1, 5, 9, 2]
    x, y = ds[2]
    assert torch.allclose(x[0], torch.from_numpy(train[2]).float() / 127.5 - 1)
    assert len(load_dataset("mnist", "test", root=tmp_path, download=False)) == 3


def test_missing_mnist_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotAvailableError) as e:
        load_mnist(root=tmp_path, download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path) in msg and "load_embedded_mnist" in msg


def test_failed_download_gives_a_clear_error(tmp_path, monkeypatch):
    """Simulate being offline (no network call is made): the torchvision download fails and the error
    says what was looked for, where, and how to use the embedded sample."""

    def offline(*a, **k):
        raise urllib.error.URLError("offline (simulated by the test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetNotAvailableError, match=r"(?s)download was attempted and failed.*load_embedded_mnist"):
        load_mnist(root=tmp_path, download=True)
    with pytest.raises(DatasetNotAvailableError, match=r"(?s)CIFAR-10 is not available.*cifar-10-batches-py"):
        load_cifar10(root=tmp_path, download=True)


def test_cifar10_loader_on_fake_batches(tmp_path):
    """Fake CIFAR-10 batches in the real pickle format go through torchvision's CIFAR10 loader; only its
    MD5 check is bypassed, deliberately, and with the check on the fake files are refused."""
    write_fake_cifar10(tmp_path, per_batch=4)
    ds = load_cifar10(train=True, root=tmp_path, download=False, check_integrity=False)
    assert len(ds) == 20 and ds.image_shape == (3, 32, 32)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        b = pickle.load(f)
    # CIFAR stores each image as 1024 R, then 1024 G, then 1024 B values
    assert torch.equal(ds.images[0], torch.from_numpy(b["data"][0].reshape(3, 32, 32)))
    assert ds.labels[:4].tolist() == b["labels"]
    assert len(load_cifar10(train=False, root=tmp_path, download=False, check_integrity=False)) == 4
    with pytest.raises(DatasetNotAvailableError):
        load_cifar10(train=True, root=tmp_path, download=False, check_integrity=True)
