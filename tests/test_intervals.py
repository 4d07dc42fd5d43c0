"""The intervals kit: bootstrap and seed intervals that cover what they claim to, and the judge of orders.

Coverage is checked by simulation against known truths (a mean of Gaussian draws), with tolerances a
wrong implementation fails (a 68% interval or one of the wrong width covers far less or far more than
95% of the time); the fast FID / KID used by the bootstrap must equal the metrics module's numbers.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_edu.intervals import (
    Interval,
    bootstrap,
    compare,
    evaluation_intervals,
    interval_from,
    judge_order,
    rank_intervals,
    seed_spread,
    t_quantile,
)
from diffusion_edu.metrics import frechet_distance, mmd2_unbiased


def _mean(x: torch.Tensor) -> float:
    return float(x.mean())


def _coverage(method: str, draws: int, n: int, sampler, truth: float, n_boot: int = 200) -> float:
    gen = torch.Generator().manual_seed(1)
    hits = 0
    for _ in range(draws):
        iv = bootstrap(_mean, sampler(n, gen), n_boot=n_boot, method=method, generator=gen)
        hits += iv.low <= truth <= iv.high
    return hits / draws


def test_percentile_interval_of_a_mean_covers_about_95_percent():
    """200 samples of 50 N(0, 1) draws: the 95% percentile interval should hold 0 in ~95% of them
    (binomial sd 1.5%; percentile intervals under-cover slightly at small n)."""
    cover = _coverage("percentile", 200, 50, lambda n, g: torch.randn(n, generator=g, dtype=torch.float64), 0.0)
    assert 0.90 <= cover <= 0.98, cover


def test_bca_interval_of_a_skewed_mean_covers_about_95_percent():
    """Exponential draws (skewed, mean 1): BCa's bias and skew corrections keep coverage near 95%."""
    cover = _coverage("bca", 100, 40, lambda n, g: torch.empty(n, dtype=torch.float64).exponential_(generator=g), 1.0)
    assert 0.87 <= cover <= 0.99, cover


def test_width_shrinks_like_one_over_sqrt_n():
    """Four times the samples, half the width (the mean's standard error is sigma / sqrt(n))."""
    gen = torch.Generator().manual_seed(2)
    widths = {
        n: sum(bootstrap(_mean, torch.randn(n, generator=gen), n_boot=300, generator=gen).width for _ in range(10)) / 10
        for n in (100, 400)
    }
    assert 1.7 <= widths[100] / widths[400] <= 2.3, widths
    assert 0.8 * 2 * 1.96 / 10 <= widths[100] <= 1.2 * 2 * 1.96 / 10  # 2 * 1.96 * sigma / sqrt(n)


def test_t_quantiles_match_the_tables():
    for df, q in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)]:
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-6)
    assert t_quantile(0.025, 4) == pytest.approx(-2.776, abs=1e-3)


def test_seed_spread_is_the_t_interval_and_covers():
    """mean ± t s / sqrt(k), and with 3 seeds it holds the true mean in ~95% of 300 repeats."""
    iv = seed_spread([10.0, 12.0, 14.0])
    assert iv.estimate == 12.0 and iv.method == "t over seeds" and iv.n == 3 and iv.n_boot == 0
    assert iv.high - 12.0 == pytest.approx(4.303 * 2.0 / math.sqrt(3), rel=1e-3)
    gen = torch.Generator().manual_seed(3)
    hits = 0
    for _ in range(300):
        s = seed_spread((5 + 2 * torch.randn(3, generator=gen)).tolist())
        hits += s.low <= 5 <= s.high
    assert 0.91 <= hits / 300 <= 0.985


def test_judge_order_needs_separated_intervals():
    """Overlap: inconclusive; separated in the claimed order: reproduced; separated the other way: not."""
    a, b, c = (
        Interval(10, 9, 11, 0.95, "m", 100, 500),
        Interval(12, 10.5, 13.5, 0.95, "m", 100, 500),
        Interval(20, 18, 22, 0.95, "m", 100, 500),
    )
    assert compare(a, b) == "overlap" and compare(a, c) == "lower" and compare(c, a) == "higher"
    assert judge_order({"a": a, "b": b}, ["a", "b"])[0] == "inconclusive"
    assert judge_order({"a": a, "c": c}, ["a", "c"])[0] == "reproduced"
    assert judge_order({"a": a, "c": c}, ["c", "a"])[0] == "not reproduced"
    assert judge_order({"a": a, "c": c}, ["c", "a"], higher_is_better=True)[0] == "reproduced"
    verdict, why = judge_order({"a": a, "b": b, "c": c}, ["a", "b", "c"])
    assert verdict == "inconclusive" and "a 10 [9, 11] vs b 12 [10.5, 13.5]" in why
    assert judge_order({"a": a, "b": b, "c": c}, ["b", "a", "c"])[0] == "inconclusive"
    assert judge_order({"a": a, "b": b, "c": c}, ["a", "c", "b"])[0] == "not reproduced"
    with pytest.raises(ValueError, match="missing"):
        judge_order({"a": a}, ["a", "z"])


def test_rank_intervals_marks_only_separated_neighbours():
    """The prose's ranking: "<" only between neighbours whose intervals are disjoint, "~" otherwise; the
    entries tied with the best are named; a claim is judged as judge_order judges it."""
    a, b, c = (
        Interval(10, 9, 11, 0.95, "m", 100, 500),
        Interval(12, 10.5, 13.5, 0.95, "m", 100, 500),
        Interval(20, 18, 22, 0.95, "m", 100, 500),
    )
    r = rank_intervals({"c": c, "b": b, "a": a}, claimed=["c", "a", "b"])
    assert r["order"] == ["a", "b", "c"] and r["ranking"] == "a ~ b < c"
    assert [p["decided"] for p in r["pairs"]] == [False, True] and r["best"] == ["a", "b"]
    assert r["verdict"] == "not reproduced" and "c 20 [18, 22] vs a 10 [9, 11]" in r["why"]
    up = rank_intervals({"a": a, "c": c}, higher_is_better=True)
    assert up["order"] == ["c", "a"] and up["ranking"] == "c < a" and up["best"] == ["c"] and "verdict" not in up
    with pytest.raises(ValueError, match="at least 2"):
        rank_intervals({"a": a})
    with pytest.raises(TypeError, match="Interval"):
        rank_intervals({"a": a, "b": {"estimate": 1.0}})


def test_interval_records_round_trip_and_bad_input_is_named():
    iv = Interval(1.0, 0.5, 1.5, 0.95, "bootstrap-percentile", 1000, 500)
    rec = iv.to_dict()
    assert set(rec) == {"estimate", "low", "high", "level", "method", "n_boot", "n"}
    assert Interval.from_dict(rec) == iv and interval_from(rec) == iv and interval_from(3.0) is None
    with pytest.raises(ValueError, match="low must not exceed high"):
        Interval(1.0, 2.0, 1.5, 0.95, "m", 1, 1)
    with pytest.raises(ValueError, match="needs the keys"):
        Interval.from_dict({"estimate": 1.0})
    x = torch.randn(20)
    with pytest.raises(ValueError, match="level"):
        bootstrap(_mean, x, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap(_mean, x, n_boot=5)
    with pytest.raises(ValueError, match="method"):
        bootstrap(_mean, x, method="basic")
    centred = bootstrap(lambda v: float(v.mean()) + 1.0, x, n_boot=50, method="centred", estimate=5.0)
    assert centred.low <= 5.0 <= centred.high  # moved onto the given estimate
    with pytest.raises(ValueError, match="resample"):
        bootstrap(_mean, x, resample=[False])
    with pytest.raises(TypeError, match="sets must be"):
        bootstrap(_mean, [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 finite"):
        seed_spread([1.0])


def test_a_fixed_set_is_not_resampled():
    """resample=(True, False): the second set reaches the statistic unchanged in every replicate."""
    ref = torch.arange(5.0)
    seen = []

    def stat(a, b):
        seen.append(torch.equal(b, ref))
        return float(a.mean() - b.mean())

    bootstrap(stat, torch.randn(30), ref, resample=(True, False), n_boot=20)
    assert all(seen)


def _features(n: int, d: int, shift: float, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_fast_fid_and_kid_equal_the_metrics_modules():
    """The bootstrap's FID and KID are the numbers diffusion_edu.metrics reports on the same features."""
    from diffusion_edu.metrics import _fid_from_features, _kid_from_features

    a, b = _features(300, 16, 0.0, 0), _features(300, 16, 0.3, 1)
    assert frechet_distance(a, b) == pytest.approx(_fid_from_features(a.float(), b.float()), rel=1e-5)
    kid_mean, _ = _kid_from_features(a.float(), b.float(), subsets=1, subset_size=300, generator=None)
    assert mmd2_unbiased(a, b) == pytest.approx(kid_mean, rel=1e-4)


def test_evaluation_intervals_records_every_metric():
    """Every record carries the reported estimate, its level and method; the precision / recall
    estimates equal the metrics module's."""
    from diffusion_edu.metrics import precision_recall_from_features

    f, fr = _features(120, 8, 0.0, 2), _features(150, 8, 0.5, 3)
    logits = torch.randn(120, 10, generator=torch.Generator().manual_seed(4))
    labels = logits.argmax(1)
    out = evaluation_intervals(
        f,
        logits,
        fr,
        labels,
        estimates={"fid": 123.0},
        n_boot={k: 20 for k in ("fid", "kid_mean", "is", "precision", "recall", "conditional_accuracy")},
        generator=torch.Generator().manual_seed(0),
    )
    assert set(out) == {
        f"{k}_interval" for k in ("fid", "kid_mean", "is", "precision", "recall", "conditional_accuracy")
    }
    assert out["fid_interval"]["estimate"] == 123.0 and out["conditional_accuracy_interval"]["estimate"] == 1.0
    pr = precision_recall_from_features(f, fr)
    assert (
        out["precision_interval"]["estimate"] == pr["precision"] and out["recall_interval"]["estimate"] == pr["recall"]
    )
    assert all(r["level"] == 0.95 for r in out.values())
    assert (
        out["fid_interval"]["method"] == "bootstrap-centred"
        and out["kid_mean_interval"]["method"] == "bootstrap-percentile"
    )
    assert out["recall_interval"]["n"] == 150 and out["precision_interval"]["n"] == 120  # each redraws its queries


@pytest.mark.slow
def test_every_interval_holds_its_estimate_on_real_digits():
    """Duplicates in a resample shrink k-NN radii and add FID's bias once more; the kit's intervals are
    drawn so that for real digits against the held-out digits every one still contains its estimate
    (the plain percentile bootstrap of FID and recall does not)."""
    from diffusion_edu.data import load_embedded_mnist
    from diffusion_edu.metrics import classifier_outputs

    train = load_embedded_mnist("train")
    x, y = train.batch(torch.randperm(len(train), generator=torch.Generator().manual_seed(6))[:300])
    f, logits = classifier_outputs(x)
    f_ref, _ = classifier_outputs(load_embedded_mnist("heldout").tensors()[0])
    out = evaluation_intervals(
        f,
        logits,
        f_ref,
        y,
        n_boot={k: 100 for k in ("fid", "kid_mean", "is", "precision", "recall", "conditional_accuracy")},
        generator=torch.Generator().manual_seed(0),
    )
    for name, rec in out.items():
        assert rec["low"] <= rec["estimate"] <= rec["high"], (name, rec)
    plain = bootstrap(
        frechet_distance, f, f_ref, resample=(True, False), n_boot=100, generator=torch.Generator().manual_seed(0)
    )
    assert plain.low > plain.estimate  # why FID's interval is centred


@pytest.mark.slow
def test_fid_bootstrap_width_matches_the_spread_between_disjoint_sets():
    """On real features (blurred training digits, FID ~80 against the held-out digits) the bootstrap's 95%
    width from one set of 500 matches 2 * 1.96 sd of FID over disjoint sets of 500."""
    from diffusion_edu.data import load_embedded_mnist
    from diffusion_edu.experiments.measuring import gaussian_blur
    from diffusion_edu.metrics import classifier_outputs

    train, held = load_embedded_mnist("train").tensors()[0], load_embedded_mnist("heldout").tensors()[0]
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:6000]
    f, _ = classifier_outputs(gaussian_blur(train[perm], 0.6))
    f_ref, _ = classifier_outputs(held)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 128 x 128 matrices: one thread is several times faster on a busy machine
    try:
        fids = torch.tensor([frechet_distance(f[i * 500 : (i + 1) * 500], f_ref) for i in range(12)])
        iv = bootstrap(
            frechet_distance,
            f[:500],
            f_ref,
            resample=(True, False),
            n_boot=150,
            generator=torch.Generator().manual_seed(1),
        )
    finally:
        torch.set_num_threads(threads)
    assert 0.6 <= iv.width / (2 * 1.96 * float(fids.std())) <= 1.6


@pytest.mark.slow
def test_measure_stores_intervals_and_keeps_the_numbers():
    """The evaluation pipeline adds an interval record per metric (and precision / recall) without changing
    a single number that evaluate() reports."""
    from diffusion_edu.data import load_embedded_mnist
    from diffusion_edu.experiments.common import heldout_reference, measure
    from diffusion_edu.metrics import evaluate

    train = load_embedded_mnist("train")
    x, y = train.batch(torch.randperm(len(train), generator=torch.Generator().manual_seed(5))[:120])
    m = measure(x, y, generator=torch.Generator().manual_seed(0))
    e = evaluate(x, heldout_reference(), labels=y, generator=torch.Generator().manual_seed(0))
    assert all(m[k] == v for k, v in e.items())
    for k in ("fid", "kid_mean", "is", "precision", "recall", "conditional_accuracy"):
        rec = m[f"{k}_interval"]
        n = m["n_reference"] if k == "recall" else 120  # recall redraws the reference images (its queries)
        assert rec["estimate"] == m[k] and rec["level"] == 0.95 and rec["n"] == n and rec["low"] <= rec["high"]
    assert m["pr_k"] == 3 and 0.0 <= m["precision"] <= 1.0
    assert "fid_interval" not in measure(x, y, intervals=False)


def test_measure_against_another_reference_scores_against_it():
    """``reference=`` swaps the held-out digits for another set (the own-data page's test images): the same set
    passed as the default gives the same numbers, and a different reference changes them."""
    from diffusion_edu.data import load_embedded_mnist
    from diffusion_edu.experiments.common import heldout_reference, measure
    from diffusion_edu.experiments.evaluation import book_classifier
    from diffusion_edu.metrics import reference_stats

    train = load_embedded_mnist("train")
    x, y = train.batch(torch.arange(60))

    def kw():  # a fresh generator per call: KID and IS draw their subsets from it
        return dict(intervals=False, generator=torch.Generator().manual_seed(0))

    default = measure(x, y, **kw())
    same = measure(x, y, reference=reference_stats(heldout_reference(), book_classifier()), **kw())
    assert all(same[k] == v for k, v in default.items())
    other = measure(x, y, reference=train.batch(torch.arange(60, 300))[0], classifier=book_classifier(), **kw())
    assert other["n_reference"] == 240 and other["fid"] != default["fid"]


def test_kid_with_a_fixed_reference_uses_its_within_set_term_once():
    """The fast path for a reference that is not redrawn (its within-set kernel mean computed once) gives the
    same number as passing all its rows, for resampled sample indices with duplicates."""
    from diffusion_edu.intervals import _mmd2_of_indices, _poly_kernel, _within

    g = torch.Generator().manual_seed(3)
    fs, fr = torch.randn(40, 8, generator=g).double(), torch.randn(60, 8, generator=g).double() + 0.3
    k_gg, k_rr, k_gr = _poly_kernel(fs, fs), _poly_kernel(fr, fr), _poly_kernel(fs, fr)
    draw, every = torch.randint(0, 40, (40,), generator=g), torch.arange(60)
    full = _mmd2_of_indices(k_gg, k_rr, k_gr, draw, every)
    fast = _mmd2_of_indices(k_gg, k_rr, k_gr, draw, None, _within(k_rr, every))
    assert fast == pytest.approx(full, rel=1e-12) and full != 0.0
    with pytest.raises(ValueError, match="rr_fixed"):
        _mmd2_of_indices(k_gg, k_rr, k_gr, draw, None)
