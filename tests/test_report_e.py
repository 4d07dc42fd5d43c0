"""Report E's chapter parts at the smoke tier: they run end to end, write the keys that the notebook and the
ledger read, keep smoke results (and the smoke network) out of the book's files, and share sampling seeds
the way the chapter says they do.

All parts run once per module (about 25 s on one CPU thread), in a temporary results folder.
"""

from __future__ import annotations

import json
import shutil
import statistics

import matplotlib.image
import pytest
import torch

from diffusion_edu.experiments import report_e, run_chapter
from diffusion_edu.experiments.common import EVAL_BUDGETS, result_path, runs_root
from diffusion_edu.ledger import ENTRIES, ledger_rows
from diffusion_edu.pretrained import PRETRAINED_DIR
from diffusion_edu.results import read_results

PARTS = ("schedules", "steps", "guidance", "schedule_seeds", "repeatability", "pretrained")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Every part of the chapter at the smoke tier, in a throwaway checkout-like folder."""
    root = tmp_path_factory.mktemp("book")
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFUSION_EDU_RESULTS", str(root / "results"))
    shipped = {p.name: p.stat().st_mtime_ns for p in PRETRAINED_DIR.glob("*.pt")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_chapter("report_e", "smoke", progress=False)
    finally:
        torch.set_num_threads(threads)
    records = {p: read_results(result_path("report_e", p, "smoke")) for p in ("training", *PARTS)}
    yield root, records, shipped
    mp.undo()


def test_parts_write_smoke_results_outside_the_book(smoke):
    """Smoke numbers mean nothing: they go under runs/smoke/results, never into results/."""
    root, records, _ = smoke
    assert all(r["tier"] == "smoke" for r in records.values())
    assert not (root / "results" / "report_e").exists()
    assert result_path("report_e", "guidance", "smoke").is_relative_to(root / "runs" / "smoke" / "results")


def test_schedules_has_every_run_and_metric(smoke):
    """Table 2 needs FID, IS and conditional accuracy for all four T x schedule networks, at w = 0.2."""
    data = smoke[1]["schedules"]["data"]
    assert data["w"] == report_e.SWEEP_W == 0.2 and data["runs"] == list(report_e.SWEEP_RUNS)
    for key in ("fid", "is", "kid_mean", "conditional_accuracy", "T", "schedule", "figures", "sample_wall_time_s"):
        assert set(data[key]) == set(report_e.SWEEP_RUNS), key
    assert data["T"] == {"T1000_linear": 1000, "T4000_linear": 4000, "T1000_cosine": 1000, "T4000_cosine": 4000}
    assert all(0.0 <= a <= 1.0 for a in data["conditional_accuracy"].values())
    assert smoke[1]["schedules"]["config"]["sampler"]["n"] == EVAL_BUDGETS["smoke"].n


def test_guidance_curve_covers_report_and_beyond(smoke):
    """Table 3's w in {0, 0.2, 0.5} and the weights beyond it, every metric keyed the same way."""
    data = smoke[1]["guidance"]["data"]
    assert data["w"] == [0.0, 0.2, 0.5, 1.0, 2.0, 4.0]
    assert data["keys"] == ["0", "0.2", "0.5", "1", "2", "4"]
    for key in ("fid", "is", "is_std", "kid_mean", "conditional_accuracy", "figures", "sample_wall_time_s"):
        assert list(data[key]) == data["keys"], key


def test_guidance_is_measured_on_every_training_seed(smoke):
    """The seeds block holds each metric of every training seed's network at every w, their mean and the t
    interval over seeds; seed 0 is the network of the curve, so its values are the curve's."""
    from diffusion_edu.intervals import interval_from, seed_spread

    data = smoke[1]["guidance"]["data"]
    seeds = data["seeds"]
    assert seeds["training_seeds"] == [0, 1, 2] and seeds["runs"] == list(report_e.SEED_RUNS.values())
    assert len({report_e.config(r, "smoke").seed for r in seeds["runs"]}) == 3
    for metric in report_e.SEED_METRICS:
        for k in data["keys"]:
            values = seeds[f"{metric}_per_seed"][k]
            assert len(values) == 3 and values[0] == data[metric][k]
            iv = interval_from(seeds[f"{metric}_interval"][k])
            assert iv == seed_spread(values) and seeds[metric][k] == pytest.approx(statistics.fmean(values))
    # other seeds draw other networks: their FIDs differ from seed 0's
    assert any(v[1] != v[0] for v in seeds["fid_per_seed"].values())


def test_schedule_seeds_holds_every_network_on_every_training_seed(smoke):
    """Table 2 over training seeds: every network's value on each seed, their mean and t interval; seed 0 is
    the schedules part's row and the guidance network's seeds are the guidance part's w = 0.2 values."""
    from diffusion_edu.intervals import interval_from, seed_spread

    data = smoke[1]["schedule_seeds"]["data"]
    runs, seeds = list(report_e.SWEEP_RUNS), [0, 1, 2]
    assert data["runs"] == runs and data["training_seeds"] == seeds
    assert data["seed_runs"]["T4000_cosine"] == ["T4000_cosine", "T4000_cosine_seed1", "T4000_cosine_seed2"]
    guidance, schedules = smoke[1]["guidance"]["data"]["seeds"], smoke[1]["schedules"]["data"]
    for metric in report_e.SEED_METRICS:
        for run in runs:
            values = data["seeds"][f"{metric}_per_seed"][run]
            assert values == [data["per_seed"][str(s)][metric][run] for s in seeds]
            assert values[0] == schedules[metric][run]
            assert interval_from(data["seeds"][f"{metric}_interval"][run]) == seed_spread(values)
        assert data["seeds"][f"{metric}_per_seed"]["T1000_linear"] == guidance[f"{metric}_per_seed"]["0.2"]
    measured = {f"{r}_seed{s}" for r in runs[1:] for s in (1, 2)}
    assert set(data["measured"]) == measured == set(data["figures"])
    assert data["sources"]["T1000_linear"] == {"0": "schedules.json", "1": "guidance.json", "2": "guidance.json"}
    assert data["sources"]["T1000_cosine"] == {"0": "schedules.json", "1": "measured", "2": "measured"}
    assert set(data["seeds"]["fid_baseline"]["beats"]) == set(runs)
    # other seeds draw other networks
    assert all(len(set(data["seeds"]["fid_per_seed"][r])) == 3 for r in runs)


def test_schedule_seeds_reused_draws_are_what_a_fresh_draw_measures(smoke):
    """The values read from the schedules and guidance files are the very draws of those networks: drawn
    again from the networks (a fresh cache), they measure the same."""
    from diffusion_edu.experiments.store import Cache

    data = smoke[1]["schedule_seeds"]["data"]
    cache = Cache()
    for run, seed in (("T4000_cosine", 0), ("T1000_linear", 2)):
        name = report_e.seed_run(run, seed)
        images, labels, _ = report_e.drawn_samples(name, report_e.SWEEP_W, report_e.SEED, "smoke", cache)
        fresh = report_e._metrics(images, labels, report_e.SEED, "smoke", cache)
        for metric in report_e.SEED_METRICS:
            assert fresh[metric] == pytest.approx(data["per_seed"][str(seed)][metric][run], rel=1e-6), (name, metric)


def test_schedule_seeds_refuses_reuse_of_a_missing_or_stale_record(smoke, tmp_path, monkeypatch):
    """At the cpu tier a record that is missing, or was made with other settings or networks, is never reused:
    the error names the part, the reason and the command that re-makes it."""
    from diffusion_edu.experiments.store import Cache

    monkeypatch.setenv("DIFFUSION_EDU_RESULTS", str(tmp_path))
    with pytest.raises(RuntimeError, match="'schedules', which has not run at this tier.*--only schedules"):
        report_e._recorded("schedules", "cpu", False, Cache())
    (tmp_path / "report_e").mkdir()
    for part, change, reason in (
        ("schedules", {"w": 0.5}, "was sampled with other settings"),
        ("schedules", {"runs": {}}, "was measured on networks of other configs"),
        ("guidance", {"seed_runs": {"0": "T1000_linear"}}, "lacks a training seed"),
    ):
        rec = json.loads(json.dumps(smoke[1][part]))
        rec.update(tier="cpu", config={**_as_cpu(rec["config"], part), **change})
        (tmp_path / "report_e" / f"{part}.json").write_text(json.dumps(rec))
        with pytest.raises(RuntimeError, match=f"{reason}.*--tier cpu --only {part}"):
            report_e._recorded(part, "cpu", False, Cache())
    # the same records with the cpu tier's own configs are reused as they are
    for part in ("schedules", "guidance"):
        rec = json.loads(json.dumps(smoke[1][part]))
        rec.update(tier="cpu", config=_as_cpu(rec["config"], part))
        (tmp_path / "report_e" / f"{part}.json").write_text(json.dumps(rec))
        assert report_e._recorded(part, "cpu", False, Cache())["data"] == rec["data"]


def _as_cpu(cfg: dict, part: str) -> dict:
    """A smoke record's config restated with the cpu tier's networks and sampler (what a cpu record holds)."""
    cpu = json.loads(json.dumps(report_e._sampler_config("cpu")))
    if part == "schedules":
        runs = {r: json.loads(json.dumps(report_e.config(r, "cpu").to_dict())) for r in report_e.SWEEP_RUNS}
        return {**cfg, "sampler": cpu, "runs": runs}
    train = json.loads(json.dumps(report_e.config("T1000_linear", "cpu").to_dict()))
    seeds = {str(k): v for k, v in report_e.seed_runs("cpu").items()}
    return {**cfg, "sampler": cpu, "train_config": train, "seed_runs": seeds}


def test_seed_runs_differ_from_their_network_in_the_seed_only():
    """Every sweep network from seeds 1 and 2 (the cpu tier trains all twelve, colab the four of seed 0)."""
    for run in report_e.SWEEP_RUNS:
        base = report_e.config(run, "cpu").to_dict()
        for seed in (1, 2):
            other = report_e.config(report_e.seed_run(run, seed), "cpu").to_dict()
            assert {k for k in base if base[k] != other[k]} == {"seed"} and other["seed"] == seed
    assert len(report_e.runs_at("cpu")) == 12 and list(report_e.runs_at("colab")) == list(report_e.SWEEP_RUNS)
    assert report_e.seed_run("T1000_linear", 0) == "T1000_linear"
    with pytest.raises(ValueError, match="run must be one of"):
        report_e.seed_run("T2000_linear", 1)
    with pytest.raises(ValueError, match="seed must be one of"):
        report_e.seed_run("T1000_linear", 3)


def test_steps_part_samples_every_network_at_each_step_count(smoke):
    """Table 2 again at each step count of the tier: the smallest count's samples are the schedules part's
    (same network, seed and steps), and the largest count is the one the ledger judges."""
    data = smoke[1]["steps"]["data"]
    counts = report_e.BUDGETS["smoke"].step_counts
    assert data["keys"] == [report_e.steps_key(k) for k in counts] and data["runs"] == list(report_e.SWEEP_RUNS)
    for key, steps in zip(data["keys"], counts):
        row = data["by_steps"][key]
        assert row["steps"] == {r: steps for r in report_e.SWEEP_RUNS}
        assert set(row["fid"]) == set(report_e.SWEEP_RUNS) and set(row["fid_interval"]) == set(report_e.SWEEP_RUNS)
    assert (
        data["largest"]["key"] == data["keys"][-1]
        and data["largest"]["fid"] == data["by_steps"][data["keys"][-1]]["fid"]
    )
    same = data["by_steps"][report_e.steps_key(report_e.BUDGETS["smoke"].steps)]
    assert same["fid"] == smoke[1]["schedules"]["data"]["fid"]
    assert report_e.steps_key(None) == "all"


def test_common_random_numbers_across_parts(smoke):
    """The same network, w and seed give the same samples: the guidance part's w = 0.2 point, the schedules
    part's T=1000 linear row and the first repeatability run are one measurement, so the chapter's tables
    agree, and the guidance curve compares every w on the same starting noise."""
    rec = smoke[1]
    g = rec["guidance"]["data"]
    s = rec["schedules"]["data"]
    first = rec["repeatability"]["data"]["runs"][0]
    assert first["seed"] == report_e.SEED
    for metric in ("fid", "is", "conditional_accuracy"):
        assert g[metric]["0.2"] == s[metric]["T1000_linear"] == first[metric]


def test_repeatability_summary_matches_its_runs(smoke):
    """Mean and standard deviation are those of the five per-seed FIDs; FID against n ends at the pool."""
    data = smoke[1]["repeatability"]["data"]
    fids = [r["fid"] for r in data["runs"]]
    assert [r["seed"] for r in data["runs"]] == list(report_e.REPEAT_SEEDS)
    assert len(set(fids)) == len(fids), "different seeds must give different samples"
    assert data["fid"]["mean"] == pytest.approx(statistics.fmean(fids))
    assert data["fid"]["std"] == pytest.approx(statistics.stdev(fids))
    n = data["n"]
    assert n == EVAL_BUDGETS["smoke"].n
    counts = data["fid_by_n"]["n"]
    assert counts == sorted(counts) and n in counts and counts[-1] == n * len(report_e.REPEAT_SEEDS)
    assert len(data["fid_by_n"]["fid"]) == len(counts)


def test_sample_grids_are_one_row_per_digit(smoke):
    """Each figure named in a results file exists: 10 rows (digits) of min(8, n / 10) samples, 28 px + padding."""
    per_class = min(report_e.GRID_PER_CLASS, EVAL_BUDGETS["smoke"].n // 10)
    for part in ("schedules", "guidance"):
        for rel in smoke[1][part]["data"]["figures"].values():
            img = matplotlib.image.imread(report_e.figure_file(rel, "smoke"))
            assert img.shape[:2] == (10 * 30 + 2, per_class * 30 + 2), rel


def test_pretrained_smoke_export_never_touches_the_shipped_network(smoke):
    """The smoke tier exports to runs/smoke/pretrained; the package's shipped files stay as they were. The
    exported network loads and samples digits of the asked class shape."""
    from diffusion_edu.checkpoint import load_model

    root, records, shipped = smoke
    assert {p.name: p.stat().st_mtime_ns for p in PRETRAINED_DIR.glob("*.pt")} == shipped
    path = runs_root("smoke") / "pretrained" / "report_e.pt"
    assert path.is_file() and path.is_relative_to(root)
    data = records["pretrained"]["data"]
    assert data["source"]["run"] == "T1000_linear" and data["source"]["tier"] == "smoke"
    model, schedule, _ = load_model(path, ema=False, device="cpu")
    images, labels, _ = report_e.guided_samples(model, schedule, 10, 0.5, 0, "smoke")
    assert images.shape == (10, 1, 28, 28) and labels.tolist() == list(range(10))


def test_ledger_reads_every_report_e_key(smoke, tmp_path):
    """Every ledger row on this chapter's results files finds its number in the files the parts write (a
    renamed key would raise), once the files are stamped with a real tier."""
    src = runs_root("smoke") / "results"
    for part in PARTS:
        rec = json.loads((src / "report_e" / f"{part}.json").read_text())
        rec["tier"] = "cpu"
        (tmp_path / "report_e").mkdir(exist_ok=True)
        (tmp_path / "report_e" / f"{part}.json").write_text(json.dumps(rec))
    # this chapter's rows (chapter 2 also holds a Report E row, on its own results file)
    entries = [e for e in ENTRIES if e.results.startswith("report_e/")]
    assert len(entries) >= 10 and all(e.report == "E" for e in entries)
    assert {e.results for e in entries} <= {f"report_e/{p}.json" for p in PARTS}
    rows = ledger_rows(entries, tmp_path)
    assert all(r.verdict != "not yet re-run" and r.book_value is not None for r in rows)
    ranking = next(r for r in rows if r.entry.key == "fid" and r.entry.results.endswith("guidance.json"))
    # a ranking judged from the intervals the parts now store (not "not comparable", not "no interval")
    assert ranking.verdict in ("reproduced", "not reproduced", "inconclusive at this tier (intervals overlap)")
    shutil.rmtree(tmp_path / "report_e")


def test_class_labels_ask_for_every_digit_equally():
    """100 of each digit at the cpu tier's 1,000 samples; cycled so that any n stays balanced to within one."""
    counts = torch.bincount(report_e.class_labels(1000), minlength=10)
    assert counts.tolist() == [100] * 10
    small = torch.bincount(report_e.class_labels(64), minlength=10)
    assert int(small.max() - small.min()) <= 1 and int(small.sum()) == 64
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            report_e.class_labels(bad)


def test_w_key_names_weights_as_the_ledger_does():
    """Keys are the shortest decimal form, so the ledger's ("fid", "0.2") and ranking "0.2 < 0 < 0.5" match."""
    assert [report_e.w_key(w) for w in report_e.GUIDANCE_WEIGHTS] == ["0", "0.2", "0.5", "1", "2", "4"]


def test_class_grid_orders_rows_by_digit_and_checks_counts():
    """Row c of the grid holds the first samples asked to be digit c, in order."""
    labels = report_e.class_labels(30)
    images = torch.arange(30, dtype=torch.float32).reshape(30, 1, 1, 1).expand(30, 1, 2, 2)
    grid = report_e.class_grid(images, labels, per_class=3)
    assert grid[:, 0, 0, 0].tolist() == [c + 10 * k for c in range(10) for k in range(3)]
    with pytest.raises(ValueError, match="per_class=4"):
        report_e.class_grid(images, labels, per_class=4)
