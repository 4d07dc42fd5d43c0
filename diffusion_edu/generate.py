"""Samples from a trained network in one call, and the ``sample`` command of the CLI.

``generate`` takes what :func:`~diffusion_edu.training.load_model` or
:func:`~diffusion_edu.pretrained.load_pretrained` returns and runs the matching reverse process:
the Gaussian samplers of :mod:`diffusion_edu.samplers` (DDPM, DDIM, DPM-Solver++(2M) or Heun, on all steps or a respaced
subset, with classifier-free guidance for conditional networks), or, for a cold-diffusion restorer,
Bansal et al.'s Algorithm 2 started from a Gaussian fitted to the fully degraded training images
(:func:`~diffusion_edu.cold.fit_degraded_prior`). The command line::

    python -m diffusion_edu sample --pretrained report_e --n 100 --steps 20 --w 0.2 --out samples.png
    python -m diffusion_edu sample --checkpoint runs/cpu/report_d/cnn/checkpoint.pt --out cnn.png
"""

from __future__ import annotations

import argparse
import json
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
    seed: the generator seed, so the same call gives the same images. The generator is a CPU one on
    every device: the noise is drawn on the CPU and moved to the model's device
    (:func:`~diffusion_edu.forward.randn_on`), so a seed names the same x_T and step noise on a laptop
    and on a GPU (the images then differ only by the device's arithmetic).
    """
    from .samplers import sample

    model, process, config = loaded
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of images) must be an int >= 1, got {n!r}")
    generator = torch.Generator().manual_seed(seed)  # CPU: draws happen on the CPU, then move (see above)
    if config.process == "cold":
        from .cold import cold_sample, fit_degraded_prior
        from .data_fit import load_training_data

        train_images, _ = load_training_data(config, "train").tensors()
        prior = fit_degraded_prior(process, train_images, generator=torch.Generator().manual_seed(seed))
        x_T = prior.sample(n, generator=generator).to(next(model.parameters()).device)
        return cold_sample(model, process, x_T, algorithm=algorithm).clamp(-1, 1).cpu(), None
    if labels is None:
        labels = default_labels(n, getattr(model, "num_classes", None))
    else:
        labels = _checked_labels(labels, n, getattr(model, "num_classes", None))
    images = sample(model, process, n, method=method, steps=steps, eta=eta, variance=variance, y=labels, w=w,
                    generator=generator, batch_size=batch_size, progress=progress, parameterization=config.parameterization)
    return images.cpu(), labels


def _checked_labels(labels: torch.Tensor | int, n: int, num_classes: int | None) -> torch.Tensor:
    """Labels given by the caller: an int for every image, or (n,) ints, each in 0..num_classes-1."""
    if num_classes is None:
        raise ValueError("labels were given but the network is unconditional (num_classes=None); leave them out")
    if isinstance(labels, bool) or not isinstance(labels, (int, torch.Tensor)):
        raise TypeError(f"labels must be an int or an int64 tensor (n,), got {type(labels).__name__}")
    if isinstance(labels, int):
        labels = torch.full((n,), labels, dtype=torch.int64)
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be {n} integers (shape ({n},)), got {labels.dtype} {tuple(labels.shape)}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise ValueError(f"labels must be classes 0..{num_classes - 1} (the network has {num_classes} classes), "
                         f"got {int(bad[0])}; for unconditional samples leave the label out and set w=0")
    return labels


def _cmd_sample(args: argparse.Namespace) -> int:
    from ._errors import IMAGE_SUFFIXES, check_output_file
    from .checkpoint import load_model
    from .pretrained import available_pretrained, load_pretrained
    from .viz import save_image_grid

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
            raise FileNotFoundError(f"no checkpoint file {args.checkpoint} (--checkpoint); shipped networks: "
                                    f"{available_pretrained()} (use --pretrained NAME)")
        loaded = load_model(args.checkpoint, ema=not args.raw_weights, device=args.device)
        source = {"checkpoint": str(args.checkpoint)}
    args.on_failure = f"nothing was written to {args.out}"
    t0 = time.perf_counter()
    images, labels = generate(loaded, args.n, method=args.method, steps=args.steps or None, eta=args.eta,
                              variance=args.variance, w=args.w, labels=args.label, algorithm=args.algorithm,
                              seed=args.seed, progress=args.progress)
    seconds = time.perf_counter() - t0
    if not bool(torch.isfinite(images).all()):
        raise FloatingPointError("the samples hold NaN or infinite values (the network's outputs are not finite); "
                                 f"nothing was written to {args.out}")
    nrow = args.nrow or (10 if labels is not None and args.label is None else 8)
    save_image_grid(images, args.out, nrow=nrow)
    if args.tensor:
        Path(args.tensor).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images, "labels": labels}, args.tensor)
    cold = loaded.config.process == "cold"
    print(json.dumps({**source, "out": str(args.out), "n": args.n, "seconds": round(seconds, 3),
                      "sampler": f"cold algorithm {args.algorithm}" if cold else args.method,
                      "steps": None if cold else (args.steps or loaded.config.T), "w": None if cold else args.w}))
    return 0


def add_cli(subparsers) -> None:
    """The ``sample`` command: a PNG grid of samples from a shipped network or a checkpoint."""
    from ._errors import IMAGE_SUFFIXES, int_at_least
    from .samplers import METHODS

    p = subparsers.add_parser("sample", help="draw samples from a shipped network or a checkpoint into a PNG grid",
                              description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", metavar="NAME", help="a network shipped with the package (e.g. report_e)")
    src.add_argument("--checkpoint", metavar="PATH", help="a training checkpoint (checkpoint.pt of a run)")
    p.add_argument("--n", type=int_at_least(1), default=64, help="number of images (default 64)")
    p.add_argument("--method", choices=list(METHODS), default="ddpm",
                   help="Gaussian sampler: ddpm, ddim, or the ODE solvers dpm_solver_2m and heun (default ddpm)")
    p.add_argument("--steps", type=int_at_least(0), default=20, help="respaced steps; 0 = all T (default 20)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0)")
    p.add_argument("--variance", choices=["beta", "beta_tilde", "zero"], default="beta_tilde",
                   help="DDPM reverse variance (default beta_tilde)")
    p.add_argument("--w", type=float, default=0.0, help="classifier-free guidance weight (conditional networks)")
    p.add_argument("--label", type=int, default=None, help="one class for every image (default: 0..9 in turn)")
    p.add_argument("--algorithm", type=int, choices=[1, 2], default=2, help="cold diffusion: Bansal et al.'s Algorithm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nrow", type=int_at_least(0), default=0,
                   help="images per grid row (default 0: 10 by class, else 8)")
    p.add_argument("--out", default="samples.png",
                   help=f"image file to write (default samples.png; {', '.join(IMAGE_SUFFIXES)})")
    p.add_argument("--tensor", default=None, metavar="PATH", help="also save the images and labels with torch.save")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--raw-weights", action="store_true", help="a checkpoint's raw weights instead of its EMA")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(func=_cmd_sample)
