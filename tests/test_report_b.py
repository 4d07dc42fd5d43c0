"""Report B's experiments (classifier-free guidance on CIFAR-10) at the smoke tier, and the nearest-neighbour
search they use for the memorisation check.

The parts run end to end on fake CIFAR-10 files made by the test (through torchvision's real loader), with
the network cut off: LPIPS and Inception are recorded as not measured, the pixel-distance neighbours are
always there. The neighbour search itself is pinned where it can fail: an exact copy is found at distance
0 whatever the chunking, and the LPIPS step picks the best candidate by the distance it is given.
"""

from __future__ import annotations

import json
import socket

import pytest
import torch

from diffusion_edu.experiments import cifar, report_b


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    return tmp_path


@pytest.fixture
def offline(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield
    torch.hub.set_dir(previous)


def test_tiers_keep_report_b_settings():
    """Only the budget changes between tiers: cosine schedule, class embedding, 10% label dropout, AdamW 3e-4,
    batch 14 stay; the gpu tier is the preset (about 1M steps)."""
    gpu, colab = report_b.config("gpu"), report_b.config("colab")
    assert gpu.steps == report_b.REPORT["steps"] and gpu.batch_size == report_b.REPORT["batch"]
    for cfg in (gpu, colab, report_b.config("smoke")):
        assert (cfg.schedule, cfg.p_uncond, cfg.optimizer, cfg.lr) == ("cosine", 0.1, "adamw", 3e-4)
        assert cfg.model == "unet_cifar10_improved" and cfg.model_kwargs.get("num_classes", 10) == 10
    assert colab.batch_size == 14 and colab.model_kwargs == gpu.model_kwargs


def test_pixel_nearest_finds_copies_whatever_the_chunking():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(23, 3, 4, 4, generator=g) * 2 - 1
    samples = torch.cat([train[[5, 17]], torch.rand(3, 3, 4, 4, generator=g) * 2 - 1])
    d1, i1 = cifar.pixel_nearest(samples, train, k=3, chunk=4)
    d2, i2 = cifar.pixel_nearest(samples, train, k=3, chunk=1000)
    assert torch.equal(i1, i2) and torch.allclose(d1, d2)
    assert i1[:2, 0].tolist() == [5, 17] and d1[:2, 0].abs().max() < 1e-6
    brute = torch.cdist(samples.flatten(1).double(), train.flatten(1).double()).sort(dim=1)
    assert torch.allclose(d1, brute.values[:, :3].float(), atol=1e-5) and torch.equal(i1, brute.indices[:, :3])
    assert (d1[:, 1:] >= d1[:, :-1]).all()
    with pytest.raises(ValueError, match="share image shapes"):
        cifar.pixel_nearest(samples[:, :1], train)
    with pytest.raises(ValueError, match="k must lie in"):
        cifar.pixel_nearest(samples, train, k=24)


def test_lpips_nearest_picks_the_best_candidate_by_the_given_distance():
    """With a stand-in distance (mean absolute difference of the red channel only), the winner is the
    candidate that distance prefers, not the pixel-nearest one; candidates come from the pixel search."""
    train = torch.zeros(4, 3, 2, 2)
    train[1, 0] = 0.5  # same red as the sample, other channels off by 0.4
    train[2, 0], train[2, 1:] = 0.2, 0.4  # pixel-nearest (off by 0.3 in red only)
    train[3] = -1.0  # far in every way
    sample = torch.zeros(1, 3, 2, 2)
    sample[0, 0], sample[0, 1:] = 0.5, 0.4
    red = lambda a, b: (a[:, 0] - b[:, 0]).abs().flatten(1).mean(1)  # noqa: E731
    assert cifar.pixel_nearest(sample, train)[1].item() == 2
    d, i = cifar.lpips_nearest(sample, train, candidates=3, lpips=red)
    assert i.tolist() == [1] and d.item() == pytest.approx(0.0)
    d, i = cifar.lpips_nearest(sample, train, candidates=1, lpips=red)  # only the pixel-nearest is compared
    assert i.tolist() == [2] and d.item() == pytest.approx(0.3)


def test_lpips_offline_is_recorded_not_guessed(offline):
    """Cut off from the network, LPIPS raises the kit's WeightsNotAvailableError at once; the chapter's
    neighbour summary then keeps the pixel distances and records LPIPS as not measured."""
    from diffusion_edu.metrics import WeightsNotAvailableError

    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with pytest.raises(WeightsNotAvailableError):
        cifar.lpips_nearest(x, x)
    out = report_b._neighbours(x, x)
    assert out["lpips_mean"] is None and out["lpips_status"] == "not measured: needs internet"
    assert out["pixel_l2_mean"] == pytest.approx(0.0, abs=1e-5) and out["pixel_index"] == [0, 1, 2]


def test_parts_run_end_to_end_at_the_smoke_tier_offline(results_tmp, offline):
    """Training with label dropout, the guidance sweep (a grid per w), the neighbours of samples and of test
    images, and interpolation, all on fake data with a tiny network; no number is invented offline."""
    root = report_b.PARTS["training"].run("smoke", False).parent
    guid = json.loads(report_b.PARTS["guidance"].run("smoke", False).read_text())["data"]
    assert guid["w"] == list(report_b.BUDGETS["smoke"].w) and all((root / f).is_file() for f in guid["grids"].values())
    assert all(
        m["status"] == "not measured: needs internet" and m["fid_train"] is None for m in guid["metrics"].values()
    )
    nn_ = json.loads(report_b.PARTS["nearest_neighbours"].run("smoke", False).read_text())["data"]
    assert nn_["lpips_mean"] is None and nn_["lpips_baseline_mean"] is None
    assert nn_["pixel_l2_baseline_mean"] > 0 and len(nn_["baseline_test"]["pixel_l2"]) == nn_["n"]
    interp = json.loads(report_b.PARTS["interpolation"].run("smoke", False).read_text())["data"]
    assert interp["repeat_max_abs_diff"] == 0.0  # DDIM with eta = 0 decodes the same x_T to the same image
    for n in interp["norms"]:  # slerp keeps |x_T| near sqrt(d); the straight line's midpoint shrinks by ~1/sqrt(2)
        assert (
            abs(n["slerp_mid"] / interp["sqrt_d"] - 1) < 0.05
            and abs(n["lerp_mid"] / interp["sqrt_d"] - 0.5**0.5) < 0.05
        )
    assert (root / interp["grid"]).is_file()


def test_stored_page_shows_no_figure_of_a_run_that_has_not_happened():
    """The chapter is stored executed at the cpu tier, where nothing trains: every experiment section shows
    its figures only from a colab or gpu results file, and without one it stores the note saying how to run
    it, with no image, no table and no smoke output (which the cpu tier never produces)."""
    from pathlib import Path

    import nbformat

    from diffusion_edu.experiments.cifar import real_result

    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "07_report_b.ipynb", as_version=4)
    assert nb.metadata["diffusion_edu"]["tier"] == "cpu"
    for part in ("training", "guidance", "nearest_neighbours", "interpolation"):
        (cell,) = [c for c in nb.cells if c.cell_type == "code" and f'run_or_load("{part}")' in c.source]
        text = "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/markdown", "")) for o in cell.outputs)
        if real_result("report_b", part) is None:
            assert "Not yet run" in text and f"--only {part}" in text
            assert not any("image/png" in o.get("data", {}) for o in cell.outputs)
        assert "CODE CHECK" not in text and "smoke" not in text


def test_report_runs_estimate_uses_the_utilisation_measured_on_the_h100(tmp_path):
    """Report B's 1M steps are timed at the MFU the peer benchmark measured on the H100 (not a fraction taken
    from another network's run on another GPU), and the overhead floor of a small network's step is slower."""
    from pathlib import Path

    from diffusion_edu.experiments import report_b
    from diffusion_edu.results import read_results

    results = Path(__file__).resolve().parent.parent / "results"
    costs = read_results(results / "report_b" / "costs.json")["data"]
    est = report_b.measured_h100_estimate(costs, results)
    peers = read_results(results / "benchmarks" / "peers_cuda.json")["data"]["mfu"]["unet_cifar10"]
    assert est["mfu"] == peers["mfu"] and 0.01 < est["mfu"] < 0.5
    assert est["hours"] * 3600 == pytest.approx(
        costs["report_run"]["flops_total"] / (est["mfu"] * peers["peak_bf16_tflops"] * 1e12)
    )
    assert est["floor_hours"] > est["hours"] > max(costs["report_run"]["seconds"].values()) / 3600
    assert report_b.measured_h100_estimate(costs, tmp_path) is None
