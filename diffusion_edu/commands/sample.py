"""The ``sample`` command: a PNG grid of samples from a shipped network or a checkpoint.

    python -m diffusion_edu sample --pretrained report_e --n 100 --steps 20 --w 0.2 --out samples.png
    python -m diffusion_edu sample --checkpoint runs/cpu/report_d/cnn/checkpoint.pt --out cnn.png

The path down the layers: the network and its schedule come from
:func:`~diffusion_edu.pretrained.load_pretrained` or :func:`~diffusion_edu.checkpoint.load_model`;
:func:`~diffusion_edu.generate.generate` picks the labels and a CPU generator seeded with ``--seed``
and calls :func:`~diffusion_edu.samplers.sample` (or :func:`~diffusion_edu.cold.cold_sample`), whose
loop over t calls one step of the method per t; :func:`~diffusion_edu.viz.save_image_grid` writes the
pixels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_cli"]

_DESCRIPTION = """Draw samples from a shipped network or a checkpoint into a PNG grid:

    python -m diffusion_edu sample --pretrained report_e --n 100 --steps 20 --w 0.2 --out samples.png
    python -m diffusion_edu sample --checkpoint runs/cpu/report_d/cnn/checkpoint.pt --out cnn.png"""


def _settings(args: argparse.Namespace, config: Any) -> tuple[dict[str, Any], str]:
    """The sampler settings: each option given on the command line, else the one the network's run
    recommends (``TrainConfig.sample_defaults``), else the book's (:data:`~diffusion_edu.generate.BOOK_SAMPLER`);
    and where they came from."""
    from ..generate import sampler_defaults

    out = sampler_defaults(config)
    given = {k: getattr(args, k) for k in ("method", "steps", "eta", "variance", "w") if getattr(args, k) is not None}
    if "steps" in given:
        given["steps"] = given["steps"] or None  # --steps 0 = all T
    out.update(given)
    recommended = set(getattr(config, "sample_defaults", None) or {}) - set(given)
    return out, "the run's recommended sample_defaults" if recommended else "command line and book defaults"


def _cmd_sample(args: argparse.Namespace) -> int:
    from .._errors import IMAGE_SUFFIXES, check_output_file
    from ..checkpoint import load_model
    from ..generate import generate
    from ..pretrained import available_pretrained, load_pretrained
    from ..viz import save_image_grid

    check_output_file(args.out, "--out", IMAGE_SUFFIXES)  # before any work: a bad name fails at once
    if args.tensor:
        check_output_file(args.tensor, "--tensor")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pretrained:
        loaded = load_pretrained(args.pretrained, device=args.device)
        source: dict[str, Any] = {"pretrained": args.pretrained}
    else:
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(
                f"no checkpoint file {args.checkpoint} (--checkpoint); shipped networks: "
                f"{available_pretrained()} (use --pretrained NAME)"
            )
        loaded = load_model(args.checkpoint, ema=not args.raw_weights, device=args.device)
        source = {"checkpoint": str(args.checkpoint)}
    args.on_failure = f"nothing was written to {args.out}"
    settings, settings_from = _settings(args, loaded.config)
    t0 = time.perf_counter()
    images, labels = generate(
        loaded,
        args.n,
        method=settings["method"],
        steps=settings["steps"],
        eta=settings["eta"],
        variance=settings["variance"],
        w=settings["w"],
        labels=args.label,
        algorithm=args.algorithm,
        seed=args.seed,
        progress=args.progress,
    )
    seconds = time.perf_counter() - t0
    if not bool(torch.isfinite(images).all()):
        raise FloatingPointError(
            "the samples hold NaN or infinite values (the network's outputs are not finite); "
            f"nothing was written to {args.out}"
        )
    nrow = args.nrow or (10 if labels is not None and args.label is None else 8)
    save_image_grid(images, args.out, nrow=nrow)
    if args.tensor:
        Path(args.tensor).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images, "labels": labels}, args.tensor)
    cold = loaded.config.process == "cold"
    print(
        json.dumps(
            {
                **source,
                "out": str(args.out),
                "n": args.n,
                "seconds": round(seconds, 3),
                "sampler": f"cold algorithm {args.algorithm}" if cold else settings["method"],
                "steps": None if cold else (settings["steps"] or loaded.config.T),
                "w": None if cold else settings["w"],
                "settings_from": None if cold else settings_from,
            }
        )
    )
    return 0


def add_cli(subparsers) -> None:
    """The ``sample`` command: a PNG grid of samples from a shipped network or a checkpoint."""
    from .._errors import IMAGE_SUFFIXES, int_at_least
    from ..samplers import METHODS

    p = subparsers.add_parser(
        "sample",
        help="draw samples from a shipped network or a checkpoint into a PNG grid",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", metavar="NAME", help="a network shipped with the package (e.g. report_e)")
    src.add_argument("--checkpoint", metavar="PATH", help="a training checkpoint (checkpoint.pt of a run)")
    p.add_argument("--n", type=int_at_least(1), default=64, help="number of images (default 64)")
    p.add_argument(
        "--method",
        choices=list(METHODS),
        default=None,
        help="Gaussian sampler: ddpm, ddim, or the ODE solvers dpm_solver_2m and heun. Options left out take "
        "the settings the network's run recommends (its sample_defaults), else ddpm, 20 steps, beta_tilde, w 0",
    )
    p.add_argument("--steps", type=int_at_least(0), default=None, help="respaced steps; 0 = all T (default 20)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (default 0)")
    p.add_argument(
        "--variance",
        choices=["beta", "beta_tilde", "zero"],
        default=None,
        help="DDPM reverse variance (default beta_tilde)",
    )
    p.add_argument("--w", type=float, default=None, help="classifier-free guidance weight (default 0)")
    p.add_argument("--label", type=int, default=None, help="one class for every image (default: 0..9 in turn)")
    p.add_argument("--algorithm", type=int, choices=[1, 2], default=2, help="cold diffusion: Bansal et al.'s Algorithm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--nrow", type=int_at_least(0), default=0, help="images per grid row (default 0: 10 by class, else 8)"
    )
    p.add_argument(
        "--out", default="samples.png", help=f"image file to write (default samples.png; {', '.join(IMAGE_SUFFIXES)})"
    )
    p.add_argument("--tensor", default=None, metavar="PATH", help="also save the images and labels with torch.save")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--raw-weights", action="store_true", help="a checkpoint's raw weights instead of its EMA")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(func=_cmd_sample)
