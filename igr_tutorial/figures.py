"""Figures for the deep-network chapters (6–7), drawn from the JSON-ready results of
:mod:`igr_tutorial.experiments`.

Every function takes the dict returned by one experiment and returns a :class:`matplotlib.figure.Figure`
(white background, labelled axes, a legend). The figures are made without ``pyplot``, so nothing is shown
twice in a notebook: display one by leaving it as a cell's last expression, save it with
``fig.savefig(path)``. Runs that diverged (their numbers are ``None``) are left out and named in the legend.
Lines are means over seeds; bands and bars are the 95 % Student-t interval of that mean
(:mod:`igr_tutorial.stats`).

From :func:`~igr_tutorial.experiments.learning_rate_sweep` (chapter 6):

* :func:`plot_training_curves`: training loss and the tracked ``h·λ_max`` against gradient-flow time ``t``;
* :func:`plot_equal_loss`: test accuracy, ``R_IG``, ``λ_max``, ``tr H`` and the accuracy lost to noise at the common
  training loss, against ``h``;
* :func:`plot_rig_vs_lambda`, :func:`plot_sharpness_vs_lambda`, :func:`plot_test_accuracy_vs_lambda`: one
  prediction each at the common training loss against ``λ = h·m/4`` (the paper's axis);
* :func:`plot_robustness`: accuracy under parameter noise relative to the weight scale.

From :func:`~igr_tutorial.experiments.egr_sweep` (chapter 7):

* :func:`plot_egr`: how closely EGR at a small step reproduces GD at a larger one, against GD's stability;
* :func:`plot_rk4_vs_gd`: GD against RK4 at the same steps (also from
  :func:`~igr_tutorial.experiments.rk4_versus_gd`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure

from ._records import seed_grid
from .stats import mean_se, t_quantile

__all__ = [
    "plot_egr",
    "plot_equal_loss",
    "plot_rig_vs_lambda",
    "plot_rk4_vs_gd",
    "plot_robustness",
    "plot_sharpness_vs_lambda",
    "plot_test_accuracy_vs_lambda",
    "plot_training_curves",
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


def _interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per column of ``values`` (seeds × grid): the mean over finite seeds and the half-width of its 95 %
    Student-t interval (NaN with fewer than two seeds), and the number of seeds."""
    mean, se = mean_se(values, axis=0)
    n = np.isfinite(values).sum(axis=0)
    half = np.array([t_quantile(k - 1) * e if k > 1 and np.isfinite(e) else np.nan for k, e in zip(n, se)])
    return mean, half, int(values.shape[0])


def _band(ax, x, values: np.ndarray, *, color, label: str, style: str = "o-", **kw) -> None:
    """The mean over seeds (rows of ``values``) as a line, and its 95 % Student-t interval as a shaded band."""
    mean, half, n = _interval(values)
    ok = np.isfinite(mean)
    x = np.asarray(x, dtype=float)
    ax.plot(x[ok], mean[ok], style, color=color, label=f"{label} (mean of {n} seeds, 95 % interval)" if n > 1 else label,
            **kw)
    band = ok & np.isfinite(half)
    if band.any():
        ax.fill_between(x[band], (mean - half)[band], (mean + half)[band], color=color, alpha=0.2, lw=0)


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
    """One line per width of the seed-mean of ``key`` vs ``λ``, with its 95 % interval; returns the lrs."""
    diverged, lrs_by_width, all_values = {}, {}, []
    for i, (width, runs) in enumerate(_by_width(results).items()):
        lrs, values, div = seed_grid(runs, key)
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


def _target(results: dict) -> str:
    return _g(results.get("target_loss", results["size"].get("target_loss", float("nan"))))


# --------------------------------------------------------------------------------------------------
# Chapter 6: the step-size sweep (Predictions 2.1–2.4), at equal time and at equal loss
# --------------------------------------------------------------------------------------------------


def _until_stop(runs: Sequence[dict], key: str, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Times and the seeds' ``run[key]`` curves up to the earliest stop among them (afterwards a stopped run's
    records only repeat its last one), as ``(t, values (seeds, records))``."""
    curves = np.array([_nan(r[key]) for r in runs])
    stops = [r["stop_time"] for r in runs if r.get("stop_time") is not None]
    last = int(round(min(stops) / dt)) if stops else curves.shape[1] - 1
    t = dt * np.arange(curves.shape[1])
    return t[: last + 1], curves[:, : last + 1]


def plot_training_curves(results: dict) -> Figure:
    """Training loss (top) and the tracked ``h·λ_max`` (bottom) against gradient-flow time ``t = steps·h``, one
    column per width and one line per step size ``h`` (mean over seeds, drawn until the first seed stops at the
    common training loss ``E*``, dashed).

    The ``h·λ_max`` panel says where each step stays in the range of backward error analysis (``h·λ_max`` below
    about 1 along the whole run), where it is stable but beyond it (below 2), and where it goes past GD's
    stability limit 2 (edge of stability). ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    import matplotlib

    groups = _by_width(results)
    dt = float(results["record_time"])
    fig = Figure(figsize=(5.0 * len(groups), 6.6), facecolor="white", layout="constrained")
    axes = fig.subplots(2, len(groups), squeeze=False, sharex="col")
    cmap = matplotlib.colormaps["viridis"]
    for col, (width, runs) in enumerate(groups.items()):
        lrs = sorted({r["lr"] for r in runs})
        top, bottom = axes[0, col], axes[1, col]
        for j, lr in enumerate(lrs):
            group = [r for r in runs if r["lr"] == lr and not r["diverged"]]
            if not group:
                continue
            color = cmap(0.9 * j / max(1, len(lrs) - 1))
            t, loss = _until_stop(group, "train_loss_curve", dt)
            _, lam = _until_stop(group, "sharpness_curve", dt)
            n = len(group)
            top.plot(t, np.nanmean(loss, axis=0), color=color, label=f"h = {_g(lr)}")
            bottom.plot(t, lr * np.nanmean(lam, axis=0), color=color, label=f"h = {_g(lr)}")
        top.axhline(float(results["target_loss"]), color="k", ls="--", lw=1, label=f"E* = {_target(results)}")
        top.set_yscale("log")
        top.set(title=f"width {width} (m = {runs[0]['m']:,})", xlabel="gradient-flow time t = steps·h",
                ylabel="training loss E (mean of seeds)")
        for level, text in ((1.0, "h·λ_max = 1"), (2.0, "h·λ_max = 2 (GD's stability limit)")):
            bottom.axhline(level, color="k", ls=":" if level == 1 else "--", lw=1, label=text)
        bottom.set(xlabel="gradient-flow time t = steps·h", ylabel="h·λ_max (tracked, mean of seeds)")
        for ax in (top, bottom):
            ax.set_facecolor("white")
            ax.grid(True, alpha=0.3)
        top.legend(fontsize=7, title=f"mean of {n} seeds", title_fontsize=7)
        bottom.legend(fontsize=7)
    fig.suptitle("Training at every step size h, against the time of the gradient flow")
    return fig


_EQUAL_LOSS_PANELS = [
    ("test_accuracy", "test accuracy", False),
    ("r_ig", "R_IG = ‖∇E‖²/m", True),
    ("sharpness", "top Hessian eigenvalue λ_max", True),
    ("trace", "Hessian trace tr H", True),
    ("noise_drop", "test accuracy lost to noise", False),
]


def plot_equal_loss(results: dict) -> Figure:
    """Every run at the common training loss ``E*``: test accuracy, ``R_IG``, ``λ_max`` (with ``2/h`` dotted),
    ``tr H`` and the test accuracy lost to parameter noise ``σ = r·RMS weight`` (the largest ``r``), against the
    step size ``h``; one line per width (mean over seeds with its 95 % interval).

    Predictions 2.1–2.4 say that a larger ``h`` gives a smaller ``R_IG``, a flatter solution, a higher test
    accuracy and a smaller loss under noise. ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    ratios = results["size"]["noise_ratios"]
    fig, axes = _figure(len(_EQUAL_LOSS_PANELS), panel_width=3.3, height=3.6)
    diverged = {}
    for i, (width, runs) in enumerate(_by_width(results).items()):
        runs = [dict(r, noise_drop=None if r.get("test_accuracy") is None or r["perturbed_accuracy"][-1] is None
                     else r["test_accuracy"] - r["perturbed_accuracy"][-1]) for r in runs]
        for ax, (key, ylabel, logy) in zip(axes, _EQUAL_LOSS_PANELS):
            lrs, values, div = seed_grid(runs, key)
            _band(ax, lrs, values, color=_color(i), label=f"width {width}")
            if key == "sharpness" and i == 0:
                ax.plot(lrs, 2 / lrs, "k:", lw=1, label="2/h")
            ax.set_xscale("log", base=2)
            if logy and _spans_decades(values) or key in ("sharpness",):
                ax.set_yscale("log")
            ax.set_xlabel("step size h")
            ax.set_ylabel(ylabel if key != "noise_drop" else f"{ylabel}\n(σ = {_g(ratios[-1])} × RMS weight)")
            diverged[width] = div
    _note_left_out(axes[0], _diverged_text(diverged))
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"At the common training loss E* = {_target(results)}: the solutions that each step size finds")
    return fig


def plot_rig_vs_lambda(results: dict) -> Figure:
    """Prediction 2.1: ``R_IG = ‖∇E‖²/m`` at the common training loss ``E*`` against ``λ = h·m/4``, one line per
    width (log–log; the mean over seeds with its 95 % interval).

    IGR predicts that ``R_IG`` falls as ``λ`` grows.
    ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    fig, (ax,) = _figure()
    _lambda_panel(ax, results, "r_ig", f"R_IG = ‖∇E‖²/m at E* = {_target(results)}")
    ax.set_title("Prediction 2.1: R_IG vs λ at equal training loss")
    ax.legend(fontsize=8)
    return fig


def plot_sharpness_vs_lambda(results: dict) -> Figure:
    """Prediction 2.2: the top Hessian eigenvalue ``λ_max`` (sharpness) at the common training loss ``E*``
    against ``λ = h·m/4``, one line per width, with the stability bound ``2/h`` dashed in the same colour.

    GD with step ``h`` cannot settle where ``λ_max > 2/h``; IGR predicts flatter (smaller ``λ_max``) solutions
    for larger ``λ``. ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    fig, (ax,) = _figure()
    lrs_by_width = _lambda_panel(ax, results, "sharpness", f"λ_max at E* = {_target(results)}")
    for i, (width, runs) in enumerate(_by_width(results).items()):
        lrs = lrs_by_width[width]
        m = runs[0]["m"]
        ax.plot(lrs * m / 4, 2 / lrs, "--", color=_color(i), alpha=0.7, label=f"2/h (width {width})")
    ax.set_title("Prediction 2.2: sharpness vs λ at equal training loss, and 2/h")
    ax.legend(fontsize=8)
    return fig


def plot_test_accuracy_vs_lambda(results: dict) -> Figure:
    """Prediction 2.3: test accuracy at the common training loss ``E*`` (where every run fits its training data)
    against ``λ = h·m/4``, one colour per width (mean over seeds with its 95 % interval).

    IGR predicts that test accuracy rises with ``λ``.
    ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    fig, (ax,) = _figure()
    _lambda_panel(ax, results, "test_accuracy", f"test accuracy at E* = {_target(results)}", logy=False)
    ax.set_title("Prediction 2.3: test accuracy vs λ at equal training loss")
    ax.legend(fontsize=8)
    return fig


def plot_robustness(results: dict) -> Figure:
    """Prediction 2.4: test accuracy of ``θ + σ·ε`` (``ε ~ N(0, I)``, averaged over noise draws) against the
    noise relative to the weight scale, ``σ/RMS weight`` (0: no noise), at the common training loss; one panel
    per width, one line per step size ``h`` (mean over seeds with its 95 % interval).

    Relative noise does not favour networks with larger weights (a fixed ``σ`` is a smaller perturbation of
    them). IGR predicts that networks trained with larger ``h`` (flatter minima) lose less accuracy.
    ``results``: :func:`~igr_tutorial.experiments.learning_rate_sweep`.
    """
    ratios = np.concatenate([[0.0], np.asarray(results["size"]["noise_ratios"], dtype=float)])
    groups = _by_width(results)
    fig, axes = _figure(len(groups), panel_width=4.4)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    for ax, (width, runs) in zip(axes, groups.items()):
        lrs = sorted({r["lr"] for r in runs})
        diverged = []
        for j, lr in enumerate(lrs):
            group = [r for r in runs if r["lr"] == lr]
            curves = [_nan([r["test_accuracy"], *r["perturbed_accuracy"]]) for r in group if not r["diverged"]]
            if len(curves) < len(group):
                diverged.append(lr)
            if not curves:
                continue
            color = cmap(j / max(1, len(lrs) - 1) * 0.9)
            _band(ax, ratios, np.array(curves), color=color, label=f"h = {_g(lr)}")
        ax.set_xlabel("parameter noise σ / RMS weight")
        ax.set_ylabel("test accuracy under noise")
        ax.set_title(f"width {width} (m = {runs[0]['m']:,})")
        _note_left_out(ax, ", ".join(f"h = {_g(h)}" for h in diverged) or None)
        ax.legend(fontsize=7)
    fig.suptitle(f"Prediction 2.4: robustness to parameter noise at E* = {_target(results)}")
    return fig


# --------------------------------------------------------------------------------------------------
# Chapter 7: explicit regularization and RK4, at equal time
# --------------------------------------------------------------------------------------------------


def _pairs(results: dict, space: str):
    """Per partner ``h``: the per-seed ratios ``|GD_h − EGR_μ| / |EGR_μ − GD_h₀|`` in ``space`` and GD's peak
    ``h·λ_max`` along its run."""
    d = results["distances"][space]
    peak = {(r["seed"], r["lr"]): r["peak_h_sharpness"] for r in results["runs"] if r["method"] == "gd"}
    out = []
    for i, h in enumerate(results["partners"]):
        ratio = np.asarray(d["gd_egr"][i], dtype=float) / np.asarray(d["egr_gd0"][i], dtype=float)
        hl = np.array([peak.get((s, h)) or np.nan for s in range(len(ratio))], dtype=float)
        out.append((h, ratio, hl))
    return out


def plot_egr(results: dict) -> Figure:
    """Does EGR at a small step reproduce GD at a larger one? Left: for every seed and partner step ``h``, the
    distance between GD at ``h`` and EGR at ``h₀`` with ``μ = (h − h₀)/4``, relative to EGR's own effect (its
    distance to GD at ``h₀``), in parameter space, against the largest ``h·λ_max`` along GD's run: small while GD
    stays below its stability limit 2. Right: the distances at each partner relative to the distance travelled
    from the initialization, in parameters and in test-set logits (means over seeds with 95 % intervals).
    ``results``: :func:`~igr_tutorial.experiments.egr_sweep`.
    """
    fig, (ax0, ax1) = _figure(2, panel_width=5.4, height=4.2)
    h0 = results["lr"]
    for i, (h, ratio, hl) in enumerate(_pairs(results, "params")):
        ax0.plot(hl, ratio, "o^sd"[i % 4], color=_color(i), ls="none",
                 label=f"GD at h = {_g(h)} vs EGR at h₀ = {_g(h0)}, μ = {_g((h - h0) / 4)} (one point per seed)")
    ax0.axhline(1.0, color="k", lw=1, ls="--", label="ratio 1: no better than GD at h₀ (no regularizer)")
    ax0.axvline(2.0, color="C3", lw=1, ls=":", label="GD's stability limit h·λ_max = 2")
    ax0.set_yscale("log")
    ax0.set(xlabel="largest h·λ_max along GD's run", ylabel="|GD_h − EGR_μ| / |EGR_μ − GD_h₀| (parameters)")
    ax0.legend(fontsize=7)
    keys = [("egr_gd0", "EGR's effect |EGR_μ − GD_h₀|"), ("gd_gd0", "|GD_h − GD_h₀|"),
            ("gd_egr", "mismatch |GD_h − EGR_μ|"), ("gd_rk4", "IGR: |GD_h − RK4_h|")]
    partners = results["partners"]
    stable = np.array([hl < 2 for _, _, hl in _pairs(results, "params")])  # (partners, seeds)
    x = np.arange(len(partners))
    for space, marker, shift in (("params", "o", -0.12), ("logits", "s", 0.12)):
        d = results["distances"][space]
        travel = np.asarray(d["travel"], dtype=float)
        for k, (key, label) in enumerate(keys):
            rel = np.array([np.asarray(d[key][i], dtype=float) / travel for i in range(len(partners))])
            mean, half, n = _interval(np.where(stable, rel, np.nan).T)
            ax1.errorbar(x + shift + 0.05 * (k - 1.5), mean, yerr=half, fmt=marker, color=_color(k), capsize=2,
                         label=f"{label}, {'parameters' if space == 'params' else 'test logits'}")
    ax1.set_yscale("log")
    ax1.set_xticks(x, [f"h = {_g(h)}\n({int(st.sum())} of {st.size} seeds stable)" for h, st in zip(partners, stable)])
    ax1.set(xlabel="GD's step h (EGR's partner); seeds where GD stayed below h·λ_max = 2",
            ylabel="distance / distance travelled (mean, 95 % interval)")
    ax1.legend(fontsize=6, ncol=1)
    fig.suptitle(f"EGR at h₀ = {_g(h0)} against GD at h = h₀ + 4μ, all at t = {_g(results['horizon'])} "
                 f"(width {results.get('width')}, m = {results.get('m'):,})")
    return fig


def plot_rk4_vs_gd(results: dict) -> Figure:
    """GD (implicit regularization present) against RK4 (the gradient flow to ``O(h⁴)``: implicit regularization
    removed) at the same steps ``h`` and the same flow time from the same initializations. Left: the tracked
    ``h·λ_max`` of both along the runs, with GD's stability limit 2 and RK4's 2.785. Right: the relative difference
    (GD − RK4)/RK4 of the training loss, ``R_IG`` and the largest ``λ_max`` along the run, per ``h`` (mean over
    seeds with 95 % intervals). ``results``: :func:`~igr_tutorial.experiments.egr_sweep` or
    :func:`~igr_tutorial.experiments.rk4_versus_gd`.
    """
    fig, (ax0, ax1) = _figure(2, panel_width=5.2, height=4.0)
    runs = results["runs"]
    lrs = sorted({r["lr"] for r in runs if r["method"] == "rk4"})
    horizon = float(results["horizon"])
    for j, h in enumerate(lrs):
        for method, ls in (("gd", "-"), ("rk4", "--")):
            group = [r for r in runs if r["method"] == method and r["lr"] == h and not r["diverged"]]
            curves = np.array([_nan(r["sharpness_curve"]) for r in group])
            t = np.linspace(0, horizon, curves.shape[1])
            ax0.plot(t, h * np.nanmean(curves, axis=0), ls, color=_color(j),
                     label=f"{'GD' if method == 'gd' else 'RK4'} at h = {_g(h)} (mean of {len(group)} seeds)")
    ax0.axhline(2.0, color="k", lw=1, ls=":", label="GD's stability limit 2")
    ax0.axhline(2.785, color="k", lw=1, ls="-.", label="RK4's stability limit 2.785")
    ax0.set(xlabel="gradient-flow time t = steps·h", ylabel="h·λ_max (tracked)")
    ax0.set_ylim(0, 3.2)   # both stability limits in view
    ax0.legend(fontsize=7, loc="lower right")
    keys = [("train_loss", "training loss"), ("r_ig", "R_IG"), ("peak_sharpness", "largest λ_max along the run")]
    x = np.arange(len(lrs))
    for k, (key, label) in enumerate(keys):
        rel = []
        for h in lrs:
            val = {m: {r["seed"]: r[key] for r in runs if r["method"] == m and r["lr"] == h and r.get(key) is not None}
                   for m in ("gd", "rk4")}
            seeds = sorted(set(val["gd"]) & set(val["rk4"]))
            rel.append([(val["gd"][s] - val["rk4"][s]) / val["rk4"][s] for s in seeds])
        mean, half, _ = _interval(np.array(rel).T)
        ax1.errorbar(x + 0.1 * (k - 1), mean, yerr=half, fmt="o", color=_color(k), capsize=3, label=label)
    ax1.axhline(0.0, color="k", lw=1)
    ax1.set_xticks(x, [f"h = {_g(h)}" for h in lrs])
    ax1.set(xlabel="step h of both methods", ylabel="(GD − RK4)/RK4 at t, paired by seed")
    ax1.legend(fontsize=7)
    fig.suptitle(f"GD at step h against RK4 at step h, both to t = {_g(horizon)} (width {results.get('width')})")
    return fig
