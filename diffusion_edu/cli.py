"""The command line: ``python -m diffusion_edu <command> ...`` (also installed as ``diffusion-edu``).

Each feature module that offers commands defines ``add_cli(subparsers)``, which adds its sub-commands
with ``set_defaults(func=...)``; the modules are listed in ``_COMMAND_MODULES`` below.

Errors follow one contract (see :mod:`diffusion_edu._errors`): an anticipated mistake prints one line
``error: ...`` and exits 2 for bad input or 1 for a failure of the environment or of the run, with no
traceback unless ``--debug`` is given (anywhere on the command line) or ``$DIFFUSION_EDU_DEBUG=1``.
Ctrl-C exits 130 after saying where the run stopped. A command may set ``args.on_failure`` to a
sentence added to failures and interruptions (e.g. how to resume).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings

_COMMAND_MODULES: list[str] = [
    "diffusion_edu.models.cli",
    "diffusion_edu.ledger",
    "diffusion_edu.classifier",
    "diffusion_edu.commands.train",
    "diffusion_edu.experiments",
    "diffusion_edu.commands.sample",
    "diffusion_edu.scoring",
]


def _info(args: argparse.Namespace) -> int:
    from . import __version__, _compat
    from .results import current_tier, hardware_info

    print(
        json.dumps(
            {
                "version": __version__,
                "tier": current_tier(),
                "torchvision_fix": _compat.TORCHVISION_FIX,
                "hardware": hardware_info(),
            },
            indent=1,
        )
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the contract's one-line errors (its sub-command parsers are of the same class)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m diffusion_edu",
        description="diffusion-edu: train, sample and evaluate the book's diffusion models.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (also accepted after the command)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="print the package version, compute tier and hardware")
    p.set_defaults(func=_info)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (0 success, 1 environment or run failure, 2 bad input,
    130 interrupted)."""
    from ._errors import INTERRUPTED, exit_code, message

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DIFFUSION_EDU_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    shown = warnings.showwarning
    if not debug:
        warnings.showwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except BaseException as e:  # noqa: B902 - the one place that turns errors into exit codes
        code = exit_code(e)
        if debug or isinstance(e, SystemExit) or (code is None and not isinstance(e, Exception)):
            raise
        extra = getattr(args, "on_failure", None)
        if code == INTERRUPTED:
            text = str(e) or extra or "files already written are complete"
            print(f"interrupted: {' '.join(text.split())}", file=sys.stderr)
        elif code is None:
            print(
                f"error: unexpected {type(e).__name__}: {message(e)} (this looks like a bug in diffusion_edu; "
                "run again with --debug to see the traceback and report it)",
                file=sys.stderr,
            )
            code = 1
        else:
            text = message(e)
            if code == 1 and extra and extra not in text:
                text = f"{text}; {extra}"
            print(f"error: {text}", file=sys.stderr)
        return code
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
