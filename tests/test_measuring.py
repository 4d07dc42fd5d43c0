"""Chapter 2 (measuring): the degradations, subsets and fits the chapter's experiments use, the guard that
keeps the chapter from measuring an unfinished network, and every part run at the smoke tier, writing the
keys the notebook reads. The parts run once per module in a temporary book folder."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from diffusion_edu.data import load_embedded_mnist
from diffusion_edu.experiments import measuring
from diffusion_edu.experiments.common import result_path
from diffusion_edu.experiments.measuring import (
    DEGRADATIONS,
    add_noise,
    degraded_set,
    draw_subsets,
    fit_inverse_n,
    gaussian_blur,
    pixel_features,
    random_classifier,
    shift_images,
)
from diffusion_edu.metrics import classifier_outputs, evaluate, load_mnist_classifier


@pytest.fixture(scope="module")
def digits():
    return load_embedded_mnist("heldout").tensors()  # (1005, 1, 28, 28) in [-1, 1], (1005,)


@pytest.fixture(scope="module")
def train_small():
    return load_embedded_mnist("train").subset(300)


def _dot(value: float = 1.0, at: tuple[int, int] = (14, 14)) -> torch.Tensor:
    x = torch.full((1, 1, 28, 28), -1.0)
    x[0, 0, at[0], at[1]] = value
    return x


# --- degradations -------------------------------------------------------------------------------------------


def test_blur_of_a_dot_is_the_sampled_gaussian():
    """Blurring one bright pixel on background must give the 2-D Gaussian exp(-r^2 / 2 sigma^2), normalised
    to the dot's excess over the background: the kernel is separable, sums to 1 and is centred."""
    sigma = 1.5
    out = gaussian_blur(_dot(), sigma)
    r = math.ceil(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = k / k.sum()
    expected = torch.zeros(28, 28, dtype=torch.float64)
    expected[14 - r : 15 + r, 14 - r : 15 + r] = torch.outer(k, k)
    assert torch.allclose((out[0, 0] + 1).double() / 2, expected, atol=1e-6)


def test_blur_keeps_background_and_mass_and_identity_at_zero(digits):
    """Background stays background (the border is padded with it), a digit's ink (x + 1 summed) is kept when
    it stays inside the frame, and sigma = 0 changes nothing."""
    x = digits[0][:16]
    assert torch.equal(gaussian_blur(x, 0), x)
    flat = torch.full((2, 1, 28, 28), -1.0)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)
    centred = _dot().double()  # ink far from the border
    assert float((gaussian_blur(centred, 1.0) + 1).sum()) == pytest.approx(2.0, rel=1e-12)
    assert float(gaussian_blur(x, 1.0).max()) < float(x.max())  # a blur lowers the brightest strokes


def test_noise_has_the_asked_spread_and_stays_in_range():
    """On mid-grey images (no clamping for small sigma) the added noise has standard deviation sigma;
    every output lies in [-1, 1]; sigma = 0 changes nothing."""
    grey = torch.full((64, 1, 28, 28), -0.2)
    out = add_noise(grey, 0.1, torch.Generator().manual_seed(0))
    assert float(out.std()) == pytest.approx(0.1, rel=0.02)
    assert float(add_noise(grey - 0.7, 0.8, torch.Generator().manual_seed(0)).min()) >= -1.0
    assert torch.equal(add_noise(grey, 0.0), grey)


def test_shift_moves_the_centre_of_mass_and_round_trips(digits):
    """Shifting by (dx, dy) moves each digit's ink centre by exactly (dx, dy) when nothing leaves the frame,
    and shifting back restores the digit."""
    x = shift_images(_dot(at=(10, 12)), 3, -2)
    assert float(x[0, 0, 8, 15]) == 1.0 and float((x > -1).sum()) == 1
    d = digits[0][:8]
    back = shift_images(shift_images(d, 2, 1), -2, -1)
    assert torch.equal(back[..., :27, :26], d[..., :27, :26])  # what never left the frame
    assert bool((back[..., 27, :] == -1).all()) and bool((back[..., :, 26:] == -1).all())


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda x: gaussian_blur(x, -1.0), "sigma"),
        (lambda x: gaussian_blur(x, float("nan")), "sigma"),
        (lambda x: add_noise(x, -0.1), "sigma"),
        (lambda x: shift_images(x, 28), "dx"),
        (lambda x: shift_images(x, 1, 1.5), "dy"),
        (lambda x: gaussian_blur(x[:, :, :20], 1.0), "(B, 1, 28, 28)"),
    ],
)
def test_degradations_reject_bad_input(digits, call, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        call(digits[0][:2])


def test_degraded_sets_hold_what_their_names_say(train_small):
    """'k classes' holds only labels 0..k-1; 'k distinct digits' holds exactly k different images, k/10 per
    class; 'none' is unchanged training digits; pure noise is labelled -1; every set has n images."""
    g = torch.Generator().manual_seed(0)
    for name in DEGRADATIONS:
        x, y = degraded_set(train_small, name, 30, g)
        assert x.shape == (30, 1, 28, 28) and y.shape == (30,) and float(x.abs().max()) <= 1.0, name
    x, y = degraded_set(train_small, "2 classes", 30, g)
    assert set(y.tolist()) <= {0, 1}
    x, y = degraded_set(train_small, "10 distinct digits", 30, g)
    assert len(torch.unique(x.flatten(1), dim=0)) == 10 and sorted(set(y.tolist())) == list(range(10))
    x, _ = degraded_set(train_small, "none", 30, g)
    train_x = train_small.tensors()[0].flatten(1)
    assert all(bool((train_x == row).all(1).any()) for row in x.flatten(1))
    assert set(degraded_set(train_small, "pure noise", 5, g)[1].tolist()) == {-1}
    with pytest.raises(ValueError, match="name must be one of"):
        degraded_set(train_small, "sharpen", 5)
    with pytest.raises(ValueError, match="more than the"):
        degraded_set(train_small, "1 class", 100)


# --- subsets, fits, feature spaces --------------------------------------------------------------------------


def test_subsets_are_disjoint_when_they_fit_and_whole_when_n_is_the_pool():
    g = torch.Generator().manual_seed(0)
    subsets, disjoint = draw_subsets(100, 20, 5, g)
    assert disjoint and len(torch.cat(subsets).unique()) == 100
    subsets, disjoint = draw_subsets(100, 30, 5, g)
    assert not disjoint and all(len(s.unique()) == 30 for s in subsets)
    subsets, _ = draw_subsets(50, 50, 3, g)
    assert all(sorted(s.tolist()) == list(range(50)) for s in subsets)
    for bad in ((10, 0, 1), (10, 11, 1), (10, 5, 0)):
        with pytest.raises(ValueError):
            draw_subsets(*bad)


def test_inverse_n_fit_recovers_its_law():
    """Values that follow v_inf + slope / n exactly give back v_inf and slope."""
    counts = [100, 250, 1000, 5000]
    fit = fit_inverse_n(counts, [2.5 + 700.0 / n for n in counts])
    assert fit["v_inf"] == pytest.approx(2.5, abs=1e-9) and fit["slope"] == pytest.approx(700.0, rel=1e-9)
    with pytest.raises(ValueError, match="two distinct counts"):
        fit_inverse_n([100, 100], [1.0, 2.0])


def test_pixel_features_are_block_means(digits):
    x = digits[0][:3]
    f = pixel_features(x)
    assert f.shape == (3, 49)
    assert torch.allclose(f[:, 8], x[:, 0, 4:8, 4:8].mean(dim=(1, 2)))  # block (row 1, column 1)


def test_random_classifier_is_reproducible_untrained_and_leaves_the_rng_alone(digits):
    before = torch.get_rng_state()
    a, b = random_classifier(0), random_classifier(0)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    shipped = load_mnist_classifier()
    assert not torch.equal(a.hidden.weight, shipped.hidden.weight)
    acc = float((a(digits[0][:500]).argmax(1) == digits[1][:500]).float().mean())
    assert acc < 0.5  # it has learned nothing about digits


def test_scores_on_precomputed_features_match_the_public_kit(digits, train_small):
    """The parts compute each set's features once and score subsets from them; that must give the numbers
    diffusion_edu.metrics.evaluate gives on the images themselves (same random subsets / splits)."""
    samples, labels = train_small.tensors()
    ref = digits[0]
    f, logits = classifier_outputs(samples)
    f_ref, _ = classifier_outputs(ref)
    ours = measuring.kit._scores(f, f_ref, logits, torch.Generator().manual_seed(3), labels)
    kit = evaluate(samples, ref, labels, generator=torch.Generator().manual_seed(3))
    assert ours["fid"] == pytest.approx(kit["fid"], rel=1e-9)
    assert ours["is"] == pytest.approx(kit["is"], rel=1e-9)
    assert ours["accuracy"] == pytest.approx(kit["conditional_accuracy"])
    assert ours["kid"] == pytest.approx(kit["kid_mean"], rel=1e-6, abs=1e-9)


# --- the parts at the smoke tier ----------------------------------------------------------------------------


def test_conditional_accuracy_counts_each_asked_label():
    """Per asked label, the fraction classified as that label; the confusion counts add up to the samples and
    their diagonal over the total is the overall accuracy."""
    asked = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 9])
    got = asked.clone()
    got[[1, 4, 16]] = torch.tensor([7, 2, 3])  # one wrong sample each for labels 0, 1 and 9
    logits = torch.nn.functional.one_hot(got, 10).float() * 5.0 - 1.0  # (18, 10), argmax = got
    out = measuring.bias._conditional_accuracy(logits, asked)
    assert out["conditional_accuracy"] == pytest.approx(15 / 18)
    assert out["conditional_accuracy_per_class"][:3] == pytest.approx([3 / 4, 1 / 2, 1.0])
    assert out["conditional_accuracy_per_class"][9] == pytest.approx(1 / 2)
    confusion = torch.tensor(out["confusion"])
    assert confusion.sum() == 18 and confusion[0, 7] == 1 and confusion[1, 2] == 1 and confusion[9, 3] == 1
    assert confusion.diagonal().sum() / confusion.sum() == pytest.approx(out["conditional_accuracy"])


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """A temporary book folder (results/ and runs/) with every part run once at the smoke tier."""
    root = tmp_path_factory.mktemp("book")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFUSION_EDU_RESULTS", str(root / "results"))
        records = {}
        for name, part in measuring.PARTS.items():
            path = part.run("smoke", False)
            assert path == result_path("measuring", name, "smoke")
            records[name] = json.loads(path.read_text())
        yield root, records, mp


def test_parts_write_smoke_results_outside_results(book):
    """Smoke numbers never land in results/: they go under runs/smoke/results, stamped tier smoke."""
    root, records, _ = book
    assert not (root / "results" / "measuring").exists()
    for name, rec in records.items():
        assert rec["tier"] == "smoke" and rec["name"] == f"measuring/{name}"
        assert (root / "runs" / "smoke" / "results" / "measuring" / f"{name}.json").is_file()
    figures = root / "runs" / "smoke" / "results" / "measuring" / "figures"
    assert (figures / "degradations.png").is_file() and (figures / "nearest_neighbours.png").is_file()


def test_sample_size_bias_holds_what_the_notebook_reads(book):
    _, records, _ = book
    data = records["sample_size_bias"]["data"]
    budget = measuring.BUDGETS["smoke"]
    assert set(data["curves"]) == {"real_vs_heldout", "model_vs_heldout", "model_vs_train", "real_vs_train"}
    for curve in data["curves"].values():
        assert {"set", "reference", "reference_size", "rows", "fit"} <= set(curve)
        for row in curve["rows"]:
            assert {
                "n",
                "fid_mean",
                "fid_std",
                "kid_mean",
                "kid_std",
                "is_mean",
                "is_std",
                "disjoint",
                "identical",
                "runs",
            } <= set(row)
            assert len(row["runs"]) == budget.seeds
    model = data["curves"]["model_vs_heldout"]["rows"]
    assert [r["n"] for r in model] == list(budget.counts) and model[-1]["identical"]
    assert model[-1]["fid_std"] == pytest.approx(0.0, abs=1e-6)  # the whole pool every time: one FID
    assert {
        "n",
        "steps",
        "wall_time_s",
        "conditional_accuracy",
        "conditional_accuracy_per_class",
        "confusion",
        "model",
    } <= set(data["pool"])
    assert sum(map(sum, data["pool"]["confusion"])) == budget.pool
    assert {"mean", "std", "n", "disjoint"} <= set(data["repeatability"])  # the ledger's Report E row


def test_degradation_part_holds_what_the_notebook_reads(book):
    _, records, _ = book
    data = records["inception_vs_classifier"]["data"]
    assert list(data["degradations"]) == list(DEGRADATIONS)
    row = data["degradations"]["blur 2"]
    assert {"classifier", "random_cnn", "pixels", "caught", "fraction_of_ceiling"} <= set(row)
    assert {"fid_mean", "fid_std", "kid_mean", "is_mean", "accuracy_mean"} <= set(row["classifier"])
    assert data["degradations"]["pure noise"]["fraction_of_ceiling"]["classifier"] == pytest.approx(1.0)
    assert data["degradations"]["none"]["fraction_of_ceiling"]["pixels"] == pytest.approx(0.0)
    assert data["inception"] == {"attempted": False, "reason": data["inception"]["reason"]}


def test_memorisation_part_holds_what_the_notebook_reads(book):
    """Near-copies of training digits must sit much closer to the training set than held-out digits do:
    the check can fire."""
    _, records, _ = book
    data = records["memorisation"]["data"]
    groups = data["groups"]
    assert set(groups) == {"model samples", "held-out digits", "near-copies"}
    for g in groups.values():
        assert {"mean", "median", "p05", "min", "histogram", "below_heldout_p01"} <= set(g)
        assert len(g["histogram"]) == len(data["histogram_edges"]) - 1 and sum(g["histogram"]) == g["n"]
    assert groups["near-copies"]["p95"] < groups["held-out digits"]["p05"]
    assert groups["near-copies"]["below_heldout_p01"] == 1.0
    assert data["lpips"]["attempted"] is False


def test_pool_is_drawn_once_and_reused(book):
    root, _, mp = book
    path = root / "runs" / "smoke" / "measuring" / "pool.pt"
    stamp = path.stat().st_mtime_ns
    mp.setenv("DIFFUSION_EDU_RESULTS", str(root / "results"))
    pool = measuring.model_pool("smoke", progress=False)
    assert path.stat().st_mtime_ns == stamp and pool["images"].shape == (measuring.BUDGETS["smoke"].pool, 1, 28, 28)
    assert pool["labels"].tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_an_unfinished_or_missing_network_is_refused(book, tmp_path, monkeypatch):
    """The chapter must never measure (or train) a network the training queue has not finished: a missing
    checkpoint and one short of its steps both raise, naming the command that trains it."""
    root, _, _ = book
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    with pytest.raises(FileNotFoundError, match="experiment report_e --tier cpu --only training"):
        measuring.load_measured_model("cpu")
    state = torch.load(root / "runs" / "smoke" / "report_e" / "T1000_linear" / "checkpoint.pt", weights_only=True)
    state["step"] = 1
    dest = tmp_path / "runs" / "cpu" / "report_e" / "T1000_linear" / "checkpoint.pt"
    dest.parent.mkdir(parents=True)
    torch.save(state, dest)
    with pytest.raises(RuntimeError, match="unfinished"):
        measuring.load_measured_model("cpu")


def test_precision_recall_part_holds_what_the_notebook_reads(book):
    """Every set carries precision, recall and FID with interval records, and pure noise lies off the
    held-out digits' manifold. (At the smoke tier each of the ten distinct digits is repeated only 3 times,
    no more than k, so the collapse's loss of recall is pinned in test_precision_recall.py instead.)"""
    _, records, _ = book
    data = records["precision_recall"]["data"]
    assert list(data["sets"]) == list(measuring.PR_SETS) and data["k"] == 3
    for row in data["sets"].values():
        for key in ("precision", "recall", "fid"):
            iv = row[f"{key}_interval"]
            assert iv["estimate"] == row[key] and iv["low"] <= iv["high"] and iv["level"] == 0.95
    assert data["sets"]["pure noise"]["precision"] == 0.0
