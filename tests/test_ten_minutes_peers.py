"""The peers' side of the ten-minute comparison (benchmarks/peers/ten_minutes.py): the budget arithmetic and
the side-by-side verdicts everywhere; the peers' own loops (trained for a few seconds, sampled, measured) only
where they are installed (``make bench-peers``; run these with benchmarks/.venv/bin/python)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
from _records import interval as _iv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/ is a folder of scripts, not an installed package
tm = importlib.import_module("peers.ten_minutes")

HAVE_PEERS = all(importlib.util.find_spec(m) is not None for m in ("diffusers", "denoising_diffusion_pytorch"))
needs_peers = pytest.mark.skipif(
    not HAVE_PEERS,
    reason="diffusers / denoising-diffusion-pytorch not installed (optional: `make bench-peers`)",
)


def test_budget_steps_fill_the_rest_of_the_budget_at_the_probe_rate():
    # 30 steps in 3 s (10 steps/s), 3 s spent of 1 minute: 57 s left hold 570 more steps
    assert tm.budget_steps(30, 3.0, 1.0, 3.0) == 600
    # a slower probe: half the rate, half the steps
    assert tm.budget_steps(30, 6.0, 1.0, 6.0) == 30 + 270
    # a probe that used up the budget keeps only itself
    assert tm.budget_steps(30, 90.0, 1.0, 90.0) == 30
    for bad in ((0, 1.0, 1.0, 0.0), (30, 0.0, 1.0, 0.0), (30, 1.0, 0.0, 0.0)):
        with pytest.raises(ValueError):
            tm.budget_steps(*bad)


def _rec(fid, fid_lo, fid_hi, acc, acc_lo, acc_hi, seconds):
    return {
        "fid": fid,
        "fid_interval": _iv(fid, fid_lo, fid_hi),
        "conditional_accuracy": acc,
        "conditional_accuracy_interval": _iv(acc, acc_lo, acc_hi),
        "sample_seconds": seconds,
    }


def test_side_by_side_reads_only_disjoint_intervals_as_a_difference():
    package = _rec(30.0, 28.0, 32.0, 0.90, 0.88, 0.92, 10.0)
    worse_peer = _rec(80.0, 75.0, 85.0, 0.50, 0.47, 0.53, 20.0)
    close_peer = _rec(31.0, 29.0, 33.0, 0.93, 0.915, 0.945, 5.0)
    better_peer = _rec(10.0, 9.0, 11.0, 0.99, 0.985, 0.995, 12.0)
    assert tm.side_by_side(package, worse_peer) == {
        "fid": "ahead",
        "conditional_accuracy": "ahead",
        "sample_seconds": "ahead",
    }
    assert tm.side_by_side(package, close_peer) == {
        "fid": "inconclusive",
        "conditional_accuracy": "inconclusive",
        "sample_seconds": "behind",
    }
    assert tm.side_by_side(package, better_peer) == {
        "fid": "behind",
        "conditional_accuracy": "behind",
        "sample_seconds": "ahead",
    }


def test_the_recipes_name_real_settings_and_match_the_package_network_in_size():
    from diffusion_edu.models import build_model_preset, count_parameters

    assert set(tm.PEER_RECIPES) == {"diffusers", "lucidrains"}
    assert tm.PEER_RECIPES["diffusers"]["kwargs"]["num_class_embeds"] == 10
    assert tm.PEER_RECIPES["lucidrains"]["kwargs"]["num_classes"] == 10
    assert count_parameters(build_model_preset("small_unet_mnist", num_classes=10)) == pytest.approx(160_000, rel=0.05)


@needs_peers
@pytest.mark.parametrize("peer", ["diffusers", "lucidrains"])
def test_each_peer_trains_for_its_budget_and_is_measured_by_the_book_kit(peer):
    import torch

    torch.set_num_threads(1)
    rec = tm.run_peer(peer, minutes=0.05, n=20, sample_steps=3, batch=8, subset=64)
    assert rec["steps"] >= tm.PROBE_STEPS and rec["train_wall_time_s"] < 0.05 * 60 * 3
    assert rec["images"].shape == (20, 1, 28, 28) and rec["images"].abs().max() <= 1
    assert rec["params"] == pytest.approx(160_000, rel=0.2)  # sized like the package's quick_mnist network
    assert 0 <= rec["metrics"]["conditional_accuracy"] <= 1 and rec["metrics"]["fid"] > 0
    assert rec["sampler"]["network_calls_per_sample"] == (6 if peer == "lucidrains" else 3)


def test_an_unknown_or_missing_peer_is_refused_with_its_name():
    with pytest.raises(ValueError, match="peer must be one of"):
        tm.run_peer("keras", minutes=0.01, n=10, sample_steps=2)
