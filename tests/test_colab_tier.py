"""Every MNIST chapter has a colab tier of its own, sized for a free T4, and a chapter opened alone reads
the book's results from the installed package.

The T4 time is an estimate (no T4 has run the chapters): these tests pin that each chapter's estimate
stays within the stated budget, that the colab tier is defined rather than falling back to the
reports' full scale (hours), that the estimate comes from the committed benchmark file, and how
``results_dir`` behaves without a checkout.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from diffusion_edu import results
from diffusion_edu.experiments import colab, common, measuring, report_a, report_d, report_e

CHAPTERS = {"report_a": report_a, "report_d": report_d, "report_e": report_e, "measuring": measuring}


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_each_chapter_fits_a_t4_at_the_colab_tier(chapter):
    est = colab.chapter_estimate(chapter)
    assert est["estimate"] is True and est["device"].startswith("NVIDIA T4")
    assert 0 < est["minutes"] <= colab.T4_MINUTES
    assert est["minutes"] == pytest.approx(est["training"]["minutes"] + est["sampling_minutes"])


@pytest.mark.parametrize("module", [report_a, report_d, report_e], ids=lambda m: m.CHAPTER)
def test_the_colab_tier_is_its_own_not_the_reports_scale(module):
    """Every run has colab overrides: the embedded digits (the held-out reference digits are part of
    MNIST's training set, so full MNIST would train on them), fewer steps than the report's."""
    assert "colab" in module.TIER_OVERRIDES
    runs_at = getattr(module, "runs_at", lambda tier: module.RUNS)  # a run the colab tier does not train is skipped
    for run in runs_at("colab"):
        gpu, colab_cfg, cpu = module.config(run, "gpu"), module.config(run, "colab"), module.config(run, "cpu")
        assert colab_cfg.dataset == "mnist-embedded"
        assert colab_cfg.steps < gpu.steps
        assert colab_cfg.steps * colab_cfg.batch_size >= cpu.steps * cpu.batch_size  # more images than the cpu tier
        assert colab_cfg.precision == "auto"  # bf16 or fp16 + GradScaler by the GPU's capability


def test_report_a_budgets_define_colab():
    for module in (report_a, report_d, measuring):  # defined for colab itself, not by the gpu fallback
        assert "colab" in module.BUDGETS


def test_the_estimate_reads_the_committed_benchmark(monkeypatch, tmp_path):
    """The fixed cost per step is the measured step of the MNIST U-Net in peers_cuda.json: halve its
    rate there and the estimated training time grows by the matching amount."""
    base, overhead = colab.train_step_s(report_e.config("T1000_linear", "colab")), colab.step_overhead_s()
    rec = results.read_results(results.results_dir() / colab.SOURCE)
    rec["data"]["mfu"]["unet_mnist"]["libraries"]["diffusion_edu"]["steps_per_s"] /= 2
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / colab.SOURCE).write_text(json.dumps(rec))
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path))
    colab._peers.cache_clear()
    try:
        slower = colab.train_step_s(report_e.config("T1000_linear", "colab"))
    finally:
        colab._peers.cache_clear()
    assert slower - base == pytest.approx(overhead, rel=1e-6)


def test_the_page_labels_the_time_as_an_estimate():
    text = colab.describe("report_e")
    assert "estimated" in text and "Not measured on a T4 yet" in text and colab.SOURCE in text


def test_evaluation_runs_on_the_gpu_only_at_gpu_tiers(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert [common.eval_device(t).type for t in ("smoke", "cpu", "colab", "gpu")] == ["cpu", "cpu", "cuda", "cuda"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert common.eval_device("colab").type == "cpu"


# ---- results without a checkout ----------------------------------------------------------------------


def test_without_a_checkout_results_come_from_the_package(monkeypatch, tmp_path):
    """In an empty folder (Colab) results_dir() is ./results, first filled from the packaged copy; what a
    chapter writes goes there, never into the installed package; an existing ./results is left as is."""
    packaged = tmp_path / "site" / "_results"
    (packaged / "metrics").mkdir(parents=True)
    (packaged / "metrics" / "floors.json").write_text("{}")
    monkeypatch.setattr(results, "PACKAGED_RESULTS", packaged)
    monkeypatch.delenv("DIFFUSION_EDU_RESULTS", raising=False)
    work = tmp_path / "content"
    work.mkdir()
    monkeypatch.chdir(work)
    got = results.results_dir()
    assert got == work / "results" and (got / "metrics" / "floors.json").read_text() == "{}"
    results.write_results(got / "report_e" / "x.json", "report_e/x", {}, {}, "cpu", 0.0)
    assert not (packaged / "report_e").exists()
    (packaged / "metrics" / "new.json").write_text("{}")
    assert not (results.results_dir() / "metrics" / "new.json").exists()  # copied once, then the reader's
    assert not [p for p in work.iterdir() if p.name.startswith(".results.")]  # no half-copied folder left


def test_the_checkout_and_the_environment_variable_come_first(monkeypatch, tmp_path):
    monkeypatch.setattr(results, "PACKAGED_RESULTS", tmp_path / "nothing")
    assert results.packaged_results_dir() is None
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "mine"))
    assert results.results_dir() == tmp_path / "mine" and not (tmp_path / "mine").exists()
    monkeypatch.delenv("DIFFUSION_EDU_RESULTS")
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root / "notebooks")
    assert results.results_dir() == root / "results"


def test_the_wheel_ships_the_results_tree():
    """pyproject maps results/ into the package as diffusion_edu._results with every file kind it holds."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"]["diffusion_edu._results"] == "results"
    assert "diffusion_edu._results" in cfg["packages"]
    kinds = {p.suffix for p in (root / "results").rglob("*") if p.is_file()}
    patterns = cfg["package-data"]["diffusion_edu._results"]
    assert {f"**/*{k}" for k in kinds} <= set(patterns), (kinds, patterns)
    assert os.path.basename(results.PACKAGED_RESULTS) == "_results"
