"""Case 5: executing every chapter ``book/NN_*.ipynb`` as the book build does: each in its own process and Jupyter
kernel, several at a time (``book/_ext/book_parallel_execution.py``: as many as it would run here, the longest
first, each worker on its own core with its own fresh persistent XLA compilation cache).

No warm-up: a fresh kernel compiles everything it uses, as in a book build, and that cold run is what a reader
or the build sees. Goal: the whole book in at most 4 minutes of wall-clock time. With ``--profile``: the compute
floor of the two training cells (XLA's cost model of the steps they run, at the flop rate ``train`` sustains here).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.harness import condition, goal, load, progress

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOAL_S = 240.0

sys.path.insert(0, str(ROOT / "book" / "_ext"))
from book_compile_cache import compile_cache_environment  # noqa: E402  (the build's own extensions)
from book_parallel_execution import default_jobs, longest_first, worker_cache_dir, worker_cpus  # noqa: E402

_NOTEBOOK_RUNNER = r"""
import datetime, json, pathlib, sys, time
import nbformat
from nbclient import NotebookClient

path, timeout = pathlib.Path(sys.argv[1]), int(sys.argv[2])
if len(sys.argv) > 3:  # the build's worker CPUs: this process and the kernel it starts run there
    import os
    os.sched_setaffinity(0, {int(c) for c in sys.argv[3].split(",")})
nb = nbformat.read(path, as_version=4)
t0 = time.perf_counter()
NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
execute_s = time.perf_counter() - t0
def when(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
cells = []
for i, cell in enumerate(nb.cells):
    ex = cell.get("metadata", {}).get("execution", {})
    if cell.cell_type == "code" and "iopub.execute_input" in ex and "shell.execute_reply" in ex:
        lines = [l for l in cell.source.splitlines() if l.strip() and not l.lstrip().startswith("#")]
        cells.append({"cell": i, "seconds": (when(ex["shell.execute_reply"]) - when(ex["iopub.execute_input"])).total_seconds(),
                      "first_line": (lines[0] if lines else "")[:90]})
import resource
cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
          for f in ("ru_utime", "ru_stime"))
print("RESULT " + json.dumps({"execute_s": execute_s, "cells": cells, "cpu_s": cpu}))
"""


def book_chapters(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """The chapters ``book/NN_*.ipynb`` of the repository at ``root``, in order."""
    return sorted((root / "book").glob("[0-9][0-9]_*.ipynb"))


def execute_chapter(path: pathlib.Path, cell_timeout: int, chapter_timeout: int,
                    env: dict[str, str] | None = None, cpus: set[int] | None = None) -> dict[str, Any]:
    """Execute one notebook in a fresh process and kernel (environment ``env``, default this process's; on
    ``cpus`` if given): wall and CPU time, the slowest cells, or the error."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0, t0 = load(), time.perf_counter()
    where = [",".join(map(str, sorted(cpus)))] if cpus else []
    proc = subprocess.Popen([sys.executable, "-c", _NOTEBOOK_RUNNER, str(path), str(cell_timeout), *where],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=path.parent,
                            start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=chapter_timeout)
        hung = False
    except subprocess.TimeoutExpired:  # kill the runner and its kernel (one process group)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hung = True
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    entry: dict[str, Any] = {"label": path.stem, "median_s": wall, "repeats": 1, "times_s": [wall],
                             "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                             "load_average_before": load0, "load_average_after": load()}
    line = next((l for l in reversed(out.splitlines()) if l.startswith("RESULT ")), None)
    if hung or proc.returncode != 0 or line is None:
        entry["error"] = (f"killed after {chapter_timeout} s. " if hung else "") + (err or out)[-1500:]
        return entry
    res = json.loads(line[len("RESULT "):])
    entry["cpu_s"] = res["cpu_s"]  # the runner's own count: chapters run side by side share RUSAGE_CHILDREN
    entry["execute_s"] = res["execute_s"]
    entry["slowest_cells"] = sorted(res["cells"], key=lambda c: -c["seconds"])[:3]
    return entry


def _execute_with_retries(path: pathlib.Path, s: Any, env: dict[str, str], cpus: set[int] | None) -> dict[str, Any]:
    failed: list[dict[str, Any]] = []
    for attempt in range(s.book_attempts):  # a chapter whose execution fails or hangs is run once more
        progress(f"  executing {path.name} …" + (f" (attempt {attempt + 1})" if attempt else ""))
        entry = execute_chapter(path, s.book_cell_timeout, s.book_chapter_timeout, env, cpus)
        progress(f"  {path.name}: {entry['median_s']:.1f} s" + (" FAILED" if "error" in entry else ""))
        if "error" not in entry:
            break
        failed.append({"wall_s": entry["median_s"], "error": entry["error"]})
    if failed:
        entry["failed_attempts"] = failed
    return entry


def run(s: Any, profile: bool = False) -> dict[str, Any]:
    chapters = book_chapters()
    if s.book_chapters is not None:
        chapters = chapters[: s.book_chapters]
    jobs = min(default_jobs(), len(chapters))
    cpus = worker_cpus(jobs)
    slots: queue.Queue[int] = queue.Queue()
    for i in range(jobs):
        slots.put(i)

    environ = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    with tempfile.TemporaryDirectory() as caches:
        def one(path):  # in a worker thread: one slot, one compile cache, as a build worker's kernels have
            slot = slots.get()
            try:
                cache = worker_cache_dir(caches, slot)
                return path, _execute_with_retries(path, s, {**environ, **compile_cache_environment(cache, environ)},
                                                   cpus[slot])
            finally:
                slots.put(slot)

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            done = dict(pool.map(one, [pathlib.Path(p) for p in longest_first([str(c) for c in chapters])]))
        wall = time.perf_counter() - t0
    variants: dict[str, dict[str, Any]] = {path.stem: done[path] for path in chapters}
    errors = [k for k, v in variants.items() if "error" in v]
    retried = [k for k, v in variants.items() if "failed_attempts" in v and "error" not in v]
    one_by_one = sum(v["median_s"] for v in variants.values())
    variants = {"book": {"label": f"all {len(chapters)} chapters, {jobs} at a time (as the build)", "median_s": wall,
                         "repeats": 1, "times_s": [wall], "cpu_s": sum(v["cpu_s"] for v in variants.values())},
                **variants}
    notes = [f"each chapter executed once, in its own Python process and Jupyter kernel, {jobs} at a time, the "
             "longest first, as the book build executes them (book/_ext/book_parallel_execution.py); no warm-up",
             f"the chapters' own times add up to {one_by_one:.0f} s"]
    if s.book_chapters is not None:
        notes.append(f"quick run: only the first {len(chapters)} chapter(s), so the total is not the book's")
    slow = sorted(((c["seconds"], k, c["first_line"]) for k, v in variants.items() if k != "book"
                   for c in v.get("slowest_cells", [])), reverse=True)[:3]
    if slow:
        notes.append("slowest cells: " + "; ".join(f"{k} cell starting `{line}` ({sec:.0f} s)" for sec, k, line in slow))
    if retried:
        notes.append("executed on the second attempt (the first failed or hung; its time is kept under "
                     "failed_attempts and left out of the total): " + ", ".join(retried))
    if errors:
        notes.append("FAILED to execute: " + ", ".join(errors))
    case = {
        "description": "Each book/NN_*.ipynb executed with nbclient in a subprocess (cwd book/, default experiment "
                       f"size for this backend), {jobs} at a time as the build does, timed from process start to "
                       "exit; per chapter, and the wall-clock time of them all.",
        "settings": {"chapters": [p.stem for p in chapters], "jobs": jobs, "cell_timeout_s": s.book_cell_timeout,
                     "chapter_timeout_s": s.book_chapter_timeout, "attempts": s.book_attempts,
                     "IGR_TUTORIAL_SIZE": os.environ.get("IGR_TUTORIAL_SIZE")},
        "variants": variants, "baseline": None,
        "goal": goal(f"the whole book executes in at most {GOAL_S / 60:g} minutes on this machine",
                     [condition("time to execute every chapter", "wall-clock seconds", "<=", GOAL_S,
                                wall if not errors else None, "s")]),
        "notes": notes,
    }
    if profile and s.book_chapters is None and not errors:
        from benchmarks.profile import training_floor

        case["profile"] = training_floor()
    return case
