"""Every chapter runs in a fresh, Colab-like environment from the built wheel, and matches its stored outputs.

The package is built into a wheel and installed, with its dependencies pinned to requirements.txt, into a new
virtual environment that holds nothing of the source tree; the chapters are copied out of the repository and
run there under nbval (`--nbval`: stored text outputs are compared with a fresh run), each nbval process pinned to
one CPU core.
Their first cell finds the package installed and does nothing, exactly as in Colab after the install."""

from __future__ import annotations

import json
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


@pytest.mark.network
def test_the_wheel_is_installed_not_the_source_tree(colab):
    tmp, py, book = colab
    out = run([py, "-c", "import igr_tutorial; print(igr_tutorial.__file__, igr_tutorial.__version__)"], cwd=book).stdout
    path, version = out.split()
    assert str(ROOT) not in path and "site-packages" in path
    assert version == project_version()  # the version every chapter's setup cell pins (test_chapters.py)


@pytest.mark.network
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


@pytest.mark.network
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


def _stored_seconds(nb) -> float:
    """How long the notebook's stored execution took (nbclient's per-cell timestamps): to balance the groups."""
    import datetime as dt

    total = 0.0
    for cell in json.loads(nb.read_text())["cells"]:
        t = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            begin, end = (dt.datetime.fromisoformat(t[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            total += (end - begin).total_seconds()
    return total or 60.0


def chapter_groups(chapters, cores: int) -> list[list]:
    """Split the chapters into at most ``cores`` groups of about equal stored execution time (longest first,
    each to the least loaded group)."""
    groups: list[list] = [[] for _ in range(max(1, min(cores, len(chapters))))]
    load = [0.0] * len(groups)
    for nb in sorted(chapters, key=_stored_seconds, reverse=True):
        i = load.index(min(load))
        groups[i].append(nb)
        load[i] += _stored_seconds(nb)
    return [g for g in groups if g]


def test_chapter_groups_cover_every_chapter_once_and_balance():
    chapters = chapter_notebooks()
    for cores in (1, 2, 3):
        groups = chapter_groups(chapters, cores)
        assert sorted(nb for g in groups for nb in g) == sorted(chapters) and len(groups) == min(cores, len(chapters))
    two = [sum(map(_stored_seconds, g)) for g in chapter_groups(chapters, 2)]
    assert max(two) - min(two) <= max(map(_stored_seconds, chapters))  # greedy's bound


def _pinned_to(cpu: int):
    """Pin the process (and the kernels it starts) to one CPU, like ``taskset -c N``: XLA then runs on one thread."""
    return lambda: os.sched_setaffinity(0, {cpu})


@pytest.mark.slow
@pytest.mark.network
def test_every_chapter_runs_from_the_wheel_and_matches_its_stored_outputs(colab):
    """The stored outputs come from a default, multi-threaded execution; this run is pinned to one core, where
    XLA reduces in another order. Passing proves the printed digits do not depend on the thread count.

    This is the suite's only execution of the chapters (tests/test_book.py renders their stored outputs). The
    chapters are split into groups, one per available core (two on the project's machine), and each group runs in
    its own nbval process pinned to its own core: every kernel still sees one CPU."""
    tmp, py, book = colab
    (tmp / "pytest.ini").write_text("[pytest]\n")  # keep the repository's pytest options (xdist) out
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ""}
    cpus = sorted(os.sched_getaffinity(0))
    groups = chapter_groups(chapter_notebooks(), min(2, len(cpus)))
    procs = [
        subprocess.Popen(
            [str(py), "-m", "pytest", "-c", str(tmp / "pytest.ini"), "--rootdir", str(tmp), "-p", "no:cacheprovider",
             "--nbval", "--nbval-current-env", "--nbval-cell-timeout=600",
             "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "-q", "-ra",
             *[str(book / nb.name) for nb in group]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp, env=env,
            preexec_fn=_pinned_to(cpus[i % len(cpus)]),
        )
        for i, group in enumerate(groups)
    ]
    outputs = [p.communicate()[0] for p in procs]
    passed = 0
    for group, proc, out in zip(groups, procs, outputs):
        names = ", ".join(nb.stem for nb in group)
        assert proc.returncode == 0, f"chapters failed in the Colab-like environment ({names}):\n" + out[-8000:]
        found = re.search(r"(\d+) passed", out)
        assert found, f"no nbval summary for {names}:\n" + out[-3000:]
        assert int(found.group(1)) >= 10 * len(group), f"too few cells compared in {names}:\n" + out[-3000:]
        passed += int(found.group(1))
    assert passed >= 10 * len(chapter_notebooks())
