"""What every chapter's experiments share: tiers, where runs and results live, results files, and
the parts of a chapter with the one policy that runs them (:class:`Part`, :func:`ensure_needs`).
The run store is :mod:`.store`, the evaluation pipeline :mod:`.evaluation`, figures :mod:`.figures`.

Layout on disk (relative to the book's checkout; see :func:`diffusion_edu.results.results_dir`):

- ``runs/<tier>/<chapter>/<run>/``: a training run (checkpoint, log, sample grids). Not committed.
- ``results/<chapter>/<part>.json``: the results file a chapter renders. Committed. Written only by
  the cpu, colab and gpu tiers; the smoke tier writes to ``runs/smoke/results/`` instead, so that a
  smoke number can never be mistaken for a result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..results import TIERS, current_tier, read_results, results_dir, write_results
from .budgets import FALLBACK, Budget, BudgetTable, resolve_tier

__all__ = [
    "Budget",
    "BudgetTable",
    "FALLBACK",
    "EvalBudget",
    "EVAL_BUDGETS",
    "by_tier",
    "check_tier",
    "eval_device",
    "runs_root",
    "tier_results_dir",
    "result_path",
    "save_result",
    "load_result",
    "have_result",
    "ensure_trained",
    "training_curve",
    "heldout_reference",
    "measure",
    "Part",
    "chapter_parts",
    "ensure_needs",
    "run_parts",
    "ensure_result",
]


def check_tier(tier: str | None) -> str:
    """``tier`` checked against :data:`TIERS`, or the current tier (``$DIFFUSION_EDU_TIER``) when None."""
    tier = current_tier() if tier is None else tier
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {list(TIERS)}, got {tier!r}")
    return tier


def by_tier(values: Mapping[str, Any] | BudgetTable, tier: str) -> Any:
    """Pick a tier's value from ``{"smoke": ..., "cpu": ..., "gpu": ...}`` (or a :class:`BudgetTable`) by
    the one rule of :mod:`.budgets`: ``colab`` falls back to ``gpu``'s entry when it has none of its own
    (both run on a GPU); an unknown tier, or one with no entry, raises a :class:`ValueError`."""
    if isinstance(values, BudgetTable):
        return values[tier]
    return values[resolve_tier(tier, values, "this experiment")]


@dataclass(frozen=True)
class EvalBudget(Budget):
    """How samples are drawn and measured at a tier: ``n`` samples, with the DDIM / respaced sampler
    at ``steps`` steps (None = every step of the schedule), in chunks of ``batch_size``."""

    n: int
    steps: int | None
    batch_size: int = 500


EVAL_BUDGETS: BudgetTable[EvalBudget] = BudgetTable(
    "EVAL_BUDGETS",
    {
        "smoke": EvalBudget(n=64, steps=4, batch_size=64),
        "cpu": EvalBudget(n=1000, steps=20),
        "colab": EvalBudget(n=10_000, steps=100),
        "gpu": EvalBudget(n=10_000, steps=None, batch_size=2000),
    },
)


def eval_device(tier: str) -> torch.device:
    """Where a chapter's evaluation (sampling, bounds, restorations) runs: the CPU at the smoke and cpu
    tiers (what they are sized for), the GPU at the colab and gpu tiers when one is there."""
    if check_tier(tier) in ("colab", "gpu") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def runs_root(tier: str) -> Path:
    """``runs/<tier>`` next to ``results/`` (ignored by git)."""
    return results_dir().parent / "runs" / tier


def tier_results_dir(tier: str) -> Path:
    """``results/`` for real tiers; ``runs/smoke/results`` for the smoke tier."""
    return runs_root("smoke") / "results" if tier == "smoke" else results_dir()


def result_path(chapter: str, part: str, tier: str) -> Path:
    return tier_results_dir(tier) / chapter / f"{part}.json"


def save_result(
    chapter: str,
    part: str,
    data: dict[str, Any],
    config: dict[str, Any],
    tier: str,
    wall_time_s: float,
    device: str | torch.device | None = None,
) -> Path:
    """Write ``results/<chapter>/<part>.json`` (smoke: under ``runs/smoke/results``)."""
    return write_results(
        result_path(chapter, part, tier), f"{chapter}/{part}", data, config, tier, wall_time_s, device=device
    )


def have_result(chapter: str, part: str, tier: str) -> bool:
    """True when the part's results file exists *at this tier or a higher one* (a gpu result is not
    replaced by a cpu re-run)."""
    path = result_path(chapter, part, tier)
    if not path.is_file():
        return False
    return TIERS.index(read_results(path)["tier"]) >= TIERS.index(tier)


def load_result(chapter: str, part: str, tier: str | None = None) -> dict[str, Any]:
    """The part's results record (envelope + data). A clear error names the command that writes it."""
    tier = check_tier(tier)
    path = result_path(chapter, part, tier)
    if not path.is_file():
        raise FileNotFoundError(
            f"no results file {path}. Write it with: python -m diffusion_edu experiment {chapter} "
            f"--tier {tier} --only {part}"
        )
    return read_results(path)


def ensure_trained(chapter: str, name: str, config, tier: str, progress: bool = True, **train_kwargs):
    """Train ``config`` into ``runs/<tier>/<chapter>/<name>``, resuming if a checkpoint is there, and
    return the :class:`~diffusion_edu.training.TrainResult`. A finished run is loaded, not retrained."""
    from ..training import train

    out = runs_root(tier) / chapter / name
    return train(config, out, resume=True, progress=progress, **train_kwargs)


def training_curve(out_dir: str | Path) -> dict[str, list]:
    """The run's ``log.jsonl`` as columns: step, epoch, loss, elapsed_s, img_per_s."""
    cols: dict[str, list] = {"step": [], "epoch": [], "loss": [], "elapsed_s": [], "img_per_s": []}
    path = Path(out_dir) / "log.jsonl"
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        for k in cols:
            cols[k].append(rec.get(k))
    return cols


def final_loss(curve: dict[str, list]) -> float | None:
    """The mean of the last tenth of a :func:`training_curve`'s logged losses (at least one), the
    "final loss" every chapter's training table shows; None when nothing was logged."""
    tail = [v for v in curve["loss"][-max(1, len(curve["loss"]) // 10) :] if v is not None]
    return sum(tail) / len(tail) if tail else None


@dataclass
class Part:
    """One experiment of a chapter: ``fn(tier, progress, cache)`` writes ``results/<chapter>/<name>.json``.

    ``needs``: the training parts it reads ("training" of its own chapter, or "report_e/training" of
    another); ``runs``: the runs of that training part it loads (empty: all of them). :meth:`run`
    enforces them (:func:`ensure_needs`) before the part runs; the part itself never trains.
    """

    name: str
    description: str
    fn: Callable[..., Path]
    needs: list[str] = field(default_factory=list)
    runs: tuple[str, ...] = ()
    chapter: str = ""

    def run(self, tier: str, progress: bool = True, cache: Any = None) -> Path:
        """Ensure what the part needs (:func:`ensure_needs`), then run it with ``cache`` (an explicit
        :class:`~.store.Cache`; a fresh one when None) and return the results file it wrote."""
        from .store import Cache

        tier = check_tier(tier)
        ensure_needs(self, tier, progress)
        return self.fn(tier, progress, Cache() if cache is None else cache)


def chapter_parts(chapter: str, *parts: Part) -> dict[str, Part]:
    """A chapter's ``PARTS`` (name -> part, in order), each part told its chapter."""
    for part in parts:
        part.chapter = chapter
    return {part.name: part for part in parts}


def _need(part: Part, need: str) -> tuple[Any, str]:
    from . import get_chapter

    chapter, _, name = need.rpartition("/")
    mod = get_chapter(chapter or part.chapter)
    if name not in mod.PARTS:
        raise ValueError(f"part {part.name!r} of {part.chapter} needs {need!r}, which is not a part")
    return mod, name


def ensure_needs(part: Part, tier: str, progress: bool = True) -> None:
    """The one training policy. For each training part that ``part`` needs: when the runs it loads are
    finished, nothing happens; when they are not, the smoke and colab tiers (a chapter opened alone)
    train them first, and the cpu and gpu tiers refuse with a :class:`RuntimeError` naming the runs and
    the command that trains them (an evaluation never starts a long training run as a side effect).
    A chapter without a run store (``store``) counts its training part's results file instead; a chapter
    that runs at some tiers only checks the tier first (its ``tier_check``)."""
    for need in part.needs:
        mod, name = _need(part, need)
        getattr(mod, "tier_check", check_tier)(tier)
        store = getattr(mod, "store", None)
        if store is None:
            if have_result(mod.CHAPTER, name, tier):
                continue
            if tier not in ("smoke", "colab"):
                raise RuntimeError(
                    f"{part.chapter} part {part.name!r} needs {mod.CHAPTER}/{name} at tier {tier!r}, "
                    f"which has not run. Run it first: python -m diffusion_edu experiment "
                    f"{mod.CHAPTER} --tier {tier} --only {name}"
                )
            mod.PARTS[name].run(tier, progress)
            continue
        runs = store(tier)
        held = getattr(runs, "runs", None)  # a chapter may train some runs at some tiers only (its runs_at)
        wanted = [r for r in part.runs if held is None or r in held]
        if part.runs and not wanted:
            continue
        missing = runs.missing(wanted or None)
        if not missing:
            continue
        if tier not in ("smoke", "colab"):
            runs.require(list(missing), part.name if mod.CHAPTER == part.chapter else None)
        if mod.CHAPTER != part.chapter and part.runs:  # another chapter's runs: only those this part loads
            runs.train(list(missing), progress=progress, snapshots=getattr(mod, "SNAPSHOTS", False))
        else:
            mod.PARTS[name].run(tier, progress)


def run_parts(
    chapter: str,
    parts: Mapping[str, Part],
    tier: str,
    only: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Run the chapter's parts in order (or ``only`` some), skipping those whose results exist at this
    tier unless ``force``; one :class:`~.store.Cache` serves them all (a network is loaded, a setting
    sampled, once). Training runs inside them resume from their checkpoints."""
    from .store import Cache

    tier = check_tier(tier)
    names = list(parts) if not only else only
    unknown = [n for n in names if n not in parts]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown} of {chapter}; valid: {list(parts)}")
    written, cache = [], Cache()
    for n in names:
        if not force and tier != "smoke" and have_result(chapter, n, tier):
            print(f"[{chapter}] {n}: results exist at tier {tier} (use --force to re-run)")
            continue
        print(f"[{chapter}] {n}: {parts[n].description}")
        written.append(parts[n].run(tier, progress, cache))
    return written


def ensure_result(
    module, part: str, tier: str | None = None, progress: bool = True, cache: Any = None
) -> dict[str, Any]:
    """What a chapter notebook calls: the part's results record, running the part first when its
    results file is missing at this tier (always at the smoke tier, whose files are throwaway). What
    the part needs is ensured first (:func:`ensure_needs`): trained at smoke / colab, else refused."""
    tier = check_tier(tier)
    if tier == "smoke" or not have_result(module.CHAPTER, part, tier):
        module.PARTS[part].run(tier, progress, cache)
    return load_result(module.CHAPTER, part, tier)


from .evaluation import heldout_reference, measure  # noqa: E402  (re-exported: the evaluation pipeline)
