"""Samples from a trained network in one call, and the ``sample`` command of the CLI.

``generate`` takes what :func:`~diffusion_edu.training.load_model` or
:func:`~diffusion_edu.pretrained.load_pretrained` returns and runs the matching reverse process:
the Gaussian samplers of :mod:`diffusion_edu.samplers` (DDPM or DDIM, on all steps or a respaced
subset, with classifier-free guidance for conditional networks), or, for a cold-diffusion restorer,
Bansal et al.'s Algorithm 2 started from a Gaussian fitted to the fully degraded training images
(:func:`~diffusion_edu.cold.fit_degraded_prior`). The command line::

    python -m diffusion_edu sample --pretrained report_e --n 100 --steps 20 --w 0.2 --out samples.png
    python -m diffusion_edu sample --checkpoint runs/cpu/report_d/cnn/checkpoint.pt --out cnn.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["generate", "class_labels", "default_labels", "add_cli"]


def class_labels(n: int, num_classes: int = 10) -> torch.Tensor:
    """Labels 0, 1, ..., num_classes - 1, 0, 1, ... (n,): every class asked for equally often, to within
    one (exactly n / num_classes each when it divides n), and a grid of ``num_classes`` columns shows one
    class per column. The label sequence of every chapter's conditional samples."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return torch.arange(n, dtype=torch.int64) % num_classes


def default_labels(n: int, num_classes: int | None) -> torch.Tensor | None:
    """:func:`class_labels` for a conditional network, None for an unconditional one."""
    return None if num_classes is None else class_labels(n, num_classes)


def generate(loaded, n: int, *, method: str = "ddpm", steps: int | None = 20, eta: float = 0.0,
             variance: str = "beta_tilde", w: float = 0.0, labels: torch.Tensor | int | None = None,
             algorithm: int = 2, seed: int = 0, batch_size: int | None = 500, progress: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` images from ``loaded = (model, schedule or degradation, config)`` and the labels used.

    Gaussian networks: :func:`~diffusion_edu.samplers.sample` with ``method``, ``steps`` (None = all
    T), ``eta``, ``variance`` and guidance weight ``w``; labels default to :func:`default_labels`.
    Cold-diffusion restorers: :func:`~diffusion_edu.cold.cold_sample` with ``algorithm`` (1 or 2) from
    x_T drawn from a Gaussian fitted to the degraded training images (method, steps, w do not apply).
    seed: the generator seed, so the same call gives the same images.
    """
    from .samplers import sample

    model, process, config = loaded
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of images) must be an int >= 1, got {n!r}")
    generator = torch.Generator().manual_seed(seed)
    if config.process == "cold":
        from .cold import cold_sample, fit_degraded_prior
        from .data_fit import load_training_data

        train_images, _ = load_training_data(config, "train").tensors()
        prior = fit_degraded_prior(process, train_images, generator=torch.Generator().manual_seed(seed))
        x_T = prior.sample(n, generator=generator).to(next(model.parameters()).device)
        return cold_sample(model, process, x_T, algorithm=algorithm).clamp(-1, 1).cpu(), None
    if labels is None:
        labels = default_labels(n, getattr(model, "num_classes", None))
    elif isinstance(labels, int):
        labels = torch.full((n,), labels, dtype=torch.int64)
    images = sample(model, process, n, method=method, steps=steps, eta=eta, variance=variance, y=labels, w=w,
                    generator=generator, batch_size=batch_size, progress=progress)
    return images.cpu(), labels


def _cmd_sample(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .pretrained import available_pretrained, load_pretrained
    from .viz import save_image_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.pretrained:
            loaded = load_pretrained(args.pretrained, device=args.device)
            source: dict[str, Any] = {"pretrained": args.pretrained}
        else:
            if not Path(args.checkpoint).is_file():
                raise FileNotFoundError(f"no checkpoint file {args.checkpoint}; shipped networks: "
                                        f"{available_pretrained()} (use --pretrained NAME)")
            loaded = load_model(args.checkpoint, ema=not args.raw_weights, device=args.device)
            source = {"checkpoint": str(args.checkpoint)}
        t0 = time.perf_counter()
        images, labels = generate(loaded, args.n, method=args.method, steps=args.steps or None, eta=args.eta,
                                  variance=args.variance, w=args.w, labels=args.label, algorithm=args.algorithm,
                                  seed=args.seed, progress=args.progress)
        seconds = time.perf_counter() - t0
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    nrow = args.nrow or (10 if labels is not None and args.label is None else 8)
    save_image_grid(images, args.out, nrow=nrow)
    if args.tensor:
        torch.save({"images": images, "labels": labels}, args.tensor)
    cold = loaded.config.process == "cold"
    print(json.dumps({**source, "out": str(args.out), "n": args.n, "seconds": round(seconds, 3),
                      "sampler": f"cold algorithm {args.algorithm}" if cold else args.method,
                      "steps": None if cold else (args.steps or loaded.config.T), "w": None if cold else args.w}))
    return 0


def add_cli(subparsers) -> None:
    """The ``sample`` command: a PNG grid of samples from a shipped network or a checkpoint."""
    p = subparsers.add_parser("sample", help="draw samples from a shipped network or a checkpoint into a PNG grid",
                              description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", metavar="NAME", help="a network shipped with the package (e.g. report_e)")
    src.add_argument("--checkpoint", metavar="PATH", help="a training checkpoint (checkpoint.pt of a run)")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--method", choices=["ddpm", "ddim"], default="ddpm", help="Gaussian sampler (default ddpm)")
    p.add_argument("--steps", type=int, default=20, help="respaced steps; 0 = all T (default 20)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0)")
    p.add_argument("--variance", choices=["beta", "beta_tilde", "zero"], default="beta_tilde",
                   help="DDPM reverse variance (default beta_tilde)")
    p.add_argument("--w", type=float, default=0.0, help="classifier-free guidance weight (conditional networks)")
    p.add_argument("--label", type=int, default=None, help="one class for every image (default: 0..9 in turn)")
    p.add_argument("--algorithm", type=int, choices=[1, 2], default=2, help="cold diffusion: Bansal et al.'s Algorithm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nrow", type=int, default=0, help="images per grid row (default 10 by class, else 8)")
    p.add_argument("--out", default="samples.png", help="PNG file to write (default samples.png)")
    p.add_argument("--tensor", default=None, metavar="PATH", help="also save the images and labels with torch.save")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--raw-weights", action="store_true", help="a checkpoint's raw weights instead of its EMA")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(func=_cmd_sample)
