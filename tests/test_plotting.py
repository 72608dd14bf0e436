"""The figure helpers: book style, the kernel-free frame slider, and the loss grid."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib as mpl  # noqa: E402
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from IPython.display import HTML  # noqa: E402

from igr_tutorial.losses import double_well, two_parameter_model  # noqa: E402
from igr_tutorial.plotting import figure_with_alt, frames_slider, loss_grid, use_book_style  # noqa: E402


@pytest.fixture
def rc_restored():
    """Run the test inside an rc_context so that use_book_style does not leak into other tests."""
    with mpl.rc_context():
        yield


def test_use_book_style_sets_opaque_white_backgrounds(rc_restored):
    mpl.rcParams["figure.facecolor"] = (0.0, 0.0, 0.0, 0.0)  # transparent beforehand
    mpl.rcParams["savefig.transparent"] = True
    use_book_style()
    for key in ("figure.facecolor", "axes.facecolor", "savefig.facecolor"):
        assert mcolors.to_rgba(mpl.rcParams[key]) == (1.0, 1.0, 1.0, 1.0), key
    assert mpl.rcParams["savefig.transparent"] is False
    fig, ax = plt.subplots()
    try:
        assert mcolors.to_rgba(fig.get_facecolor()) == (1.0, 1.0, 1.0, 1.0)
        assert mcolors.to_rgba(ax.get_facecolor()) == (1.0, 1.0, 1.0, 1.0)
        # The saved PNG is opaque white where nothing is drawn.
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        assert np.all(rgba[0, 0] == [255, 255, 255, 255])
    finally:
        plt.close(fig)


def _two_frame_figure():
    fig, ax = plt.subplots(figsize=(2, 2), dpi=40)
    (line,) = ax.plot([0.0, 1.0], [0.0, 0.0])
    ax.set_ylim(-0.5, 2.5)
    calls = []

    def draw(i):
        calls.append(i)
        line.set_ydata([0.0, float(i) + 1.0])
        return (line,)

    return fig, draw, calls


def test_frames_slider_embeds_every_frame():
    fig, draw, calls = _two_frame_figure()
    out = frames_slider(fig, draw, 2, alt="two frames")
    assert isinstance(out, HTML)
    html = out.data
    frames = re.findall(r'frames\[(\d+)\] = "data:image/png;base64,([A-Za-z0-9+/=\\\n]+)"', html)
    assert [int(i) for i, _ in frames] == [0, 1]
    assert frames[0][1] != frames[1][1]  # the two frames differ: draw_frame(i) was applied to each
    assert {0, 1} <= set(calls)
    assert 'type="range"' in html  # the slider
    assert not plt.fignum_exists(fig.number)  # closed, so the notebook does not show it twice


def test_frames_slider_single_frame():
    fig, draw, _ = _two_frame_figure()
    html = frames_slider(fig, draw, 1, alt="one frame").data
    assert len(re.findall(r'frames\[\d+\] = "data:image/png;base64', html)) == 1


@pytest.mark.parametrize("num_frames", [0, -2])
def test_frames_slider_rejects_fewer_than_one_frame(num_frames):
    fig, draw, _ = _two_frame_figure()
    try:
        with pytest.raises(ValueError, match="num_frames must be at least 1"):
            frames_slider(fig, draw, num_frames, alt="frames")
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n", [7, 30])
def test_loss_grid_shape_and_values(n):
    X, Y, Z = loss_grid(double_well, (-2.0, 2.0), (-1.0, 3.0), n=n)
    assert X.shape == Y.shape == Z.shape == (n, n)
    np.testing.assert_allclose(X[0], np.linspace(-2.0, 2.0, n), atol=1e-15)
    np.testing.assert_allclose(Y[:, 0], np.linspace(-1.0, 3.0, n), atol=1e-15)
    np.testing.assert_allclose(X, np.tile(X[0], (n, 1)))
    u, v = X, Y  # double_well written out by hand
    expected = 0.25 * (u**2 - 1) ** 2 + 0.5 * (v - 0.5 * u**2) ** 2 + 0.1 * u * v
    np.testing.assert_allclose(Z, expected, rtol=1e-12, atol=1e-12)


def test_loss_grid_default_resolution():
    loss = two_parameter_model(x=1.0, y=1.0)
    X, Y, Z = loss_grid(loss, (-1.0, 1.0), (0.0, 2.0))
    assert Z.shape == (200, 200)
    np.testing.assert_allclose(Z, 0.5 * (1.0 - X * Y) ** 2, rtol=1e-12, atol=1e-14)


def test_frames_slider_carries_alt_text_and_requires_it():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    (line,) = ax.plot([0, 1], [0, 1])
    html = frames_slider(fig, lambda i: line.set_ydata([0, i + 1]), 2, alt='paths & "flows"').data
    assert 'alt="paths &amp; &quot;flows&quot;"' in html
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="alt"):
        frames_slider(fig, lambda i: None, 2, alt=" ")


def test_figure_with_alt_embeds_a_png_with_escaped_alt_text():
    import base64
    import re

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    html = figure_with_alt(fig, 'a line from (0, 1) to (1, 0) & "more"').data
    alt = re.search(r'alt="([^"]*)"', html).group(1)
    assert alt == "a line from (0, 1) to (1, 0) &amp; &quot;more&quot;"
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number), "the figure must be closed so it is not shown twice"


@pytest.mark.parametrize("alt", ["", "   "])
def test_figure_with_alt_requires_alt_text(alt):
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="alt must describe"):
        figure_with_alt(fig, alt)
    plt.close(fig)


def test_figure_slider_redraws_without_an_output_widget():
    """Chapters 3 and 4's live slider: an image with alt text that follows the slider, and no Output widget
    (a batch executor answers those on the shell channel, the race behind a chapter-3 build that hung)."""
    import ipywidgets
    import matplotlib.pyplot as plt

    from igr_tutorial.plotting import figure_slider

    drawn = []

    def draw(h):
        fig, ax = plt.subplots()
        drawn.append((h, fig))
        ax.plot([0, 1], [0, h])
        return fig

    box = figure_slider(draw, [("0.1", 0.1), ("0.2", 0.2)], 0.1, description="h", alt=lambda h: f"line of slope {h}")
    slider, html = box.children
    assert isinstance(slider, ipywidgets.SelectionSlider) and isinstance(html, ipywidgets.HTML)
    assert 'alt="line of slope 0.1"' in html.value and "data:image/png;base64," in html.value
    slider.value = 0.2
    assert 'alt="line of slope 0.2"' in html.value and [h for h, _ in drawn] == [0.1, 0.2]
    assert not any(isinstance(w, ipywidgets.Output) for w in box.children)
    assert not any(plt.fignum_exists(fig.number) for _, fig in drawn)  # closed once it is an image
    with pytest.raises(ValueError, match="not one of"):
        figure_slider(draw, [("0.1", 0.1)], 0.3, description="h", alt=str)
