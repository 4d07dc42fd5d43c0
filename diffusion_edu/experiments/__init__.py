"""The book's experiments: one module per chapter, each a set of parts that write ``results/``.

The same run works from a notebook cell, from ``python -m diffusion_edu experiment CHAPTER`` (on a
laptop, a GPU box or in Colab) and in tests at the smoke tier. Each chapter module defines
``CHAPTER`` (its results folder), ``PARTS`` (ordered name -> :class:`~.common.Part`) and ``BUDGETS``
(a :class:`~.budgets.BudgetTable`: what it spends at each tier).

    python -m diffusion_edu experiment --list
    python -m diffusion_edu experiment report_e --tier cpu              # every part not yet run
    python -m diffusion_edu experiment report_e --tier cpu --only guidance
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from .budgets import Budget, BudgetTable
from .common import EVAL_BUDGETS, EvalBudget, Part, by_tier, ensure_needs, ensure_result, load_result, run_parts
from .store import Cache, RunStore

__all__ = [
    "CHAPTERS",
    "get_chapter",
    "run_chapter",
    "load_result",
    "Budget",
    "BudgetTable",
    "EVAL_BUDGETS",
    "EvalBudget",
    "Part",
    "by_tier",
    "ensure_result",
    "ensure_needs",
    "Cache",
    "RunStore",
    "add_cli",
]

# chapter name -> module (imported lazily: each pulls in torch models and the metrics kit)
CHAPTERS: dict[str, str] = {
    "report_a": "diffusion_edu.experiments.report_a",
    "report_b": "diffusion_edu.experiments.report_b",
    "report_c": "diffusion_edu.experiments.report_c",
    "report_d": "diffusion_edu.experiments.report_d",
    "report_e": "diffusion_edu.experiments.report_e",
    "measuring": "diffusion_edu.experiments.measuring",
    "own_data": "diffusion_edu.experiments.own_data",
}


def get_chapter(name: str) -> ModuleType:
    if name not in CHAPTERS:
        raise ValueError(f"unknown chapter {name!r}; valid chapters are {sorted(CHAPTERS)}")
    return importlib.import_module(CHAPTERS[name])


def run_chapter(
    name: str, tier: str | None = None, only: list[str] | None = None, force: bool = False, progress: bool = True
):
    """Run a chapter's experiments (those whose results are missing, or ``only`` some)."""
    from .common import check_tier

    mod = get_chapter(name)
    return run_parts(mod.CHAPTER, mod.PARTS, check_tier(tier), only=only, force=force, progress=progress)


def _cmd(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.list or not args.chapter:
        for name in sorted(CHAPTERS):
            mod = get_chapter(name)
            print(f"{name}:")
            for part in mod.PARTS.values():
                print(f"  {part.name:<18} {part.description}")
        return 0
    args.on_failure = (
        "results files already written are complete; training runs resume from their "
        "checkpoints when the same command runs again"
    )
    run_chapter(args.chapter, args.tier, args.only or None, args.force, progress=not args.no_progress)
    return 0


def add_cli(subparsers) -> None:
    from .._errors import int_at_least

    p = subparsers.add_parser("experiment", help="run a chapter's experiments and write its results files")
    p.add_argument("chapter", nargs="?", help=f"one of: {', '.join(sorted(CHAPTERS)) or '(none yet)'}")
    p.add_argument(
        "--tier",
        choices=["smoke", "cpu", "colab", "gpu"],
        default=None,
        help="compute tier (default: $DIFFUSION_EDU_TIER, else cpu)",
    )
    p.add_argument("--only", nargs="*", default=None, help="run only these parts (in this order)")
    p.add_argument("--force", action="store_true", help="re-run parts whose results already exist")
    p.add_argument("--list", action="store_true", help="list chapters and their parts")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    p.set_defaults(func=_cmd)
