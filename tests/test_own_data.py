"""Training on the reader's own images: Fashion-MNIST's IDX files, a folder of images, an array file; the
network fitted to the data; the feature classifier and the metrics on any image shape; and every bad
input stopping with a clear error before anything is written. All data here is written by the tests."""

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_edu.classifier import ClassifierConfig, FeatureClassifier, load_classifier, train_classifier
from diffusion_edu.cli import main
from diffusion_edu.data import (
    BadDataError,
    DatasetNotAvailableError,
    fit_images,
    load_dataset,
    load_fashion_mnist,
    to_model_range,
    write_idx_files,
)
from diffusion_edu.data_files import load_array_file, load_image_folder, split_indices
from diffusion_edu.data_fit import fit_to_data
from diffusion_edu.metrics import evaluate, fid
from diffusion_edu.presets import training_preset
from diffusion_edu.training import train

RNG = np.random.default_rng(0)


def _png_folder(root, classes=("cat", "dog"), n=10, size=(16, 16), mode="RGB"):
    """n random images per class subfolder (or a flat folder when classes is None); returns the arrays."""
    arrays = {}
    for c in classes or [None]:
        d = root / c if c else root
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            a = RNG.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(a, mode).save(d / f"{i:02d}.png")
            arrays[(c, i)] = a
    return arrays


# ---- loaders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files_gzipped_or_not(tmp_path, gz):
    """torchvision's FashionMNIST reads the IDX files we write, byte for byte; .gz files are decompressed first."""
    raw = tmp_path / "FashionMNIST" / "raw"
    x_train, y_train = RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8), (np.arange(12) % 10).astype(np.uint8)
    x_test, y_test = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.arange(5, dtype=np.uint8)
    write_idx_files(raw, x_train, y_train, "train", gz=gz)
    write_idx_files(raw, x_test, y_test, "t10k", gz=gz)
    train_ds = load_fashion_mnist(True, tmp_path, download=False)
    test_ds = load_dataset("fashion-mnist", "heldout", path=tmp_path, download=False)
    assert (
        torch.equal(train_ds.images[:, 0], torch.from_numpy(x_train)) and train_ds.labels.tolist() == y_train.tolist()
    )
    assert torch.equal(test_ds.images[:, 0], torch.from_numpy(x_test)) and test_ds.name == "fashion-mnist/test"
    assert train_ds.classes[0] == "T-shirt/top" and train_ds.num_classes == 10
    if gz:
        assert (raw / "train-images-idx3-ubyte").read_bytes() == gzip.decompress(
            (raw / "train-images-idx3-ubyte.gz").read_bytes()
        )


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotAvailableError, match="Fashion-MNIST is not available.*dataset-fashion-mnist"):
        load_fashion_mnist(True, tmp_path, download=False)


def test_image_folder_class_subfolders_become_labels(tmp_path):
    """Sorted subfolders are labels 0, 1; every tenth image of each class is held out; pixels are kept exactly."""
    arrays = _png_folder(tmp_path / "pics", n=11)
    train_ds = load_image_folder(tmp_path / "pics", "train")
    held = load_image_folder(tmp_path / "pics", "heldout")
    everything = load_dataset("image-folder", "all", path=tmp_path / "pics")
    assert train_ds.classes == ["cat", "dog"] and train_ds.num_classes == 2 and train_ds.image_shape == (3, 16, 16)
    assert (len(train_ds), len(held), len(everything)) == (18, 4, 22)  # positions 0 and 10 of each class held out
    assert held.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(held.images[2], torch.from_numpy(arrays[("dog", 0)]).permute(2, 0, 1))
    assert torch.equal(train_ds.images[0], torch.from_numpy(arrays[("cat", 1)]).permute(2, 0, 1))


def test_image_folder_flat_grey_resize_and_channels(tmp_path):
    """A flat folder is unlabelled; grey files stay grey; image_size centre-crops and resizes; channels converts."""
    arrays = _png_folder(tmp_path / "flat", classes=None, n=4, size=(20, 12), mode="L")
    with pytest.raises(BadDataError, match="set image_size"):
        load_image_folder(tmp_path / "flat", "all")
    ds = load_image_folder(tmp_path / "flat", "all", image_size=8)
    assert ds.num_classes is None and ds.classes is None and ds.image_shape == (1, 8, 8)
    rgb = load_image_folder(tmp_path / "flat", "all", image_size=12, channels=3)
    centre = torch.from_numpy(arrays[(None, 0)][:, 4:16])  # 12 x 12 centre crop of a 12 x 20 image: no resize
    assert torch.equal(rgb.images[0], centre.expand(3, 12, 12))


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "npy"])
def test_array_file_layouts_and_ranges(tmp_path, layout):
    """Each layout and value range gives the same uint8 pixels (floats round to the nearest of 256 levels)."""
    pixels = RNG.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(20) % 4
    if layout == "NHW":
        pixels = pixels[:, :1]
        images = pixels[:, 0]
    elif layout == "NHWC":
        images = pixels.transpose(0, 2, 3, 1).astype(np.float32) / 255.0  # floats in [0, 1]
    else:
        images = pixels.astype(np.float64) / 127.5 - 1.0  # floats in [-1, 1], (N, C, H, W)
    path = tmp_path / ("x.npy" if layout == "npy" else "x.npz")
    np.save(path, images) if layout == "npy" else np.savez(path, images=images, labels=labels)
    ds = load_array_file(path, "all")
    assert torch.equal(ds.images, torch.from_numpy(pixels))
    if layout == "npy":
        assert ds.num_classes is None
    else:
        assert ds.num_classes == 4 and ds.labels.tolist() == labels.tolist()
        assert len(load_array_file(path, "train")) == 16 and len(load_array_file(path, "heldout")) == 4  # one per class


def test_fit_images_channels_and_split_indices():
    x = torch.tensor([[[[10]], [[200]], [[30]]]], dtype=torch.uint8)  # (1, 3, 1, 1)
    grey = fit_images(x, channels=1)
    assert grey.item() == np.asarray(Image.fromarray(np.array([[[10, 200, 30]]], np.uint8)).convert("L")).item()
    assert fit_images(grey, channels=3).shape == (1, 3, 1, 1)
    labels = torch.tensor([0] * 12 + [1] * 3)
    held = split_indices(labels, "heldout")
    assert held.tolist() == [0, 10, 12] and len(split_indices(labels, "train")) == 12


# ---- bad data ---------------------------------------------------------------------------------


def test_bad_folders_fail_clearly(tmp_path):
    with pytest.raises(DatasetNotAvailableError, match="does not exist"):
        load_dataset("image-folder", path=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(BadDataError, match="holds no image files"):
        load_image_folder(tmp_path / "empty")
    _png_folder(tmp_path / "mixed", n=2)
    _png_folder(tmp_path / "mixed", classes=None, n=1)
    with pytest.raises(BadDataError, match="mixes image files .* with class subfolders"):
        load_image_folder(tmp_path / "mixed")
    _png_folder(tmp_path / "modes" / "a", classes=None, n=2, mode="L")
    _png_folder(tmp_path / "modes" / "b", classes=None, n=2)
    with pytest.raises(BadDataError, match="mixes grey and colour.*set channels=1"):
        load_image_folder(tmp_path / "modes", "all")
    assert load_image_folder(tmp_path / "modes", "all", channels=1).image_shape == (1, 16, 16)
    _png_folder(tmp_path / "broken", n=2)
    (tmp_path / "broken" / "cat" / "00.png").write_bytes(b"not a png")
    with pytest.raises(BadDataError, match="cannot read .*00.png as an image"):
        load_image_folder(tmp_path / "broken", "all")
    with pytest.raises(ValueError, match="give path="):
        load_dataset("image-folder")


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((4, 8, 8, 5), np.uint8), None, r"images must have shape \(N, H, W\)"),
        (np.zeros((4, 8), np.uint8), None, r"images must have shape"),
        (np.zeros((4, 8, 8), np.int64), None, "must be uint8 pixels .* got dtype int64"),
        (np.full((4, 8, 8), 2.0), None, r"float images must lie in \[0, 1\] or \[-1, 1\]"),
        (np.full((4, 8, 8), np.nan), None, "NaN"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros(4, np.float32), "labels must be integers"),
        (np.zeros((4, 8, 8), np.uint8), np.array([0, 1, -1, 0]), "labels must be class indices >= 0"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros(3, np.int64), r"labels must have shape \(4,\)"),
        (np.zeros((0, 8, 8), np.uint8), None, "holds no images"),
        (np.zeros((4, 8, 6), np.uint8), None, "not square.*set image_size"),
    ],
)
def test_bad_arrays_fail_clearly(tmp_path, images, labels, match):
    path = tmp_path / "x.npz"
    np.savez(path, images=images, **({} if labels is None else {"labels": labels}))
    with pytest.raises(BadDataError, match=match):
        load_array_file(path, "all")


def test_bad_array_files_fail_clearly(tmp_path):
    np.savez(tmp_path / "other.npz", pictures=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(BadDataError, match="no array named 'images'.*pictures"):
        load_array_file(tmp_path / "other.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadDataError, match="cannot read .* as a numpy array file"):
        load_array_file(tmp_path / "objects.npy")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(BadDataError, match=r"must be an .npz or .npy file"):
        load_array_file(tmp_path / "x.csv")


# ---- networks fitted to the data --------------------------------------------------------------


def _array_dataset(tmp_path, n=12, shape=(3, 16, 16), classes=2):
    path = tmp_path / "data.npz"
    labels = {"labels": np.arange(n) % classes} if classes else {}
    np.savez(path, images=RNG.integers(0, 256, (n, *shape), dtype=np.uint8), **labels)
    return path


def test_quick_mnist_follows_the_data(tmp_path):
    """MNIST-shaped data leaves the config as it is; RGB 16x16 in 2 classes changes the network to match;
    unlabelled data makes it unconditional without label dropout."""
    base = training_preset("quick_mnist", batch_size=4)
    assert fit_to_data(base, load_dataset("mnist-embedded", "heldout")) == base
    rgb = load_array_file(_array_dataset(tmp_path), "all")
    fitted = fit_to_data(base, rgb)
    assert fitted.model_kwargs == {"in_channels": 3, "image_size": 16, "num_classes": 2}
    plain = load_array_file(_array_dataset(tmp_path, classes=0), "all")
    unlabelled = fit_to_data(base, plain)
    assert unlabelled.model_kwargs["num_classes"] is None and unlabelled.p_uncond == 0.0
    with pytest.raises(BadDataError, match="model_kwargs.in_channels=1 fixes the network.*set channels=1"):
        fit_to_data(base.replace(model_kwargs={"in_channels": 1}), rgb)
    with pytest.raises(BadDataError, match="unlabelled, but model_kwargs.num_classes=10"):
        fit_to_data(base.replace(model_kwargs={"num_classes": 10}), plain)
    with pytest.raises(BadDataError, match="labels of .* reach 1, but model_kwargs.num_classes=1"):
        fit_to_data(base.replace(model_kwargs={"num_classes": 1}), rgb)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"batch_size": 32}, "has 10 images, fewer than one batch .* set batch_size=10"),
        ({"image_size": 18}, "cannot be trained on .* image_size=18 is not divisible.*Change image_size"),
    ],
)
def test_impossible_runs_fail_before_anything_is_written(tmp_path, changes, match):
    cfg = training_preset(
        "quick_mnist",
        dataset="array-file",
        data_path=str(_array_dataset(tmp_path)),
        **{"batch_size": 4, "steps": 1, **changes},
    )
    with pytest.raises(BadDataError, match=match):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# ---- classifier, metrics and the command line ---------------------------------------------------


def test_feature_classifier_for_colour_and_its_errors(tmp_path):
    path = _array_dataset(tmp_path, n=24)
    clf, summary = train_classifier(
        ClassifierConfig(dataset="array-file", data_path=str(path), epochs=1, max_steps=2), progress=False
    )
    assert clf.input_shape == (3, 16, 16) and clf.num_classes == 2 and summary["heldout_n"] == 4
    x = to_model_range(load_array_file(path, "all").images)
    scores = evaluate(x[:12], x[12:], classifier=clf, is_splits=2)
    assert "trained on array-file/data.npz/train" in scores["feature_extractor"] and scores["fid"] >= 0
    with pytest.raises(ValueError, match=r"must have shape \(B, 1, 28, 28\).*train-classifier"):
        fid(x[:4], x[4:])  # the shipped MNIST classifier cannot read colour 16 x 16
    with pytest.raises(BadDataError, match="unlabelled, and the feature classifier learns from labels"):
        train_classifier(ClassifierConfig(dataset="array-file", data_path=str(_array_dataset(tmp_path, classes=0))))
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        FeatureClassifier(image_size=4)


def test_cli_trains_samples_and_scores_a_folder_of_rgb_images(tmp_path, capsys):
    """The whole path a reader takes: train a few steps on a folder, sample a grid, train the classifier, score."""
    _png_folder(tmp_path / "photos", n=10, size=(20, 18))
    data = ["--set", "dataset=image-folder", "--set", f"data_path={tmp_path / 'photos'}", "--set", "image_size=16"]
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "quick_mnist",
                *data,
                "--steps",
                "2",
                "--set",
                "batch_size=4",
                "--out",
                str(run),
                "--device",
                "cpu",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["model_kwargs"] == {"in_channels": 3, "image_size": 16, "num_classes": 2}
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(run / "checkpoint.pt"),
                "--n",
                "8",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "grid.png"),
                "--tensor",
                str(tmp_path / "s.pt"),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "grid.png").mode in ("RGB", "RGBA")
    opts = ["--dataset", "image-folder", "--data-path", str(tmp_path / "photos"), "--image-size", "16"]
    assert main(["train-classifier", *opts, "--max-steps", "2", "--out", str(tmp_path / "clf.pt"), "--quiet"]) == 0
    assert load_classifier(tmp_path / "clf.pt").input_shape == (3, 16, 16)
    capsys.readouterr()
    assert (
        main(
            [
                "score",
                str(tmp_path / "s.pt"),
                *opts,
                "--classifier",
                str(tmp_path / "clf.pt"),
                "--is-splits",
                "2",
                "--out",
                str(tmp_path / "scores.json"),
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "scores.json").read_text())
    assert record["data"]["feature_extractor"].startswith("diffusion_edu feature classifier trained on image-folder")
    assert record["data"]["classifier_file"] == str(tmp_path / "clf.pt") and record["data"]["n_samples"] == 8
    assert main(["score", str(tmp_path / "s.pt"), *opts]) == 2
    assert "Train one on this data" in capsys.readouterr().err


def test_cli_bad_data_exits_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--preset",
            "quick_mnist",
            "--set",
            "dataset=image-folder",
            "--set",
            f"data_path={tmp_path / 'empty'}",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 2 and "holds no image files" in capsys.readouterr().err and not out.exists()
    code = main(["train", "--preset", "quick_mnist", "--set", "dataset=array-file", "--out", str(out), "--no-progress"])
    assert code == 2 and "set data_path" in capsys.readouterr().err


def test_the_own_data_page_trains_and_samples_the_recipe():
    """The page's run is quick_mnist as it stands (objective, rate schedule, EMA) on Fashion-MNIST, and it
    samples with the sampler the recipe stores with the run, the smoke tier with fewer steps."""
    from diffusion_edu.experiments import own_data
    from diffusion_edu.generate import sampler_defaults
    from diffusion_edu.presets import training_preset

    recipe, cfg = training_preset("quick_mnist"), own_data.config("cpu")
    for field in ("loss", "loss_weighting", "lr", "warmup_steps", "lr_schedule", "ema_decay", "model", "T"):
        assert getattr(cfg, field) == getattr(recipe, field), field
    assert cfg.dataset == "fashion-mnist" and cfg.steps == own_data.BUDGETS["cpu"].steps
    assert own_data.sampler_settings("cpu") == sampler_defaults(recipe) and recipe.sample_defaults
    smoke = own_data.sampler_settings("smoke")
    assert smoke == {**sampler_defaults(recipe), "steps": own_data.BUDGETS["smoke"].sample_steps}
    assert own_data.describe_sampler({"method": "ddpm", "steps": 10, "w": 0.0}) == "DDPM, 10 respaced steps, w = 0"
