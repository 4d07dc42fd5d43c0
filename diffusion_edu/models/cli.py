"""``python -m diffusion_edu models``: list the network presets, or show one network's layers."""

from __future__ import annotations

import argparse
import json

import torch

__all__ = ["add_cli", "preset_table"]


def preset_table() -> list[dict]:
    """One row per preset: name, model, parameter count, kwargs (built on the meta device: no memory, no time)."""
    from . import MODEL_PRESETS, build_model_preset, count_parameters

    rows = []
    for preset, spec in MODEL_PRESETS.items():
        with torch.device("meta"):
            n = count_parameters(build_model_preset(preset))
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        rows.append({"preset": preset, "model": spec["name"], "params": n, "kwargs": kwargs})
    return rows


def _models(args: argparse.Namespace) -> int:
    from . import build_model_preset

    if args.preset:
        with torch.device("meta"):
            print(build_model_preset(args.preset))
        return 0
    rows = preset_table()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['preset']:24s} {r['model']:12s} {r['params']:>12,d} params  {json.dumps(r['kwargs'])}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the network presets with their parameter counts")
    p.add_argument("--preset", default=None, help="print the layers of this preset's network instead")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=_models)
