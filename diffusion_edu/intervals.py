"""Intervals for the book's measurements: the bootstrap over samples and the spread over training seeds.

(About the package's ~400 lines: the bootstrap, the seed spread and the verdict rules that read
them are one argument and are tested together.)

A number such as FID = 17.0 from 500 samples is one draw of a random quantity: another 500 samples
from the same network, or another training seed, give another number. This module puts an interval
on it, in a form a results file can hold (:meth:`Interval.to_dict`:
``{estimate, low, high, level, method, n_boot, n}``), and judges comparisons from intervals only.

- :func:`bootstrap`: the bootstrap (Efron 1979; Efron & Tibshirani 1993, *An Introduction to the
  Bootstrap*) of any statistic of one or more sample sets. Each replicate draws every resampled set
  again with replacement, ``x*_b = x[idx_b]``, and recomputes the statistic; the *percentile*
  interval is [q_{(1-level)/2}, q_{(1+level)/2}] of the replicates (Efron & Tibshirani Eq. 13.5).
  *BCa* (Efron 1987; Efron & Tibshirani Eq. 14.10) shifts those quantiles by a bias correction
  z0 = Phi^-1(#{theta*_b < theta_hat} / B) and an acceleration a = sum(d^3) / (6 (sum d^2)^1.5),
  d_i = mean(theta_(.)) - theta_(i) from the jackknife over the first resampled set:
  alpha_j = Phi(z0 + (z0 + z_j) / (1 - a (z0 + z_j))).
  *Centred* keeps the percentile interval's spread and moves it so that the replicates' median m* sits on
  the estimate, [theta_hat + q_lo - m*, theta_hat + q_hi - m*]: for statistics that a resample's
  duplicates shift as a whole (FID: a resample holds about 63% distinct rows, so its replicates carry
  FID's small-sample bias once more). Its target is the statistic's expected value at this n, which is
  what a comparison at equal n compares.
  The statistic receives *features* (rows of a tensor), never images, so a replicate never re-runs
  a network: for FID, KID and precision / recall the classifier's features, for IS and the
  conditional accuracy its logits.
- :func:`seed_spread`: the mean over training seeds with Student's t interval
  mean ± t_{(1+level)/2, k-1} s / sqrt(k).
- :func:`compare` and :func:`judge_order`: a difference counts only where the intervals separate;
  otherwise it is "inconclusive". Disjoint 95% intervals are a conservative test of a difference
  (Schenker & Gentleman 2001): "inconclusive" can hide a real difference, never invent one.

The bootstrap describes the spread of a statistic over new draws of the samples (and of the reference
set when it is resampled too). It does not remove a statistic's bias: FID's upward bias at small n
(chapter 2) moves the whole interval, so intervals are compared at equal n only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import torch

from .metrics import frechet_distance

__all__ = [
    "Interval",
    "bootstrap",
    "seed_spread",
    "t_quantile",
    "compare",
    "judge_order",
    "rank_intervals",
    "interval_from",
    "evaluation_intervals",
    "MEASURE_N_BOOT",
    "DEFAULT_LEVEL",
    "DEFAULT_N_BOOT",
]

DEFAULT_LEVEL = 0.95
DEFAULT_N_BOOT = 1000
Method = Literal["percentile", "bca", "centred"]


@dataclass(frozen=True)
class Interval:
    """An estimate with a ``level`` interval [low, high]; ``method`` says how it was computed
    ("bootstrap-percentile", "bootstrap-bca", "t over seeds"), ``n_boot`` the replicates (0 for t), ``n``
    the sample count (or the number of seeds)."""

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n_boot: int
    n: int

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {self.level!r}")
        if self.low > self.high:
            raise ValueError(f"low must not exceed high, got [{self.low!r}, {self.high!r}]")

    @property
    def width(self) -> float:
        return self.high - self.low

    def overlaps(self, other: Interval) -> bool:
        """True when the two intervals share a point (then they do not separate the two estimates)."""
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict[str, Any]:
        """The results-file record: {estimate, low, high, level, method, n_boot, n}, plain numbers."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Interval:
        missing = {"estimate", "low", "high", "level", "method", "n_boot", "n"} - set(record)
        if missing:
            raise ValueError(f"an interval record needs the keys {sorted(missing)}, got {sorted(record)}")
        return cls(
            float(record["estimate"]),
            float(record["low"]),
            float(record["high"]),
            float(record["level"]),
            str(record["method"]),
            int(record["n_boot"]),
            int(record["n"]),
        )

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"


def interval_from(value: Any) -> Interval | None:
    """An :class:`Interval` from a results-file record (or an Interval), None for anything else."""
    if isinstance(value, Interval):
        return value
    if isinstance(value, Mapping) and {"estimate", "low", "high", "level", "method"} <= set(value):
        return Interval.from_dict(value)
    return None


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return float(level)


def _quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values, min(max(q, 0.0), 1.0)))


def bootstrap(
    statistic: Callable[..., float],
    *sets: torch.Tensor,
    resample: Sequence[bool] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    method: Method = "percentile",
    generator: torch.Generator | None = None,
    estimate: float | None = None,
) -> Interval:
    """Bootstrap interval of ``statistic(*sets)``; each set is a tensor whose rows are the units (N_i, ...).

    resample: which sets are drawn again with replacement (default: all); a set marked False is passed
    unchanged (a fixed reference). method: "percentile", "bca" (the jackknife runs over the first
    resampled set, N_i more evaluations) or "centred" (the percentile interval moved onto the estimate). estimate: the statistic on the original sets, when the caller
    already has it. Replicates whose statistic is not finite are dropped; more than 1% of them raise.
    """
    if not sets or not all(isinstance(s, torch.Tensor) and s.dim() >= 1 for s in sets):
        raise TypeError("sets must be one or more tensors whose first dimension indexes the samples")
    resample = [True] * len(sets) if resample is None else list(resample)
    if len(resample) != len(sets) or not any(resample):
        raise ValueError(f"resample must hold one bool per set ({len(sets)}) with at least one True, got {resample}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot must be an int >= 10, got {n_boot!r}")
    level = _check_level(level)
    if method not in ("percentile", "bca", "centred"):
        raise ValueError(f"method must be 'percentile', 'bca' or 'centred', got {method!r}")
    if any(s.shape[0] < 2 for s, r in zip(sets, resample) if r):
        raise ValueError("every resampled set needs at least 2 rows")
    theta = float(statistic(*sets)) if estimate is None else float(estimate)
    reps = []
    for _ in range(n_boot):
        drawn = [
            s[torch.randint(0, s.shape[0], (s.shape[0],), generator=generator)] if r else s
            for s, r in zip(sets, resample)
        ]
        reps.append(float(statistic(*drawn)))
    boots = torch.tensor(reps, dtype=torch.float64)
    finite = torch.isfinite(boots)
    if (~finite).sum() > 0.01 * n_boot:
        raise ValueError(f"{int((~finite).sum())} of {n_boot} bootstrap replicates of the statistic are not finite")
    boots = boots[finite]
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    if method == "bca":
        lo_q, hi_q = _bca_quantiles(statistic, sets, resample, boots, theta, lo_q, hi_q)
    n = int(next(s.shape[0] for s, r in zip(sets, resample) if r))
    shift = theta - float(boots.median()) if method == "centred" else 0.0
    return Interval(
        theta, _quantile(boots, lo_q) + shift, _quantile(boots, hi_q) + shift, level, f"bootstrap-{method}", n_boot, n
    )


def _bca_quantiles(
    statistic, sets, resample, boots: torch.Tensor, theta: float, lo_q: float, hi_q: float
) -> tuple[float, float]:
    """BCa's adjusted quantiles (Efron & Tibshirani Eq. 14.10, 14.14, 14.15)."""
    nd = NormalDist()
    frac = float((boots < theta).double().mean())
    frac = min(max(frac, 0.5 / len(boots)), 1 - 0.5 / len(boots))
    z0 = nd.inv_cdf(frac)
    i = resample.index(True)
    first = sets[i]
    jack = []
    for j in range(first.shape[0]):
        keep = torch.cat([torch.arange(j), torch.arange(j + 1, first.shape[0])])
        args = list(sets)
        args[i] = first[keep]
        jack.append(float(statistic(*args)))
    jk = torch.tensor(jack, dtype=torch.float64)
    d = jk.mean() - jk
    denom = 6.0 * float((d**2).sum()) ** 1.5
    a = float((d**3).sum()) / denom if denom > 0 else 0.0

    def adjust(q: float) -> float:
        z = nd.inv_cdf(q)
        return nd.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))

    return adjust(lo_q), adjust(hi_q)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (bisection on its CDF,
    F(t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q!r}")
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an int >= 1, got {df!r}")
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_cdf(mid, df) < q else (lo, mid)
    return 0.5 * (lo + hi)


def seed_spread(values: Sequence[float], level: float = DEFAULT_LEVEL) -> Interval:
    """Mean over training seeds with the t interval mean ± t_{(1+level)/2, k-1} s / sqrt(k), s the sample
    standard deviation of the k >= 2 values (one per seed)."""
    level = _check_level(level)
    vals = [float(v) for v in values]
    if len(vals) < 2 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"values must hold at least 2 finite numbers (one per training seed), got {values!r}")
    k = len(vals)
    mean = sum(vals) / k
    s = math.sqrt(sum((v - mean) ** 2 for v in vals) / (k - 1))
    half = t_quantile((1 + level) / 2, k - 1) * s / math.sqrt(k)
    return Interval(mean, mean - half, mean + half, level, "t over seeds", 0, k)


Comparison = Literal["lower", "higher", "overlap"]


def compare(a: Interval, b: Interval) -> Comparison:
    """ "lower" when a's interval lies wholly below b's, "higher" when wholly above, else "overlap"."""
    if a.high < b.low:
        return "lower"
    if a.low > b.high:
        return "higher"
    return "overlap"


def judge_order(
    intervals: Mapping[str, Interval], order: Sequence[str], higher_is_better: bool = False
) -> tuple[Literal["reproduced", "not reproduced", "inconclusive"], str]:
    """Judge a claimed ranking ``order`` (best first) from each entry's interval.

    Every adjacent pair of the claim is checked: "reproduced" when the intervals separate every pair in
    the claimed direction; "not reproduced" when some pair separates in the opposite direction (the
    data contradict the claim); otherwise "inconclusive" (some pair's intervals overlap, none contradicts).
    Returns the verdict and the reason, naming the pairs.
    """
    missing = [n for n in order if n not in intervals]
    if len(order) < 2 or missing:
        raise ValueError(f"order must name at least 2 entries of intervals; missing {missing}")
    better = "higher" if higher_is_better else "lower"
    agree: list[str] = []
    overlap: list[str] = []
    contra: list[str] = []
    for x, y in zip(order, order[1:]):
        c = compare(intervals[x], intervals[y])
        pair = f"{x} {intervals[x]} vs {y} {intervals[y]}"
        (agree if c == better else overlap if c == "overlap" else contra).append(pair)
    if contra:
        return "not reproduced", "the intervals separate in the opposite order: " + "; ".join(contra)
    if overlap:
        return "inconclusive", "intervals overlap: " + "; ".join(overlap)
    return "reproduced", "the intervals separate every adjacent pair: " + "; ".join(agree)


def rank_intervals(
    intervals: Mapping[str, Interval],
    claimed: Sequence[str] | None = None,
    higher_is_better: bool = False,
) -> dict[str, Any]:
    """The ranking that a chapter's prose states, read from intervals only.

    Returns ``order`` (the point estimates, best first), ``pairs`` (each neighbouring pair of that order:
    {better, worse, better_interval, worse_interval, decided}; decided when the two intervals are disjoint),
    ``ranking`` ("a < b ~ c": "<" where the pair is decided, "~" where the intervals overlap), ``best``
    (the names whose interval overlaps the first one's: which of them is best is not decided) and, for a
    ``claimed`` order (best first), ``verdict`` and ``why`` from :func:`judge_order`.
    """
    if len(intervals) < 2:
        raise ValueError(f"intervals must hold at least 2 entries, got {list(intervals)}")
    bad = [k for k, v in intervals.items() if not isinstance(v, Interval)]
    if bad:
        raise TypeError(f"every value must be an Interval (see interval_from); not for {bad}")
    order = sorted(intervals, key=lambda k: intervals[k].estimate, reverse=higher_is_better)
    pairs: list[dict[str, Any]] = [
        {
            "better": x,
            "worse": y,
            "better_interval": intervals[x],
            "worse_interval": intervals[y],
            "decided": not intervals[x].overlaps(intervals[y]),
        }
        for x, y in zip(order, order[1:])
    ]
    first = intervals[order[0]]
    out: dict[str, Any] = {
        "order": order,
        "pairs": pairs,
        "ranking": order[0] + "".join((" < " if p["decided"] else " ~ ") + p["worse"] for p in pairs),
        "best": [k for k in order if intervals[k].overlaps(first)],
        "level": first.level,
    }
    if claimed is not None:
        out["verdict"], out["why"] = judge_order(intervals, list(claimed), higher_is_better)
    return out


# ---------------------------------------------------------------------------------------------
# The evaluation kit's intervals: FID, KID, IS, conditional accuracy, precision / recall.
# ---------------------------------------------------------------------------------------------

# Replicates per metric: the cheap statistics get Efron & Tibshirani's 1,000 for percentile intervals;
# KID and precision / recall (kernel and distance matrices per replicate) 200.
MEASURE_N_BOOT: dict[str, int] = {
    "fid": 1000,
    "is": 1000,
    "conditional_accuracy": 1000,
    "kid_mean": 200,
    "precision": 200,
    "recall": 200,
}


def _knn_radii(d: torch.Tensor, k: int) -> torch.Tensor:
    return d.kthvalue(k + 1, dim=1).values  # each row of a set-to-itself distance matrix holds its own 0 once


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a @ b.T) / a.shape[1] + 1) ** 3


def _within(k: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """The mean of k over the pairs of rows i that are not two copies of one row (the U-statistic's i != j)."""
    keep = i[:, None] != i[None, :]
    return k[i][:, i][keep].mean()


def _mmd2_of_indices(
    k_gg: torch.Tensor,
    k_rr: torch.Tensor,
    k_gr: torch.Tensor,
    g: torch.Tensor,
    r: torch.Tensor | None,
    rr_fixed: torch.Tensor | None = None,
) -> float:
    """:func:`mmd2_unbiased` of the rows g of one set and r of the other, from precomputed kernels, leaving
    out every pair of copies of the same row (the U-statistic's i != j, applied to the original rows).
    ``r`` None: the other set as it is, whose within-set term ``rr_fixed`` (``_within(k_rr, all rows)``) the
    caller computed once; the same numbers as passing every row, without regathering its kernel per draw."""
    if r is None:
        if rr_fixed is None:
            raise ValueError("r=None (the other set unchanged) needs rr_fixed, its within-set term")
        return float(_within(k_gg, g) + rr_fixed - 2 * k_gr[g].mean())
    return float(_within(k_gg, g) + _within(k_rr, r) - 2 * k_gr[g][:, r].mean())


# (Longer than ~60 lines: one pass per metric over the same bootstrap draws, kept together so that
# every metric's interval comes from the same resamples.)
def evaluation_intervals(
    f_samples: torch.Tensor,
    logits: torch.Tensor,
    f_ref: torch.Tensor,
    labels: torch.Tensor | None = None,
    estimates: Mapping[str, float] | None = None,
    n_boot: Mapping[str, int] | None = None,
    level: float = DEFAULT_LEVEL,
    k: int = 3,
    resample_reference: bool = False,
    metrics: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, dict[str, Any]]:
    """95%-bootstrap interval records for the evaluation kit's metrics, from features only.

    f_samples (N, d), logits (N, 10) of the samples, f_ref (M, d) of the reference; labels (N,) the asked
    classes (adds the conditional accuracy). ``estimates`` (the numbers the evaluation reported) become the
    records' estimates. Returns {metric_interval: record} for fid, kid_mean, is, precision, recall and
    conditional_accuracy (or only the names in ``metrics``). How each replicate is drawn:

    - FID (:func:`frechet_distance`): the samples redrawn (and the reference when ``resample_reference``);
      the *centred* interval, since a resample's duplicates add FID's small-sample bias once more (a few
      points at n = 500). Its width matches the spread between disjoint sample sets (a test checks it).
    - KID (:func:`mmd2_unbiased` over all rows, precomputed kernels): pairs of copies of the same row are
      left out, as the U-statistic leaves out i = j, so duplicates do not bias it; percentile interval.
    - IS (:func:`diffusion_edu.metrics.inception_score`'s formula, fixed splits): the samples redrawn;
      centred, since IS is biased low with few distinct images and a resample has fewer.
    - the conditional accuracy (a mean of 0/1): the samples redrawn; percentile.
    - precision: the mean over samples of "inside the reference's k-NN balls", the samples redrawn;
      recall: the mean over reference images of "inside the samples' k-NN balls", the reference redrawn.
      Redrawing the set that carries the balls would duplicate its points and shrink their k-th-neighbour
      radii to 0 (recall falls by about 0.1 at n = 750), so each interval holds the ball set fixed: it is
      conditional on it, and narrower than the full spread.

    The reference is held fixed by default: the book compares every network against the same 1,005
    held-out digits, so its noise is shared by the entries a ranking compares.
    """
    from .metrics import _is_from_logits

    n_boot = {**MEASURE_N_BOOT, **(n_boot or {})}
    estimates = dict(estimates or {})
    fs, fr = f_samples.double(), f_ref.double()
    rr = (True, resample_reference)
    fixed_split = torch.Generator().manual_seed(0)

    def is_stat(lg: torch.Tensor) -> float:
        return _is_from_logits(lg, min(10, lg.shape[0]), fixed_split.manual_seed(0))[0]

    d_gr = torch.cdist(fs, fr)  # (N, M)
    sample_in_real = (d_gr <= _knn_radii(torch.cdist(fr, fr), k)[None, :]).any(1).double()[:, None]  # (N, 1)
    real_in_samples = (d_gr <= _knn_radii(torch.cdist(fs, fs), k)[:, None]).any(0).double()[:, None]  # (M, 1)
    k_gg, k_rr, k_gr = _poly_kernel(fs, fs), _poly_kernel(fr, fr), _poly_kernel(fs, fr)
    idx_g, idx_r = torch.arange(fs.shape[0])[:, None], torch.arange(fr.shape[0])[:, None]
    rr_fixed = None if resample_reference else _within(k_rr, idx_r[:, 0])

    def mean(x: torch.Tensor) -> float:
        return float(x.mean())

    stats: dict[str, tuple[Callable[..., float], tuple[torch.Tensor, ...], tuple[bool, ...], Method]] = {
        "fid": (frechet_distance, (fs, fr), rr, "centred"),
        "kid_mean": (
            # a fixed reference's within-set term is the same in every draw: computed once
            lambda g, r: _mmd2_of_indices(k_gg, k_rr, k_gr, g[:, 0], r[:, 0] if resample_reference else None, rr_fixed),
            (idx_g, idx_r),
            rr,
            "percentile",
        ),
        "is": (is_stat, (logits.double(),), (True,), "centred"),
        "precision": (mean, (sample_in_real,), (True,), "percentile"),
        "recall": (mean, (real_in_samples,), (True,), "percentile"),
    }
    if labels is not None:
        correct = (logits.argmax(1) == labels.to(logits.device)).double()[:, None]
        stats["conditional_accuracy"] = (mean, (correct,), (True,), "percentile")
    if metrics is not None:
        unknown = set(metrics) - set(stats)
        if unknown:
            raise ValueError(f"metrics must name some of {sorted(stats)}, got unknown {sorted(unknown)}")
        stats = {k: v for k, v in stats.items() if k in metrics}
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster, and fair to a shared machine
    try:
        for name, (fn, sets, resample, method) in stats.items():
            iv = bootstrap(
                fn,
                *sets,
                resample=resample,
                n_boot=n_boot[name],
                level=level,
                method=method,
                generator=generator,
                estimate=estimates.get(name),
            )
            out[f"{name}_interval"] = iv.to_dict()
    finally:
        torch.set_num_threads(threads)
    return out
