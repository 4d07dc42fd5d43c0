"""The reproduction ledger: report numbers next to the book's re-runs, judged and rendered by code.

The ledger is the book's one table of claims ("reproduced", "not reproduced"), so each verdict rule
is pinned at its boundary, a results file that lacks its key fails loudly, smoke-tier files never
count, and the real entries must render against the repository's own results folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from diffusion_edu import cli
from diffusion_edu.ledger import (
    ENTRIES,
    INCONCLUSIVE_FAILED,
    INCONCLUSIVE_NO_INTERVAL,
    INCONCLUSIVE_OVERLAP,
    REPORT_TIER,
    Entry,
    NotComparable,
    SameOrder,
    Within,
    baseline_key,
    interval_key,
    ledger_rows,
    render_ledger,
    tier_rule,
    write_ledger,
)
from diffusion_edu.results import TIERS, write_results

RESULTS = Path(__file__).resolve().parent.parent / "results"

GPU = {"gpu": "NVIDIA H100", "device": "cuda"}


def _results(folder, rel, data, tier="cpu", hardware=None):
    path = write_results(folder / rel, name=rel, data=data, config={"seed": 0}, tier=tier, wall_time_s=1.0)
    if hardware is not None:  # write_results records this machine; tests pin other hardware explicitly
        import json

        record = json.loads(path.read_text())
        record["hardware"] = hardware
        path.write_text(json.dumps(record))
    return path


def test_within_is_inclusive_at_the_tolerance():
    """|book - report| <= max(abs_tol, rel * |report|) reproduces; a hair more does not."""
    assert Within(rel=0.1)(44.0, 40.0)[0] == "reproduced"
    assert Within(rel=0.1)(44.01, 40.0)[0] == "not reproduced"
    assert Within(rel=0.0, abs_tol=0.5)(9.5, 10.0)[0] == "reproduced"
    assert Within(rel=0.1)(36.0, 40.0)[0] == "reproduced"
    assert Within()(1.0, None)[0] == "not comparable"


def _iv(est, half):
    return {
        "estimate": est,
        "low": est - half,
        "high": est + half,
        "level": 0.95,
        "method": "bootstrap-percentile",
        "n_boot": 1000,
        "n": 500,
    }


def test_same_order_judges_rankings_from_intervals_only():
    """Without intervals the book's order is shown and the row stays inconclusive; with intervals, only
    separated ones decide, and a separation against the report's order is "not reproduced"."""
    judge = SameOrder()
    book = {"linear": 1.0, "cosine": 9.0, "quadratic": 2.0}
    verdict, why = judge(book, "linear < quadratic < cosine")
    assert verdict == INCONCLUSIVE_NO_INTERVAL and why.startswith("same order")
    far = {"linear": _iv(1.0, 0.2), "quadratic": _iv(2.0, 0.2), "cosine": _iv(9.0, 0.2)}
    assert judge(book, "linear < quadratic < cosine", far)[0] == "reproduced"
    near = {**far, "quadratic": _iv(2.0, 1.5)}
    verdict, why = judge(book, "linear < quadratic < cosine", near)
    assert verdict == INCONCLUSIVE_OVERLAP and "linear 1 [0.8, 1.2] vs quadratic 2 [0.5, 3.5]" in why
    verdict, why = judge(
        {"linear": 3.0, "cosine": 1.0}, "linear < cosine", {"linear": _iv(3.0, 0.5), "cosine": _iv(1.0, 0.5)}
    )
    assert verdict == "not reproduced" and why.startswith("the book's order is cosine < linear")
    assert (
        SameOrder(higher_is_better=True)({"a": 9.0, "b": 1.0}, "a > b", {"a": _iv(9, 1), "b": _iv(1, 1)})[0]
        == "reproduced"
    )
    assert judge({"linear": 1.0}, "linear < cosine")[0] == "not comparable"
    assert judge(book, "linear < cosine", {"linear": _iv(1.0, 0.2)})[0] == INCONCLUSIVE_NO_INTERVAL  # one missing


def test_entry_checks_its_fields():
    with pytest.raises(ValueError, match="Entry.report must be one of"):
        Entry("F", "q", 1.0, "Sec. 1", "x.json", "k")
    with pytest.raises(ValueError, match="Entry.min_tier must be one of"):
        Entry("A", "q", 1.0, "Sec. 1", "x.json", "k", min_tier="smoke")
    with pytest.raises(ValueError, match="Entry.results must be a .json path relative to results/"):
        Entry("A", "q", 1.0, "Sec. 1", "/abs/x.json", "k")
    with pytest.raises(ValueError, match="Entry.results must be a .json path"):
        Entry("A", "q", 1.0, "Sec. 1", "x.csv", "k")
    with pytest.raises(ValueError, match="Entry.key must name"):
        Entry("A", "q", 1.0, "Sec. 1", "x.json", "")


def test_rows_read_results_and_judge(tmp_path):
    """Each row reads its number from its results file (dotted key or tuple for keys with dots), records
    tier and hardware, and applies its judge; a missing file is "not yet re-run"."""
    _results(
        tmp_path,
        "a/fid.json",
        {
            "fid": {"linear": 40.0, "cosine": 90.0},
            "w": {"0.2": 16.0},
            "fid_interval": {"linear": _iv(40.0, 2.0), "cosine": _iv(90.0, 5.0)},
        },
        hardware=GPU,
        tier="gpu",
    )
    entries = [
        Entry("A", "fid lin", 41.43, "Sec. 3.2", "a/fid.json", "fid.linear", Within(rel=0.1)),
        Entry("A", "order", "linear < cosine", "Sec. 3.2", "a/fid.json", "fid", SameOrder()),
        Entry("E", "w", 16.19, "Table 2", "a/fid.json", ("w", "0.2"), NotComparable("different features")),
        Entry("B", "lpips", 0.13, "Sec. 2", "b/none.json", "x"),
    ]
    rows = ledger_rows(entries, tmp_path)
    assert [r.verdict for r in rows] == ["reproduced", "reproduced", "not comparable", "not yet re-run"]
    assert rows[0].book_value == 40.0 and rows[0].tier == "gpu" and rows[0].hardware == "NVIDIA H100 (GPU)"
    assert rows[2].book_value == 16.0 and rows[2].why == "different features"
    assert rows[3].book_value is None and "no results/b/none.json" in rows[3].why


def test_smaller_tier_than_needed_is_not_comparable(tmp_path):
    """A cpu re-run of a GPU-scale experiment is shown, but never judged as (not) reproducing it."""
    _results(tmp_path, "c.json", {"fid": 44.0}, tier="cpu", hardware={"cpu": "Xeon", "torch_threads": 2})
    (row,) = ledger_rows([Entry("C", "fid", 44.47, "Our Results", "c.json", "fid", min_tier="gpu")], tmp_path)
    assert row.verdict == "not comparable" and "cpu-tier re-run" in row.why and row.hardware == "Xeon, 2 threads"


def test_smoke_results_never_count(tmp_path):
    """Smoke numbers mean nothing: even if such a file lands in results/, the row stays "not yet re-run"."""
    _results(tmp_path, "s.json", {"fid": 1.0}, tier="smoke")
    (row,) = ledger_rows([Entry("A", "fid", 1.0, "Sec. 1", "s.json", "fid")], tmp_path)
    assert row.verdict == "not yet re-run" and "smoke" in row.why


def test_missing_key_fails_loudly(tmp_path):
    """A renamed key must break the build, not silently empty a row."""
    _results(tmp_path, "a.json", {"fid": {"linear": 1.0}})
    with pytest.raises(KeyError, match=r"Report A: FID.*no 'fid.cosine'.*stopped at 'cosine'"):
        ledger_rows([Entry("A", "FID", 1.0, "Sec. 1", "a.json", "fid.cosine")], tmp_path)


def test_render_is_a_markdown_table(tmp_path):
    """One header, one row per entry; numbers formatted; pipes escaped; blanks said to be blank."""
    _results(tmp_path, "e.json", {"fid": {"mean": 16.04, "std": 0.11}, "is": 9.5}, tier="gpu")
    entries = [
        Entry("E", "FID | repeat", "16.04 ± 0.11", "Table 1", "e.json", "fid", NotComparable("x")),
        Entry("E", "IS", 9.56, "Table 2", "e.json", "is", Within(rel=0.05), fmt=".3f"),
        Entry("D", "final FID", None, "Sec. 1.2", "d.json", "fid"),
    ]
    text = render_ledger(entries, tmp_path)
    lines = text.strip().splitlines()
    assert lines[0].startswith("2 of 3 numbers re-run so far.")
    assert lines[2].startswith("| Report | Quantity | Report's value | Book's value | Tier | Hardware | Verdict |")
    rows = lines[4:]
    assert len(rows) == 3 and [r[:4] for r in rows] == ["| E ", "| E ", "| D "] and all(r.endswith(" |") for r in rows)
    assert "FID \\| repeat" in rows[0] and "16.04 ± 0.11 (`results/e.json`)" in rows[0]
    assert "9.560 (Table 2)" in rows[1] and "| 9.500 (`results/e.json`) |" in rows[1] and "**reproduced**" in rows[1]
    assert "left blank (Sec. 1.2)" in rows[2] and "**not yet re-run**" in rows[2]


def test_write_ledger_only_rewrites_on_change(tmp_path):
    """Rewriting an unchanged file would make Sphinx rebuild the reports page every time."""
    out = tmp_path / "gen" / "ledger.md"
    assert write_ledger(out, ENTRIES[:2], tmp_path) is True
    assert write_ledger(out, ENTRIES[:2], tmp_path) is False
    _results(tmp_path, ENTRIES[0].results, {"fid": {"linear": 1.0, "quadratic": 2.0, "sigmoid": 3.0, "cosine": 4.0}})
    assert write_ledger(out, ENTRIES[:2], tmp_path) is True
    assert f"**{INCONCLUSIVE_NO_INTERVAL}**: same order" in out.read_text()


def test_book_entries_are_distinct_and_render_against_the_real_results():
    """The book's own entries: every report represented, no duplicate rows, and each one's key exists
    in whatever results file has landed (rendering raises KeyError otherwise)."""
    assert {e.report for e in ENTRIES} == {"A", "B", "C", "D", "E"}
    keys = [(e.report, e.quantity) for e in ENTRIES]
    assert len(keys) == len(set(keys))
    text = render_ledger(results=RESULTS)
    assert len(re.findall(r"^\| [A-E] \|", text, flags=re.M)) == len(ENTRIES)


def test_cli_prints_and_writes(tmp_path, capsys):
    assert cli.main(["ledger", "--results", str(tmp_path)]) == 0
    assert "| Report | Quantity |" in capsys.readouterr().out
    out = tmp_path / "ledger.md"
    assert cli.main(["ledger", "--results", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text() == render_ledger(results=tmp_path)


def test_rows_show_intervals_and_judge_at_the_re_run_tier(tmp_path):
    """A cpu-tier ranking is judged at the cpu tier only: overlapping intervals give "inconclusive", separated
    ones "reproduced at the cpu tier"; the rendered row shows every interval."""
    data = {
        "fid": {"a": 10.0, "b": 12.0, "c": 30.0},
        "fid_interval": {"a": _iv(10.0, 1.5), "b": _iv(12.0, 1.5), "c": _iv(30.0, 2.0)},
    }
    _results(tmp_path, "r.json", data)
    entries = [
        Entry("A", "order a b", "a < b", "Sec. 1", "r.json", "fid", SameOrder()),
        Entry("A", "order a c", "a < c", "Sec. 1", "r.json", "fid", SameOrder()),
        Entry("A", "value a", 10.0, "Sec. 1", "r.json", "fid.a", Within(rel=0.1)),
    ]
    rows = ledger_rows(entries, tmp_path)
    assert [r.verdict for r in rows] == [INCONCLUSIVE_OVERLAP, "reproduced at the cpu tier", "not comparable"]
    assert "tests the order at the cpu tier only" in rows[1].why and "depends on the scale" in rows[2].why
    text = render_ledger(entries, tmp_path)
    assert "a: 10.00 [8.50, 11.50], b: 12.00 [10.50, 13.50]" in text


def test_interval_key_is_the_sibling_path():
    assert interval_key("fid") == ("fid_interval",)
    assert interval_key("final.cnn.fid") == ("final", "cnn", "fid_interval")
    assert interval_key(("by_K", "5", "fid")) == ("by_K", "5", "fid_interval")


def _nest(parts, value):
    out = value
    for p in reversed(parts):
        out = {p: out}
    return out


def _merge(a, b):
    for k, v in b.items():
        a[k] = _merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a


@pytest.mark.parametrize("tier", [t for t in TIERS if t != "smoke"])
def test_the_tier_rule_holds_for_every_ledger_entry(tmp_path, tier):
    """Every entry of the book's ledger, given a re-run that agrees with the report as well as it can (the
    report's own value; a ranking in the report's order with separated intervals) at each tier: below its
    min_tier or, for a scale-dependent value, below the reports' tier it is "not comparable"; a ranking
    below the reports' tier is judged "at this tier"; nothing below the reports' tier reads plain
    "reproduced" unless it is scale-free."""
    for i, e in enumerate(ENTRIES):
        parts = e.key.split(".") if isinstance(e.key, str) else list(e.key)
        if isinstance(e.judge, SameOrder):
            names = [n.strip() for n in str(e.report_value).replace(">", "<").split("<")]
            step = -10.0 if e.judge.higher_is_better else 10.0
            value = {n: 100 + step * j for j, n in enumerate(names)}
            data = _merge(
                _nest(parts, value), _nest(list(interval_key(e.key)), {n: _iv(v, 1.0) for n, v in value.items()})
            )
        else:
            data = _nest(parts, e.report_value if isinstance(e.report_value, (int, float)) else 1.0)
        folder = tmp_path / str(i)
        _results(folder, e.results, data, tier=tier)
        (row,) = ledger_rows([e], folder)
        rule = tier_rule(e, tier)
        below_report = TIERS.index(tier) < TIERS.index(REPORT_TIER)
        if TIERS.index(tier) < TIERS.index(e.min_tier) or isinstance(e.judge, NotComparable):
            assert row.verdict == "not comparable", (e.quantity, tier, row)
        elif isinstance(e.judge, SameOrder):
            assert rule == ("judge at this tier" if below_report else "judge")
            assert row.verdict == (
                "reproduced at the cpu tier"
                if tier == "cpu"
                else "reproduced at the colab tier"
                if tier == "colab"
                else "reproduced"
            ), (e.quantity, row)
        elif below_report and not e.scale_free:
            assert rule == "not comparable" and row.verdict == "not comparable", (e.quantity, tier, row)
        else:
            assert row.verdict in ("reproduced", "not comparable"), (e.quantity, tier, row)
        if below_report and not e.scale_free:
            assert row.verdict not in ("reproduced", "not reproduced"), (e.quantity, tier, row)


def test_a_value_is_only_held_against_the_same_metric():
    """A Within judge sets a book number against a report number as equals: only for the same metric (the
    report's Inception FID / IS against the book's Inception numbers, LPIPS against LPIPS, a parameter
    count). Classifier-feature FIDs and IS sit next to Inception ones only under NotComparable."""
    for e in ENTRIES:
        if not isinstance(e.judge, Within):
            continue
        q = e.quantity
        assert (
            ("parameters" in q and e.scale_free)
            or "LPIPS" in q
            or (e.results == "report_c/evaluation.json" and e.min_tier == "gpu")
        ), e.quantity


def test_a_key_that_may_be_absent_reads_not_yet_re_run_and_others_still_raise(tmp_path):
    """An entry that declares why its key may be missing (a tier that does not measure it) reads "not yet
    re-run" with that reason; an entry without one raises on a missing key, naming it (a renamed key)."""
    _results(tmp_path, "r.json", {"fid": {"a": 10.0, "b": 12.0}})
    optional = Entry("E", "seed order", "a < b", "Sec. 1", "r.json", ("seeds", "fid"), SameOrder(), absent="one seed")
    (row,) = ledger_rows([optional], tmp_path)
    assert row.verdict == "not yet re-run" and "holds no ('seeds', 'fid'): one seed" in row.why
    required = Entry("E", "seed order", "a < b", "Sec. 1", "r.json", ("seeds", "fid"), SameOrder())
    with pytest.raises(KeyError, match="seed order"):
        ledger_rows([required], tmp_path)


def test_no_ranking_of_networks_that_all_fail_the_baseline(tmp_path):
    """A ranking whose entries all fail the stored baseline (beats: False) is not judged, however far apart
    their intervals; where only some fail, the ranking is judged from the intervals and the failures named."""
    base = {"what": "a fitted Gaussian", "n": 500, "fid": 300.0, "fid_interval": _iv(300.0, 8.0)}
    data = {
        "fid": {"a": 400.0, "b": 500.0, "c": 100.0},
        "fid_interval": {"a": _iv(400.0, 5.0), "b": _iv(500.0, 5.0), "c": _iv(100.0, 5.0)},
        "fid_baseline": {**base, "beats": {"a": False, "b": False, "c": True}},
    }
    _results(tmp_path, "r.json", data)
    both_fail = Entry("D", "order a b", "a < b", "Sec. 1", "r.json", "fid", SameOrder())
    one_fails = Entry("D", "order c b", "c < b", "Sec. 1", "r.json", "fid", SameOrder())
    rows = ledger_rows([both_fail, one_fails], tmp_path)
    assert rows[0].verdict == INCONCLUSIVE_FAILED
    assert "a, b do not beat the baseline, a fitted Gaussian (FID 300 [292, 308] at n = 500)" in rows[0].why
    assert rows[1].verdict == "reproduced at the cpu tier" and "b does not beat the baseline" in rows[1].why
    # without the baseline record the same intervals give a verdict: the rule reads the stored flags only
    del data["fid_baseline"]
    _results(tmp_path, "r.json", data)
    assert ledger_rows([both_fail], tmp_path)[0].verdict == "reproduced at the cpu tier"
    assert baseline_key("runs.x.generation_fid") == ("runs", "x", "generation_fid_baseline")
