"""Ten minutes of CPU: the rules that turn the recipe study's measurements into a recipe and a verdict.

The measurements are written by two benchmark scripts (``benchmarks/bench_recipe.py``: a one-factor
screen around a base recipe, the per-step cost of each variant and a sampler sweep;
``benchmarks/bench_ten_minutes.py``: a recipe trained for ten wall-clock minutes and measured against
the book's targets). This module holds what the chapter and the scripts both need, so that the chapter
shows the same decision the scripts made:

- :func:`factor_verdicts`: each variant against the base, from the FID intervals alone ("better" only
  when the variant's interval lies wholly below the base's, "worse" wholly above, else "inconclusive");
- :func:`recipe_sets`: the base plus every variant judged better, one per field (where two variants set
  the same field, the one with the lower interval's upper end);
- :func:`recommend_sampler`: among the sampler settings whose ``n`` samples took at most the time
  target, the one with the lowest FID, and which others its interval does not separate from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..intervals import compare, interval_from
from ..results import read_results, results_dir

__all__ = [
    "RECIPE_FILE",
    "TEN_MINUTES_FILE",
    "load_benchmark",
    "factor_verdicts",
    "recipe_sets",
    "recommend_sampler",
    "screen_rows",
]

RECIPE_FILE = "recipe_cpu"
TEN_MINUTES_FILE = "ten_minutes_cpu"


def load_benchmark(stem: str) -> dict[str, Any] | None:
    """The results file ``results/benchmarks/<stem>.json`` (the book's copy where the chapter runs alone),
    or None when it has not been written yet."""
    path = Path(results_dir()) / "benchmarks" / f"{stem}.json"
    return read_results(path) if path.is_file() else None


def _fid(entry: Mapping[str, Any]):
    iv = interval_from(entry.get("metrics", {}).get("fid_interval"))
    if iv is None:
        raise ValueError(f"entry {entry.get('what', '?')!r} has no fid_interval: measure it with intervals")
    return iv


def factor_verdicts(screen: Mapping[str, Mapping[str, Any]], base: str = "base") -> dict[str, dict[str, Any]]:
    """Each screened variant against ``base`` on FID (lower is better), from the intervals only.

    Returns {label: {"verdict": "better" | "worse" | "inconclusive", "fid": Interval, "base_fid": Interval,
    "sets": [...]}} for every label but the base."""
    if base not in screen:
        raise ValueError(f"the screen has no base entry {base!r}; entries: {sorted(screen)}")
    ref = _fid(screen[base])
    out: dict[str, dict[str, Any]] = {}
    for label, entry in screen.items():
        if label == base or label.startswith("_"):
            continue
        iv = _fid(entry)
        c = compare(iv, ref)
        verdict = "better" if c == "lower" else "worse" if c == "higher" else "inconclusive"
        out[label] = {"verdict": verdict, "fid": iv, "base_fid": ref, "sets": list(entry.get("sets", []))}
    return out


def _field(assignment: str) -> str:
    return assignment.partition("=")[0]


def recipe_sets(screen: Mapping[str, Mapping[str, Any]], base: str = "base") -> list[str]:
    """The recipe the screen supports: ``base``'s ``--set`` overrides plus those of every variant judged
    "better"; where two better variants set the same field, the one whose FID interval ends lower wins."""
    base_sets = list(screen[base].get("sets", []))
    chosen: dict[str, tuple[float, list[str]]] = {}
    for v in factor_verdicts(screen, base).values():
        if v["verdict"] != "better":
            continue
        extra = [s for s in v["sets"] if s not in base_sets]
        for field in {_field(s) for s in extra}:
            if field not in chosen or v["fid"].high < chosen[field][0]:
                chosen[field] = (v["fid"].high, [s for s in extra if _field(s) == field])
    out = list(base_sets)
    for field in sorted(chosen):
        out = [s for s in out if _field(s) != field] + chosen[field][1]
    return out


def recommend_sampler(samplers: Mapping[str, Mapping[str, Any]], max_seconds: float) -> dict[str, Any]:
    """The sampler setting to recommend: lowest FID among those whose samples took at most ``max_seconds``.

    ``samplers``: {label: {method, steps, w, sample_seconds, metrics}} (``bench_recipe.py samplers``).
    Returns {"label", "settings": {method, steps, w}, "fid": Interval, "within_time": [...],
    "not_separated": [labels within time whose FID interval overlaps the choice's]}; a ValueError when no
    setting meets the time."""
    within = {k: v for k, v in samplers.items() if v["sample_seconds"] <= max_seconds}
    if not within:
        fastest = min(samplers.values(), key=lambda v: v["sample_seconds"]) if samplers else None
        raise ValueError(
            f"no sampler setting drew its samples within {max_seconds:g} s"
            + (f" (fastest: {fastest['sample_seconds']:.1f} s)" if fastest else "")
        )
    best = min(within, key=lambda k: _fid(within[k]).estimate)
    fid = _fid(within[best])
    tied = [k for k in within if k != best and _fid(within[k]).overlaps(fid)]
    e = within[best]
    return {
        "label": best,
        "settings": {"method": e["method"], "steps": e["steps"], "w": e["w"]},
        "fid": fid,
        "within_time": sorted(within),
        "not_separated": sorted(tied),
    }


def screen_rows(screen: Mapping[str, Mapping[str, Any]], base: str = "base") -> list[dict[str, Any]]:
    """One row per screened variant, base first: label, what it changes, steps, FID and accuracy intervals,
    precision, recall and the verdict against the base."""
    verdicts = factor_verdicts(screen, base)
    rows = []
    for label in [base, *sorted(k for k in screen if k != base and not k.startswith("_"))]:
        e, m = screen[label], screen[label]["metrics"]
        rows.append(
            {
                "label": label,
                "what": e.get("what", ""),
                "steps": e.get("steps"),
                "fid": _fid(e),
                "accuracy": interval_from(m.get("conditional_accuracy_interval")),
                "precision": m.get("precision"),
                "recall": m.get("recall"),
                "verdict": "base" if label == base else verdicts[label]["verdict"],
            }
        )
    return rows
