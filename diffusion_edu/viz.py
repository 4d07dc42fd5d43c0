"""Pictures: image grids (used by training, samplers and every chapter), schedule plots, and the
noising widget with its static twin, a scrubbable animation of the same frames (chapter 1).

matplotlib and ipywidgets are imported inside the functions that need them, so importing the
package stays cheap and works without a display.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._checks import check_images, check_timesteps
from .forward import q_sample, randn_like
from .schedules import NoiseSchedule

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets
    from matplotlib.animation import FuncAnimation

__all__ = [
    "image_grid",
    "save_image_grid",
    "show_images",
    "plot_schedules",
    "noising_frames",
    "show_noised",
    "noising_readout",
    "noising_animation",
    "animation_html",
    "noising_widget",
]


def image_grid(
    images: torch.Tensor, nrow: int = 8, padding: int = 2, value_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """Tile a batch (B, C, H, W) into one uint8 array (H', W') for grey or (H', W', 3) for colour.

    ``value_range`` is the range the images are in (model range [-1, 1] by default); values outside
    it are clipped.
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    b, c, h, w = x.shape
    ncol = min(nrow, b)
    nrows = (b + ncol - 1) // ncol
    grid = torch.ones(c, nrows * (h + padding) + padding, ncol * (w + padding) + padding)
    for i in range(b):
        r, q = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    arr = (grid * 255 + 0.5).to(torch.uint8).numpy()
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, **kwargs) -> None:
    """Write :func:`image_grid` to a PNG file (parent folders are created)."""
    import matplotlib.image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arr = image_grid(images, nrow=nrow, **kwargs)
    matplotlib.image.imsave(path, arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)


def show_images(
    images: torch.Tensor, nrow: int = 8, ax=None, title: str | None = None, labels: Sequence | None = None, **kwargs
):
    """Show a batch as a grid on a matplotlib axis (a new figure when ``ax`` is None); returns the axis."""
    import matplotlib.pyplot as plt

    arr = image_grid(images, nrow=nrow, **kwargs)
    if ax is None:
        h, w = arr.shape[:2]
        _, ax = plt.subplots(figsize=(min(12, w / 40), min(12, h / 40)))
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------------------------------
# Schedules and the noising views of chapter 1.
# ---------------------------------------------------------------------------------------------


def _schedule_list(schedules: NoiseSchedule | Sequence[NoiseSchedule], same_T: bool = True) -> list[NoiseSchedule]:
    """The schedules as a list, checked; with ``same_T`` they must share T (so that t means the same step)."""
    if isinstance(schedules, NoiseSchedule):
        schedules = [schedules]
    schedules = list(schedules)
    if not schedules or not all(isinstance(s, NoiseSchedule) for s in schedules):
        raise TypeError("schedules must be a NoiseSchedule or a non-empty sequence of NoiseSchedule objects")
    Ts = sorted({s.T for s in schedules})
    if same_T and len(Ts) > 1:
        raise ValueError(f"schedules must all have the same T (so that t is the same step in each), got T = {Ts}")
    return schedules


def plot_schedules(schedules: NoiseSchedule | Sequence[NoiseSchedule], axes=None, title: str | None = None):
    """Plot alpha_bar_t and log SNR(t) against t = 1..T for each schedule; returns the two axes.

    alpha_bar_t = prod_{s<=t} (1 - beta_s) (Ho et al. Eq. 4; book eq. q-sample) is the fraction of the
    signal's variance left in x_t; SNR(t) = alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021, Eq. 2).
    ``axes``: two matplotlib axes, or None for a new 1 x 2 figure. Schedules may have different T.
    """
    import matplotlib.pyplot as plt

    schedules = _schedule_list(schedules, same_T=False)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    if len(axes) != 2:
        raise ValueError(f"axes must hold two matplotlib axes (alpha_bar, log-SNR), got {len(axes)}")
    ax_ab, ax_snr = axes
    for s in schedules:
        t = np.arange(1, s.T + 1)
        ax_ab.plot(t, s.alpha_bar[1:].detach().cpu().numpy(), label=s.name)
        ax_snr.plot(t, s.log_snr[1:].detach().cpu().numpy(), label=s.name)
    ax_ab.set(xlabel="t", ylabel=r"$\bar\alpha_t$", ylim=(-0.02, 1.02))
    ax_snr.set(xlabel="t", ylabel=r"$\log\,\mathrm{SNR}(t)$")
    for ax in axes:
        ax.grid(alpha=0.3)
    ax_ab.legend()
    if title:
        ax_ab.set_title(f"{title}: signal kept")
        ax_snr.set_title(f"{title}: log signal-to-noise ratio")
    return axes


def _as_steps(ts: int | Sequence[int] | torch.Tensor, T: int, name: str = "ts") -> list[int]:
    ts = torch.as_tensor(ts) if not isinstance(ts, (int, torch.Tensor)) else ts
    return [int(t) for t in check_timesteps(ts, T, allow_zero=True, name=name).reshape(-1)]


def noising_frames(
    x0: torch.Tensor,
    schedules: NoiseSchedule | Sequence[NoiseSchedule],
    ts: int | Sequence[int] | torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x_t for every step in ``ts`` and every schedule, all from the same noise.

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. Eq. 4; book eq. q-sample), with
    one eps per image shared by every schedule and every t, so the frames differ only through alpha_bar_t.
    x0: (B, C, H, W); schedules: S schedules sharing T; ts: N steps in 0..T; noise: eps shaped like x0.
    Returns (N, S, B, C, H, W).
    """
    check_images(x0, "x0")
    schedules = _schedule_list(schedules)
    steps = _as_steps(ts, schedules[0].T)
    if noise is None:
        noise = randn_like(x0, generator)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    return torch.stack([torch.stack([q_sample(x0, t, s, noise=noise) for s in schedules]) for t in steps])


def noising_readout(schedules: NoiseSchedule | Sequence[NoiseSchedule], t: int) -> list[dict[str, float | str]]:
    """For each schedule at step t: alpha_bar_t, sqrt(alpha_bar_t) (the signal amplitude x_t keeps), SNR, log SNR."""
    schedules = _schedule_list(schedules)
    (t,) = _as_steps(t, schedules[0].T, name="t")
    return [
        {
            "schedule": s.name,
            "alpha_bar": float(s.alpha_bar[t]),
            "signal": float(s.alpha_bar[t].sqrt()),
            "snr": float(s.snr[t]),
            "log_snr": float(s.log_snr[t]),
        }
        for s in schedules
    ]


def show_noised(
    x0: torch.Tensor,
    schedules: NoiseSchedule | Sequence[NoiseSchedule],
    ts: Sequence[int],
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    ax=None,
):
    """One image (1, C, H, W) noised under each schedule at the steps ``ts``: a row per schedule, a column
    per step (the frames of :func:`noising_frames`). Returns the matplotlib axis."""
    check_images(x0, "x0")
    if x0.shape[0] != 1:
        raise ValueError(f"x0 must hold one image, shape (1, C, H, W), got {tuple(x0.shape)}; pass x0[:1]")
    schedules = _schedule_list(schedules)
    steps = _as_steps(ts, schedules[0].T)
    frames = noising_frames(x0, schedules, steps, noise, generator)[:, :, 0]  # (N, S, C, H, W)
    grid = frames.transpose(0, 1).reshape(-1, *x0.shape[1:])  # (S * N, C, H, W), a row per schedule
    ax = show_images(grid, nrow=len(steps), ax=ax)
    h, w, pad = x0.shape[-2], x0.shape[-1], 2  # image_grid's default padding
    ax.set_axis_on()
    ax.set_xticks([pad + i * (w + pad) + w / 2 for i in range(len(steps))], [f"t={t}" for t in steps])
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(len(schedules))], [s.name for s in schedules])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


def _fmt(v: float) -> str:
    return "∞" if v == float("inf") else f"{v:.3g}"


def noising_animation(
    x0: torch.Tensor,
    schedules: NoiseSchedule | Sequence[NoiseSchedule],
    ts: Sequence[int] | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    interval: int = 300,
    scale: float = 2.0,
) -> FuncAnimation:
    """An animation over t of ``x0`` noised under each schedule: the widget's frames, for static pages.

    One panel per schedule (two panels a row) shows the B images side by side, with alpha_bar_t and SNR
    in its title.
    ``ts`` defaults to 21 steps evenly spaced over 0..T; ``scale`` is screen pixels per image pixel.
    Make it a scrubbable slider that needs no kernel with ``HTML(animation_html(anim))``.
    x0: (B, C, H, W). The figure is not registered with pyplot, so it is not shown twice; the returned
    animation carries it as ``anim.figure`` and the step of each frame as ``anim.steps``.
    """
    from matplotlib.animation import FuncAnimation
    from matplotlib.figure import Figure

    schedules = _schedule_list(schedules)
    T = schedules[0].T
    steps = _as_steps(ts if ts is not None else sorted({round(T * k / 20) for k in range(21)}), T)
    frames = noising_frames(x0, schedules, steps, noise, generator)  # (N, S, B, C, H, W)
    b = x0.shape[0]
    grids = [[image_grid(frames[i, j], nrow=b) for j in range(len(schedules))] for i in range(len(steps))]
    gh, gw = grids[0][0].shape[:2]
    ncols = min(2, len(schedules))  # panels in a grid two wide, so the animation fits a page column
    nrows = -(-len(schedules) // ncols)
    dpi = 72
    fig = Figure(
        figsize=(ncols * (gw * scale / dpi + 0.4), nrows * (gh * scale / dpi + 0.55) + 0.35),
        dpi=dpi,
        layout="constrained",
    )
    grid_axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid_axes:
        ax.set_axis_off()
    axes = grid_axes[: len(schedules)]
    ims = [ax.imshow(g, cmap="gray", vmin=0, vmax=255, interpolation="nearest") for ax, g in zip(axes, grids[0])]
    title = fig.suptitle("")

    def draw(i: int):
        for ax, im, g, r in zip(axes, ims, grids[i], noising_readout(schedules, steps[i])):
            im.set_data(g)
            ax.set_title(
                f"{r['schedule']}\n"
                + r"$\bar\alpha_t$"
                + f" = {_fmt(float(r['alpha_bar']))}, SNR = {_fmt(float(r['snr']))}",
                fontsize=10,
            )
        title.set_text(f"t = {steps[i]} of T = {T}")
        return ims

    draw(0)
    anim = FuncAnimation(fig, draw, frames=len(steps), interval=interval, repeat=True)
    # the t of each frame, and the figure (pyplot does not hold it): attributes added for the book's
    # readers (documented above) that FuncAnimation's stubs do not declare
    anim.steps, anim.figure = steps, fig  # type: ignore[attr-defined]
    return anim


# to_jshtml's buttons use Font Awesome icons from a CDN; offline they would be blank squares.
_ICONS = {
    "fa fa-minus": "−",
    "fa fa-fast-backward": "⇤",
    "fa fa-step-backward": "←",
    "fa fa-play fa-flip-horizontal": "◀",
    "fa fa-pause": "❚❚",
    "fa fa-play": "▶",
    "fa fa-step-forward": "→",
    "fa fa-fast-forward": "⇥",
    "fa fa-plus": "+",
}


def animation_html(anim: FuncAnimation, frame_format: str = "png", default_mode: str = "once") -> str:
    """``anim.to_jshtml()`` made self-contained: a slider and buttons that scrub the frames in a static
    page with no kernel and no network (the CDN icon stylesheet is dropped, the icons become text).

    ``frame_format``: "png" or "jpeg" (smaller for noisy frames); ``default_mode``: "once", "loop", "reflect".
    """
    import matplotlib as mpl

    if frame_format not in ("png", "jpeg"):
        raise ValueError(f"frame_format must be 'png' or 'jpeg', got {frame_format!r}")
    with mpl.rc_context({"animation.frame_format": frame_format}):
        html = anim.to_jshtml(default_mode=default_mode)
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*"\s*/?>', "", html)
    html = re.sub(r'<i class="([^"]+)"></i>', lambda m: _ICONS.get(m.group(1), m.group(0)), html)
    if "://" in html or "<i class=" in html:
        raise RuntimeError("matplotlib's to_jshtml output changed: it still refers to an external file or icon font")
    return html


def _png(arr: np.ndarray, scale: int) -> bytes:
    from PIL import Image

    big = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)  # nearest-neighbour upscaling
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="png")
    return buf.getvalue()


def _readout_html(rows: list[dict], t: int, T: int) -> str:
    head = "".join(
        f"<th style='padding:2px 8px'>{h}</th>"
        for h in ("schedule", "ᾱ<sub>t</sub>", "√ᾱ<sub>t</sub> (signal kept)", "SNR", "log SNR")
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td style='padding:2px 8px;text-align:right'>{v}</td>"
            for v in (r["schedule"], _fmt(r["alpha_bar"]), _fmt(r["signal"]), _fmt(r["snr"]), _fmt(r["log_snr"]))
        )
        + "</tr>"
        for r in rows
    )
    return (
        f"<div><b>t = {t}</b> of T = {T}. Image rows, top to bottom: {', '.join(r['schedule'] for r in rows)}.</div>"
        f"<table class='noising-readout'><tr>{head}</tr>{body}</table>"
    )


def noising_widget(
    x0: torch.Tensor,
    schedules: NoiseSchedule | Sequence[NoiseSchedule],
    t: int | None = None,
    step: int = 1,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    scale: int = 2,
) -> ipywidgets.VBox:
    """A slider over t showing ``x0`` noised under each schedule (a row each), with alpha_bar_t and SNR read out.

    Moving the slider recomputes x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (book eq. q-sample)
    with one fixed eps per image (the frames of :func:`noising_frames`), live in Jupyter and Colab. A page
    built from a notebook executed with widget state saved shows the first view; :func:`noising_animation`
    gives the same frames, scrubbable without a kernel.
    x0: (B, C, H, W); t: the first step shown (default T // 4); step: the slider's step; scale: pixels per
    image pixel. Returns an ipywidgets VBox with attributes ``slider``, ``image`` and ``readout``.
    """
    import ipywidgets as widgets

    check_images(x0, "x0")
    schedules = _schedule_list(schedules)
    T = schedules[0].T
    (t0,) = _as_steps(T // 4 if t is None else t, T, name="t")
    for name, v in (("step", step), ("scale", scale)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    eps = randn_like(x0, generator) if noise is None else noise
    slider = widgets.IntSlider(
        value=t0, min=0, max=T, step=step, description="t", continuous_update=True, layout=widgets.Layout(width="480px")
    )
    image = widgets.Image(format="png")
    readout = widgets.HTML()

    def render(t: int) -> None:
        frame = noising_frames(x0, schedules, [t], noise=eps)[0]  # (S, B, C, H, W)
        image.value = _png(image_grid(frame.reshape(-1, *x0.shape[1:]), nrow=x0.shape[0]), scale)
        readout.value = _readout_html(noising_readout(schedules, t), t, T)

    render(t0)
    slider.observe(lambda change: render(int(change["new"])), names="value")
    box = widgets.VBox([slider, widgets.HBox([image, readout], layout=widgets.Layout(align_items="center"))])
    box.slider, box.image, box.readout = slider, image, readout
    return box
