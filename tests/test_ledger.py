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
from diffusion_edu.ledger import ENTRIES, Entry, NotComparable, SameOrder, Within, ledger_rows, render_ledger, write_ledger
from diffusion_edu.results import write_results

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


def test_same_order_compares_rankings_not_values():
    """A ranking reproduces when the book sorts the names the same way, whatever the scale of the values."""
    judge = SameOrder()
    assert judge({"linear": 1.0, "cosine": 9.0, "quadratic": 2.0}, "linear < quadratic < cosine") == ("reproduced", "same order")
    verdict, why = judge({"linear": 3.0, "cosine": 1.0, "quadratic": 2.0}, "linear < quadratic < cosine")
    assert verdict == "not reproduced" and why == "the book's order is cosine < quadratic < linear"
    assert SameOrder(higher_is_better=True)({"a": 9.0, "b": 1.0}, "a > b")[0] == "reproduced"
    assert judge({"linear": 1.0}, "linear < cosine")[0] == "not comparable"


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
    _results(tmp_path, "a/fid.json", {"fid": {"linear": 40.0, "cosine": 90.0}, "w": {"0.2": 16.0}}, hardware=GPU, tier="gpu")
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
    _results(tmp_path, "e.json", {"fid": {"mean": 16.04, "std": 0.11}, "is": 9.5})
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
    assert "**reproduced**: same order" in out.read_text()


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
