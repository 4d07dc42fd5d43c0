"""The ``train`` and ``presets`` commands: ``python -m diffusion_edu train --preset NAME ...``.

The command reads a training preset (:data:`diffusion_edu.presets.TRAINING_PRESETS`), applies the
``--set KEY=VALUE`` overrides and calls :func:`diffusion_edu.training.train`; nothing below the
command line imports this module.
"""

from __future__ import annotations

import json

from ..presets import TRAINING_PRESETS, TrainConfig, apply_sets

__all__ = ["add_cli"]


def _cmd_presets(args) -> int:
    for p in TRAINING_PRESETS.values():
        print(f"{p.name:<20} {p.description}")
    return 0


def _cmd_train(args) -> int:
    """The ``train`` command. Errors propagate to :func:`diffusion_edu.cli.main`, which prints them as
    one line and picks the exit code (2 bad input, 1 environment or failed run, 130 interrupted)."""
    import os
    import sys

    from .._errors import check_output_folder
    from ..devices import resolve_device
    from ..distributed import env_rank
    from ..training import train

    if args.steps is not None and args.minutes is not None:
        raise ValueError("--steps and --minutes both set the length of the run: give one of them")
    sets = (
        list(args.set)
        + ([f"steps={args.steps}"] if args.steps is not None else [])
        + ([f"minutes={args.minutes}"] if args.minutes is not None else [])
        + ([f"device={args.device}"] if args.device else [])
    )
    config = TrainConfig.from_dict(apply_sets(TRAINING_PRESETS[args.preset].config.to_dict(), sets))
    out = args.out or f"runs/{args.preset}"
    check_output_folder(out, "--out")
    if "RANK" not in os.environ:
        resolve_device(config.device)  # --device cuda without CUDA: an error before any work
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    main = env_rank() == 0  # under torchrun only process 0 prints (each process runs this command)
    args.on_failure = (
        f"files in {out} are intact (written atomically); run the same command again to resume from its last checkpoint"
    )
    if main:
        length = (
            f"{config.minutes:g} minutes of training; the steps are fixed after {config.budget_probe_steps} timed steps"
            if config.minutes is not None
            else f"{config.steps} steps"
        )
        print(f"training preset {args.preset!r} ({length}) into {out}", file=sys.stderr)
    result = train(
        config, out, resume=args.resume and not args.overwrite, progress=args.progress, overwrite=args.overwrite
    )
    if main:
        print(
            json.dumps(
                {
                    "out_dir": str(result.out_dir),
                    "step": result.step,
                    "checkpoint": str(result.checkpoint),
                    "wall_time_s": round(result.wall_time_s, 1),
                }
            )
        )
    return 0


def add_cli(subparsers) -> None:
    """Add the ``train`` and ``presets`` commands to the package's command line (diffusion_edu.cli)."""
    import argparse

    from .._errors import int_at_least

    listing = "\n".join(f"  {p.name:<20} {p.description}" for p in TRAINING_PRESETS.values())
    p = subparsers.add_parser(
        "train",
        help="train a network from a preset (resumes by default)",
        description="Train one of the reports' configurations. Outputs: OUT/config.json, log.jsonl, "
        "checkpoint.pt, samples/. Offline, start with --preset quick_mnist, or add "
        "--set dataset=mnist-embedded to an MNIST preset. On several GPUs (or CPU processes) "
        "launch it with torchrun: torchrun --nproc_per_node N -m diffusion_edu train ... "
        "(batch_size is then the global batch, split over the N processes).",
        epilog="presets:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset", required=True, choices=list(TRAINING_PRESETS), metavar="NAME", help="a preset (listed below)"
    )
    p.add_argument("--steps", type=int, help="number of optimisation steps (overrides the preset's)")
    p.add_argument(
        "--minutes",
        type=float,
        help="a wall-clock budget instead of --steps: the run times its first steps, then fixes the number of "
        "steps so that the learning-rate schedule ends with the budget (recorded in OUT/config.json; a resume "
        "keeps it)",
    )
    p.add_argument("--out", help="output folder (default: runs/NAME)")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from OUT/checkpoint.pt if it exists (default: yes); --no-resume refuses a "
        "folder that holds a run",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a folder that holds a run: the old run is kept in OUT/.previous until "
        "the new one writes its first checkpoint, then deleted",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrainConfig field, e.g. --set lr=1e-3 --set model_kwargs.dropout=0 "
        "(VALUE is JSON, or a plain string)",
    )
    p.add_argument(
        "--threads",
        type=int_at_least(1),
        help="CPU threads for torch (default: torch's choice; 1 is "
        "often faster for small networks on a shared machine; resume with the same number)",
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    p.set_defaults(func=_cmd_train)
    q = subparsers.add_parser("presets", help="list the training presets, one line each")
    q.set_defaults(func=_cmd_presets)
