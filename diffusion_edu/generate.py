"""Samples from a trained network in one call (what the ``sample`` command runs).

``generate`` takes what :func:`~diffusion_edu.training.load_model` or
:func:`~diffusion_edu.pretrained.load_pretrained` returns and runs the matching reverse process:
the Gaussian samplers of :mod:`diffusion_edu.samplers` (DDPM, DDIM, DPM-Solver++(2M) or Heun, on all steps or a respaced
subset, with classifier-free guidance for conditional networks), or, for a cold-diffusion restorer,
Bansal et al.'s Algorithm 2 started from a Gaussian fitted to the fully degraded training images
(:func:`~diffusion_edu.cold.fit_degraded_prior`). The command line (:mod:`diffusion_edu.commands.sample`)::

    python -m diffusion_edu sample --pretrained report_e --n 100 --steps 20 --w 0.2 --out samples.png
    python -m diffusion_edu sample --checkpoint runs/cpu/report_d/cnn/checkpoint.pt --out cnn.png
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

import torch

if TYPE_CHECKING:
    from .samplers import Method, Variance

__all__ = [
    "generate",
    "class_labels",
    "default_labels",
    "BOOK_SAMPLER",
    "sampler_defaults",
    "check_sample_defaults",
    "CPU_IMAGES_PER_CALL",
    "default_chunk",
]

CPU_IMAGES_PER_CALL = 200
"""Images per network call when :func:`generate` samples on a CPU. Measured by ``bench_recipe.py chunks``
(``results/benchmarks/recipe_cpu.json``, section ``chunks``): on the 2-core machine, ``quick_mnist``'s
network drew 1,000 guided samples (7 DPM-Solver++ steps) about 2.0x faster in chunks of 100 images, 200
per call once guidance doubles them, than in chunks of 500, and unguided ones about 1.2x faster in chunks
of 200: a call's activations then fit the processor's caches better (larger chunks were slower still)."""
OTHER_DEVICE_CHUNK = 500
"""Images per chunk on other devices (a GPU fills up with larger batches; not measured by the book)."""

BOOK_SAMPLER: dict[str, Any] = {"method": "ddpm", "steps": 20, "variance": "beta_tilde", "eta": 0.0, "w": 0.0}
"""The ``sample`` command's settings for a network whose run recommends none: respaced DDPM, 20 steps,
sigma_t^2 = beta-tilde, no guidance."""


def check_sample_defaults(values: Any, name: str = "sample_defaults") -> dict[str, Any]:
    """``values`` if it is a dict of valid sampler settings (keys of :data:`BOOK_SAMPLER`), else an error
    naming the bad key or value."""
    if not isinstance(values, dict):
        raise TypeError(f"{name} must be a dict of sampler settings, got {type(values).__name__}")
    if not values:
        return values
    from .samplers import METHODS

    unknown = set(values) - set(BOOK_SAMPLER)
    if unknown:
        raise ValueError(f"{name}: unknown setting(s) {sorted(unknown)}; valid: {sorted(BOOK_SAMPLER)}")
    checks = {
        "method": (lambda v: v in METHODS, f"one of {list(METHODS)}"),
        "steps": (lambda v: v is None or (type(v) is int and v >= 1), "an int >= 1, or None for all T"),
        "variance": (lambda v: v in ("beta", "beta_tilde", "zero"), "'beta', 'beta_tilde' or 'zero'"),
        "eta": (lambda v: type(v) in (int, float) and 0 <= v <= 1, "a number in [0, 1]"),
        "w": (lambda v: type(v) in (int, float) and v >= 0, "a guidance weight >= 0"),
    }
    for key, value in values.items():
        ok, expected = checks[key]
        if not ok(value):
            raise ValueError(f"{name}[{key!r}] must be {expected}, got {value!r}")
    return values


def sampler_defaults(config: Any) -> dict[str, Any]:
    """The sampler settings for a network trained with ``config``: :data:`BOOK_SAMPLER`, overridden by the
    ``sample_defaults`` its run recommends (a recipe stores them; older checkpoints have none)."""
    return {**BOOK_SAMPLER, **(getattr(config, "sample_defaults", None) or {})}


def default_chunk(device: torch.device | str, w: float = 0.0) -> int:
    """How many images :func:`generate` samples at a time on ``device`` unless told: on a CPU,
    :data:`CPU_IMAGES_PER_CALL` network inputs per call (half as many images when ``w != 0``, because
    classifier-free guidance evaluates each image twice, with and without its label); elsewhere
    :data:`OTHER_DEVICE_CHUNK`."""
    if torch.device(device).type != "cpu":
        return OTHER_DEVICE_CHUNK
    return CPU_IMAGES_PER_CALL // 2 if w != 0 else CPU_IMAGES_PER_CALL


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


def generate(
    loaded,
    n: int,
    *,
    method: Method = "ddpm",
    steps: int | None = 20,
    eta: float = 0.0,
    variance: Variance = "beta_tilde",
    w: float = 0.0,
    labels: torch.Tensor | int | None = None,
    algorithm: Literal[1, 2] = 2,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` images from ``loaded = (model, schedule or degradation, config)`` and the labels used.

    Gaussian networks: :func:`~diffusion_edu.samplers.sample` with ``method``, ``steps`` (None = all
    T), ``eta``, ``variance`` and guidance weight ``w``; labels default to :func:`default_labels`.
    Cold-diffusion restorers: :func:`~diffusion_edu.cold.cold_sample` with ``algorithm`` (1 or 2) from
    x_T drawn from a Gaussian fitted to the degraded training images (method, steps, w do not apply).
    batch_size: images sampled at a time (x_T and any step noise are drawn chunk by chunk); None = the
    device's default, :func:`default_chunk`.
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
        x0 = cast(torch.Tensor, cold_sample(model, process, x_T, algorithm=algorithm))  # no trajectory asked
        return x0.clamp(-1, 1).cpu(), None
    if labels is None:
        labels = default_labels(n, getattr(model, "num_classes", None))
    else:
        labels = _checked_labels(labels, n, getattr(model, "num_classes", None))
    images = cast(
        torch.Tensor,
        sample(
            model,
            process,
            n,
            method=method,
            steps=steps,
            eta=eta,
            variance=variance,
            y=labels,
            w=w,
            generator=generator,
            batch_size=default_chunk(next(model.parameters()).device, w) if batch_size is None else batch_size,
            progress=progress,
            parameterization=config.parameterization,
        ),
    )  # no trajectory asked
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
        raise ValueError(
            f"labels must be classes 0..{num_classes - 1} (the network has {num_classes} classes), "
            f"got {int(bad[0])}; for unconditional samples leave the label out and set w=0"
        )
    return labels
