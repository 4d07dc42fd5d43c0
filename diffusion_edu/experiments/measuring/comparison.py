"""The measured noise of FID, for the comparisons other chapters make without an interval of their own:
:func:`fid_spread` (chapter 2's spread at n), :func:`fid_gap_threshold`, :func:`fid_comparison`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .kit import CHAPTER


def fid_spread(n: int, results: str | Path | None = None, curve: str = "model_vs_heldout") -> dict[str, Any] | None:
    """The spread of FID between disjoint sets of ``n`` samples of one network that the
    ``sample_size_bias`` part measured (``results/measuring/sample_size_bias.json``, curve ``curve``):
    {n, mean, std, seeds, curve}; None when that file, or a row at ``n`` with disjoint sets, is missing."""
    from ...results import read_results, results_dir

    path = Path(results if results is not None else results_dir()) / CHAPTER / "sample_size_bias.json"
    if not path.is_file():
        return None
    record = read_results(path)
    if record["tier"] == "smoke":
        return None
    for row in record["data"]["curves"].get(curve, {}).get("rows", []):
        if row["n"] == n and row.get("disjoint"):
            return {
                "n": n,
                "mean": row["fid_mean"],
                "std": row["fid_std"],
                "seeds": len(row.get("runs", [])),
                "curve": curve,
            }
    return None


def fid_gap_threshold(
    a: float, b: float, n: int, results: str | Path | None = None, sigmas: float = 2.0
) -> float | None:
    """How far apart two FIDs at ``n`` samples must be before the book calls one lower, when neither has an
    interval of its own: ``sigmas`` standard deviations of a difference of two independent FIDs,
    sigmas * sqrt(2) * sd, with sd the spread of :func:`fid_spread` at ``n``, scaled up in proportion when
    the larger FID exceeds the mean FID that spread was measured at (a conservative allowance: measured
    spreads grow more slowly than FID). None when no spread was measured at ``n``."""
    spread = fid_spread(n, results)
    if spread is None:
        return None
    return sigmas * math.sqrt(2) * spread["std"] * max(1.0, max(a, b) / spread["mean"])


def fid_comparison(
    values: dict[str, float],
    n: int,
    claimed: list[str] | None = None,
    results: str | Path | None = None,
    sigmas: float = 2.0,
) -> dict[str, Any]:
    """Rank FIDs at ``n`` samples that carry no interval, deciding each neighbouring pair with
    :func:`fid_gap_threshold`. Returns the point ``order`` (best first), ``pairs`` ({better, worse, gap,
    threshold, decided}), ``ranking`` ("a < b ~ c": "~" where the gap is inside the noise or no spread was
    measured) and, for a ``claimed`` order (best first), ``verdict``: "reproduced at this tier" when every
    neighbouring pair of the claim is decided in its direction, "not reproduced at this tier" when one is
    decided against it, else "inconclusive at this tier"."""
    if len(values) < 2:
        raise ValueError(f"values must hold at least 2 entries, got {values!r}")
    order = sorted(values, key=lambda k: values[k])

    def pair(x: str, y: str) -> dict[str, Any]:
        thr = fid_gap_threshold(values[x], values[y], n, results, sigmas)
        gap = values[y] - values[x]
        return {
            "better": x,
            "worse": y,
            "gap": gap,
            "threshold": thr,
            "decided": None if thr is None else abs(gap) > thr,
        }

    pairs = [pair(x, y) for x, y in zip(order, order[1:])]
    out: dict[str, Any] = {
        "order": order,
        "pairs": pairs,
        "spread": fid_spread(n, results),
        "sigmas": sigmas,
        "n": n,
        "ranking": order[0] + "".join((" < " if p["decided"] else " ~ ") + p["worse"] for p in pairs),
    }
    if claimed is not None:
        missing = [c for c in claimed if c not in values]
        if missing or len(claimed) < 2:
            raise ValueError(f"claimed must name at least 2 entries of values; missing {missing}")
        checks = [pair(x, y) for x, y in zip(claimed, claimed[1:])]
        if any(c["decided"] and c["gap"] < 0 for c in checks):
            out["verdict"] = "not reproduced at this tier"
        elif all(c["decided"] and c["gap"] > 0 for c in checks):
            out["verdict"] = "reproduced at this tier"
        else:
            out["verdict"] = "inconclusive at this tier"
        out["claimed_pairs"] = checks
    return out
