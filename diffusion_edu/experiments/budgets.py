"""What a chapter may spend at each tier: one budget type, one table type, one lookup rule.

A chapter's budget is a frozen dataclass derived from :class:`Budget` that adds the fields particular
to it (samples per setting, sampler steps, sizes of the measured sets); its per-tier values live in a
:class:`BudgetTable` named ``BUDGETS`` in the chapter's module (the kernel's sampling budget of the
MNIST chapters is :data:`~.common.EVAL_BUDGETS`). ``table[tier]`` is the one lookup:

- a tier outside :data:`~diffusion_edu.results.TIERS` raises a :class:`ValueError` naming it and the
  known tiers;
- a tier the table does not define falls back by :data:`FALLBACK` (``colab`` uses ``gpu``'s budget: both
  run on a GPU), the same rule for every table and for :func:`~.common.by_tier`;
- a tier with neither raises a :class:`ValueError` naming the table and the tiers it defines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ..results import TIERS

__all__ = ["Budget", "BudgetTable", "FALLBACK", "resolve_tier"]

# a tier a table does not define uses this tier's entry instead (read-only: the rule is not a setting)
FALLBACK: Mapping[str, str] = MappingProxyType({"colab": "gpu"})


def resolve_tier(tier: str, defined: Iterable[str], what: str = "this table") -> str:
    """The tier whose entry serves ``tier``: itself when ``defined``, else its :data:`FALLBACK` when that
    is defined. An unknown tier, or one with neither, raises a :class:`ValueError` naming it."""
    defined = list(defined)
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; the tiers are {list(TIERS)}")
    if tier in defined:
        return tier
    if FALLBACK.get(tier) in defined:
        return FALLBACK[tier]
    fallback = f" (nor {FALLBACK[tier]!r}, which {tier!r} falls back to)" if tier in FALLBACK else ""
    raise ValueError(f"{what} has no entry for tier {tier!r}{fallback}; it defines {defined}")


@dataclass(frozen=True)
class Budget:
    """Base of every chapter's budget at one tier: a frozen dataclass of plain, JSON-able values.
    A chapter's subclass adds its own fields; :meth:`as_config` is the form results files store."""

    def as_config(self) -> dict[str, Any]:
        """The budget as a results file's config stores it: {field: value}, in field order."""
        return asdict(self)


B = TypeVar("B", bound=Budget)


class BudgetTable(Generic[B]):
    """A chapter's budgets per tier, checked when built: every key a tier, a smoke entry (what tests and
    CI run), every value an instance of one :class:`Budget` subclass. ``table[tier]`` applies the one
    lookup rule of this module (unknown tier: ValueError; missing colab: gpu's entry)."""

    def __init__(self, name: str, budgets: Mapping[str, B]):
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        unknown = [t for t in budgets if t not in TIERS]
        if unknown:
            raise ValueError(f"{name}: unknown tier(s) {unknown}; the tiers are {list(TIERS)}")
        if "smoke" not in budgets:
            raise ValueError(f"{name} must define the smoke tier (what tests and CI run), got {list(budgets)}")
        kinds = {type(b) for b in budgets.values()}
        if len(kinds) != 1 or not issubclass(next(iter(kinds)), Budget):
            raise TypeError(
                f"{name}: every budget must be one Budget subclass, got {sorted(k.__name__ for k in kinds)}"
            )
        self.name = name
        self.type: type[B] = next(iter(kinds))
        self._budgets: dict[str, B] = dict(budgets)

    def __getitem__(self, tier: str) -> B:
        return self._budgets[resolve_tier(tier, self._budgets, self.name)]

    def __iter__(self) -> Iterator[str]:
        """The tiers the table defines (not those served by the fallback)."""
        return iter(self._budgets)

    def __len__(self) -> int:
        return len(self._budgets)

    def __contains__(self, tier: object) -> bool:
        """Whether the table defines ``tier`` itself (a fallback does not count)."""
        return tier in self._budgets

    @property
    def tiers(self) -> tuple[str, ...]:
        """The tiers the table defines, in its order."""
        return tuple(self._budgets)

    def items(self) -> Iterator[tuple[str, B]]:
        return iter(self._budgets.items())

    def __repr__(self) -> str:
        return f"BudgetTable({self.name!r}, {self.type.__name__}, tiers={list(self._budgets)})"
