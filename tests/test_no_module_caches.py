"""The metrics and the experiments kernel keep no state between calls at module level: what decides a
number is passed in (a classifier, a :func:`~diffusion_edu.metrics.reference_stats`, an explicit
:class:`~diffusion_edu.experiments.store.Cache`), so no test has to clear anything by hand."""

from __future__ import annotations

import importlib

import pytest

MODULES = (
    "diffusion_edu.metrics",
    "diffusion_edu.classifier",
    "diffusion_edu.memorisation",
    "diffusion_edu.scoring",
    "diffusion_edu.experiments.budgets",
    "diffusion_edu.experiments.common",
    "diffusion_edu.experiments.evaluation",
    "diffusion_edu.experiments.figures",
    "diffusion_edu.experiments.store",
)


@pytest.mark.parametrize("name", MODULES)
def test_no_mutable_module_globals(name):
    """No module-level dict, list, set or bytearray (a cache in disguise) and no functools cache."""
    mod = importlib.import_module(name)
    found = {
        k: type(v).__name__
        for k, v in vars(mod).items()
        if not k.startswith("__")
        and (isinstance(v, (dict, list, set, bytearray)) or (callable(v) and hasattr(v, "cache_info")))
        and getattr(v, "__module__", name) in (name, None, "builtins")
    }
    assert not found, f"{name} keeps module-level mutable state: {found}"


def test_the_default_classifier_is_loaded_per_call_not_kept():
    """Without a classifier the metrics load the shipped one for that call (two calls get two objects),
    and loading it leaves the global random state alone, so what a metric draws from it (KID's subsets)
    does not depend on whether an earlier call loaded one."""
    import torch

    from diffusion_edu import metrics

    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    a, b = metrics._classifier(None, torch.device("cpu")), metrics._classifier(None, torch.device("cpu"))
    assert torch.equal(torch.rand(3), want)
    assert a is not b
    assert metrics._classifier(a, torch.device("cpu")) is a
