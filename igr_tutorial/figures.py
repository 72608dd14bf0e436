"""Figures for the deep-network chapters (6–7), drawn from the JSON-ready results of
:mod:`igr_tutorial.experiments`.

Every function takes the dict returned by one experiment and returns a :class:`matplotlib.figure.Figure`
(white background, labelled axes, a legend). The figures are made without ``pyplot``, so nothing is shown
twice in a notebook: display one by leaving it as a cell's last expression, save it with
``fig.savefig(path)``. Runs that diverged (their numbers are ``None``) are left out and named in the legend.

* :func:`plot_rig_vs_lambda`: final ``R_IG`` vs ``λ = h·m/4`` (from ``learning_rate_sweep``);
* :func:`plot_sharpness_vs_lambda`: top Hessian eigenvalue vs ``λ``, with ``2/h`` (``learning_rate_sweep``);
* :func:`plot_test_accuracy_vs_lambda`: test and train accuracy vs ``λ`` (``learning_rate_sweep``);
* :func:`plot_robustness`: accuracy under parameter noise vs ``σ`` (``learning_rate_sweep``);
* :func:`plot_egr`: accuracy, ``R_IG`` and sharpness vs ``μ`` (``egr_sweep``);
* :func:`plot_rk4_vs_gd`: loss, accuracy and ``R_IG`` vs step (``rk4_versus_gd``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure

from .stats import mean_se

__all__ = [
    "plot_egr",
    "plot_rig_vs_lambda",
    "plot_rk4_vs_gd",
    "plot_robustness",
    "plot_sharpness_vs_lambda",
    "plot_test_accuracy_vs_lambda",
]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _figure(ncols: int = 1, *, panel_width: float = 4.8, height: float = 3.8):
    """A white, constrained-layout figure with ``ncols`` panels side by side (a list of axes)."""
    fig = Figure(figsize=(panel_width * ncols, height), facecolor="white", layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.set_facecolor("white")
        ax.grid(True, alpha=0.3)
    return fig, axes


def _color(i: int) -> str:
    return f"C{i % 10}"


def _g(x: float) -> str:
    return f"{x:.3g}"


def _nan(values: Iterable[Any]) -> np.ndarray:
    """``None`` (a diverged or non-finite value) as NaN, so that matplotlib leaves a gap."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _note_left_out(ax, text: str | None, prefix: str = "left out (diverged)") -> None:
    """Add a legend entry without a handle that says which runs were left out."""
    if text:
        ax.plot([], [], " ", label=f"{prefix}: {text}")


def _by_width(results: dict) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for run in results["runs"]:
        groups[run["width"]].append(run)
    return dict(sorted(groups.items()))


def _seed_grid(runs: Sequence[dict], key: str, by: str = "lr"):
    """``run[key]`` as an array ``(seeds, grid)`` (NaN for diverged runs) over the sorted values of ``run[by]``,
    and the grid values at which some seed diverged."""
    grid = sorted({r[by] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    values = np.full((len(seeds), len(grid)), np.nan)
    diverged = set()
    for r in runs:
        if r["diverged"]:
            diverged.add(r[by])
        elif r.get(key) is not None:
            values[seeds.index(r["seed"]), grid.index(r[by])] = float(r[key])
    return np.array(grid), values, sorted(diverged)


def _band(ax, x, values: np.ndarray, *, color, label: str, style: str = "o-", **kw) -> None:
    """The mean over seeds (rows of ``values``) as a line, and ±1 standard error as a shaded band."""
    mean, se = mean_se(values, axis=0)
    ok = np.isfinite(mean)
    x = np.asarray(x, dtype=float)
    n = values.shape[0]
    ax.plot(x[ok], mean[ok], style, color=color, label=f"{label} (mean of {n} seeds ± 1 s.e.)" if n > 1 else label, **kw)
    band = ok & np.isfinite(se)
    if band.any():
        ax.fill_between(x[band], (mean - se)[band], (mean + se)[band], color=color, alpha=0.2, lw=0)


def _diverged_text(diverged_by_width: dict[int, list[float]]) -> str | None:
    parts = [f"h = {', '.join(_g(h) for h in hs)} (width {w})" for w, hs in diverged_by_width.items() if hs]
    return "; ".join(parts) or None


def _positive(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return v.size > 0 and bool(np.all(v > 0))


def _spans_decades(values: np.ndarray) -> bool:
    """Whether a log axis suits ``values``: all positive and spanning more than a factor 10."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return _positive(v) and v.max() > 10 * v.min()


def _lambda_panel(ax, results: dict, key: str, label: str, *, logy: bool = True) -> dict[int, np.ndarray]:
    """One line per width of the seed-mean of ``key`` vs ``λ``, with a ±1 s.e. band; returns the lrs."""
    diverged, lrs_by_width, all_values = {}, {}, []
    for i, (width, runs) in enumerate(_by_width(results).items()):
        lrs, values, div = _seed_grid(runs, key)
        m = runs[0]["m"]
        _band(ax, lrs * m / 4, values, color=_color(i), label=f"width {width} (m = {m:,})")
        diverged[width] = div
        lrs_by_width[width] = lrs
        all_values.extend(values[np.isfinite(values)])
    ax.set_xscale("log")
    if logy and _positive(np.array(all_values)):
        ax.set_yscale("log")
    ax.set_xlabel("λ = h·m/4 (implicit regularization strength)")
    ax.set_ylabel(label)
    _note_left_out(ax, _diverged_text(diverged))
    return lrs_by_width


# --------------------------------------------------------------------------------------------------
# Chapter 6: the learning-rate sweep (Predictions 2.1–2.4)
# --------------------------------------------------------------------------------------------------


def plot_rig_vs_lambda(results: dict) -> Figure:
    """Prediction 2.1: the implicit regularizer ``R_IG = ‖∇E‖²/m`` of the final iterate against
    ``λ = h·m/4``, one line per width (log–log; the mean over seeds with a ±1 standard-error band).

    IGR predicts that ``R_IG`` falls as ``λ`` grows.
    ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    fig, (ax,) = _figure()
    _lambda_panel(ax, results, "r_ig", "final R_IG = ‖∇E‖²/m")
    ax.set_title("Prediction 2.1: R_IG vs λ after training")
    ax.legend(fontsize=8)
    return fig


def plot_sharpness_vs_lambda(results: dict) -> Figure:
    """Prediction 2.2: the top Hessian eigenvalue ``λ_max`` (sharpness) of the final iterate against
    ``λ = h·m/4``, one line per width, with the stability bound ``2/h`` dashed in the same colour.

    GD with step ``h`` cannot settle where ``λ_max > 2/h``; IGR predicts flatter (smaller ``λ_max``) solutions
    for larger ``λ``. ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    fig, (ax,) = _figure()
    lrs_by_width = _lambda_panel(ax, results, "sharpness", "top Hessian eigenvalue λ_max")
    for i, (width, runs) in enumerate(_by_width(results).items()):
        lrs = lrs_by_width[width]
        m = runs[0]["m"]
        ax.plot(lrs * m / 4, 2 / lrs, "--", color=_color(i), alpha=0.7, label=f"2/h (width {width})")
    ax.set_title("Prediction 2.2: sharpness vs λ, and 2/h")
    ax.legend(fontsize=8)
    return fig


def plot_test_accuracy_vs_lambda(results: dict) -> Figure:
    """Prediction 2.3: test accuracy (solid) and train accuracy (dashed) of the final iterate against
    ``λ = h·m/4``, one colour per width (mean over seeds, ±1 standard-error bands).

    IGR predicts that test accuracy rises with ``λ`` until the learning rate is too large for training.
    ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    fig, (ax,) = _figure()
    _lambda_panel(ax, results, "test_accuracy", "accuracy", logy=False)
    for line in ax.get_lines():  # relabel the seed-mean lines drawn by _lambda_panel as test accuracy
        if line.get_label().startswith("width"):
            line.set_label(f"test, {line.get_label()}")
    for i, (width, runs) in enumerate(_by_width(results).items()):
        lrs, values, _ = _seed_grid(runs, "train_accuracy")
        _band(ax, lrs * runs[0]["m"] / 4, values, color=_color(i), style="s--", mfc="white",
              label=f"train, width {width}")
    ax.set_title("Prediction 2.3: accuracy vs λ")
    ax.legend(fontsize=8)
    return fig


def plot_robustness(results: dict) -> Figure:
    """Prediction 2.4: test accuracy of ``θ + σ·ε`` (``ε ~ N(0, I)``, averaged over noise draws) against the
    noise level ``σ``; one panel per width, one line per learning rate ``h`` (mean over seeds ± 1 s.e.).

    IGR predicts that networks trained with larger ``h`` (flatter minima) lose less accuracy under noise.
    ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    sigmas = np.asarray(results["size"]["sigmas"], dtype=float)
    groups = _by_width(results)
    fig, axes = _figure(len(groups), panel_width=4.4)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    for ax, (width, runs) in zip(axes, groups.items()):
        lrs = sorted({r["lr"] for r in runs})
        diverged = []
        for j, lr in enumerate(lrs):
            group = [r for r in runs if r["lr"] == lr]
            curves = [_nan(r["perturbed_accuracy"]) for r in group if not r["diverged"]]
            if len(curves) < len(group):
                diverged.append(lr)
            if not curves:
                continue
            color = cmap(j / max(1, len(lrs) - 1) * 0.9)
            _band(ax, sigmas, np.array(curves), color=color, label=f"h = {_g(lr)} (λ = {_g(group[0]['lambda'])})")
        ax.set_xlabel("parameter noise σ")
        ax.set_ylabel("test accuracy under noise")
        ax.set_title(f"width {width} (m = {runs[0]['m']:,})")
        _note_left_out(ax, ", ".join(f"h = {_g(h)}" for h in diverged) or None)
        ax.legend(fontsize=7)
    fig.suptitle("Prediction 2.4: robustness to parameter noise")
    return fig


# --------------------------------------------------------------------------------------------------
# Chapter 7: explicit regularization and RK4
# --------------------------------------------------------------------------------------------------


def plot_egr(results: dict) -> Figure:
    """Explicit gradient regularization at a small step ``h₀`` against GD at ``h = h₀ + 4μ``, every run stopped
    at the same training loss: test accuracy, ``R_IG``, sharpness and the training time ``t`` it took, against
    the effective strength ``μ + h₀/4`` (``h/4`` for GD); means over seeds with ±1 s.e. bands.

    To first order both follow the flow of ``E + (μ + h₀/4)‖∇E‖²``: where GD is stable the two lines should
    coincide. ``results``: :func:`~igr_tutorial.experiments.egr_sweep`.
    """
    panels = [("test_accuracy", "test accuracy at the target loss", False),
              ("r_ig", "R_IG = ‖∇E‖²/m at the target loss", True),
              ("sharpness", "top Hessian eigenvalue λ_max", False),
              ("time", "training time t = steps·step size", True)]
    h0 = results["lr"]
    fig, axes = _figure(4, panel_width=3.6)
    styles = {"egr": ("C3", "x--", f"EGR at h₀ = {_g(h0)}, strength μ"), "gd": ("C0", "o-", "GD at h = h₀ + 4μ")}
    left_out = []
    for method, (color, style, label) in styles.items():
        runs = [r for r in results["runs"] if r["method"] == method]
        # A run that never reached the target is not at the common loss: none of its values is shown.
        at_target = [r if r["reached_target"] else dict(r, **{key: None for key, _, _ in panels}) for r in runs]
        for ax, (key, ylabel, logy) in zip(axes, panels):
            mus, values, _ = _seed_grid(at_target, key, by="mu")
            _band(ax, mus + h0 / 4, values, color=color, style=style, label=label)
            ax.set_xscale("log")
            ax.set_xlabel("effective strength μ + h₀/4 (GD: h/4)")
            ax.set_ylabel(ylabel)
            if logy and _spans_decades(values):
                ax.set_yscale("log")
        left_out += sorted({f"{method.upper()} μ = {_g(r['mu'])}" for r in runs if not r["reached_target"]})
    _note_left_out(axes[0], ", ".join(left_out) or None, prefix="never reached the target (left out)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"EGR at a small step vs GD at a large step, each stopped at training loss "
                 f"{_g(results['target_loss'])} (width {results.get('width')}, m = {results.get('m')})")
    return fig


def plot_rk4_vs_gd(results: dict) -> Figure:
    """GD (implicit regularization present) against RK4 (it removed) at the same steps ``h`` and the same number
    of steps from the same initializations: final training loss, test accuracy, ``R_IG`` and ``h·λ_max``
    against ``h`` (means over seeds with ±1 s.e. bands), with GD's stability limit ``hλ = 2`` and RK4's
    ``hλ ≈ 2.785``.

    RK4 follows the gradient flow to ``O(h⁴)``; where both are stable the gap between them is what IGR does.
    ``results``: :func:`~igr_tutorial.experiments.rk4_versus_gd`.
    """
    panels = [("train_loss", "final training loss E", True), ("test_accuracy", "final test accuracy", False),
              ("r_ig", "final R_IG = ‖∇E‖²/m", True), ("h_sharpness", "h·λ_max at the end", False)]
    styles = {"gd": ("C0", "o-", "GD (IGR present)"), "rk4": ("C1", "s--", "RK4 (IGR removed)")}
    fig, axes = _figure(4, panel_width=3.6)
    left_out = []
    for method, (color, style, label) in styles.items():
        runs = [dict(r, h_sharpness=None if r.get("sharpness") is None else r["lr"] * r["sharpness"])
                for r in results["runs"] if r["method"] == method]
        for ax, (key, ylabel, logy) in zip(axes, panels):
            lrs, values, div = _seed_grid(runs, key)
            _band(ax, lrs, values, color=color, style=style, label=label)
            ax.set_xscale("log")
            ax.set_xlabel("step h")
            ax.set_ylabel(ylabel)
            if logy and _spans_decades(values):
                ax.set_yscale("log")
        left_out += [f"{method.upper()} h = {_g(h)}" for h in div]
    axes[3].axhline(2.0, color="C0", ls=":", label="GD stable below hλ = 2")
    axes[3].axhline(2.785, color="C1", ls=":", label="RK4 stable below hλ ≈ 2.785")
    axes[3].legend(fontsize=7)
    _note_left_out(axes[0], ", ".join(left_out) or None, prefix="diverged (left out)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"GD vs RK4 at the same step h, {results['steps']} steps (width {results.get('width')}, "
                 f"m = {results.get('m')})")
    return fig
