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


def _mean_over_seeds(runs: Sequence[dict], key: str):
    """Per learning rate (sorted): ``lr``, ``λ``, the seed-mean of ``run[key]`` over runs that did not
    diverge (NaN if none), the individual values, and the learning rates at which some seed diverged."""
    per_lr: dict[float, list[dict]] = defaultdict(list)
    for run in runs:
        per_lr[run["lr"]].append(run)
    lrs = sorted(per_lr)
    lam, mean, points, diverged = [], [], [], []
    for lr in lrs:
        group = per_lr[lr]
        good = [r[key] for r in group if not r["diverged"] and r.get(key) is not None]
        if len(good) < len(group):
            diverged.append(lr)
        lam.append(group[0]["lambda"])
        mean.append(float(np.mean(good)) if good else np.nan)
        points.extend((group[0]["lambda"], v) for v in good)
    return np.array(lrs), np.array(lam), np.array(mean), points, diverged


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
    """One line per width of the seed-mean of ``key`` vs ``λ`` (seeds as faint dots); returns the lrs."""
    multi_seed = len({r["seed"] for r in results["runs"]}) > 1
    diverged, lrs_by_width, all_values = {}, {}, []
    for i, (width, runs) in enumerate(_by_width(results).items()):
        lrs, lam, mean, points, div = _mean_over_seeds(runs, key)
        ok = np.isfinite(mean)
        m = runs[0]["m"]
        ax.plot(lam[ok], mean[ok], "o-", color=_color(i), label=f"width {width} (m = {m:,})")
        if multi_seed and points:
            px, py = zip(*points)
            ax.plot(px, py, ".", color=_color(i), alpha=0.35)
        diverged[width] = div
        lrs_by_width[width] = lrs
        all_values.extend(mean[ok])
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
    ``λ = h·m/4``, one line per width (log–log; the mean over seeds, each seed a faint dot).

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
    ax.set_title("Prediction 2.2: sharpness vs λ, with the bound 2/h")
    ax.legend(fontsize=8)
    return fig


def plot_test_accuracy_vs_lambda(results: dict) -> Figure:
    """Prediction 2.3: test accuracy (solid) and train accuracy (dashed) of the final iterate against
    ``λ = h·m/4``, one colour per width (mean over seeds).

    IGR predicts that test accuracy rises with ``λ`` until the learning rate is too large for training.
    ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    fig, (ax,) = _figure()
    _lambda_panel(ax, results, "test_accuracy", "accuracy", logy=False)
    for line in ax.get_lines():  # relabel the seed-mean lines drawn by _lambda_panel as test accuracy
        if line.get_label().startswith("width"):
            line.set_label(f"test, {line.get_label()}")
    for i, (width, runs) in enumerate(_by_width(results).items()):
        _, lam, mean, _, _ = _mean_over_seeds(runs, "train_accuracy")
        ok = np.isfinite(mean)
        ax.plot(lam[ok], mean[ok], "s--", color=_color(i), mfc="white", label=f"train, width {width}")
    ax.set_title("Prediction 2.3: accuracy vs λ")
    ax.legend(fontsize=8)
    return fig


def plot_robustness(results: dict) -> Figure:
    """Prediction 2.4: test accuracy of ``θ + σ·ε`` (``ε ~ N(0, I)``, averaged over noise draws and seeds)
    against the noise level ``σ``; one panel per width, one line per learning rate ``h``.

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
            ax.plot(sigmas, np.nanmean(curves, axis=0), "o-", color=color,
                    label=f"h = {_g(lr)} (λ = {_g(group[0]['lambda'])})")
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
    """Explicit gradient regularization at a small step ``h``: test accuracy, final ``R_IG`` and sharpness
    against the explicit strength ``μ`` of ``E + μ‖∇E‖²`` (symmetric-log axis, so that ``μ = 0`` shows).

    GD adds ``(h/4)‖∇E‖²`` implicitly, so the *effective* strength is ``μ + h/4`` (given in the legend):
    adding ``μ`` should act like a larger learning rate. ``results``: :func:`~igr_tutorial.experiments.egr_sweep`.
    """
    runs = sorted(results["runs"], key=lambda r: r["mu"])
    h = runs[0]["lr"] if runs else float("nan")
    good = [r for r in runs if not r["diverged"]]
    mus = np.array([r["mu"] for r in good], dtype=float)
    positive = [r["mu"] for r in runs if r["mu"] > 0]
    panels = [("test_accuracy", "test accuracy"), ("r_ig", "final R_IG = ‖∇E‖²/m"),
              ("sharpness", "top Hessian eigenvalue λ_max")]
    fig, axes = _figure(3, panel_width=4.0)
    for ax, (key, label) in zip(axes, panels):
        values = _nan(r[key] for r in good)
        label = (f"EGR at h = {_g(h)}, width {results.get('width')}\n"
                 f"effective strength μ + h/4 = μ + {_g(h / 4)}")
        ax.plot(mus, values, "o-", color="C3", label=label)
        if positive:
            ax.set_xscale("symlog", linthresh=min(positive))
        ax.set_xlabel("explicit strength μ")
        ax.set_ylabel(label)
        if key == "r_ig" and _spans_decades(values):
            ax.set_yscale("log")
    _note_left_out(axes[0], ", ".join(f"μ = {_g(r['mu'])}" for r in runs if r["diverged"]) or None)
    axes[0].legend(fontsize=8)
    fig.suptitle("Explicit gradient regularization: E + μ‖∇E‖² (GD adds h/4 implicitly)")
    return fig


def plot_rk4_vs_gd(results: dict) -> Figure:
    """GD (implicit regularization present) against RK4 (it removed) at the same step ``h`` from the same
    initialization: training loss, test accuracy and ``R_IG`` against the step number.

    RK4 follows the gradient flow to ``O(h⁴)``; the gap between the curves is what IGR does.
    ``results``: :func:`~igr_tutorial.experiments.rk4_versus_gd`.
    """
    panels = [("train_loss", "training loss E", True), ("test_accuracy", "test accuracy", False),
              ("r_ig", "R_IG = ‖∇E‖²/m", True)]
    styles = {"gd": ("-", "C0", "GD (IGR present)"), "rk4": ("--", "C1", "RK4 (IGR removed)")}
    fig, axes = _figure(3, panel_width=4.0)
    gaps = []
    for method, curves in results["methods"].items():
        ls, color, label = styles.get(method, ("-", "C2", method))
        step = np.asarray(curves["step"], dtype=float)
        for ax, (key, _, _) in zip(axes, panels):
            ax.plot(step, _nan(curves[key]), ls, color=color, label=label)
        if any(v is None for v in curves["train_loss"]):
            gaps.append(method.upper())
    for ax, (key, label, logy) in zip(axes, panels):
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if logy and _spans_decades(np.concatenate([_nan(c[key]) for c in results["methods"].values()])):
            ax.set_yscale("log")
    _note_left_out(axes[0], " and ".join(gaps) or None, prefix="diverged (non-finite values left out)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"GD vs RK4 at the same step h = {_g(results['lr'])} (width {results.get('width')}, "
                 f"m = {results.get('m')})")
    return fig
