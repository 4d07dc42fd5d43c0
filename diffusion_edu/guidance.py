"""Steering the sampler: classifier-free guidance, and interpolation through the starting noise.

Classifier-free guidance mixes a conditional and an unconditional prediction of one network.

Ho & Salimans (2022) train one network on labelled images, replacing the label by a *null label*
for a fraction ``p_uncond`` of the batches (Report B: 10%). At sampling time they combine the two
predictions with a guidance weight ``w`` (Ho & Salimans Eq. 6; Report E Eq. 6; book eq. cfg):

    eps_guided = (1 + w) * eps_cond - w * eps_uncond
               = eps_uncond + (1 + w) * (eps_cond - eps_uncond).

The second line is Report B's description: start from the unconditional prediction and move
towards the conditional one, and past it when ``w > 0`` (``1 + w`` is what diffusers calls
``guidance_scale``). ``w = 0`` is the conditional model, ``w = -1`` the unconditional one.

Report E's Algorithm 2 combines the means mu (Ho et al. Eq. 11) instead of eps. Because mu, x0 and
eps are affine functions of each other for a fixed x_t, and the weights (1 + w) and -w add up to 1,
combining any of them gives the same update (``tests/test_samplers.py`` checks it). That is also why
:func:`guided_output` may combine the raw network outputs whatever their parameterization.
(Report E's Algorithm 2 also tests ``t == 0`` inside a loop over t = T..1: the last step is t = 1.)

Labels follow the package contract: int64 ``(B,)`` in ``0..num_classes - 1``, and the null label is
``num_classes`` itself (a conditional model given ``y=None`` uses it too).

Report B also interpolates between two samples by interpolating their starting noise x_T on a great
circle (:func:`slerp`) and decoding each point with deterministic DDIM (:func:`interpolate`).
"""

from __future__ import annotations

import math

import torch

from .schedules import NoiseSchedule

__all__ = ["combine_guidance", "guided_output", "check_guidance", "slerp", "interpolate"]


def combine_guidance(out_cond: torch.Tensor, out_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022 Eq. 6; Report E Eq. 6; book eq. cfg).

    (1 + w) * out_cond - w * out_uncond. Both (B, C, H, W); works for eps, x0 or mu predictions.
    """
    return (1.0 + w) * out_cond - w * out_uncond


def check_guidance(
    model: torch.nn.Module, y: torch.Tensor | int | None, w: float, n: int, device: torch.device | None = None
) -> torch.Tensor | None:
    """Check the labels ``y`` and guidance weight ``w`` against ``model``; return y as int64 (n,) or None.

    y: None, an int (the same label for all n images) or an integer tensor of shape (n,), with values
    in 0..num_classes (num_classes is the null label). w: a finite float; w != 0 needs labels and a
    conditional model (``model.num_classes`` not None).
    """
    num_classes = getattr(model, "num_classes", None)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise TypeError(f"w (the guidance weight) must be a finite float, got {w!r}")
    if w != 0 and num_classes is None:
        raise ValueError(
            f"w={w} asks for classifier-free guidance, but the model is unconditional (num_classes is None); "
            "use w=0 or a model trained with labels"
        )
    if y is None:
        if w != 0:
            raise ValueError(f"w={w} asks for classifier-free guidance, which needs labels y; pass y")
        return None
    if num_classes is None:
        raise ValueError("labels y were given but the model is unconditional (num_classes is None); pass y=None")
    if isinstance(y, bool):
        raise TypeError("y must be an int label or an integer tensor of shape (n,), got a bool")
    if isinstance(y, int):
        y = torch.full((n,), y, dtype=torch.int64)
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"y must be an int label or an integer tensor of shape (n,), got {y!r:.80}")
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one label per image), got {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or int(y.max()) > num_classes):
        raise ValueError(
            f"labels y must lie in 0..{num_classes - 1} (or {num_classes}, the null label); "
            f"got values in {int(y.min())}..{int(y.max())}"
        )
    return y.to(device=device, dtype=torch.int64)


def guided_output(
    model: torch.nn.Module,
    xt: torch.Tensor,
    model_t: torch.Tensor,
    y: torch.Tensor | None = None,
    w: float = 0.0,
) -> torch.Tensor:
    """The network's output at (x_t, t), guided with weight ``w`` when ``w != 0`` (book eq. cfg).

    With guidance both branches run in ONE forward pass on a doubled batch: the first half carries
    the labels y, the second half the null label. Inputs are not checked here (see
    :func:`check_guidance`). xt: (B, C, H, W); model_t: int64 (B,) model time; y: int64 (B,) or None.
    Returns (B, C, H, W).
    """
    if w == 0:
        return model(xt, model_t, y)
    num_classes = getattr(model, "num_classes", None)
    if y is None or num_classes is None:
        raise ValueError("guidance (w != 0) needs labels y and a class-conditional network (num_classes set)")
    null = torch.full_like(y, num_classes)
    out = model(
        torch.cat([xt, xt]),  # (2B, C, H, W)
        torch.cat([model_t, model_t]),  # (2B,)
        torch.cat([y, null]),  # (2B,): conditional half, then unconditional half
    )
    out_cond, out_uncond = out.chunk(2)  # each (B, C, H, W)
    return combine_guidance(out_cond, out_uncond, w)


# ---------------------------------------------------------------------------------------------
# Interpolation through the starting noise (Report B).
# ---------------------------------------------------------------------------------------------


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Spherical linear interpolation (Shoemake 1985), as DDIM interpolates latents (Song et al. 2021 Sec. 5.3).

    slerp(a, b, alpha) = sin((1 - alpha) theta) / sin(theta) a + sin(alpha theta) / sin(theta) b,
    theta = arccos(<a, b> / (|a| |b|)). Unlike a straight line it keeps a Gaussian sample's norm
    (|x_T| ~ sqrt(d)), so the decoded images stay typical. Falls back to linear interpolation when a
    and b are (nearly) parallel. a, b: same shape (any); alpha: a float or a 1-d tensor (P,) in [0, 1];
    returns a's shape, or (P, *a.shape) for a tensor alpha.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    scalar = not isinstance(alpha, torch.Tensor)
    alpha = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1)
    a64, b64 = a.reshape(-1).double(), b.reshape(-1).double()
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm())
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    if theta.abs() < 1e-4:  # parallel: the two formulas agree to first order
        wa, wb = 1.0 - alpha, alpha
    else:
        wa, wb = torch.sin((1.0 - alpha) * theta) / torch.sin(theta), torch.sin(alpha * theta) / torch.sin(theta)
    out = (wa[:, None] * a64 + wb[:, None] * b64).to(a.dtype).reshape(-1, *a.shape)  # (P, *a.shape)
    return out[0] if scalar else out


def interpolate(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    x_T_a: torch.Tensor,
    x_T_b: torch.Tensor,
    n_points: int,
    *,
    steps: int | None = None,
    y: int | None = None,
    w: float = 0.0,
    clip_x0: bool = True,
) -> torch.Tensor:
    """Decode n_points starting noises on the great circle from x_T_a to x_T_b with deterministic DDIM (Report B).

    Because DDIM with eta = 0 maps each x_T to one image, nearby starting noises give related images.
    x_T_a, x_T_b: (C, H, W) or (1, C, H, W); y: one label for all points. Returns (n_points, C, H, W).
    """
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points must be an int >= 1, got {n_points!r}")
    a, b = (x if x.dim() == 3 else x.squeeze(0) for x in (x_T_a, x_T_b))
    x_T = slerp(a, b, torch.linspace(0.0, 1.0, n_points))  # (n_points, C, H, W)
    from .samplers import sample  # here: samplers imports this module

    images = sample(model, schedule, n_points, method="ddim", steps=steps, eta=0.0, y=y, w=w, clip_x0=clip_x0, x_T=x_T)
    assert isinstance(images, torch.Tensor)  # no trajectory_every: images only
    return images
