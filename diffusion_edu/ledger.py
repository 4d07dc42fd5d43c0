"""The reproduction ledger: each report's number next to the book's re-run of it.

(Longer than the package's usual ~400 lines: most of it is the table of report facts, one row each,
which reads best in one place.)

Every row pairs a fact from a report (its value and where the report states it) with a number the
book's own code wrote into a results file under ``results/`` (see :mod:`diffusion_edu.results`), and
a rule that judges the pair. :func:`render_ledger` turns :data:`ENTRIES` into a markdown table; the
book's build writes it to a file that the reports page includes, so the table is never typed by hand.
A row whose results file does not exist yet reads "not yet re-run".

Adding a row is one line in :data:`ENTRIES`, e.g.::

    Entry("E", "FID, T=1000, linear, w=0.2", 16.19, "Table 2", "report_e/sweep.json", "fid.T1000_linear_w0.2", FID_FEATURES),

``key`` is a dot-separated path into the results file's ``data`` (a tuple of keys when a key holds a dot).
The interval of the value at ``a.b.fid`` is read from ``a.b.fid_interval`` when the file holds one
(:func:`interval_key`; written by :func:`diffusion_edu.experiments.common.measure`).

The tier rule (:func:`tier_rule`, applied to every row): the reports ran at their own scale, the
``gpu`` tier (:data:`REPORT_TIER`). A value re-run at a smaller tier is shown but judged "not
comparable" (a smaller training budget gives other numbers), unless the entry is ``scale_free`` (a
parameter count). A ranking re-run at a smaller tier is judged *at that tier* only, and only from
intervals: "reproduced at the cpu tier" / "not reproduced at the cpu tier" where the intervals separate
the entries that decide it (:func:`diffusion_edu.intervals.judge_order`), otherwise "inconclusive at
this tier (intervals overlap)", or "inconclusive at this tier (no interval)" where the results file
holds none. Below an entry's ``min_tier`` nothing is judged.

No ranking of failures: where the results file stores a baseline next to a ranking (``<key>_baseline``:
:func:`diffusion_edu.experiments.evaluation.gaussian_baseline`, a Gaussian fitted to the training pixels,
with ``beats``: which entries' FID intervals lie wholly below the baseline's), a ranking whose entries all
fail to beat it reads "inconclusive at this tier (no network beats the baseline)": networks that have not
learned digits rank nothing the reports claimed. Entries that fail in a ranking that is judged are named.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .intervals import interval_from, judge_order
from .results import TIERS, atomic_write_bytes, read_results, results_dir

__all__ = [
    "Entry",
    "Within",
    "SameOrder",
    "NotComparable",
    "ENTRIES",
    "REPORT_TIER",
    "INCONCLUSIVE_OVERLAP",
    "INCONCLUSIVE_NO_INTERVAL",
    "INCONCLUSIVE_FAILED",
    "interval_key",
    "baseline_key",
    "tier_rule",
    "LedgerRow",
    "ledger_rows",
    "render_ledger",
    "write_ledger",
]

Verdict = str  # "reproduced", "not reproduced", "... at the cpu tier", "inconclusive at this tier (...)",
#                "not comparable", "not yet re-run"
REPORT_TIER = "gpu"  # the reports' own scale (book/intro.md's table of tiers)
INCONCLUSIVE_OVERLAP = "inconclusive at this tier (intervals overlap)"
INCONCLUSIVE_NO_INTERVAL = "inconclusive at this tier (no interval)"
INCONCLUSIVE_FAILED = "inconclusive at this tier (no network beats the baseline)"


@dataclass(frozen=True)
class Within:
    """Reproduced when |book - report| <= max(abs_tol, rel * |report|)."""

    rel: float = 0.1
    abs_tol: float = 0.0

    def __call__(self, book: Any, report: Any, intervals: Any = None) -> tuple[Verdict, str]:
        if not isinstance(report, (int, float)) or not isinstance(book, (int, float)):
            return "not comparable", "the report gives no number to compare with"
        tol = max(self.abs_tol, self.rel * abs(report))
        diff = abs(book - report)
        rule = f"|difference| {_num(diff)} {'<=' if diff <= tol else '>'} tolerance {_num(tol)}"
        return ("reproduced" if diff <= tol else "not reproduced"), rule


@dataclass(frozen=True)
class SameOrder:
    """For a ranking, judged from intervals only (:func:`diffusion_edu.intervals.judge_order`).

    The report value is the report's order as a string, best first: ``"linear < quadratic < cosine"``;
    the results key holds a dict name -> value, and its interval key (:func:`interval_key`) a dict
    name -> interval record. "reproduced" needs every adjacent pair of the report's order separated by
    the intervals in the report's direction; "not reproduced" needs one pair separated the other way;
    anything else is inconclusive. Without intervals the book's point order is shown, never judged.
    ``higher_is_better`` flips the sort.
    """

    higher_is_better: bool = False

    def __call__(self, book: Any, report: Any, intervals: Any = None, baseline: Any = None) -> tuple[Verdict, str]:
        names = [n.strip() for n in str(report).replace(">", "<").split("<")]
        if not isinstance(book, dict) or any(n not in book for n in names):
            return "not comparable", f"the results do not hold all of {names}"
        ours = sorted(names, key=lambda n: book[n], reverse=self.higher_is_better)
        order = "same order" if ours == names else "the book's order is " + " < ".join(ours)
        failed = _failed(names, baseline)
        if failed and len(failed) == len(names):
            return INCONCLUSIVE_FAILED, f"{order} in point values, but {_baseline_text(failed, baseline)}"
        read = {n: interval_from(intervals.get(n)) for n in names} if isinstance(intervals, dict) else {}
        found = {n: v for n, v in read.items() if v is not None}
        if not found or len(found) < len(read):
            return INCONCLUSIVE_NO_INTERVAL, f"{order} in point values, but the results file stores no interval"
        verdict, why = judge_order(found, names, self.higher_is_better)
        level = next(iter(found.values())).level
        why = f"{order}; {why} ({level:.0%} intervals)"
        if failed:
            why += f"; {_baseline_text(failed, baseline, every=False)}"
        return (INCONCLUSIVE_OVERLAP if verdict == "inconclusive" else verdict), why


def _failed(names: Sequence[str], baseline: Any) -> list[str]:
    """The ranked entries that the stored baseline record says do not beat it (beats: False)."""
    beats = baseline.get("beats", {}) if isinstance(baseline, dict) else {}
    return [n for n in names if beats.get(n) is False]


def _baseline_text(failed: Sequence[str], baseline: dict[str, Any], every: bool = True) -> str:
    """Which entries fail the baseline; ``every``: all the ranked entries do (then nothing is ranked)."""
    one = interval_from(baseline.get("fid_interval"))
    score = f"FID {_num(baseline['fid'])}" + (f" [{_num(one.low)}, {_num(one.high)}]" if one else "")
    who = ", ".join(failed)
    return (
        f"{who} {'does' if len(failed) == 1 else 'do'} not beat the baseline, {baseline.get('what', 'a baseline')} "
        f"({score} at n = {baseline.get('n')}): {'its' if len(failed) == 1 else 'their'} FID interval does not lie "
        "wholly below the baseline's"
        + (
            ", so the ranking rests on networks that have not learned digits"
            if every
            else "; the ranking stands on the entries that beat it"
        )
    )


@dataclass(frozen=True)
class NotComparable:
    """The numbers are shown side by side but cannot be judged against each other; ``reason`` says why."""

    reason: str

    def __call__(self, book: Any, report: Any, intervals: Any = None) -> tuple[Verdict, str]:
        return "not comparable", self.reason


Judge = Within | SameOrder | NotComparable


@dataclass(frozen=True)
class Entry:
    """One number from a report and where the book's re-run of it is stored.

    report: the report's letter, "A".."E"; quantity: what was measured, with its setting;
    report_value: the report's number (a float), a string for rankings or "5.75 ± 0.40"-style text,
    or None when the report left it blank; source: where the report states it ("Sec. 3.2", "Table 2");
    results: the results file, relative to ``results/``; key: the path to the number in the file's
    ``data``; judge: how to compare; min_tier: the smallest tier at which the row is judged at all
    (below it: "not comparable"); scale_free: the quantity does not depend on the tier (a parameter
    count), so :func:`tier_rule` judges it at any tier from ``min_tier`` up; fmt: the format of both
    numbers (the report's too, so give it the report's precision); absent: when the key may be missing
    from a file of some tier, why (the row then reads "not yet re-run" with that reason; without it a
    missing key raises, so that a renamed key is caught).
    """

    report: str
    quantity: str
    report_value: float | str | None
    source: str
    results: str
    key: str | tuple[str, ...]
    judge: Judge = Within()
    min_tier: str = "cpu"
    fmt: str = ".2f"
    scale_free: bool = False
    absent: str = ""

    def __post_init__(self) -> None:
        if self.report not in ("A", "B", "C", "D", "E"):
            raise ValueError(f"Entry.report must be one of 'A'..'E', got {self.report!r}")
        if self.min_tier not in TIERS or self.min_tier == "smoke":
            raise ValueError(f"Entry.min_tier must be one of {list(TIERS[1:])}, got {self.min_tier!r}")
        if Path(self.results).is_absolute() or not str(self.results).endswith(".json"):
            raise ValueError(f"Entry.results must be a .json path relative to results/, got {self.results!r}")
        if not self.key:
            raise ValueError("Entry.key must name where the number is in the results file's data")


# Reasons shared by several rows.
FID_FEATURES = NotComparable(
    "the report's FID uses Inception-v3 features; the book's offline FID uses its MNIST classifier's features"
)
LEFT_BLANK = NotComparable("the report left this number blank; the book's value fills the gap")
NOT_MEASURED_A = NotComparable(
    "Report A says it never saw a sample of the wrong class but did not measure the error; the book's value fills the gap"
)

NOT_MEASURED_DIVERSITY = NotComparable(
    "Report A did not measure diversity; it noted that denoising was 'basically settled from the first steps' "
    "with variance 0, and the book's value measures how alike that sampler's digits of one class are"
)

# A table, one report fact per line: the formatter leaves it as written.
# fmt: off
_ONE_SEED_A = "this tier trains one training seed of each network (report_a.BUDGETS[tier].training_seeds)"

ENTRIES: list[Entry] = [
    # Report A: MNIST, T=400, U-Net predicting eps (chapter 3, diffusion_edu.experiments.report_a).
    Entry("A", "FID ranking of the four schedules (best first), T=400, the book's sampler on its respaced steps", "linear < quadratic < sigmoid < cosine", "Sec. 3.2", "report_a/schedules.json", "fid", SameOrder()),
    Entry("A", "FID, linear schedule, T=400", 41.43, "Sec. 3.2", "report_a/schedules.json", "fid.linear", FID_FEATURES),
    Entry("A", "FID, quadratic schedule, T=400", 85.88, "Sec. 3.2", "report_a/schedules.json", "fid.quadratic", FID_FEATURES),
    Entry("A", "FID, sigmoid schedule, T=400", 95.74, "Sec. 3.2", "report_a/schedules.json", "fid.sigmoid", FID_FEATURES),
    Entry("A", "FID, cosine schedule, T=400", 215.80, "Sec. 3.2", "report_a/schedules.json", "fid.cosine", FID_FEATURES),
    Entry("A", "FID ranking of the four schedules (best first), T=400, the book's sampler at all 400 steps", "linear < quadratic < sigmoid < cosine", "Sec. 3.2", "report_a/schedules.json", "protocols.book_full.fid", SameOrder()),
    Entry("A", "FID ranking of the four schedules (best first), T=400, Report A's sampler (variance 0, unclipped mean) on the book's respaced steps, not the report's protocol", "linear < quadratic < sigmoid < cosine", "Sec. 3.2", "report_a/schedules.json", "protocols.report.fid", SameOrder()),
    Entry("A", "FID ranking of the four schedules (best first), T=400, Report A's sampler (variance 0, unclipped mean) at all 400 steps, as the report sampled", "linear < quadratic < sigmoid < cosine", "Sec. 3.2", "report_a/schedules.json", "protocols.report_full.fid", SameOrder()),
    Entry("A", "FID ranking of the denoisers (best first)", "unet < vae < autoencoder", "Sec. 3.1", "report_a/denoisers.json", "fid", SameOrder()),
    Entry("A", "FID ranking of the denoisers (best first), mean over 3 training seeds (t interval)", "unet < vae < autoencoder", "Sec. 3.1", "report_a/seeds.json", ("rankings", "denoisers", "seeds", "fid"), SameOrder(), absent=_ONE_SEED_A),
    Entry("A", "FID ranking of the four schedules (best first), T=400, the book's sampler on its respaced steps, mean over 3 training seeds (t interval)", "linear < quadratic < sigmoid < cosine", "Sec. 3.2", "report_a/seeds.json", ("rankings", "schedules", "seeds", "fid"), SameOrder(), absent=_ONE_SEED_A),
    Entry("A", "FID ranking of the four schedules (best first), T=200, the book's sampler on its respaced steps (Report A: its results hold for T between 200 and 2000)", "linear < quadratic < sigmoid < cosine", "Sec. 3.2", "report_a/t_range.json", ("by_T", "200", "fid"), SameOrder(), absent="this tier does not train the schedules at T=200 (report_a.BUDGETS[tier].t_range)"),
    Entry("A", "FID ranking of the four schedules (best first), T=1000, the book's sampler on its respaced steps (Report A: its results hold for T between 200 and 2000)", "linear < quadratic < sigmoid < cosine", "Sec. 3.2", "report_a/t_range.json", ("by_T", "1000", "fid"), SameOrder(), absent="this tier does not train the schedules at T=1000 (report_a.BUDGETS[tier].t_range)"),
    Entry("A", "FID ranking of the four schedules (best first), T=2000, the book's sampler on its respaced steps (Report A: its results hold for T between 200 and 2000)", "linear < quadratic < sigmoid < cosine", "Sec. 3.2", "report_a/t_range.json", ("by_T", "2000", "fid"), SameOrder(), absent="this tier does not train the schedules at T=2000 (report_a.BUDGETS[tier].t_range)"),
    Entry("A", "FID ranking, eps vs posterior-mean prediction (best first), the book's respaced steps", "eps < mu", "Sec. 3", "report_a/parameterization.json", "fid", SameOrder()),
    Entry("A", "FID ranking, eps vs posterior-mean prediction (best first), all 400 steps", "eps < mu", "Sec. 3", "report_a/parameterization.json", "full.fid", SameOrder()),
    Entry("A", "conditional accuracy, one-hot label, no discriminator term", "not measured", "Sec. 3.3", "report_a/conditioning.json", "conditional_accuracy.unet", NOT_MEASURED_A, fmt=".3f"),
    Entry("A", "conditional accuracy, one-hot label + discriminator term", "not measured", "Sec. 3.3", "report_a/conditioning.json", "conditional_accuracy.unet_disc", NOT_MEASURED_A, fmt=".3f"),
    Entry("A", "FID, sub-sampled DDPM (variance 0), 5 steps", 49.0, "Sec. 3.4", "report_a/fast_sampling.json", ("by_K", "5", "fid", "respaced_zero"), FID_FEATURES, fmt=".0f"),
    Entry("A", "FID, DDIM (the report does not say at how many steps; the book's value is at 5)", 42.0, "Sec. 3.4", "report_a/fast_sampling.json", ("by_K", "5", "fid", "ddim"), FID_FEATURES, fmt=".0f"),
    Entry("A", "FID ranking at 5 steps (best first): DDIM vs sub-sampled DDPM with variance 0", "ddim < respaced_zero", "Sec. 3.4", "report_a/fast_sampling.json", ("by_K", "5", "fid"), SameOrder()),
    # The cpu tier draws only a few samples at all 400 steps (results' config), too few to rank.
    Entry("A", "FID ranking of the reverse variance at all 400 steps (best first), Report A's test server", "zero < beta_tilde", "Sec. 3.5", "report_a/variance.json", "full.fid", SameOrder(), min_tier="colab"),
    # The shipped network at all 400 steps (part deterministic): the test server's precision and recall fell with a variance.
    Entry("A", "precision ranking of the reverse variance at all 400 steps (best first), Report A's test server", "zero < beta_tilde", "Sec. 3.5", "report_a/deterministic.json", "full.precision", SameOrder(higher_is_better=True)),
    Entry("A", "recall ranking of the reverse variance at all 400 steps (best first), Report A's test server", "zero < beta_tilde", "Sec. 3.5", "report_a/deterministic.json", "full.recall", SameOrder(higher_is_better=True)),
    Entry("A", "within-class diversity with variance 0, all 400 steps, as a fraction of the real digits'", "not measured", "Sec. 4", "report_a/deterministic.json", "full.diversity_ratio.zero", NOT_MEASURED_DIVERSITY),
    # Report B: CIFAR-10 with classifier-free guidance.
    Entry("B", "mean LPIPS (alex) to the nearest training image, 100 samples, ~1M steps", 0.13, "Sec. 2", "report_b/nearest_neighbours.json", "lpips_mean", Within(rel=0.25), min_tier="gpu"),
    Entry("B", "mean LPIPS (alex) of 100 test images to their nearest training image", None, "Sec. 2", "report_b/nearest_neighbours.json", "lpips_baseline_mean", NotComparable("the report gives no baseline: this is the value its 0.13 should be held against"), min_tier="gpu"),
    # Report C: Ho et al. (2020) on CIFAR-10, 100k steps, 1,000 samples.
    Entry("C", "parameters of Ho et al.'s CIFAR-10 U-Net (millions)", 35.7, "Experiment parameters", "report_c/costs.json", "params_m", Within(rel=0.005), fmt=".1f", scale_free=True),
    Entry("C", "Inception Score, 100k steps, 1k samples", 5.75, "Our Results", "report_c/evaluation.json", "vs_report.is", Within(rel=0.1), min_tier="gpu"),
    Entry("C", "FID (Inception), 100k steps, 1k samples", 44.47, "Our Results", "report_c/evaluation.json", "vs_report.fid_train", Within(rel=0.15), min_tier="gpu"),
    Entry("C", "Inception Score, 800k steps, 50k samples (Ho et al.)", 9.46, "Table 1", "report_c/evaluation.json", "vs_paper.is", Within(rel=0.05), min_tier="gpu"),
    Entry("C", "FID (Inception), 800k steps, 50k samples (Ho et al.)", 3.17, "Table 1", "report_c/evaluation.json", "vs_paper.fid_train", Within(rel=0.15), min_tier="gpu"),
    # Report D: small CNN on MNIST; several results left blank (the book fills them: report_d/*.json).
    Entry("D", "final FID, CNN (GELU), T=1000", None, "Sec. 1.2", "report_d/curves.json", "final.cnn.fid", LEFT_BLANK),
    Entry("D", "final IS, CNN (GELU), T=1000", None, "Sec. 1.2", "report_d/curves.json", "final.cnn.is", LEFT_BLANK),
    Entry("D", "final FID, CNN (SELU), T=100, lr 6e-4", None, "Sec. 1.3", "report_d/curves.json", "final.cnn_selu.fid", LEFT_BLANK),
    Entry("D", "final IS, CNN (SELU), T=100, lr 6e-4", None, "Sec. 1.3", "report_d/curves.json", "final.cnn_selu.is", LEFT_BLANK),
    Entry("D", "final FID ranking (best first): GELU T=1000 vs SELU T=100", "cnn < cnn_selu", "Sec. 1.3", "report_d/curves.json", "final_fid", SameOrder()),
    Entry("D", "final FID, cold diffusion, columns, random order, 28 steps", None, "Sec. 2.2", "report_d/curves.json", "final.cold_columns_random.fid", LEFT_BLANK),
    Entry("D", "final IS, cold diffusion, columns, random order, 28 steps", None, "Sec. 2.2", "report_d/curves.json", "final.cold_columns_random.is", LEFT_BLANK),
    Entry("D", "cold-diffusion FID ranking (best first): Bansal et al.'s Algorithm 2 vs 1, columns", "alg2 < alg1", "Sec. 2.1", "report_d/cold.json", "runs.cold_columns_random.generation_fid", SameOrder()),
    Entry("D", "cold-diffusion FID ranking (best first): single columns vs groups of 4", "cold_columns_random < cold_columns_random_g4", "Sec. 2.1-2.2", "report_d/cold.json", "fid_alg2", SameOrder()),
    Entry("D", "cold-diffusion FID ranking (best first): columns vs rows, 28 steps", "cold_columns_random < cold_rows_random", "Sec. 2.2, App. 3.1", "report_d/cold.json", "fid_alg2", SameOrder()),
    Entry("D", "FID, columns in groups of 4 (7 steps)", None, "App. 3.1", "report_d/cold.json", "fid_alg2.cold_columns_random_g4", LEFT_BLANK),
    Entry("D", "FID, rows, random order, 28 steps", None, "App. 3.1", "report_d/cold.json", "fid_alg2.cold_rows_random", LEFT_BLANK),
    Entry("D", "FID, rows in groups of 4 (7 steps)", None, "App. 3.1", "report_d/cold.json", "fid_alg2.cold_rows_random_g4", LEFT_BLANK),
    Entry("D", "FID under one protocol: Gaussian DDPM (CNN) vs cold diffusion (columns, Algorithm 2)", None, "Sec. 2.3", "report_d/comparison.json", "fid_ddpm_vs_cold", LEFT_BLANK),
    # Report E: conditional U-Net on MNIST, classifier-free guidance (written by diffusion_edu/experiments/report_e.py).
    Entry("E", "FID ranking of T x schedule at w=0.2 (best first), the tier's sampler (cpu: 20 respaced steps; gpu: all T, as the report)", "T1000_linear < T4000_linear < T4000_cosine < T1000_cosine", "Table 2", "report_e/schedules.json", "fid", SameOrder()),
    Entry("E", "FID, T=1000, linear, w=0.2", 16.19, "Table 2", "report_e/schedules.json", ("fid", "T1000_linear"), FID_FEATURES),
    Entry("E", "FID, T=4000, linear, w=0.2", 20.91, "Table 2", "report_e/schedules.json", ("fid", "T4000_linear"), FID_FEATURES),
    Entry("E", "FID, T=1000, cosine, w=0.2", 26.82, "Table 2", "report_e/schedules.json", ("fid", "T1000_cosine"), FID_FEATURES),
    Entry("E", "FID, T=4000, cosine, w=0.2", 21.70, "Table 2", "report_e/schedules.json", ("fid", "T4000_cosine"), FID_FEATURES),
    Entry("E", "IS (an MNIST classifier), T=1000, linear, w=0.2", 9.56, "Table 2", "report_e/schedules.json", ("is", "T1000_linear"), NotComparable("both use an MNIST classifier instead of Inception, but not the same one: the report's own CNN and the book's classifier give the same images different scores")),
    Entry("E", "FID ranking of T x schedule at w=0.2 (best first), the tier's sampler, mean over 3 training seeds (t interval)", "T1000_linear < T4000_linear < T4000_cosine < T1000_cosine", "Table 2", "report_e/schedule_seeds.json", ("seeds", "fid"), SameOrder(), absent="this tier measured one training seed of each network (report_e.BUDGETS[tier].training_seeds)"),
    Entry("E", "FID ranking of T x schedule at w=0.2 (best first), the largest step count the tier samples (cpu: 100 respaced steps; gpu: all T, as the report)", "T1000_linear < T4000_linear < T4000_cosine < T1000_cosine", "Table 2", "report_e/steps.json", ("largest", "fid"), SameOrder()),
    Entry("E", "FID ranking of guidance weights (best first), T=1000, linear", "0.2 < 0 < 0.5", "Table 3", "report_e/guidance.json", "fid", SameOrder()),
    Entry("E", "FID ranking of guidance weights (best first), T=1000, linear, mean over 3 training seeds (t interval)", "0.2 < 0 < 0.5", "Table 3", "report_e/guidance.json", ("seeds", "fid"), SameOrder(), absent="this tier measured one training seed of the network (report_e.BUDGETS[tier].training_seeds)"),
    Entry("E", "FID, T=1000, linear, w=0", 21.12, "Table 3", "report_e/guidance.json", ("fid", "0"), FID_FEATURES),
    Entry("E", "FID, T=1000, linear, w=0.5", 24.67, "Table 3", "report_e/guidance.json", ("fid", "0.5"), FID_FEATURES),
    Entry("E", "FID over five sampling runs (mean ± std), T=1000, linear, w=0.2", "16.04 ± 0.11", "Table 1", "report_e/repeatability.json", "fid", NotComparable("Inception features and 10,000 samples in the report; the book's classifier features and its tier's sample count")),
    # Report E's FID repeatability, re-measured in the chapter on measuring (chapter 2).
    Entry("E", "FID repeatability: mean ± std over 5 evaluations of one network, T=1000, linear", "16.04 ± 0.11", "Table 1", "measuring/sample_size_bias.json", "repeatability",
          NotComparable("the report: Inception features, 10,000 samples vs MNIST's 10,000 test digits, w=0.2; the book: classifier features, "
                        "five disjoint sets of samples (w=0) vs the 1,005 held-out digits; chapter 2 shows why a small spread says nothing about the bias")),
]
# fmt: on


@dataclass(frozen=True)
class LedgerRow:
    """One rendered row: the entry, the book's value (None if not re-run), its tier and hardware, the verdict,
    and the value's interval record(s) when the results file stores them."""

    entry: Entry
    book_value: Any
    tier: str | None
    hardware: str | None
    verdict: Verdict
    why: str
    intervals: Any = None


def _num(v: float) -> str:
    return f"{v:.3g}"


def _lookup(data: Any, key: str | Sequence[str]) -> Any:
    parts = key.split(".") if isinstance(key, str) else list(key)
    for p in parts:
        if not isinstance(data, dict) or p not in data:
            raise KeyError(f"no {'.'.join(parts)!r} in the results file's data (stopped at {p!r})")
        data = data[p]
    return data


def _hardware(hw: dict[str, Any]) -> str:
    if hw.get("gpu"):
        return f"{hw['gpu']} (GPU)"
    threads = hw.get("torch_threads")
    return f"{hw.get('cpu', 'CPU')}" + (f", {threads} threads" if threads else "")


def _tier_rank(tier: str) -> int:
    return TIERS.index(tier) if tier in TIERS else -1


def interval_key(key: str | Sequence[str]) -> tuple[str, ...]:
    """Where the interval of the value at ``key`` lives: the same path with ``_interval`` added to its
    last part (``fid.linear`` -> ``fid.linear_interval``; a ranking ``fid`` -> ``fid_interval``)."""
    parts = key.split(".") if isinstance(key, str) else list(key)
    return (*parts[:-1], parts[-1] + "_interval")


def tier_rule(entry: Entry, tier: str) -> Literal["judge", "judge at this tier", "not comparable"]:
    """The ledger's tier rule for a re-run at ``tier`` (see the module docstring): below the entry's
    ``min_tier`` "not comparable"; at or above the reports' tier (or for a scale-free quantity) "judge";
    below it a ranking is judged "at this tier" and any other value is "not comparable"."""
    if _tier_rank(tier) < _tier_rank(entry.min_tier):
        return "not comparable"
    if entry.scale_free or _tier_rank(tier) >= _tier_rank(REPORT_TIER):
        return "judge"
    return "judge at this tier" if isinstance(entry.judge, SameOrder) else "not comparable"


def baseline_key(key: str | Sequence[str]) -> tuple[str, ...]:
    """Where the baseline record of a ranking at ``key`` lives: ``<last part>_baseline`` beside it."""
    parts = key.split(".") if isinstance(key, str) else list(key)
    return (*parts[:-1], parts[-1] + "_baseline")


def _judge(e: Entry, value: Any, intervals: Any, tier: str, baseline: Any = None) -> tuple[Verdict, str]:
    rule = tier_rule(e, tier)
    if rule == "not comparable":
        if isinstance(e.judge, NotComparable):
            return e.judge(value, e.report_value)
        if _tier_rank(tier) < _tier_rank(e.min_tier):
            return "not comparable", f"a {tier}-tier re-run; this row is judged from the {e.min_tier} tier up"
        return "not comparable", (
            f"a {tier}-tier re-run of a number that depends on the scale; comparable from "
            f"the {REPORT_TIER} tier up (the reports' own scale)"
        )
    if isinstance(e.judge, SameOrder):
        verdict, why = e.judge(value, e.report_value, intervals, baseline)
    else:
        verdict, why = e.judge(value, e.report_value, intervals)
    if rule == "judge at this tier" and verdict in ("reproduced", "not reproduced"):
        verdict = f"{verdict} at the {tier} tier"
    if rule == "judge at this tier" and not isinstance(e.judge, NotComparable):
        why += f"; the report ranked at its own scale, this re-run tests the order at the {tier} tier only"
    return verdict, why


def ledger_rows(entries: Sequence[Entry] = (), results: str | Path | None = None) -> list[LedgerRow]:
    """Read each entry's results file (under ``results``, default :func:`results_dir`) and judge it
    under :func:`tier_rule`, with the value's interval where the file stores one.

    Smoke-tier files are ignored (their numbers mean nothing); a missing file gives "not yet re-run";
    a file that lacks the key raises KeyError naming the entry, so a renamed key is caught at build time.
    """
    root = Path(results) if results is not None else results_dir()
    rows = []
    for e in entries or ENTRIES:
        path = root / e.results
        if not path.is_file():
            rows.append(LedgerRow(e, None, None, None, "not yet re-run", f"no results/{e.results} yet"))
            continue
        record = read_results(path)
        if record["tier"] == "smoke":
            rows.append(LedgerRow(e, None, None, None, "not yet re-run", f"results/{e.results} is a smoke-tier file"))
            continue
        try:
            value = _lookup(record["data"], e.key)
        except KeyError as err:
            if e.absent:
                why = f"results/{e.results} (tier {record['tier']}) holds no {e.key}: {e.absent}"
                rows.append(LedgerRow(e, None, None, None, "not yet re-run", why))
                continue
            raise KeyError(f"ledger entry (Report {e.report}: {e.quantity}): {err.args[0]} in {path}") from None
        try:
            intervals = _lookup(record["data"], interval_key(e.key))
        except KeyError:
            intervals = None
        try:
            baseline = _lookup(record["data"], baseline_key(e.key))
        except KeyError:
            baseline = None
        verdict, why = _judge(e, value, intervals, record["tier"], baseline)
        if verdict == INCONCLUSIVE_NO_INTERVAL:
            why += _noise_note(e, value, record, root)
        rows.append(LedgerRow(e, value, record["tier"], _hardware(record.get("hardware", {})), verdict, why, intervals))
    return rows


def _sample_count(record: dict[str, Any], key: str | Sequence[str] = "") -> int | None:
    """The number of samples behind a results file's FIDs, where the file states one number for all of them."""
    config = record.get("config", {})
    keys = ".".join(key) if not isinstance(key, str) else key
    candidates = [record["data"].get("n"), config.get("n"), (config.get("sampler") or {}).get("n")]
    if keys.startswith(("runs.", "fid_alg2")):
        candidates.insert(0, config.get("generate_n"))  # report_d/cold.json: the generation sets
    for n in candidates:
        if isinstance(n, int) and not isinstance(n, bool):
            return n
    return None


def _noise_note(e: Entry, value: Any, record: dict[str, Any], root: Path) -> str:
    """For an FID ranking with no interval: the gaps between the book's values next to the spread of FID
    between disjoint sample sets of one network at the same n that chapter 2 measured, when it did."""
    from .experiments.measuring import fid_comparison, fid_spread

    keys = interval_key(e.key)
    n = _sample_count(record, e.key)
    if "fid" not in "".join(keys).lower() or not isinstance(value, dict) or n is None:
        return ""
    spread = fid_spread(n, root)
    names = [m.strip() for m in str(e.report_value).replace(">", "<").split("<")]
    if spread is None or not all(isinstance(value.get(m), (int, float)) for m in names):
        return ""
    vals = sorted(value[m] for m in names)
    gaps = ", ".join(_num(b - a) for a, b in zip(vals, vals[1:]))
    scale = fid_comparison({m: value[m] for m in names}, n, names, root)
    return (
        f"; gaps between neighbours {gaps} against a standard deviation of {_num(spread['std'])} between "
        f"{spread['seeds']} disjoint sets of {n} samples of one network (chapter 2): against that noise scale "
        f"alone, which the chapter's prose uses, the order reads {scale['ranking']} and the report's is "
        f"{scale['verdict']}; a verdict here needs the entries' own intervals"
    )


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "left blank"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        return "n/a" if isinstance(value, float) and math.isnan(value) else format(value, fmt)
    if isinstance(value, dict) and {"mean", "std"} <= set(value):
        return f"{format(value['mean'], fmt)} ± {format(value['std'], fmt)}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v, fmt)}" for k, v in value.items())
    return str(value)


def _fmt_with_interval(value: Any, intervals: Any, fmt: str) -> str:
    """The value, with its interval in brackets where one is stored ("17.03 [15.10, 19.02]")."""
    one = interval_from(intervals)
    if one is not None and isinstance(value, (int, float)):
        return f"{format(value, fmt)} [{format(one.low, fmt)}, {format(one.high, fmt)}]"
    if isinstance(value, dict) and isinstance(intervals, dict):
        return ", ".join(f"{k}: {_fmt_with_interval(v, intervals.get(k), fmt)}" for k, v in value.items())
    return _fmt(value, fmt)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_ledger(entries: Sequence[Entry] = (), results: str | Path | None = None) -> str:
    """The ledger as a markdown table (MyST / GitHub flavour), with a one-line summary above it."""
    rows = ledger_rows(entries, results)
    done = sum(r.verdict != "not yet re-run" for r in rows)
    out = [
        f"{done} of {len(rows)} numbers re-run so far. Generated by `diffusion_edu.ledger` from the results "
        "files at build time.",
        "",
        "| Report | Quantity | Report's value | Book's value | Tier | Hardware | Verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        e = r.entry
        report = f"{_fmt(e.report_value, e.fmt)} ({e.source})"
        book = (
            "—"
            if r.verdict == "not yet re-run"
            else f"{_fmt_with_interval(r.book_value, r.intervals, e.fmt)} (`results/{e.results}`)"
        )
        verdict = f"**{r.verdict}**: {r.why}"
        cells = [e.report, e.quantity, report, book, r.tier or "—", r.hardware or "—", verdict]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def write_ledger(path: str | Path, entries: Sequence[Entry] = (), results: str | Path | None = None) -> bool:
    """Write :func:`render_ledger` to ``path`` (atomically); returns False when the file already held it."""
    text = render_ledger(entries, results)
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return False  # unchanged: keeps Sphinx from rebuilding the page that includes it
    atomic_write_bytes(path, text.encode())
    return True


def _ledger_cmd(args: argparse.Namespace) -> int:
    text = render_ledger(results=args.results)
    if args.out:
        write_ledger(args.out, results=args.results)
    else:
        print(text, end="")
    return 0


def add_cli(subparsers) -> None:
    """``python -m diffusion_edu ledger [--results DIR] [--out FILE]``."""
    p = subparsers.add_parser("ledger", help="print the reproduction ledger (report numbers vs the book's re-runs)")
    p.add_argument("--results", type=Path, default=None, help="the results folder (default: the book's results/)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here instead of printing it")
    p.set_defaults(func=_ledger_cmd)
