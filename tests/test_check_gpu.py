"""`python -m igr_tutorial check-gpu` on a CPU: the command, its size selection and its report.

The test suite never needs a GPU. Here the command runs two small stand-in chapters (one passes, one fails an
assertion, as a chapter's claim would) and times the paper step on tiny shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _repo import ROOT


def _notebook(*cells: str) -> str:
    return json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                                  "source": c} for c in cells] + [{"cell_type": "markdown", "metadata": {},
                                                                   "source": "text"}],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    book = tmp_path_factory.mktemp("book")
    (book / "01_passes.ipynb").write_text(_notebook(
        "%matplotlib inline\nimport os\nfrom igr_tutorial import experiments as ex",
        "size = ex.select_size()\nassert size.name == os.environ['IGR_TUTORIAL_SIZE'] == 'tiny'\nprint('ok')"))
    (book / "02_fails.ipynb").write_text(_notebook("assert 1 + 1 == 3, 'the claim does not hold at this size'"))
    (book / "notes.ipynb").write_text(_notebook("raise SystemExit(3)"))  # not a chapter: not run
    out = book / "report" / "gpu_check.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env.pop("IGR_TUTORIAL_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "igr_tutorial", "check-gpu", "--book", str(book), "--out", str(out),
                           "--size", "tiny", "--jobs", "2", "--paper-width", "8", "--paper-train", "64", "--paper-steps", "2"],
                          capture_output=True, text=True, env=env, cwd=book)
    return proc, json.loads(out.read_text()), book


def test_the_command_fails_when_a_chapter_fails_and_says_which(report):
    proc, rep, _ = report
    assert proc.returncode == 1, proc.stderr
    assert [c["chapter"] for c in rep["chapters"]] == ["01_passes", "02_fails"]
    passes, fails = rep["chapters"]
    assert passes["passed"] and passes["error"] is None and passes["wall_s"] > 0
    assert not fails["passed"] and "the claim does not hold at this size" in fails["error"]
    assert rep["passed"] is False
    assert "02_fails: FAILED" in proc.stderr
    assert rep["jobs"] == 2 and 0 < rep["chapters_wall_s"]  # run side by side, reported in chapter order


def test_the_report_names_device_precision_size_data_and_the_paper_step(report):
    _, rep, book = report
    assert rep["backend"] == "cpu" and rep["device"] and rep["device_count"] >= 1 and rep["jax_version"]
    assert rep["size"] == "tiny" and rep["data"].startswith("MNIST-1D, generated")
    assert "default" in rep["precision"]["default_matmul_precision"] or rep["precision"]["default_matmul_precision"]
    step = rep["paper_step"]
    assert step["width"] == 8 and step["depth"] == 4 and step["num_train"] == 64 and step["learning_rates"] == 9
    assert step["step_s"] > 0 and step["tflops"] > 0 and step["sweep_estimate_s"] == pytest.approx(step["step_s"] * 3e4)
    assert step["data"].startswith(("synthetic of MNIST's shape", "mnist (cached"))
    assert step["peak_tflops"] is None and step["fraction_of_peak"] is None  # no peak for a CPU
    assert not list(book.glob(".check_gpu_*"))  # the scripts are cleaned up


def test_chapter_script_keeps_code_and_comments_out_magics(tmp_path):
    from tools.check_gpu import chapter_script

    nb = tmp_path / "01_x.ipynb"
    nb.write_text(_notebook("%matplotlib inline\nx = 1", "!pip install foo\nprint(x)"))
    script = chapter_script(nb)
    assert "# %matplotlib inline" in script and "# !pip install foo" in script
    compile(script, "script", "exec")
    assert "x = 1" in script and "print(x)" in script and "text" not in script


def test_default_size_on_a_cpu_is_small_and_on_a_gpu_is_gpu(monkeypatch):
    from igr_tutorial import experiments as ex

    monkeypatch.delenv("IGR_TUTORIAL_SIZE", raising=False)
    assert ex.select_size().name == "small"
    monkeypatch.setattr(ex.jax, "default_backend", lambda: "gpu")
    assert ex.select_size().name == "gpu"


def test_no_chapters_is_a_clear_error(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "igr_tutorial", "check-gpu", "--book", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "no chapter notebooks" in proc.stderr and "--book" in proc.stderr


def test_jobs_must_be_positive(tmp_path):
    from tools.check_gpu import check_gpu

    with pytest.raises(ValueError, match="jobs must be a positive number"):
        check_gpu(tmp_path, tmp_path / "r.json", jobs=0)


def test_outside_a_clone_the_command_says_to_run_it_from_one(tmp_path):
    """The wheel holds no check-gpu (it runs the book's notebooks): from a folder that is not a clone, with only the
    package importable, the command exits 2 and says where to run it."""
    only_the_package = tmp_path / "site"
    only_the_package.mkdir()
    (only_the_package / "igr_tutorial").symlink_to(ROOT / "igr_tutorial")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(only_the_package)}
    proc = subprocess.run([sys.executable, "-m", "igr_tutorial", "check-gpu", "--book", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "run it from a clone of the repository" in proc.stderr
