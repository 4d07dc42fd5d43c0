# The one part runs over 60 lines: it trains, samples, trains a feature classifier and measures, in order.
"""The "Train on your own images" page: the quick_mnist recipe trained on Fashion-MNIST (Xiao, Rasul &
Vollgraf 2017, MIT licence), its samples, and the metrics kit on that data with a feature classifier
trained on Fashion-MNIST itself.

One part, ``fashion_mnist``: train (or resume) ``quick_mnist`` with ``dataset="fashion-mnist"`` (the
network follows the data: 28x28 grey, 10 classes), draw a grid of samples (one class per column), train
the feature classifier on the training set and score it on the test set, then FID / KID / IS of model
samples against the test set on that classifier's features, next to the same numbers for as many real
training images (the floor a perfect model of the training data would reach with that many samples).

At the cpu tier Fashion-MNIST is read from ``$DIFFUSION_EDU_DATA/FashionMNIST/raw/`` (or downloaded);
at the smoke tier the same loader reads small IDX files of noise that :func:`smoke_data` writes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..presets import TrainConfig, training_preset
from .common import (
    Budget,
    BudgetTable,
    Part,
    chapter_parts,
    check_tier,
    ensure_trained,
    final_loss,
    result_path,
    runs_root,
    save_result,
    training_curve,
)
from .figures import save_grid

__all__ = [
    "CHAPTER",
    "PARTS",
    "OwnDataBudget",
    "BUDGETS",
    "config",
    "sampler_settings",
    "describe_sampler",
    "smoke_data",
    "grid_path",
]

CHAPTER = "own_data"
RUN = "fashion_quick_mnist"
GRID = "fashion_samples.png"


@dataclass(frozen=True)
class OwnDataBudget(Budget):
    """Training steps, samples in the grid and for the metrics, classifier epochs (or steps), and the sampler's
    steps: None for the ones the recipe recommends and stores with the run (``sample_defaults``)."""

    steps: int
    batch_size: int
    sample_steps: int | None
    grid_n: int
    n_samples: int
    classifier_epochs: int
    classifier_max_steps: int | None = None


# no colab entry: the colab tier uses the gpu budget (the rule of .budgets)
BUDGETS: BudgetTable[OwnDataBudget] = BudgetTable(
    "own_data.BUDGETS",
    {
        "smoke": OwnDataBudget(
            steps=4, batch_size=8, sample_steps=3, grid_n=20, n_samples=20, classifier_epochs=1, classifier_max_steps=3
        ),
        # the recipe's budget: 8,000 x 32 images (about 4 passes over the 60,000), about what ten minutes of the idle
        # 2-core machine buy quick_mnist (chapter 5b); at 1,000 steps its samples were still grainy noise
        "cpu": OwnDataBudget(
            steps=8000, batch_size=32, sample_steps=None, grid_n=100, n_samples=1000, classifier_epochs=2
        ),
        "gpu": OwnDataBudget(
            steps=20_000, batch_size=128, sample_steps=None, grid_n=100, n_samples=10_000, classifier_epochs=10
        ),
    },
)


def smoke_data(root: str | Path, n_train: int = 60, n_test: int = 30, seed: int = 0) -> Path:
    """Write noise in Fashion-MNIST's four gzipped IDX files under ``root/FashionMNIST/raw`` (smoke tier)."""
    from ..data import write_idx_files

    rng = np.random.default_rng(seed)
    raw = Path(root) / "FashionMNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx_files(
            raw, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8), prefix=prefix
        )
    return Path(root)


def config(tier: str, data_path: str | None = None) -> TrainConfig:
    """quick_mnist on Fashion-MNIST, with the tier's steps and batch; no grids during training. The
    objective, learning-rate schedule, EMA and recommended sampler are the recipe's (chapter 5b's study)."""
    b = BUDGETS[tier]
    return training_preset(
        "quick_mnist",
        dataset="fashion-mnist",
        data_path=data_path,
        steps=b.steps,
        batch_size=b.batch_size,
        sample_every=0,
        checkpoint_every=500,
        log_every=50,
    )


def grid_path(tier: str | None = None) -> Path:
    """Where the part's grid of samples lies (next to its results file)."""
    return result_path(CHAPTER, "fashion_mnist", check_tier(tier)).parent / GRID


def sampler_settings(tier: str) -> dict[str, Any]:
    """What the page samples with at ``tier``: the recipe's recommended sampler (the ``sample`` command's
    defaults for the run), with the budget's step count where it sets one (the smoke tier)."""
    from ..generate import sampler_defaults

    b = BUDGETS[tier]
    return {**sampler_defaults(config(tier)), **({"steps": b.sample_steps} if b.sample_steps is not None else {})}


def describe_sampler(settings: dict[str, Any]) -> str:
    """``{"method": "ddpm", "steps": 10, "w": 0.0, ...}`` -> "DDPM, 10 respaced steps, w = 0"."""
    name = {"ddpm": "DDPM", "ddim": "DDIM", "dpm_solver_2m": "DPM-Solver++(2M)", "heun": "Heun"}
    method = settings["method"]
    return f"{name.get(method, method)}, {settings['steps']} respaced steps, w = {settings.get('w', 0.0):g}"


def _train_and_draw(tier: str, root: str | None, progress: bool):
    """Train (or load) the run at ``tier``, save its sample grid and draw the measured samples.
    Returns the config, the run's folder, the training result, the samples and their labels."""
    from ..checkpoint import load_model
    from ..generate import generate

    b = BUDGETS[tier]
    cfg = config(tier, root)
    out = runs_root(tier) / CHAPTER / RUN
    if tier == "smoke":
        shutil.rmtree(out, ignore_errors=True)
    result = ensure_trained(CHAPTER, RUN, cfg, tier, progress=progress)
    loaded = load_model(out / "checkpoint.pt", device="cpu")
    settings = sampler_settings(tier)
    grid, _ = generate(loaded, b.grid_n, **settings, seed=1)
    save_grid(grid, grid_path(tier), nrow=10)
    samples, labels = generate(loaded, b.n_samples, **settings, seed=2)
    return cfg, out, result, samples, labels


def _measure(tier: str, root: str | None, samples: torch.Tensor, labels: torch.Tensor, progress: bool):
    """Train the Fashion-MNIST feature classifier and score the samples, and as the floor as many random
    training images, against the test set in its features. Returns the classifier's config and summary,
    the two splits and the two sets of scores."""
    from ..classifier import ClassifierConfig, train_classifier
    from ..data import load_dataset
    from ..metrics import reference_stats
    from .evaluation import measure

    b = BUDGETS[tier]
    clf_cfg = ClassifierConfig(
        dataset="fashion-mnist", data_path=root, epochs=b.classifier_epochs, max_steps=b.classifier_max_steps
    )
    clf, clf_summary = train_classifier(clf_cfg, progress=progress)
    train_set, test_set = (
        load_dataset("fashion-mnist", "train", path=root),
        load_dataset("fashion-mnist", "test", path=root),
    )
    g = torch.Generator().manual_seed(3)
    real_idx = torch.randperm(len(train_set), generator=g)[: b.n_samples]
    real, real_labels = train_set.batch(real_idx)
    splits = min(10, b.n_samples // 2)
    ref = reference_stats(test_set, clf)  # the test set's features, once for both sets
    scores = {  # the book's kit, with each metric's bootstrap interval over the samples
        name: measure(x, y, reference=ref, classifier=clf, is_splits=splits, generator=torch.Generator().manual_seed(4))
        for name, x, y in (("model", samples, labels), ("real_training_images", real, real_labels))
    }
    return clf_cfg, clf_summary, train_set, test_set, scores


def _fashion_mnist(tier: str, progress: bool, cache: Any = None) -> Path:
    """The chapter's one part: it trains its own run (a training part) and then measures it."""
    t0 = time.perf_counter()
    b = BUDGETS[tier]
    tmp = tempfile.mkdtemp() if tier == "smoke" else None
    try:
        root = str(smoke_data(tmp)) if tmp else None
        cfg, out, result, samples, labels = _train_and_draw(tier, root, progress)
        clf_cfg, clf_summary, train_set, test_set, scores = _measure(tier, root, samples, labels, progress)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    curve = training_curve(out)
    data = {
        "dataset": "fake Fashion-MNIST-format noise (smoke)"
        if tier == "smoke"
        else f"Fashion-MNIST training set ({len(train_set):,} images), test set ({len(test_set):,}) as reference",
        "classes": train_set.classes,
        "image_shape": list(train_set.image_shape),
        "model_kwargs_fitted": result.config.model_kwargs,
        "params": sum(p.numel() for p in result.model.parameters()),
        "steps": result.step,
        "batch_size": cfg.batch_size,
        "train_wall_time_s": round(result.wall_time_s, 1),
        "img_per_s": result.step * cfg.batch_size / max(result.wall_time_s, 1e-9),
        "final_loss": final_loss(curve),
        "curve": {"step": curve["step"], "loss": curve["loss"]},
        "grid": GRID,
        "grid_n": b.grid_n,
        "sampler": describe_sampler(sampler_settings(tier)),
        "sampler_settings": sampler_settings(tier),
        "classifier": clf_summary,
        "metrics": scores,
    }
    return save_result(
        CHAPTER,
        "fashion_mnist",
        data,
        {"run": cfg.to_dict(), "budget": b.as_config(), "classifier": asdict(clf_cfg)},
        tier,
        time.perf_counter() - t0,
    )


PARTS = chapter_parts(
    CHAPTER,
    Part(
        "fashion_mnist",
        "quick_mnist on Fashion-MNIST: samples, a Fashion-MNIST "
        "feature classifier, FID / KID / IS against the test set",
        _fashion_mnist,
    ),
)
