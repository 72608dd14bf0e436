"""Figure helpers: a readable default style and a kernel-free slider over precomputed frames."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "figure_slider",
    "figure_with_alt",
    "frames_slider",
    "loss_grid",
    "use_book_style",
]


def use_book_style() -> None:
    """Opaque white figures (readable in dark mode), labelled grids, and a compact default size."""
    mpl.rcParams.update(
        {
            "figure.facecolor": "white",
            "axes.facecolor": "white",
            "savefig.facecolor": "white",
            "savefig.transparent": False,
            "figure.figsize": (6.4, 4.2),
            "figure.dpi": 90,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "animation.embed_limit": 40.0,
        }
    )


def loss_grid(loss_2d: Callable[[Any], Any], xlim: Sequence[float], ylim: Sequence[float], n: int = 200):
    """Evaluate a loss of a 2-vector on an ``n × n`` grid; returns ``(X, Y, Z)`` for ``contour`` plots."""
    import jax
    import jax.numpy as jnp

    xs = jnp.linspace(xlim[0], xlim[1], n)
    ys = jnp.linspace(ylim[0], ylim[1], n)
    X, Y = jnp.meshgrid(xs, ys)
    pts = jnp.stack([X.ravel(), Y.ravel()], axis=1)
    Z = jax.vmap(loss_2d)(pts).reshape(X.shape)
    return np.asarray(X), np.asarray(Y), np.asarray(Z)


def frames_slider(
    fig: "plt.Figure",
    draw_frame: Callable[[int], Any],
    num_frames: int,
    *,
    alt: str,
    interval_ms: int = 400,
) -> "Any":
    """A slider over precomputed frames that works in a static web page (no kernel needed).

    ``draw_frame(i)`` updates ``fig`` for frame ``i``; ``alt`` describes what the frames show (the image's
    alternative text, for readers who cannot see it). Every frame is rendered once to PNG and embedded
    with matplotlib's ``FuncAnimation(...).to_jshtml()``: a slider and play buttons in plain JavaScript.
    Returns an ``IPython.display.HTML`` object; the figure is closed so it is not shown twice.
    """
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    import html as html_lib

    if num_frames < 1:
        raise ValueError("num_frames must be at least 1.")
    if not alt or not alt.strip():
        raise ValueError("alt must describe what the frames show (alternative text for the image).")
    anim = FuncAnimation(fig, draw_frame, frames=num_frames, interval=interval_ms, blit=False)
    page = anim.to_jshtml(default_mode="once")
    page = page.replace("<img id=", f'<img alt="{html_lib.escape(alt, quote=True)}" id=', 1)
    plt.close(fig)
    return HTML(page)


def figure_with_alt(fig: "plt.Figure", alt: str, *, dpi: float | None = None) -> "Any":
    """``fig`` as an HTML ``<img>`` that carries alternative text; the figure is closed.

    Matplotlib's inline display has no alt text, and neither has the image a saved ``ipywidgets`` output
    draws in the static book. Display this instead of calling ``plt.show()`` inside an ``interact``
    callback (chapters 3 and 4), so the live and the saved slider both describe their figure. The PNG is
    embedded as a ``data:`` URI with an opaque white background. Returns an ``IPython.display.HTML`` object.
    """
    import base64
    import html as html_lib
    import io

    from IPython.display import HTML

    if not alt or not alt.strip():
        raise ValueError("alt must describe what the figure shows (alternative text for the image).")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return HTML(f'<img alt="{html_lib.escape(alt, quote=True)}" src="data:image/png;base64,{data}">')


def figure_slider(
    draw: Callable[[Any], "plt.Figure"],
    options: Sequence[tuple[str, Any]],
    value: Any,
    *,
    description: str,
    alt: Callable[[Any], str],
) -> Any:
    """A live slider that redraws a figure: ``draw(v)`` makes the figure for the slider's value ``v``.

    Returns an ``ipywidgets.VBox`` of a ``SelectionSlider`` over ``options`` (``(label, value)`` pairs) and an
    ``HTML`` widget holding the figure as an ``<img>`` with alternative text ``alt(v)``
    (:func:`figure_with_alt`). Moving the slider replaces the image. Chapters 3 and 4 use it.

    It deliberately avoids ``ipywidgets.interact``, whose ``Output`` widget makes batch executors (nbclient,
    and so jupyter-book and nbval) answer on the kernel's shell channel while they wait on it for the cell's
    reply: a race that left a build waiting for a reply that had already arrived. Here the kernel only
    announces widgets; the executor never has to answer. The saved widget state holds the first image, so the
    static book shows it too.
    """
    import ipywidgets

    if not options:
        raise ValueError("options must hold at least one (label, value) pair.")
    if value not in [v for _, v in options]:
        raise ValueError(f"value {value!r} is not one of the slider's options.")

    def image(v: Any) -> str:
        return figure_with_alt(draw(v), alt=alt(v)).data

    slider = ipywidgets.SelectionSlider(options=list(options), value=value, description=description,
                                        continuous_update=False)
    html = ipywidgets.HTML(value=image(value))
    slider.observe(lambda change: setattr(html, "value", image(change["new"])), names="value")
    return ipywidgets.VBox([slider, html])
