"""Report C's experiments and the CIFAR-10 kit they share with Report B (diffusion_edu.experiments.cifar).

No CIFAR-10 copy and no GPU exist here, so the tests pin what can be pinned on a CPU: fake CIFAR-10 batch
files made by the test go through torchvision's real loader (only the checksum skipped) into the parts at
the smoke tier; the FLOP counter behind every time estimate agrees with a hand count; the colab tier fits
its hour by the book's own estimate; and offline the Inception / LPIPS paths record "needs internet"
instead of a number (the ``offline`` fixture cuts network access, so a failed download fails at once instead
of waiting for a timeout).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import urllib.error

import pytest
import torch
from torch import nn

from diffusion_edu.data import DatasetNotAvailableError, load_cifar10, write_fake_cifar10
from diffusion_edu.experiments import cifar, report_c
from diffusion_edu.experiments.common import result_path
from diffusion_edu.metrics import WeightsNotAvailableError


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    """Results and runs go under tmp_path (never into the repository, never shared with a notebook run)."""
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    return tmp_path


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network: every connection and name lookup fails at once, and torch's weight cache is empty."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield
    torch.hub.set_dir(previous)


# ---- data -------------------------------------------------------------------------------------------------


def test_fake_batches_go_through_torchvision_and_only_the_checksum_is_skipped(tmp_path):
    """The fake files have CIFAR-10's real format: torchvision's loader reads them when the MD5 check is
    skipped, and refuses them (clear error, no download) when it is not."""
    write_fake_cifar10(tmp_path, per_batch=7)
    train = load_cifar10(True, root=tmp_path, download=False, check_integrity=False)
    test = load_cifar10(False, root=tmp_path, download=False, check_integrity=False)
    assert train.images.shape == (35, 3, 32, 32) and train.images.dtype == torch.uint8 and len(test) == 7
    x, y = train.batch([0, 1])
    assert x.shape == (2, 3, 32, 32) and -1 <= x.min() and x.max() <= 1 and y.dtype == torch.int64
    with pytest.raises(DatasetNotAvailableError, match="CIFAR-10 is not available"):
        load_cifar10(True, root=tmp_path, download=False)


def test_smoke_data_and_tier_checks():
    """The smoke tier reads 5 x 20 fake training images; the cpu tier is refused with the way out."""
    assert len(cifar.cifar10("train", "smoke")) == 5 * cifar.SMOKE_PER_BATCH
    assert len(cifar.cifar10("test", "smoke")) == cifar.SMOKE_PER_BATCH
    with pytest.raises(ValueError, match="--tier colab"):
        cifar.check_cifar_tier("cpu")
    with pytest.raises(ValueError, match="tier must be one of"):
        cifar.check_cifar_tier("laptop")


# ---- FLOPs and estimates ------------------------------------------------------------------------------------


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_flop_count_matches_a_hand_count():
    """Conv 3->4, 3x3 on 8x8: 8*8*4*27 multiply-adds; Linear 256->10: 2,560; 2 FLOPs each. A training step
    adds both layers' weight gradients and the linear layer's input gradient (same sizes as their forward
    products); the first layer's input gradient is never computed (the images need no gradient)."""
    net, x = TinyConvNet(), torch.randn(2, 3, 8, 8)
    conv, fc = 2 * 2 * (8 * 8 * 4 * 27), 2 * 2 * 2560  # batch of 2
    assert cifar.count_flops(lambda: net(x)) == conv + fc
    assert cifar.count_flops(lambda: net(x).square().mean().backward()) == conv + fc + conv + 2 * fc


def test_network_flops_of_ho_et_al_unet():
    """Counted on the meta device in seconds: 35,746,307 parameters; a training step costs just under 3
    forward passes (backward = 2 x forward, minus the input gradient of the first layer)."""
    f = cifar.network_flops(report_c.config("gpu"))
    assert f["params"] == 35_746_307
    assert 2.99 < f["train_per_image"] / f["forward_per_image"] < 3.0
    assert 10e9 < f["forward_per_image"] < 15e9  # ~6.2 G multiply-adds, the size the literature quotes
    assert 11e9 < f["inception_per_image"] < 12e9  # Inception-v3 at 299 x 299: ~5.7 G multiply-adds


def test_estimates_follow_from_counted_flops():
    """seconds = FLOPs / (peak x utilisation), utilisation = speed x FLOPs per image / peak; an unknown
    device is a clear error. Both published runs reach a utilisation below 1 (a count too high would not)."""
    flops = {"forward_per_image": 1e9, "train_per_image": 3e9, "inception_per_image": 2e9}
    util = cifar.measured_utilisation(flops)
    for name, run in cifar.MEASURED_RUNS.items():
        per = 3e9 if run["kind"] == "train" else 1e9
        assert util[name]["utilisation"] == pytest.approx(
            run["images_per_s"] * per / cifar.ACCELERATORS[run["device"]].peak_flops
        )
    plan = {"train_images": 1000, "sample_evals": 500, "inception_images": 10}
    est = cifar.plan_estimate(flops, plan, util, device="t4")
    total = 1000 * 3e9 + 500 * 1e9 + 10 * 2e9
    assert est["flops_total"] == total
    u = util[cifar.CENTRAL]["utilisation"]
    assert est["central_seconds"] == pytest.approx(total / (8.1e12 * u))
    assert sum(est["part_seconds"].values()) == pytest.approx(est["central_seconds"])
    with pytest.raises(ValueError, match="device must be one of"):
        cifar.plan_estimate(flops, plan, util, device="abacus")
    real = cifar.measured_utilisation(cifar.network_flops(report_c.config("gpu")))
    assert all(0.05 < r["utilisation"] < 1 for r in real.values())


def test_colab_tiers_fit_about_an_hour_on_a_t4():
    """The colab tier is sized by the book's estimate: both chapters' plans take 30-65 minutes on a T4."""
    from diffusion_edu.experiments import report_b

    for module in (report_c, report_b):
        flops = cifar.network_flops(module.config("colab"))
        est = cifar.plan_estimate(flops, module.colab_plan(), cifar.measured_utilisation(flops))
        assert 30 * 60 < est["central_seconds"] < 65 * 60, (module.CHAPTER, est["central_seconds"] / 60)


def test_colab_tier_keeps_what_the_chapter_studies():
    """Budget changes only: Ho et al.'s network, schedule, optimiser, batch, dropout, flips and clipping stay."""
    paper, colab = report_c.config("gpu"), report_c.config("colab")
    for field in (
        "model",
        "model_kwargs",
        "schedule",
        "T",
        "optimizer",
        "lr",
        "batch_size",
        "hflip",
        "grad_clip",
        "parameterization",
        "loss",
        "dataset",
    ):
        assert getattr(colab, field) == getattr(paper, field), field
    assert paper.steps == report_c.PAPER["steps"] and paper.ema_decay == 0.9999 and colab.precision == "fp32"


# ---- the parts at the smoke tier, offline ----------------------------------------------------------------------


def test_parts_run_end_to_end_at_the_smoke_tier_offline(results_tmp, offline):
    """Training writes its curve, grids at the chosen steps and the snapshot; evaluation samples, saves a grid
    and records Inception IS / FID as not measured (no number) because the weights cannot be downloaded."""
    path = report_c.PARTS["training"].run("smoke", False)
    rec = json.loads(path.read_text())
    assert rec["tier"] == "smoke" and path == result_path("report_c", "training", "smoke")
    data = rec["data"]
    assert data["steps"] == 6 and data["curve"]["step"][-1] == 6 and "fake" in data["dataset"]
    assert sorted(int(s) for s in data["grids"]) == report_c.GRID_STEPS["smoke"]
    assert all((path.parent / f).is_file() for f in data["grids"].values())
    ev = json.loads(report_c.PARTS["evaluation"].run("smoke", False).read_text())["data"]
    assert [r["n"] for r in ev["rows"]] == list(report_c.BUDGETS["smoke"].n)
    for row in ev["rows"] + [ev["vs_report"], ev["vs_paper"]]:
        assert row["status"] == "not measured: needs internet" and row["is"] is None and row["fid_train"] is None
    assert (path.parent / ev["grids"]["6"]).is_file()


def test_inception_offline_without_torch_fidelity_or_weights(offline, monkeypatch):
    """Both offline failures become WeightsNotAvailableError: torch-fidelity missing, and a failed download
    (torch.hub raises URLError) while building the metric."""
    import torchmetrics.image.fid  # imported first: its own import probes optional packages with find_spec

    samples = torch.zeros(12, 3, 32, 32, dtype=torch.uint8)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch_fidelity" else real_find_spec(name, *a)
    )
    with pytest.raises(WeightsNotAvailableError, match="torch-fidelity"):
        cifar.inception_metrics(samples, {"train": samples}, [12])
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "torch_fidelity" else real_find_spec(name, *a)
    )

    def no_download(*args, **kwargs):
        raise urllib.error.URLError("name resolution failed")

    monkeypatch.setattr(torchmetrics.image.fid, "FrechetInceptionDistance", no_download)
    with pytest.raises(WeightsNotAvailableError, match="could not be loaded"):
        cifar.inception_metrics(samples, {"train": samples}, [12])
    assert cifar.not_measured(WeightsNotAvailableError("x"))["status"] == "not measured: needs internet"


# ---- several processes ----------------------------------------------------------------------------------------


def test_training_part_under_torchrun_on_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 -m diffusion_edu experiment report_c --only training` (the chapter's
    several-GPU command, here two CPU processes over gloo) trains one run: process 0 alone writes its
    results file, grids and snapshot, the checkpoint records both processes; a part that samples refuses
    to run under torchrun and says what to do instead."""
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, os.path.dirname(__file__))
    from _torchrun import run_torchrun

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "DIFFUSION_EDU_RESULTS": str(tmp_path / "results"),
    }

    def torchrun(*parts):
        args = ["experiment", "report_c", "--tier", "smoke", "--no-progress", "--only", *parts]
        return run_torchrun(args, tmp_path, env)

    proc = torchrun("training")
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = tmp_path / "runs" / "smoke" / "results" / "report_c" / "training.json"
    data = json.loads(path.read_text())["data"]
    assert data["steps"] == 6 and sorted(int(s) for s in data["grids"]) == report_c.GRID_STEPS["smoke"]
    run_dir = tmp_path / "runs" / "smoke" / "report_c" / report_c.RUN
    assert (run_dir / "snapshots" / "step_0000006.pt").is_file()
    from diffusion_edu.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir / "checkpoint.pt")["world_size"] == 2
    proc = torchrun("evaluation")
    assert proc.returncode != 0 and "runs in one process" in proc.stderr


def test_stored_page_shows_no_figure_of_a_run_that_has_not_happened():
    """Stored executed at the cpu tier: training and evaluation show figures only from a colab or gpu results
    file; without one the stored output is the note with the command, and no image or smoke output."""
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "06_report_c.ipynb", as_version=4)
    assert nb.metadata["diffusion_edu"]["tier"] == "cpu"
    for part in ("training", "evaluation"):
        (cell,) = [c for c in nb.cells if c.cell_type == "code" and f'run_or_load("{part}")' in c.source]
        text = "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/markdown", "")) for o in cell.outputs)
        if cifar.real_result("report_c", part) is None:
            assert "Not yet run" in text and f"--only {part}" in text
            assert not any("image/png" in o.get("data", {}) for o in cell.outputs)
        assert "CODE CHECK" not in text and "smoke" not in text


def test_gpu_cost_of_the_papers_run_comes_from_a_gpu_benchmark(tmp_path, monkeypatch):
    """With no GPU benchmark the cost stays an estimate (None here); with the peer benchmark's GPU file the
    paper's 800k x 128 images are timed at the package's measured training throughput, with its source,
    mode, device and MFU; the model benchmark's file, when it exists, is preferred."""
    from diffusion_edu.results import write_results

    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path))
    images = 800_000 * 128
    assert report_c._gpu_benchmark(images) is None
    data = {
        "mode": {"precision": "bf16", "channels_last": True, "compile": True},
        "training": {"unet_cifar10": {"rows": {"diffusion_edu": {"img_s": 2000.0, "batch": 128}}}},
        "mfu": {"unet_cifar10": {"mfu": 0.08}},
    }
    write_results(
        tmp_path / "benchmarks" / "peers_cuda.json",
        "benchmarks/peers_cuda",
        data,
        {},
        "gpu",
        1.0,
        hardware={"gpu": "NVIDIA H100 80GB HBM3"},
    )
    b = report_c._gpu_benchmark(images)
    assert b["hours"] == pytest.approx(images / 2000.0 / 3600) and b["source"].endswith("peers_cuda.json")
    assert (b["mode"], b["device"], b["mfu"], b["tier"]) == (
        "bf16, channels-last, compile",
        "NVIDIA H100 80GB HBM3",
        0.08,
        "gpu",
    )
    rows = [{"preset": "unet_cifar10", "mode": "bf16", "train_img_s": 2500.0, "batch": 128}]
    write_results(
        tmp_path / "benchmarks" / "models_cuda.json",
        "benchmarks/models",
        {"rows": rows},
        {},
        "gpu",
        1.0,
        hardware={"gpu": "x"},
    )
    assert report_c._gpu_benchmark(images)["source"].endswith("models_cuda.json")
