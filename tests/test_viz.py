"""Pictures: image grids, schedule plots, and chapter 1's noising widget with its static animation.

The widget and the animation are how a reader sees the forward process, so the tests pin what they
show to the math: every frame is ``q_sample`` with one shared eps, the read-outs are the schedule's own
alpha_bar and SNR, and the static HTML works with no network.
"""

from __future__ import annotations

import base64
import io
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from diffusion_edu import load_embedded_mnist, make_schedule, q_sample  # noqa: E402
from diffusion_edu.viz import (  # noqa: E402
    animation_html,
    image_grid,
    noising_animation,
    noising_frames,
    noising_readout,
    noising_widget,
    plot_schedules,
    show_noised,
)

NAMES = ("linear", "quadratic", "cosine", "sigmoid")


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_embedded_mnist("heldout").batch([0, 150, 300])[0]  # (3, 1, 28, 28)


@pytest.fixture(scope="module")
def schedules():
    return [make_schedule(n, 40) for n in NAMES]


@pytest.fixture(autouse=True)
def _close_figures():
    """Close figures, and collect animations here (they warn when collected unrendered, which is
    expected in these tests) rather than in some later test."""
    yield
    import gc
    import warnings

    import matplotlib.pyplot as plt

    plt.close("all")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Animation was deleted without rendering anything")
        gc.collect()


def test_image_grid_shape_and_range():
    """B images tile into rows of nrow with 2-pixel padding; -1 maps to black and 1 to white."""
    x = torch.stack([torch.full((1, 4, 5), -1.0), torch.full((1, 4, 5), 1.0), torch.zeros(1, 4, 5)])
    grid = image_grid(x, nrow=2)
    assert grid.shape == (2 + 2 * (4 + 2), 2 + 2 * (5 + 2)) and grid.dtype == np.uint8
    assert grid[2, 2] == 0 and grid[2, 2 + 7] == 255 and grid[2 + 6, 2] == 128
    with pytest.raises(ValueError, match="images must have shape"):
        image_grid(torch.zeros(4, 5))


def test_plot_schedules_draws_alpha_bar_and_log_snr(schedules):
    """Each schedule is one line per panel, holding exactly alpha_bar_t and log SNR(t) for t = 1..T."""
    ax_ab, ax_snr = plot_schedules(schedules + [make_schedule("linear", 10)], title="T = 40")
    assert [line.get_label() for line in ax_ab.lines] == list(NAMES) + ["linear"]
    for line, s in zip(ax_ab.lines, schedules):
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 41))
        np.testing.assert_allclose(line.get_ydata(), s.alpha_bar[1:].numpy())
    for line, s in zip(ax_snr.lines, schedules):
        np.testing.assert_allclose(line.get_ydata(), s.log_snr[1:].numpy())
    assert "T = 40" in ax_ab.get_title()


def test_plot_schedules_bad_input(schedules):
    import matplotlib.pyplot as plt

    _, axes = plt.subplots(1, 3)
    with pytest.raises(ValueError, match="axes must hold two"):
        plot_schedules(schedules, axes)
    with pytest.raises(TypeError, match="schedules must be a NoiseSchedule"):
        plot_schedules([])
    with pytest.raises(TypeError, match="schedules must be a NoiseSchedule"):
        plot_schedules(["linear"])


def test_noising_frames_are_q_sample_with_one_shared_eps(digits, schedules):
    """Frame (i, j) is q_sample(x0, ts[i], schedules[j], eps) with the same eps everywhere (book eq.
    q-sample), so frames differ only through alpha_bar_t; t = 0 is the clean image."""
    eps = torch.randn(digits.shape, generator=torch.Generator().manual_seed(0))
    ts = [0, 1, 20, 40]
    frames = noising_frames(digits, schedules, ts, noise=eps)
    assert frames.shape == (4, 4, 3, 1, 28, 28)
    torch.testing.assert_close(frames[0], digits.expand(4, *digits.shape))
    for i, t in enumerate(ts):
        for j, s in enumerate(schedules):
            torch.testing.assert_close(frames[i, j], q_sample(digits, t, s, noise=eps))
            if t > 0:  # recover the noise: the same eps in every frame
                ab = s.alpha_bar[t].float()
                torch.testing.assert_close(
                    (frames[i, j] - ab.sqrt() * digits) / (1 - ab).sqrt(), eps, atol=1e-4, rtol=0
                )


def test_noising_frames_generator_is_reproducible(digits, schedules):
    a = noising_frames(digits, schedules, [10], generator=torch.Generator().manual_seed(5))
    b = noising_frames(digits, schedules, [10], generator=torch.Generator().manual_seed(5))
    c = noising_frames(digits, schedules, [10], generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noising_frames_bad_input(digits, schedules):
    with pytest.raises(ValueError, match="same T"):
        noising_frames(digits, [make_schedule("linear", 40), make_schedule("linear", 50)], [1])
    with pytest.raises(ValueError, match="noise must have x0's shape"):
        noising_frames(digits, schedules, [1], noise=torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"ts must lie in 0..T=40"):
        noising_frames(digits, schedules, [0, 41])
    with pytest.raises(TypeError, match="ts must hold integer timesteps"):
        noising_frames(digits, schedules, [0.5])
    with pytest.raises(ValueError, match="x0 must be a batch of images"):
        noising_frames(digits[0], schedules, [1])


def test_noising_readout_reads_the_schedule(schedules):
    """The read-out is the schedule's own alpha_bar_t, its square root and SNR(t); t = 0 has SNR = inf."""
    rows = noising_readout(schedules, 17)
    for r, s in zip(rows, schedules):
        assert r["schedule"] == s.name
        assert r["alpha_bar"] == pytest.approx(s.alpha_bar[17].item())
        assert r["signal"] == pytest.approx(s.alpha_bar[17].item() ** 0.5)
        assert r["snr"] == pytest.approx(s.snr[17].item())
        assert r["log_snr"] == pytest.approx(s.log_snr[17].item())
    assert noising_readout(schedules, 0)[0]["snr"] == float("inf")
    with pytest.raises(ValueError, match=r"t must lie in 0..T=40"):
        noising_readout(schedules, 41)


def test_show_noised_rows_are_schedules_and_columns_steps(digits, schedules):
    eps = torch.randn(digits[:1].shape, generator=torch.Generator().manual_seed(1))
    ax = show_noised(digits[:1], schedules, [0, 10, 40], noise=eps)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(NAMES)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["t=0", "t=10", "t=40"]
    frames = noising_frames(digits[:1], schedules, [0, 10, 40], noise=eps)[:, :, 0]  # (N, S, C, H, W)
    expected = image_grid(frames.transpose(0, 1).reshape(-1, 1, 28, 28), nrow=3)
    np.testing.assert_array_equal(ax.images[0].get_array(), expected)
    with pytest.raises(ValueError, match="x0 must hold one image"):
        show_noised(digits, schedules, [0])


def test_noising_animation_frames_and_titles(digits, schedules):
    """One panel per schedule; the first frame shows t = ts[0] with the schedule's alpha_bar in its title."""
    anim = noising_animation(digits, schedules, ts=[5, 20, 40], generator=torch.Generator().manual_seed(2))
    assert anim.steps == [5, 20, 40]
    axes = [ax for ax in anim.figure.axes if ax.images]
    assert len(axes) == 4
    frames = noising_frames(digits, schedules, [5], generator=torch.Generator().manual_seed(2))[0]
    for ax, s, frame in zip(axes, schedules, frames):
        np.testing.assert_array_equal(ax.images[0].get_array(), image_grid(frame, nrow=3))
        assert ax.get_title().startswith(s.name) and f"{s.alpha_bar[5].item():.3g}" in ax.get_title()
    default = noising_animation(digits, schedules, generator=torch.Generator().manual_seed(2))
    assert default.steps == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40]


def _frames_in(html: str, fmt: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(rf'"data:image/{fmt};base64,([^"]+)"', html)]


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_animation_html_is_self_contained_and_scrubbable(digits, schedules, fmt):
    """The static page needs a slider over all frames, distinct frames, and nothing from the network."""
    anim = noising_animation(digits, schedules, ts=[0, 20, 40], generator=torch.Generator().manual_seed(3))
    html = animation_html(anim, frame_format=fmt)
    assert "://" not in html and "<i class=" not in html and "font-awesome" not in html
    assert re.search(r'<input id="_anim_slider\w+" type="range"', html)
    frames = _frames_in(html, fmt)
    assert len(frames) == 3 and len(set(frames)) == 3
    Image.open(io.BytesIO(frames[0])).verify()
    assert "▶" in html and "❚❚" in html  # the play and pause buttons have visible labels
    with pytest.raises(ValueError, match="frame_format must be 'png' or 'jpeg'"):
        animation_html(anim, frame_format="gif")


def _png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_noising_widget_shows_the_frames_and_follows_the_slider(digits, schedules):
    """The widget's image is the frame grid (rows = schedules) upscaled; moving the slider recomputes
    it with the same eps and updates the read-out."""
    eps = torch.randn(digits.shape, generator=torch.Generator().manual_seed(4))
    w = noising_widget(digits, schedules, noise=eps, scale=2)
    assert (w.slider.min, w.slider.max, w.slider.value) == (0, 40, 10)

    def expected(t: int) -> np.ndarray:
        grid = image_grid(noising_frames(digits, schedules, [t], noise=eps)[0].reshape(-1, 1, 28, 28), nrow=3)
        return np.repeat(np.repeat(grid, 2, axis=0), 2, axis=1)

    np.testing.assert_array_equal(_png_array(w.image.value), expected(10))
    assert "<b>t = 10</b>" in w.readout.value and f"{schedules[0].alpha_bar[10].item():.3g}" in w.readout.value
    w.slider.value = 33
    np.testing.assert_array_equal(_png_array(w.image.value), expected(33))
    assert "<b>t = 33</b>" in w.readout.value and f"{schedules[2].snr[33].item():.3g}" in w.readout.value
    assert w.children[0] is w.slider


def test_noising_widget_bad_input(digits, schedules):
    with pytest.raises(ValueError, match=r"t must lie in 0..T=40"):
        noising_widget(digits, schedules, t=50)
    with pytest.raises(ValueError, match="step must be a positive int"):
        noising_widget(digits, schedules, step=0)
    with pytest.raises(ValueError, match="scale must be a positive int"):
        noising_widget(digits, schedules, scale=1.5)
    with pytest.raises(ValueError, match="noise must have x0's shape"):
        noising_widget(digits, schedules, noise=torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="same T"):
        noising_widget(digits, [make_schedule("linear", 40), make_schedule("cosine", 41)])
