"""book/_ext/book_parallel_execution.py: the build executes every notebook, several at a time, on every build.

A small Sphinx project (myst-nb in ``cache`` mode plus the extension, as ``_config.yml`` configures the book)
with three notebooks that record when they ran shows that the notebooks ran at the same time, that a second
build executes them again instead of reusing the first build's outputs, and that a failing notebook still
fails the build with warnings as errors.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import nbformat
import pytest

from _repo import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import book_parallel_execution as parallel  # noqa: E402  (the Sphinx extension, as the build loads it)


def test_jobs_default_to_the_cpu_count_and_the_variable_overrides_it(monkeypatch):
    assert parallel.default_jobs({"IGR_BOOK_JOBS": "3"}) == 3
    with pytest.raises(ValueError, match="IGR_BOOK_JOBS must be a positive integer"):
        parallel.default_jobs({"IGR_BOOK_JOBS": "0"})
    monkeypatch.setattr(parallel.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    assert parallel.default_jobs({}) == 2
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 64)
    assert parallel.default_jobs({}) == 4
    monkeypatch.setattr(parallel.importlib.util, "find_spec", lambda name: object() if "cuda" in name else None)
    assert parallel.default_jobs({}) == 1, "kernels sharing one GPU run one at a time"


def test_each_worker_gets_a_core_of_its_own_when_there_are_enough(monkeypatch):
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1, 5})
    assert parallel.worker_cpus(2) == [{0}, {1}]
    assert parallel.worker_cpus(3) == [{0}, {1}, {5}]
    assert parallel.worker_cpus(4) == [None] * 4, "more workers than cores: no pinning"
    assert parallel.worker_cpus(1) == [None], "one worker keeps every core"


def test_exclusion_follows_myst_nbs_rule():
    """myst-nb matches `execute.exclude_patterns` against the end of the notebook's path."""
    assert parallel.excluded("/repo/book/06_deep_networks.ipynb", ["book/0*.ipynb"])
    assert not parallel.excluded("/repo/book/performance.ipynb", ["book/0*.ipynb"])
    assert not parallel.excluded("/repo/book/06_deep_networks.ipynb", [])


def test_a_kernel_that_died_before_starting_is_started_again(monkeypatch, tmp_path):
    """Two workers can give their kernels the same port; the second dies before any cell runs. The worker starts it
    again instead of leaving the notebook to myst-nb's slower one-after-the-other execution; a notebook that fails in
    a cell is not run again."""
    import types

    import jupyter_cache.executors.utils as utils

    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    calls = []

    def fake(nb, cwd, timeout, allow_errors, meta_override):
        calls.append(cwd)
        err = RuntimeError("Kernel died before replying to kernel_info") if len(calls) == 1 else None
        return types.SimpleNamespace(nb=nb, time=1.5, err=err)

    monkeypatch.setattr(utils, "single_nb_execution", fake)
    done = parallel._execute(str(path), True, 30, False)
    assert len(calls) == 2 and done["error"] is None and done["seconds"] == 1.5

    calls.clear()
    monkeypatch.setattr(utils, "single_nb_execution", lambda nb, **kw: (calls.append(1), types.SimpleNamespace(
        nb=nb, time=0.1, err=RuntimeError("Kernel died before replying to kernel_info")))[1])
    assert "kernel_info" in parallel._execute(str(path), True, 30, False)["error"]
    assert len(calls) == parallel.KERNEL_START_ATTEMPTS

    calls.clear()
    monkeypatch.setattr(utils, "single_nb_execution", lambda nb, **kw: (calls.append(1), types.SimpleNamespace(
        nb=nb, time=0.1, err=ValueError("a cell failed")))[1])
    assert parallel._execute(str(path), True, 30, False)["error"] == "ValueError: a cell failed" and len(calls) == 1


def _timed_notebook(path, seconds: float) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000000Z",
                                  "shell.execute_reply": f"2026-01-01T00:00:{seconds:09.6f}Z"}
    nb.cells.append(cell)
    nbformat.write(nb, path)


def test_the_longest_stored_execution_goes_first(tmp_path):
    for name, seconds in [("a", 1.0), ("b", 30.0), ("c", 5.0)]:
        _timed_notebook(tmp_path / f"{name}.ipynb", seconds)
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "new.ipynb")  # never executed: unknown, first
    order = parallel.longest_first([str(tmp_path / f"{n}.ipynb") for n in ("a", "b", "c", "new")])
    assert [p.rsplit("/", 1)[1] for p in order] == ["new.ipynb", "b.ipynb", "c.ipynb", "a.ipynb"]


CONF = """
import sys
sys.path.insert(0, {ext!r})
extensions = ["myst_nb", "book_parallel_execution"]
nb_execution_mode = "cache"
nb_execution_timeout = 60
exclude_patterns = []
"""

#: Each notebook records when it started and ended and a value no earlier build can have produced.
CELL = textwrap.dedent("""\
    import json, os, time
    start = time.time()
    time.sleep(1.0)
    print(json.dumps({"name": name, "start": start, "end": time.time(), "token": os.urandom(8).hex()}))
""")


def _project(tmp_path, failing: bool = False):
    root = tmp_path / "src"
    root.mkdir(exist_ok=True)
    (root / "conf.py").write_text(CONF.format(ext=str(ROOT / "book" / "_ext")))
    names = ["one", "two", "three"]
    (root / "index.md").write_text("# Index\n\n```{toctree}\n" + "\n".join(names) + "\n```\n")
    for name in names:
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        nb.cells.append(nbformat.v4.new_markdown_cell(f"# {name}"))
        nb.cells.append(nbformat.v4.new_code_cell(f"name = {name!r}\n" + CELL))
        if failing and name == "two":
            nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('this notebook fails')"))
        nbformat.write(nb, root / f"{name}.ipynb")


def _build(tmp_path):
    env = {"IGR_BOOK_JOBS": "3", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "-E", "-b", "html", str(tmp_path / "src"),
                           str(tmp_path / "out" / "html")],
                          capture_output=True, text=True, env=env, timeout=300)


def _records(tmp_path) -> dict[str, dict]:
    out = {}
    for name in ("one", "two", "three"):
        html = (tmp_path / "out" / "html" / f"{name}.html").read_text()
        out[name] = json.loads(re.search(r'\{"name": "%s", "start": [^}]*\}' % name, html).group(0))
    return out


@pytest.mark.slow
def test_notebooks_run_at_once_on_every_build_and_a_failure_fails_the_build(tmp_path):
    _project(tmp_path)
    first = _build(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "executing 3 notebooks, 3 at a time" in first.stdout
    runs = _records(tmp_path)
    latest_start = max(r["start"] for r in runs.values())
    earliest_end = min(r["end"] for r in runs.values())
    assert latest_start < earliest_end, f"the three notebooks did not overlap in time: {runs}"

    second = _build(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again = _records(tmp_path)
    assert all(again[n]["token"] != runs[n]["token"] for n in runs), "a rebuild reused an earlier execution"

    _project(tmp_path, failing=True)
    failed = _build(tmp_path)
    assert failed.returncode != 0
    assert "this notebook fails); myst-nb executes it again" in failed.stdout, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "two.ipynb:Executing notebook failed: CellExecutionError" in failed.stderr
