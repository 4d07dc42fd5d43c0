"""Every chapter's budgets have one shape: a :class:`BudgetTable` named ``BUDGETS`` of one frozen
:class:`Budget` subclass, looked up by one rule (unknown tier: a ValueError naming it and the tiers; a
tier without an entry: colab uses gpu's, anything else is refused naming the table)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from diffusion_edu.experiments import CHAPTERS, get_chapter
from diffusion_edu.experiments.budgets import FALLBACK, Budget, BudgetTable, resolve_tier
from diffusion_edu.experiments.common import EVAL_BUDGETS, EvalBudget, by_tier
from diffusion_edu.results import TIERS


@dataclasses.dataclass(frozen=True)
class _Small(Budget):
    n: int


@dataclasses.dataclass(frozen=True)
class _Other(Budget):
    n: int


def _chapters():
    return [(name, get_chapter(name)) for name in sorted(CHAPTERS)]


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_every_chapter_exposes_one_budget_table(name):
    """BUDGETS is a BudgetTable whose budgets are frozen dataclasses of one Budget subclass, JSON-able
    as a results file stores them."""
    table = get_chapter(name).BUDGETS
    assert isinstance(table, BudgetTable) and issubclass(table.type, Budget)
    for _tier, budget in table.items():
        assert type(budget) is table.type and dataclasses.is_dataclass(budget)
        with pytest.raises(dataclasses.FrozenInstanceError):
            budget.__setattr__(dataclasses.fields(budget)[0].name, None)
        assert budget.as_config() == dataclasses.asdict(budget)
        json.dumps(budget.as_config(), default=str)


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_every_table_covers_smoke_and_the_cpu_tier_where_the_chapter_runs(name):
    """Smoke (tests, CI) and cpu (the book's default) have an entry of their own; the CIFAR chapters,
    which refuse the cpu tier, are refused there by the table too."""
    mod = get_chapter(name)
    assert "smoke" in mod.BUDGETS
    tier_check = getattr(mod, "tier_check", None)
    if tier_check is None:
        assert "cpu" in mod.BUDGETS and mod.BUDGETS["cpu"] is not mod.BUDGETS["smoke"]
    else:
        with pytest.raises(ValueError):
            tier_check("cpu")
        with pytest.raises(ValueError, match="no entry for tier 'cpu'"):
            mod.BUDGETS["cpu"]
    for tier in TIERS:  # every tier the chapter runs at resolves to a budget
        if tier_check is None or tier != "cpu":
            assert isinstance(mod.BUDGETS[tier], mod.BUDGETS.type)


def test_unknown_tier_names_it_and_the_tiers():
    for lookup in (lambda t: EVAL_BUDGETS[t], lambda t: by_tier({"smoke": 1}, t)):
        with pytest.raises(ValueError, match=r"unknown tier 'laptop'.*\['smoke', 'cpu', 'colab', 'gpu'\]"):
            lookup("laptop")


def test_colab_falls_back_to_gpu_and_nothing_else_does():
    """The one fallback rule, the same for a table and for by_tier: colab -> gpu; a missing cpu is an error
    naming the table and what it defines."""
    assert FALLBACK == {"colab": "gpu"}
    table = BudgetTable("t", {"smoke": _Small(1), "gpu": _Small(3)})
    assert table["colab"] is table["gpu"] and "colab" not in table and table.tiers == ("smoke", "gpu")
    assert by_tier({"smoke": 1, "gpu": 3}, "colab") == 3 == by_tier(table, "gpu").n
    assert get_chapter("own_data").BUDGETS["colab"] is get_chapter("own_data").BUDGETS["gpu"]
    with pytest.raises(ValueError, match=r"t has no entry for tier 'cpu'; it defines \['smoke', 'gpu'\]"):
        table["cpu"]
    with pytest.raises(ValueError, match="nor 'gpu'"):
        BudgetTable("u", {"smoke": _Small(1)})["colab"]
    with pytest.raises(ValueError, match="no entry for tier 'cpu'"):
        by_tier({"smoke": 1}, "cpu")
    assert resolve_tier("colab", ["colab", "gpu"]) == "colab"  # its own entry first


def test_a_table_is_checked_when_built():
    with pytest.raises(ValueError, match="unknown tier"):
        BudgetTable("t", {"smoke": _Small(1), "laptop": _Small(2)})
    with pytest.raises(ValueError, match="must define the smoke tier"):
        BudgetTable("t", {"cpu": _Small(1)})
    with pytest.raises(TypeError, match="one Budget subclass"):
        BudgetTable("t", {"smoke": _Small(1), "cpu": _Other(2)})
    with pytest.raises(TypeError, match="one Budget subclass"):
        BudgetTable("t", {"smoke": {"n": 1}})  # type: ignore[dict-item]


def test_the_kernel_budget_is_the_same_type():
    assert EVAL_BUDGETS.type is EvalBudget and issubclass(EvalBudget, Budget)
    # Report E samples with the kernel's budget, plus the step counts of its steps part
    e = get_chapter("report_e").BUDGETS
    assert e.tiers == EVAL_BUDGETS.tiers
    for tier in e.tiers:
        assert {
            k: v for k, v in e[tier].as_config().items() if k not in ("step_counts", "training_seeds")
        } == EVAL_BUDGETS[tier].as_config()
        assert e[tier].steps in e[tier].step_counts  # the parts' own step count is one of the study's
