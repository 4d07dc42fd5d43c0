"""What every chapter's experiments share: tiers, where runs and results live, train-or-resume,
sampling with a wall clock, and measuring samples with the evaluation kit.

Layout on disk (relative to the book's checkout; see :func:`diffusion_edu.results.results_dir`):

- ``runs/<tier>/<chapter>/<run>/``: a training run (checkpoint, log, sample grids). Not committed.
- ``results/<chapter>/<part>.json``: the results file a chapter renders. Committed. Written only by
  the cpu, colab and gpu tiers; the smoke tier writes to ``runs/smoke/results/`` instead, so that a
  smoke number can never be mistaken for a result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..data import load_embedded_mnist
from ..results import TIERS, current_tier, read_results, results_dir, write_results

__all__ = [
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
    "timed_sample",
    "heldout_reference",
    "measure",
    "Part",
    "run_parts",
    "ensure_result",
]


def check_tier(tier: str | None) -> str:
    """``tier`` checked against :data:`TIERS`, or the current tier (``$DIFFUSION_EDU_TIER``) when None."""
    tier = current_tier() if tier is None else tier
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {list(TIERS)}, got {tier!r}")
    return tier


def by_tier(values: Mapping[str, Any], tier: str) -> Any:
    """Pick a tier's value from ``{"smoke": ..., "cpu": ..., "gpu": ...}``; ``colab`` falls back to
    ``gpu``'s entry when it has none of its own (both run on a GPU)."""
    if tier in values:
        return values[tier]
    if tier == "colab" and "gpu" in values:
        return values["gpu"]
    raise ValueError(f"no setting for tier {tier!r}; this experiment defines {sorted(values)}")


@dataclass(frozen=True)
class EvalBudget:
    """How samples are drawn and measured at a tier: ``n`` samples, with the DDIM / respaced sampler
    at ``steps`` steps (None = every step of the schedule), in chunks of ``batch_size``."""

    n: int
    steps: int | None
    batch_size: int = 500


EVAL_BUDGETS: dict[str, EvalBudget] = {
    "smoke": EvalBudget(n=64, steps=4, batch_size=64),
    "cpu": EvalBudget(n=1000, steps=20),
    "colab": EvalBudget(n=10_000, steps=100),
    "gpu": EvalBudget(n=10_000, steps=None, batch_size=2000),
}


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


def save_result(chapter: str, part: str, data: dict[str, Any], config: dict[str, Any], tier: str,
                wall_time_s: float, device: str | torch.device | None = None) -> Path:
    """Write ``results/<chapter>/<part>.json`` (smoke: under ``runs/smoke/results``)."""
    return write_results(result_path(chapter, part, tier), f"{chapter}/{part}", data, config, tier,
                         wall_time_s, device=device)


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
    tail = [v for v in curve["loss"][-max(1, len(curve["loss"]) // 10):] if v is not None]
    return sum(tail) / len(tail) if tail else None


def run_status(chapter: str, run: str, tier: str, steps: int) -> str | None:
    """None when ``runs/<tier>/<chapter>/<run>/checkpoint.pt`` has reached ``steps``, else why not:
    "no checkpoint" or "step s of S" (a run never started, stopped, or still training)."""
    from ..checkpoint import load_checkpoint

    path = runs_root(tier) / chapter / run / "checkpoint.pt"
    if not path.is_file():
        return "no checkpoint"
    step = int(load_checkpoint(path)["step"])
    return None if step >= steps else f"step {step:,} of {steps:,}"


def timed_sample(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Run a sampling function and return (images, wall seconds)."""
    t0 = time.perf_counter()
    images = fn()
    return images, time.perf_counter() - t0


_REFERENCE: dict[str, torch.Tensor] = {}


def heldout_reference() -> torch.Tensor:
    """The 1,005 held-out embedded digits in [-1, 1]: the reference set of every MNIST FID in the book."""
    if "heldout" not in _REFERENCE:
        _REFERENCE["heldout"] = load_embedded_mnist("heldout").tensors()[0]
    return _REFERENCE["heldout"]


def measure(images: torch.Tensor, labels: torch.Tensor | None = None, intervals: bool = True,
            level: float = 0.95, **kwargs) -> dict[str, Any]:
    """The evaluation kit on samples vs the held-out digits: classifier-feature FID, KID, IS, precision
    and recall (k = 3), and the conditional accuracy when ``labels`` are given, as plain floats; with
    ``intervals`` also each metric's ``level`` percentile-bootstrap interval over the samples
    (``fid_interval``, ...: {estimate, low, high, level, method, n_boot, n};
    :func:`diffusion_edu.intervals.evaluation_intervals`), so every results file keeps its noise."""
    from ..intervals import evaluation_intervals
    from ..metrics import classifier_outputs, evaluate, precision_recall_from_features, reference_stats

    x, y = images.float().cpu(), None if labels is None else labels.cpu()
    out = evaluate(x, heldout_reference(), labels=y, **kwargs)
    clf = kwargs.get("classifier")
    if clf is not None:
        f_ref = reference_stats(heldout_reference(), clf).features
    else:
        if "heldout_stats" not in _REFERENCE:
            _REFERENCE["heldout_stats"] = reference_stats(heldout_reference()).features
        f_ref = _REFERENCE["heldout_stats"]
    f, logits = classifier_outputs(x, clf)
    out.update(precision_recall_from_features(f, f_ref), pr_k=3)
    if intervals:
        gen = kwargs.get("generator")
        seed = int(torch.randint(0, 2**62, (1,), generator=gen)) if gen is not None else 0
        keys = ("fid", "kid_mean", "is", "precision", "recall", "conditional_accuracy")
        n_boot = {k: 50 for k in keys} if current_tier() == "smoke" else None  # smoke numbers are never shown
        out.update(evaluation_intervals(f, logits, f_ref, y, estimates={k: out[k] for k in keys if k in out},
                                        n_boot=n_boot, level=level, generator=torch.Generator().manual_seed(seed)))
    return out


@dataclass
class Part:
    """One experiment of a chapter: ``run(tier, progress)`` writes ``results/<chapter>/<name>.json``."""

    name: str
    description: str
    run: Callable[[str, bool], Path]
    needs: list[str] = field(default_factory=list)


def run_parts(chapter: str, parts: Mapping[str, Part], tier: str, only: list[str] | None = None,
              force: bool = False, progress: bool = True) -> list[Path]:
    """Run the chapter's parts in order (or ``only`` some), skipping those whose results exist at this
    tier unless ``force``; training runs inside them resume from their checkpoints."""
    tier = check_tier(tier)
    names = list(parts) if not only else only
    unknown = [n for n in names if n not in parts]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown} of {chapter}; valid: {list(parts)}")
    written = []
    for n in names:
        if not force and tier != "smoke" and have_result(chapter, n, tier):
            print(f"[{chapter}] {n}: results exist at tier {tier} (use --force to re-run)")
            continue
        print(f"[{chapter}] {n}: {parts[n].description}")
        written.append(parts[n].run(tier, progress))
    return written


def ensure_result(module, part: str, tier: str | None = None, progress: bool = True) -> dict[str, Any]:
    """What a chapter notebook calls: the part's results record, running the part first when its
    results file is missing at this tier (always at the smoke tier, whose files are throwaway)."""
    tier = check_tier(tier)
    if tier == "smoke" or not have_result(module.CHAPTER, part, tier):
        module.PARTS[part].run(tier, progress)
    return load_result(module.CHAPTER, part, tier)
