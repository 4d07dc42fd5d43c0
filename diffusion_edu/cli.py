"""The command line: ``python -m diffusion_edu <command> ...`` (also installed as ``diffusion-edu``).

Each feature module that offers commands defines ``add_cli(subparsers)``, which adds its sub-commands
with ``set_defaults(func=...)``; the modules are listed in ``_COMMAND_MODULES`` below.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

_COMMAND_MODULES: list[str] = [
    "diffusion_edu.models.cli",
    "diffusion_edu.ledger",
    "diffusion_edu.classifier",
    "diffusion_edu.training",
    "diffusion_edu.experiments",
    "diffusion_edu.generate",
    "diffusion_edu.scoring",
    # "diffusion_edu.metrics", "diffusion_edu.experiments", ...
]


def _info(args: argparse.Namespace) -> int:
    from . import __version__, _compat
    from .results import current_tier, hardware_info

    print(json.dumps({"version": __version__, "tier": current_tier(), "torchvision_fix": _compat.TORCHVISION_FIX,
                      "hardware": hardware_info()}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffusion_edu",
        description="diffusion-edu: train, sample and evaluate the book's diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="print the package version, compute tier and hardware")
    p.set_defaults(func=_info)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
