"""Comparing FIDs that have no interval of their own, against the spread that chapter 2 measured.

The threshold is sigmas * sqrt(2) * sd at the same n (scaled up for larger FIDs), read from a results
file; a gap inside it is never called a difference, and a claimed order is judged pair by pair.
"""

from __future__ import annotations

import math

import pytest

from diffusion_edu.experiments.measuring import fid_comparison, fid_gap_threshold, fid_spread
from diffusion_edu.results import write_results


@pytest.fixture()
def spread_results(tmp_path):
    rows = [
        {"n": 500, "fid_mean": 40.0, "fid_std": 3.0, "disjoint": True, "runs": [{}] * 5},
        {"n": 2000, "fid_mean": 38.0, "fid_std": 1.0, "disjoint": False, "runs": [{}] * 5},
    ]
    write_results(
        tmp_path / "measuring" / "sample_size_bias.json",
        "measuring/sample_size_bias",
        {"curves": {"model_vs_heldout": {"rows": rows}}},
        {},
        "cpu",
        1.0,
    )
    return tmp_path


def test_spread_is_read_only_from_disjoint_sets(spread_results):
    assert fid_spread(500, spread_results) == {
        "n": 500,
        "mean": 40.0,
        "std": 3.0,
        "seeds": 5,
        "curve": "model_vs_heldout",
    }
    assert fid_spread(2000, spread_results) is None  # overlapping sets understate the spread
    assert fid_spread(500, spread_results / "nowhere") is None


def test_threshold_is_two_sd_of_a_difference_scaled_for_large_fids(spread_results):
    assert fid_gap_threshold(10.0, 20.0, 500, spread_results) == pytest.approx(2 * math.sqrt(2) * 3.0)
    assert fid_gap_threshold(10.0, 80.0, 500, spread_results) == pytest.approx(2 * math.sqrt(2) * 3.0 * 2)
    assert fid_gap_threshold(10.0, 20.0, 1000, spread_results) is None


def test_comparison_ranks_and_judges_claims(spread_results):
    thr = 2 * math.sqrt(2) * 3.0  # 8.49
    values = {"a": 10.0, "b": 15.0, "c": 30.0}
    cmp = fid_comparison(values, 500, ["a", "b", "c"], spread_results)
    assert cmp["ranking"] == "a ~ b < c" and cmp["pairs"][0]["threshold"] == pytest.approx(thr)
    assert cmp["verdict"] == "inconclusive at this tier"
    assert fid_comparison(values, 500, ["a", "c"], spread_results)["verdict"] == "reproduced at this tier"
    assert fid_comparison(values, 500, ["c", "a"], spread_results)["verdict"] == "not reproduced at this tier"
    assert fid_comparison(values, 500, ["b", "a"], spread_results)["verdict"] == "inconclusive at this tier"
    none = fid_comparison(values, 250, ["a", "c"], spread_results)
    assert none["verdict"] == "inconclusive at this tier" and none["ranking"] == "a ~ b ~ c"
    with pytest.raises(ValueError, match="missing"):
        fid_comparison(values, 500, ["a", "z"], spread_results)
