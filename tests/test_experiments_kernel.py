"""The experiments kernel: the one training policy (Part.needs / Part.runs, ensure_needs), the explicit
cache, the run store's refusals and the columns of a results file. The policy is pinned on a stand-in
chapter whose store records what it is asked to train, so nothing trains here."""

from __future__ import annotations

import shutil
import sys
import types

import pytest

from diffusion_edu.experiments import CHAPTERS, common, ensure_result
from diffusion_edu.experiments.common import Part, chapter_parts
from diffusion_edu.experiments.evaluation import metric_columns
from diffusion_edu.experiments.store import Cache, RunStore


class _Store:
    """A run store whose runs are finished once trained; it records every call to train."""

    trained: list[list[str]] = []
    done: set[str] = set()

    def __init__(self, tier: str):
        self.tier = tier

    def missing(self, runs=None):
        return {r: "no checkpoint" for r in (runs or ["a", "b"]) if r not in _Store.done}

    def require(self, runs, part=None):
        raise RuntimeError(f"not finished: {runs}; --only training {part or ''}")

    def train(self, runs, progress=True, snapshots=False):
        _Store.trained.append(list(runs))
        _Store.done.update(runs)


@pytest.fixture
def chapters(monkeypatch, tmp_path):
    """Two stand-in chapters: "fake" (a training part and an evaluation part that loads run "a"), and
    "other" whose part needs run "b" of fake's training."""
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    calls: list[str] = []
    _Store.trained, _Store.done = [], set()

    def train_part(tier, progress, cache):
        _Store.done.update({"a", "b"})
        calls.append("training")
        return common.save_result("fake", "training", {}, {}, tier, 0.0)

    def evaluate(tier, progress, cache):
        calls.append("evaluate")
        return common.save_result("fake", "evaluate", {"cache": type(cache).__name__}, {}, tier, 0.0)

    def other(tier, progress, cache):
        calls.append("other")
        return common.save_result("other", "other", {}, {}, tier, 0.0)

    fake = types.ModuleType("fake_chapter")
    fake.CHAPTER, fake.store = "fake", _Store
    fake.PARTS = chapter_parts(
        "fake", Part("training", "", train_part), Part("evaluate", "", evaluate, ["training"], ("a",))
    )
    oth = types.ModuleType("other_chapter")
    oth.CHAPTER = "other"
    oth.PARTS = chapter_parts("other", Part("other", "", other, ["fake/training"], ("b",)))
    for name, mod in (("fake", fake), ("other", oth)):
        monkeypatch.setitem(sys.modules, f"{name}_chapter", mod)
        monkeypatch.setitem(CHAPTERS, name, f"{name}_chapter")
    return fake, oth, calls


def test_smoke_trains_the_needed_part_first_then_loads(chapters):
    fake, _, calls = chapters
    rec = ensure_result(fake, "evaluate", "smoke")
    assert calls == ["training", "evaluate"] and rec["data"]["cache"] == "Cache"
    ensure_result(fake, "evaluate", "smoke")  # the runs are finished now: evaluated again, not retrained
    assert calls == ["training", "evaluate", "evaluate"]


def test_another_chapters_runs_train_alone_without_its_training_part(chapters):
    """A part that needs one run of another chapter trains that run only (at smoke / colab), not the other
    chapter's whole training part."""
    _, oth, calls = chapters
    ensure_result(oth, "other", "colab")
    assert _Store.trained == [["b"]] and calls == ["other"]


@pytest.mark.parametrize("tier", ["cpu", "gpu"])
def test_real_tiers_refuse_and_name_the_training_part(chapters, tier):
    fake, oth, calls = chapters
    with pytest.raises(RuntimeError, match="--only training evaluate"):
        fake.PARTS["evaluate"].run(tier, False)
    with pytest.raises(RuntimeError, match="not finished"):
        ensure_result(oth, "other", tier)
    assert calls == [] and _Store.trained == []


def test_a_need_that_is_not_a_part_is_named():
    part = Part("p", "", lambda *a: None, ["nonsense"], chapter="report_e")
    with pytest.raises(ValueError, match="needs 'nonsense', which is not a part"):
        common.ensure_needs(part, "smoke")


def test_cache_makes_each_key_once():
    cache, made = Cache(), []
    for _ in range(3):
        assert cache.get(("model", "x"), lambda: made.append(1) or len(made)) == 1
    cache.get(("samples", "y"), lambda: 0)
    assert made == [1] and cache.keys("samples") == [("samples", "y")] and len(cache.keys()) == 2


def test_run_store_names_unknown_runs_and_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    store = RunStore("report_e", {"r": ("e_unet", {})}, {}, "cpu")
    with pytest.raises(ValueError, match="run must be one of \\['r'\\]"):
        store.config("typo")
    assert store.missing() == {"r": "no checkpoint"}
    with pytest.raises(RuntimeError, match=r"r \(no checkpoint\).*experiment report_e --tier cpu --only training p"):
        store.require(["r"], "p")
    with pytest.raises(FileNotFoundError, match="--only training"):
        store.load("r")


def test_columns_transpose_records_the_two_ways():
    recs = {"a": {"fid": 1.0, "is": 2.0, "fid_interval": {"low": 0}}, "b": {"fid": 3.0, "is": 4.0}}
    assert metric_columns({"a": {"x": 1}, "b": {"x": 2}}) == {"x": {"a": 1, "b": 2}}
    out = metric_columns(recs, ("fid", "is"))
    assert out == {
        "fid": {"a": 1.0, "b": 3.0},
        "is": {"a": 2.0, "b": 4.0},
        "fid_interval": {"a": {"low": 0}, "b": None},
    }


def test_no_module_level_caches_in_the_experiments():
    """Every chapter module holds no dict or list that fills up as parts run (the caches that used to
    decide numbers): a cache is an object passed in."""
    import importlib

    for name in ("common", "evaluation", "store", "figures", "report_a", "report_d", "report_e", "measuring"):
        mod = importlib.import_module(f"diffusion_edu.experiments.{name}")
        for attr in ("_MODELS", "_SAMPLES", "_REFERENCE"):
            assert not hasattr(mod, attr), (name, attr)


def test_record_training_merges_runs_recorded_by_an_earlier_call(tmp_path, monkeypatch):
    """``record_training(..., merge=True)`` adds the runs it trains to the existing training.json and keeps the
    entries of the store's other runs as they were (their folders may be gone); without merge it rewrites."""
    from diffusion_edu.experiments.common import load_result
    from diffusion_edu.experiments.store import record_training

    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path / "results"))
    tiny = {"model_kwargs": {"ch": 4, "time_dim": 8}, "subset": 32, "batch_size": 8}
    store = RunStore("report_e", {"a": ("quick_mnist", tiny), "b": ("quick_mnist", {**tiny, "seed": 1})}, {}, "smoke")
    record_training(store, progress=False, only=["a"])
    first = load_result("report_e", "training", "smoke")
    assert list(first["data"]) == ["a"] and "recorded" not in first["config"]
    shutil.rmtree(store.folder("a"))  # the earlier run's folder is gone; its entry stays
    record_training(store, progress=False, only=["b"], merge=True)
    merged = load_result("report_e", "training", "smoke")
    assert list(merged["data"]) == ["a", "b"] and merged["data"]["a"] == first["data"]["a"]
    assert merged["config"]["runs"]["a"] == first["config"]["runs"]["a"] and merged["config"]["runs"]["b"]["seed"] == 1
    assert set(merged["config"]["recorded"]) == {"a", "b"}
    record_training(store, progress=False, only=["b"])
    assert list(load_result("report_e", "training", "smoke")["data"]) == ["b"]


def test_results_files_say_whether_the_code_differed_from_the_recorded_commit(tmp_path, monkeypatch):
    """git_dirty: False on a clean checkout, True once tracked code under CODE_PATHS changes (a change
    elsewhere, or an untracked file, is not a change of the code), None outside a git checkout."""
    import subprocess

    from diffusion_edu import results

    repo = tmp_path / "repo"

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above the checkout
    assert results._git_dirty(outside) is None
    (repo / "diffusion_edu").mkdir(parents=True)
    (repo / "diffusion_edu" / "m.py").write_text("x = 1\n")
    (repo / "notes.md").write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    assert results._git_dirty(repo) is False
    (repo / "notes.md").write_text("b\n")  # not code
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "new.py").write_text("y = 2\n")  # untracked
    assert results._git_dirty(repo) is False
    (repo / "diffusion_edu" / "m.py").write_text("x = 2\n")
    assert results._git_dirty(repo) is True
    rec = results.read_results(results.write_results(repo / "r.json", "t/x", {}, {}, "smoke", 0.0))
    assert "git_dirty" in rec
