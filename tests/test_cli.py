"""`python -m igr_tutorial` and the figures of chapters 6–7 (igr_tutorial.figures).

The command line runs once, as a subprocess, for ``figure all --size tiny``; the figure tests redraw every
figure from the JSON it wrote (which therefore must hold the numbers behind each figure).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.image as mimage  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _repo import ROOT  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from igr_tutorial import cli, figures  # noqa: E402

NAMES = ["curves", "equal-loss", "rig", "sharpness", "test-accuracy", "robustness", "egr", "rk4"]
PLOTS = {
    "curves": figures.plot_training_curves,
    "equal-loss": figures.plot_equal_loss,
    "rig": figures.plot_rig_vs_lambda,
    "sharpness": figures.plot_sharpness_vs_lambda,
    "test-accuracy": figures.plot_test_accuracy_vs_lambda,
    "robustness": figures.plot_robustness,
    "egr": figures.plot_egr,
    "rk4": figures.plot_rk4_vs_gd,
}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``python -m igr_tutorial figure all --size tiny --out DIR``, run once for the whole module."""
    out = tmp_path_factory.mktemp("figures") / "out"
    env = {k: v for k, v in os.environ.items() if k != "IGR_TUTORIAL_SIZE"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "igr_tutorial", "figure", "all", "--size", "tiny", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


@pytest.fixture(scope="module")
def records(cli_run):
    _, out = cli_run
    return {name: json.loads((out / f"{name}.json").read_text()) for name in NAMES}


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


def test_figure_all_writes_every_png_and_json(cli_run, records):
    _, out = cli_run
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.png" for n in NAMES] + [f"{n}.json" for n in NAMES])
    for name in NAMES:
        img = mimage.imread(out / f"{name}.png")
        inches = PLOTS[name](records[name]["results"]).get_size_inches()
        assert img.shape[:2] == (round(inches[1] * 120), round(inches[0] * 120)), name  # dpi 120
        assert np.allclose(img[0, 0, :3], 1.0), f"{name}.png: the background must be opaque white"
        assert img.shape[2] == 3 or np.allclose(img[..., 3], 1.0)


def test_figure_all_runs_each_experiment_once_and_reports_progress(cli_run):
    proc, out = cli_run
    err = proc.stderr
    for experiment in ("learning_rate_sweep", "egr_sweep"):
        assert err.count(f"running {experiment}") == 1, err
    assert "rk4_versus_gd" not in err  # the rk4 figure is drawn from chapter 7's runs, as in the chapter
    assert "[1/1] width 8: 2 seeds × 2 step sizes" in err  # the experiments' progress
    assert "GD: 2 seeds × 2 runs to t = 4" in err and "EGR: 2 seeds × 1 runs" in err and "RK4: 2 seeds × 1 runs" in err
    for name in NAMES:
        assert f"writing {out / name}.png" in err and f"writing {out / name}.json" in err
    assert "size 'tiny' (--size) on cpu" in err
    assert proc.stdout == ""


def test_json_holds_the_numbers_the_size_and_the_device(records):
    import jax

    for name, rec in records.items():
        assert rec["figure"] == name
        assert rec["size"]["name"] == "tiny" and rec["seed"] == 0
        assert rec["backend"] == "cpu" and "cpu" in rec["device"].lower() and rec["device_kind"]
        assert rec["jax_version"] == jax.__version__
        assert rec["wall_time_s"] > 0
        assert rec["data"].startswith("MNIST-1D, generated locally")  # every report names its data
    rig = records["rig"]["results"]["runs"]
    assert len(rig) == 2 * 2  # 2 step sizes × 2 seeds, width 8
    for run in rig:
        assert run["lambda"] == pytest.approx(run["lr"] * run["m"] / 4)
        assert run["r_ig"] > 0 and set(run) == set(cli._SWEEP_COMMON) | {"r_ig"}  # only what the figure shows
    assert all(run["sharpness"] > 0 for run in records["sharpness"]["results"]["runs"])
    assert all(0 <= run["test_accuracy"] <= 1 for run in records["test-accuracy"]["results"]["runs"])
    assert all(len(run["perturbed_accuracy"]) == 2 for run in records["robustness"]["results"]["runs"])
    curves = records["curves"]["results"]
    assert curves["record_time"] == 2.0 and all(len(r["sharpness_curve"]) == 5 for r in curves["runs"])  # t = 0..8
    egr = records["egr"]["results"]
    assert sorted({(r["method"], r["lr"], r["mu"]) for r in egr["runs"]}) == [
        ("egr", 0.125, 0.03125), ("gd", 0.125, 0.0), ("gd", 0.25, 0.0), ("rk4", 0.25, 0.0)]
    assert egr["partners"] == [0.25] and egr["mus"] == [0.03125] and egr["horizon"] == 4.0
    for space in ("params", "logits"):
        d = egr["distances"][space]
        assert set(d) == {"gd_egr", "egr_gd0", "gd_gd0", "gd_rk4", "rk4_rk4", "travel"}
        assert len(d["travel"]) == 2 and all(len(d[k]) == 1 and len(d[k][0]) == 2 for k in d if k != "travel")
    assert records["rk4"]["results"] == egr
    assert all(np.isfinite(r["train_loss_curve"]).all() and r["peak_h_sharpness"] > 0 for r in egr["runs"])


def test_unknown_figure_or_size_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["figure", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "rig" in err and "all" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["figure", "rig", "--size", "huge"])
    assert exc.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_bad_size_in_the_environment_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("IGR_TUTORIAL_SIZE", "huge")
    with pytest.raises(SystemExit) as exc:
        cli.main(["figure", "rig", "--out", str(tmp_path / "never")])
    assert exc.value.code == 1
    assert "size must be one of" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_sizes_lists_every_size_with_its_settings(monkeypatch, capsys):
    monkeypatch.delenv("IGR_TUTORIAL_SIZE", raising=False)
    assert cli.main(["sizes"]) == 0
    text = capsys.readouterr().out
    for name in ("small", "gpu", "paper", "tiny"):
        assert f"\n{name}" in "\n" + text
    assert "small  (default here: JAX backend 'cpu')" in text
    assert "dataset       mnist" in text and "widths        400, 800" in text and "depth         4" in text


def test_help_documents_the_default_size(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "IGR_TUTORIAL_SIZE" in text and "'gpu' (MNIST-1D at 12,000 signals, generated) on a GPU" in text
    with pytest.raises(SystemExit):
        cli.main(["figure", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in NAMES:
        assert name in text
    assert "--size {gpu,paper,small,tiny}" in text and "IGR_TUTORIAL_SIZE" in text


# --------------------------------------------------------------------------------------------------
# The figures, redrawn from the numbers the command line saved
# --------------------------------------------------------------------------------------------------


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_is_white_labelled_and_has_a_legend(records, name):
    before = plt.get_fignums()
    fig = PLOTS[name](records[name]["results"])
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before  # made without pyplot: not shown twice in a notebook
    assert mcolors.to_rgba(fig.get_facecolor()) == (1.0, 1.0, 1.0, 1.0)
    panels = [ax for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel() or ax.lines]
    assert panels
    for ax in panels:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: unlabelled axes"
        assert mcolors.to_rgba(ax.get_facecolor()) == (1.0, 1.0, 1.0, 1.0)
        assert any(np.isfinite(np.asarray(line.get_ydata(), float)).any() for line in ax.lines)
    assert _legend_texts(fig)
    fig.canvas.draw()  # renders without error


def test_lambda_figures_use_a_log_x_axis_and_the_sharpness_bound(records):
    for name in ("rig", "sharpness", "test-accuracy"):
        assert PLOTS[name](records[name]["results"]).axes[0].get_xscale() == "log"
    results = records["sharpness"]["results"]
    ax = figures.plot_sharpness_vs_lambda(results).axes[0]
    (bound,) = [line for line in ax.lines if line.get_label().startswith("2/h")]
    lrs = np.array(sorted({r["lr"] for r in results["runs"]}))
    m = results["runs"][0]["m"]
    np.testing.assert_allclose(bound.get_xdata(), lrs * m / 4)
    np.testing.assert_allclose(bound.get_ydata(), 2 / lrs)


def _diverge(run: dict) -> None:
    run["diverged"], run["reached_target"], run["stop_time"] = True, False, None
    for key in ("r_ig", "sharpness", "trace", "train_accuracy", "test_accuracy"):
        if key in run:
            run[key] = None
    if "perturbed_accuracy" in run:
        run["perturbed_accuracy"] = [None] * len(run["perturbed_accuracy"])


@pytest.mark.parametrize("name", ["equal-loss", "rig", "sharpness", "test-accuracy", "robustness"])
def test_diverged_runs_are_left_out_and_named(records, name):
    results = copy.deepcopy(records[name]["results"])
    for run in results["runs"]:
        if run["lr"] == 0.5:  # every seed of the larger step size diverged
            _diverge(run)
    fig = PLOTS[name](results)
    assert any("left out (diverged)" in t and "h = 0.5" in t for t in _legend_texts(fig))
    lam_diverged = [r["lambda"] for r in results["runs"] if r["diverged"]][0]
    lines = [line for ax in fig.axes for line in ax.lines if not line.get_label().startswith("2/h")]
    if name == "robustness":  # one line per step size: only h = 0.25 is left
        assert [line.get_label() for line in lines if len(line.get_xdata())] == [
            "h = 0.25 (mean of 2 seeds, 95 % interval)"]
    else:  # no point at the diverged run's λ (or h)
        bad = 0.5 if name == "equal-loss" else lam_diverged
        for line in lines:
            x = np.asarray(line.get_xdata(), float)
            assert np.isfinite(x).all() and not np.any(np.isclose(x, bad)), line.get_label()


def test_the_curves_stop_at_the_first_seed_to_reach_the_target(records):
    results = copy.deepcopy(records["curves"]["results"])
    for run in results["runs"]:
        if run["lr"] == 0.25:
            run["stop_time"] = 4.0 if run["seed"] == 0 else 6.0  # the first seed to stop: at record 2 of 5
    fig = figures.plot_training_curves(results)
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_label() == "h = 0.25"]
    np.testing.assert_allclose(line.get_xdata(), [0.0, 2.0, 4.0])
    (lam,) = [ln for ln in fig.axes[1].lines if ln.get_label() == "h = 0.25"]
    curves = [r["sharpness_curve"][:3] for r in results["runs"] if r["lr"] == 0.25]
    np.testing.assert_allclose(lam.get_ydata(), 0.25 * np.mean(curves, axis=0), rtol=1e-6)  # h·λ_max
    labels = set(_legend_texts(fig))
    assert {"h·λ_max = 1", "h·λ_max = 2 (GD's stability limit)"} <= labels and any(t.startswith("E* = ") for t in labels)


def test_egr_and_rk4_figures_say_what_was_run(records):
    egr = copy.deepcopy(records["egr"]["results"])
    fig = figures.plot_egr(egr)
    labels = set(_legend_texts(fig))
    assert "GD at h = 0.25 vs EGR at h₀ = 0.125, μ = 0.0312 (one point per seed)" in labels
    assert any(t.startswith("ratio 1: no better than GD at h₀") for t in labels)
    assert "GD's stability limit h·λ_max = 2" in labels
    d = egr["distances"]["params"]
    ratio = np.array(d["gd_egr"][0]) / np.array(d["egr_gd0"][0])
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), ratio)
    peak = [r["peak_h_sharpness"] for r in egr["runs"] if r["method"] == "gd" and r["lr"] == 0.25]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), peak)
    fig = figures.plot_rk4_vs_gd(records["rk4"]["results"])
    labels = set(_legend_texts(fig))
    assert {"GD at h = 0.25 (mean of 2 seeds)", "RK4 at h = 0.25 (mean of 2 seeds)", "GD's stability limit 2",
            "RK4's stability limit 2.785"} <= labels
    assert "paired by seed" in fig.axes[1].get_ylabel()


@pytest.mark.parametrize("name", ["equal-loss", "rig", "sharpness", "test-accuracy", "robustness"])
def test_every_sweep_figure_shows_the_seed_mean_with_its_95_percent_interval(records, name):
    """Each line is the mean over seeds, each band its 95 % Student-t interval (igr_tutorial.stats)."""
    from igr_tutorial.stats import t_quantile

    fig = PLOTS[name](records[name]["results"])
    bands = [c for ax in fig.axes for c in ax.collections if c.get_paths()]
    assert bands, f"{name}: no band"
    assert any("mean of 2 seeds, 95 % interval" in t for t in _legend_texts(fig))
    if name == "test-accuracy":  # check one band against the numbers
        runs = [r for r in records[name]["results"]["runs"] if r["lr"] == 0.25]
        acc = np.array([r["test_accuracy"] for r in runs])
        mean, half = acc.mean(), t_quantile(1) * acc.std(ddof=1) / np.sqrt(len(acc))
        ys = np.concatenate([p.vertices[:, 1] for p in fig.axes[0].collections[0].get_paths()])
        assert np.isclose(ys.min(), min(mean - half, ys.min())) and np.isclose(ys.max(), max(mean + half, ys.max()))
        assert ys.min() <= mean - half + 1e-12 and ys.max() >= mean + half - 1e-12


def test_the_command_line_uses_the_chapters_own_settings():
    """Chapters 6 and 7 run their experiments exactly as `figure all` does (the size, nothing overridden), and
    every experiment figure they show is one the command line writes from the same experiment."""
    import re

    from _repo import BOOK, cell_source, load_notebook

    drawn = {}
    for name, calls in (("06_deep_networks", {"learning_rate_sweep"}), ("07_explicit_regularization", {"egr_sweep"})):
        code = "\n".join(cell_source(c) for c in load_notebook(BOOK / f"{name}.ipynb")["cells"] if c["cell_type"] == "code")
        experiments = re.findall(r"\b(learning_rate_sweep|egr_sweep|rk4_versus_gd)\((.*?)\)", code)
        assert {e for e, _ in experiments} == calls, name
        assert all(args == "size, progress=None" for _, args in experiments), experiments
        for fn in re.findall(r"\b(plot_\w+)\(", code):
            drawn[fn] = next(iter(calls))
    assert drawn, "the chapters draw their figures with igr_tutorial.figures"
    cli_figures = {plot: experiment for experiment, plot, _ in cli.FIGURES.values()}
    for fn, experiment in drawn.items():
        assert cli_figures.get(fn) == experiment, f"{fn} is not written by `figure all` from {experiment}"
