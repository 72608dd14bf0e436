"""Every chapter runs in a fresh, Colab-like environment from the built wheel, and matches its stored outputs.

The package is built into a wheel and installed, with its dependencies pinned to requirements.txt, into a new
virtual environment that holds nothing of the source tree; the chapters are copied out of the repository and
run there under nbval (`--nbval`: stored text outputs are compared with a fresh run), pinned to one CPU core.
Their first cell finds the package installed and does nothing, exactly as in Colab after the install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv

import pytest

from _repo import ROOT, chapter_notebooks, project_version

TOOLS = ["pytest", "nbval", "ipykernel", "nbclient"]  # what runs the notebooks; the rest comes with the wheel


def run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{(proc.stdout + proc.stderr)[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colab")
    run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist"])
    wheels = list((tmp / "dist").glob("igr_tutorial-*.whl"))
    assert len(wheels) == 1 and f"-{project_version()}-" in wheels[0].name
    venv.EnvBuilder(with_pip=True).create(tmp / "venv")
    py = tmp / "venv" / "bin" / "python"
    pins = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith(("#", "-e"))]
    (tmp / "constraints.txt").write_text("\n".join(pins) + "\n")
    run([py, "-m", "pip", "install", "-q", "-c", tmp / "constraints.txt", wheels[0], *TOOLS])
    book = tmp / "book"
    book.mkdir()
    for nb in chapter_notebooks():
        shutil.copy2(nb, book / nb.name)
    return tmp, py, book


def test_the_wheel_is_installed_not_the_source_tree(colab):
    tmp, py, book = colab
    out = run([py, "-c", "import igr_tutorial; print(igr_tutorial.__file__, igr_tutorial.__version__)"], cwd=book).stdout
    path, version = out.split()
    assert str(ROOT) not in path and "site-packages" in path
    assert version == project_version()  # the version every chapter's setup cell pins (test_chapters.py)


def test_the_wheel_only_sets_floors_so_colab_keeps_its_own_versions(colab):
    """Colab ships jax, numpy and matplotlib; installing the book's package must not downgrade them. Every
    dependency in the wheel's metadata is a lower bound (`>=`), never a pin or a ceiling."""
    import zipfile

    tmp, _, _ = colab
    (wheel,) = (tmp / "dist").glob("igr_tutorial-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Dist:")]
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requires}
    assert {"jax", "numpy", "matplotlib"} <= names, requires
    for req in requires:
        spec = req.split(";")[0]
        assert re.fullmatch(r"[A-Za-z0-9_.-]+>=[0-9][0-9A-Za-z.]*", spec.replace(" ", "")), (
            f"{req!r}: dependencies must be floors only (name>=version), so Colab's newer versions stay"
        )


def test_every_module_of_the_wheel_imports_with_only_its_declared_dependencies(colab):
    """The wheel holds what readers import: every module loads in an environment that has only the wheel's
    dependencies (no Sphinx, no docutils, no yaml, no jupyter-book), as in Colab."""
    tmp, py, book = colab
    code = ("import importlib, pkgutil, igr_tutorial\n"
            "names = [m.name for m in pkgutil.iter_modules(igr_tutorial.__path__) if m.name != '__main__']\n"
            "for n in names: importlib.import_module('igr_tutorial.' + n)\n"
            "import importlib.util as u\n"
            "print(' '.join(sorted(names)), all(u.find_spec(x) is None for x in ('sphinx', 'docutils', 'yaml')))")
    out = run([py, "-c", code], cwd=book).stdout.split()
    modules, clean = out[:-1], out[-1]
    assert clean == "True", "the Colab-like environment has Sphinx, docutils or yaml: the test would prove nothing"
    assert not {"assets", "sphinx_status", "student"} & set(modules), modules  # tooling lives outside the wheel
    assert "curvature" in modules and "experiments" in modules


def _one_core() -> None:
    """Pin the process (and the kernels it starts) to one CPU, like ``taskset -c 0``: XLA then runs on one thread."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def test_every_chapter_runs_from_the_wheel_and_matches_its_stored_outputs(colab):
    """The stored outputs come from a default, multi-threaded execution; this run is pinned to one core, where
    XLA reduces in another order. Passing proves the printed digits do not depend on the thread count."""
    tmp, py, book = colab
    (tmp / "pytest.ini").write_text("[pytest]\n")  # keep the repository's pytest options (xdist) out
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ""}
    proc = subprocess.run(
        [str(py), "-m", "pytest", "-c", str(tmp / "pytest.ini"), "--rootdir", str(tmp), "-p", "no:cacheprovider",
         "--nbval", "--nbval-current-env", "--nbval-cell-timeout=600",
         "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "-q", "-ra", str(book)],
        capture_output=True, text=True, cwd=tmp, env=env, preexec_fn=_one_core,
    )
    summary = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, "chapters failed in the Colab-like environment:\n" + summary
    passed = int(re.search(r"(\d+) passed", proc.stdout).group(1))
    assert passed >= 10 * len(chapter_notebooks()), summary
