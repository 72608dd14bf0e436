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

NAMES = ["rig", "sharpness", "test-accuracy", "robustness", "egr", "rk4"]
PLOTS = {
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
    for experiment in ("learning_rate_sweep", "egr_sweep", "rk4_versus_gd"):
        assert err.count(f"running {experiment}") == 1, err
    assert "[1/1] width 8: 2 seeds × 2 learning rates" in err  # the experiments' progress
    assert "EGR: 2 seeds × 1 values of mu" in err and "RK4: 2 seeds × 2 steps h" in err  # μ = 0 is the GD run
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
    assert len(rig) == 2 * 2  # 2 learning rates × 2 seeds, width 8
    for run in rig:
        assert run["lambda"] == pytest.approx(run["lr"] * run["m"] / 4)
        assert run["r_ig"] > 0 and run["r_ig"] == pytest.approx(run["r_ig_curve"][-1])
    assert all(run["sharpness"] > 0 for run in records["sharpness"]["results"]["runs"])
    assert all(0 <= run["test_accuracy"] <= 1 for run in records["test-accuracy"]["results"]["runs"])
    assert all(len(run["perturbed_accuracy"]) == 2 for run in records["robustness"]["results"]["runs"])
    egr = records["egr"]["results"]
    assert [(r["method"], r["seed"], r["mu"]) for r in egr["runs"]] == [
        (method, s, mu) for method in ("egr", "gd") for s in (0, 1) for mu in (0.0, 0.05)]
    assert all(r["effective_strength"] == pytest.approx(r["mu"] + 0.05 / 4) for r in egr["runs"])
    rk4 = records["rk4"]["results"]
    assert {r["method"] for r in rk4["runs"]} == {"gd", "rk4"} and rk4["lrs"] == [0.05, 0.2]
    assert all(np.isfinite(r["train_loss_curve"]).all() and r["sharpness"] > 0 for r in rk4["runs"])


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
    run["diverged"] = True
    for key in ("r_ig", "sharpness", "train_accuracy", "test_accuracy"):
        if key in run:
            run[key] = None
    if "perturbed_accuracy" in run:
        run["perturbed_accuracy"] = [None] * len(run["perturbed_accuracy"])


@pytest.mark.parametrize("name", ["rig", "sharpness", "test-accuracy", "robustness"])
def test_diverged_runs_are_left_out_and_named(records, name):
    results = copy.deepcopy(records[name]["results"])
    for run in results["runs"]:
        if run["lr"] == 0.2:  # every seed of the larger learning rate diverged
            _diverge(run)
    fig = PLOTS[name](results)
    assert any("left out (diverged)" in t and "h = 0.2" in t for t in _legend_texts(fig))
    lam_diverged = [r["lambda"] for r in results["runs"] if r["diverged"]][0]
    lines = [line for ax in fig.axes for line in ax.lines if not line.get_label().startswith("2/h")]
    if name == "robustness":  # one line per learning rate: only h = 0.05 (λ = 0.05·418/4) is left
        assert [line.get_label() for line in lines if len(line.get_xdata())] == [
            "h = 0.05 (λ = 5.23) (mean of 2 seeds ± 1 s.e.)"]
    else:  # no point at the diverged run's λ
        for line in lines:
            x = np.asarray(line.get_xdata(), float)
            assert np.isfinite(x).all() and not np.any(np.isclose(x, lam_diverged)), line.get_label()


def test_egr_and_rk4_figures_note_divergence(records):
    egr = copy.deepcopy(records["egr"]["results"])
    for run in egr["runs"]:
        if run["method"] == "gd" and run["mu"] == 0.05:  # every seed of that GD partner never got there
            run.update(reached_target=False, steps=None, time=None)
    fig = figures.plot_egr(egr)
    assert any("never reached the target" in t and "GD μ = 0.05" in t for t in _legend_texts(fig))
    assert any("h₀ + 4μ" in t for t in _legend_texts(fig)) and "μ + h₀/4" in fig.axes[0].get_xlabel()
    gd_lines = [line for line in fig.axes[0].lines if line.get_label().startswith("GD")]
    assert [len(line.get_xdata()) for line in gd_lines] == [1]  # μ = 0 only
    rk4 = copy.deepcopy(records["rk4"]["results"])
    for run in rk4["runs"]:
        if run["method"] == "gd" and run["lr"] == 0.2:
            run.update(diverged=True, train_loss=None, test_accuracy=None, r_ig=None, sharpness=None)
    fig = figures.plot_rk4_vs_gd(rk4)
    assert any("diverged" in t and "GD h = 0.2" in t for t in _legend_texts(fig))
    labels = set(_legend_texts(fig))
    assert any(t.startswith("GD (IGR present)") for t in labels) and any(t.startswith("RK4 (IGR removed)") for t in labels)
    assert any("hλ = 2" in t for t in labels) and any("2.785" in t for t in labels)


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_shows_the_seed_mean_with_a_standard_error_band(records, name):
    """Each line is the mean over seeds, each band ±1 standard error (igr_tutorial.stats.mean_se)."""
    fig = PLOTS[name](records[name]["results"])
    bands = [c for ax in fig.axes for c in ax.collections if c.get_paths()]
    assert bands, f"{name}: no error band"
    assert any("mean of 2 seeds ± 1 s.e." in t for t in _legend_texts(fig))
    if name == "test-accuracy":  # check one band against the numbers
        runs = [r for r in records[name]["results"]["runs"] if r["lr"] == 0.05]
        acc = np.array([r["test_accuracy"] for r in runs])
        mean, se = acc.mean(), acc.std(ddof=1) / np.sqrt(len(acc))
        ys = np.concatenate([p.vertices[:, 1] for p in fig.axes[0].collections[0].get_paths()])
        assert np.isclose(ys.min(), mean - se) and np.isclose(ys.max(), max(mean + se, ys.max()))
