"""The run store: where a chapter's training runs live, whether they are finished, and loading them.

One policy for every chapter: only a training part trains (:meth:`RunStore.train`); an evaluation part
asks the store for finished runs (:meth:`RunStore.require`, :meth:`RunStore.load`) and never trains.
Which runs a part needs is declared on its :class:`~.common.Part` (``needs``, ``runs``), and
:func:`~.common.ensure_needs` trains them first at the smoke and colab tiers (a chapter opened alone)
or refuses at the cpu and gpu tiers, naming the command that trains them.

A :class:`Cache` is an explicit memo that a caller passes in (one chapter run, one test): networks
loaded once, samples drawn once, the held-out reference's features computed once. Nothing is cached
at module level, so a number never depends on what ran before in the same process.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .common import final_loss, have_result, load_result, runs_root, save_result, training_curve
from .training_runs import RunSpec, make_config, snapshot_callback

__all__ = ["Cache", "RunStore", "load_snapshot", "record_training", "ship_pretrained"]


class Cache:
    """An explicit memo: ``cache.get(key, make)`` returns the value stored under ``key``, making it
    with ``make()`` the first time. Keys are tuples whose first item says what they hold ("model",
    "samples", "reference", ...); :meth:`keys` lists them (tests read which settings were drawn)."""

    def __init__(self) -> None:
        self._items: dict[tuple, Any] = {}

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._items:
            self._items[key] = make()
        return self._items[key]

    def keys(self, kind: str | None = None) -> list[tuple]:
        """The stored keys (those whose first item is ``kind``, when given)."""
        return [k for k in self._items if kind is None or k[0] == kind]

    def clear(self) -> None:
        self._items.clear()


def load_snapshot(model: torch.nn.Module, path: str | os.PathLike) -> int:
    """Load a weight snapshot (``snapshots/step_NNNNNNN.pt``, :func:`~.training_runs.snapshot_callback`)
    into ``model`` in eval mode; returns its step."""
    snap = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(snap["state_dict"])
    model.eval()
    return int(snap["step"])


class RunStore:
    """A chapter's runs at one tier: ``runs/<tier>/<chapter>/<run>/`` for each ``name -> (preset,
    overrides)`` of ``runs``, configured by :func:`~.training_runs.make_config` with ``tier_overrides``."""

    def __init__(
        self, chapter: str, runs: Mapping[str, RunSpec], tier_overrides: Mapping[str, Mapping[str, Any]], tier: str
    ) -> None:
        self.chapter, self.runs, self.tier_overrides, self.tier = chapter, runs, tier_overrides, tier

    def _check(self, run: str) -> None:
        if run not in self.runs:
            raise ValueError(f"run must be one of {list(self.runs)}, got {run!r}")

    def config(self, run: str):
        """The run's TrainConfig at the store's tier."""
        self._check(run)
        return make_config(self.runs[run], self.tier, self.tier_overrides)

    def folder(self, run: str) -> Path:
        self._check(run)
        return runs_root(self.tier) / self.chapter / run

    def checkpoint(self, run: str) -> Path:
        return self.folder(run) / "checkpoint.pt"

    def train_command(self, *parts: str) -> str:
        """The command that trains the chapter's runs (finished runs are loaded, not retrained), then
        runs ``parts``."""
        return f"python -m diffusion_edu experiment {self.chapter} --tier {self.tier} --only training" + "".join(
            f" {p}" for p in parts
        )

    def status(self, run: str) -> str | None:
        """None when the run's checkpoint has reached its config's steps, else why not: "no checkpoint"
        or "step s of S" (a run never started, stopped, or still training)."""
        from ..checkpoint import load_checkpoint

        path, steps = self.checkpoint(run), self.config(run).steps
        if not path.is_file():
            return "no checkpoint"
        step = int(load_checkpoint(path)["step"])
        return None if step >= steps else f"step {step:,} of {steps:,}"

    def finished(self, run: str) -> bool:
        return self.status(run) is None

    def missing(self, runs: tuple[str, ...] | list[str] | None = None) -> dict[str, str]:
        """{run: why} for the ``runs`` (default: all) that are not finished; empty when all are."""
        return {run: why for run in (runs or list(self.runs)) if (why := self.status(run)) is not None}

    def require(self, runs: tuple[str, ...] | list[str], part: str | None = None) -> None:
        """Raise (naming the unfinished runs and the command that trains them) unless every run is finished."""
        missing = self.missing(runs)
        if missing:
            what = ", ".join(f"{run} ({why})" for run, why in missing.items())
            after = (part,) if part else ()
            raise RuntimeError(
                f"{self.chapter}{f' part {part!r}' if part else ''} needs finished runs at tier "
                f"{self.tier!r}; not finished: {what}. Train them first: {self.train_command(*after)}"
            )

    def load(self, run: str, cache: Cache | None = None, device: str | torch.device | None = None):
        """The finished run's (model, schedule or degradation, config), in eval mode, on ``device``
        (default :func:`~.common.eval_device`), with the EMA weights when the run keeps an EMA. A missing
        or unfinished checkpoint raises with the command that trains it (this never trains)."""
        from ..training import load_model
        from .common import eval_device

        def make():
            path = self.checkpoint(run)
            if not path.is_file():
                raise FileNotFoundError(f"no checkpoint {path}: train it first with {self.train_command()}")
            why = self.status(run)
            if why is not None:
                raise RuntimeError(
                    f"{path} is at {why}: the run is unfinished (or still training); finish it "
                    f"with {self.train_command()}"
                )
            with warnings.catch_warnings():  # a run without an EMA: the trained weights are the model
                warnings.filterwarnings("ignore", message=".*holds no EMA weights.*")
                return load_model(path, ema=True, device=device or eval_device(self.tier))

        if cache is None:
            return make()
        return cache.get(("model", self.chapter, run, self.tier, str(device)), make)

    def snapshots(self, run: str) -> list[Path]:
        """The run's saved weight snapshots, in step order."""
        return sorted((self.folder(run) / "snapshots").glob("step_*.pt"))

    def summary(self, run: str) -> dict[str, Any]:
        """The run's loss curve and final loss, from its own log (``log.jsonl``)."""
        curve = training_curve(self.folder(run))
        return {"curve": curve, "final_loss": final_loss(curve)}

    def train(self, runs: list[str] | None = None, progress: bool = True, snapshots: bool = False) -> dict[str, Any]:
        """Train (or resume, or load when finished) ``runs`` (default: all); what a training part, and
        :func:`~.common.ensure_needs` at the smoke and colab tiers, call. Returns {run: TrainResult}."""
        from ..training import train

        out = {}
        for name in runs or list(self.runs):
            cfg = self.config(name)
            kwargs: dict[str, Any] = (
                {"callbacks": snapshot_callback(self.folder(name))} if snapshots and cfg.callback_every else {}
            )
            out[name] = train(cfg, self.folder(name), resume=True, progress=progress, **kwargs)
        return out


def record_training(
    store: RunStore,
    progress: bool = True,
    snapshots: bool = False,
    only: list[str] | None = None,
    merge: bool = False,
) -> Path:
    """The training part of a chapter: train (or resume, or load when finished) every run of ``store``
    (or ``only`` some), then write ``results/<chapter>/training.json`` with each run's config, parameter
    count, steps, wall time, throughput and loss curve.

    ``merge``: keep the entries that the existing ``training.json`` holds for the store's other runs (runs
    recorded by an earlier call, whose folders need not be on this machine any more); ``config["recorded"]``
    then names the date each entry was written."""
    from ..models import count_parameters

    t0 = time.perf_counter()
    summary: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    recorded: dict[str, str] = {}
    if merge and have_result(store.chapter, "training", store.tier):
        old = load_result(store.chapter, "training", store.tier)
        kept = [r for r in store.runs if r in old["data"] and r not in (only or list(store.runs))]
        when = old["config"].get("recorded", {})
        for r in kept:
            summary[r], configs[r] = old["data"][r], old["config"]["runs"][r]
            recorded[r] = when.get(r, old.get("created", ""))
    for name, result in store.train(only, progress=progress, snapshots=snapshots).items():
        cfg = store.config(name)
        curve = training_curve(store.folder(name))
        summary[name] = {
            "preset": store.runs[name][0],
            "params": count_parameters(result.model),
            "steps": result.step,
            "epochs": curve["epoch"][-1] if curve["epoch"] else 0,
            "batch_size": cfg.batch_size,
            "precision": result.precision,  # what "auto" resolved to on this device
            "train_wall_time_s": round(result.wall_time_s, 1),
            "img_per_s": round(result.step * cfg.batch_size / max(result.wall_time_s, 1e-9), 1),
            "final_loss": final_loss(curve),
            "curve": {k: curve[k] for k in ("step", "epoch", "loss", "elapsed_s")},
        }
        configs[name] = cfg.to_dict()
        recorded[name] = time.strftime("%Y-%m-%d")
    order = [r for r in store.runs if r in summary]  # the store's order, whichever call recorded a run
    summary, configs = {r: summary[r] for r in order}, {r: configs[r] for r in order}
    cfg_out: dict[str, Any] = {"runs": configs}
    if merge:
        cfg_out["recorded"] = {r: recorded[r] for r in order}
    return save_result(store.chapter, "training", summary, cfg_out, store.tier, time.perf_counter() - t0)


def ship_pretrained(
    store: RunStore, run: str, cache: Cache | None = None, keep_shipped: bool = False, **source: Any
) -> tuple[dict[str, Any], Any]:
    """Ship ``run``'s finished network with the package as ``load_pretrained(<chapter>)`` (the smoke tier,
    and any tier with ``keep_shipped``, writes a copy under ``runs/<tier>/pretrained`` instead and leaves the
    shipped network as it is). Returns the record a chapter's
    ``pretrained`` part writes (name, file, bytes, params, source: where the weights come from, plus
    ``source``'s items; load: the call that loads them) and the run's config."""
    from ..models import count_parameters
    from ..pretrained import export_pretrained

    model, _, cfg = store.load(run, cache)
    where = {
        "tier": store.tier,
        "chapter": store.chapter,
        "run": run,
        "preset": store.runs[run][0],
        "dataset": cfg.dataset,
        **source,
    }
    folder = runs_root(store.tier) / "pretrained" if store.tier == "smoke" or keep_shipped else None
    path = export_pretrained(store.checkpoint(run), store.chapter, source=where, folder=folder)
    data = {
        "name": store.chapter,
        "file": path.name,
        "bytes": path.stat().st_size,
        "params": count_parameters(model),
        "source": where,
        "load": f'diffusion_edu.pretrained.load_pretrained("{store.chapter}")',
        "shipped": folder is None,  # False: a copy under runs/, the package's network unchanged
    }
    return data, cfg
