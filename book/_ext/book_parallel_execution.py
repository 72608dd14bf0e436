"""Sphinx extension: the build executes the book's notebooks several at a time (two on a 2-core machine).

myst-nb executes notebooks one after the other, while Sphinx reads them. Most of a chapter's time keeps one
core busy (XLA compiling, small programs), so on a 2-core machine two chapters at once take about half the wall
time of one after the other. With ``execute_notebooks: cache`` in ``_config.yml``, this extension runs just before
Sphinx reads the documents (``env-before-read-docs``). It

1. removes from myst-nb's jupyter-cache any stored execution of every notebook about to be read and not excluded
   from execution (``execute.exclude_patterns``), so nothing from an earlier build is ever reused;
2. executes those notebooks in a pool of worker processes, the longest first (by the execution time recorded in
   their stored outputs), each in its own folder as myst-nb would (``execute.run_in_temp``, ``execute.timeout``,
   ``execute.allow_errors`` are honoured);
3. puts each successfully executed notebook into the jupyter-cache, from which myst-nb then renders it.

So every notebook is executed on every build, as ``force`` would do, only in parallel. A notebook whose
execution failed (or whose kernel or worker process failed) is not cached: myst-nb then executes it again itself
and reports the failure as usual (with warnings as errors, the build stops). The number of notebooks at once is
``$IGR_BOOK_JOBS`` if set, else the number of CPU cores (at most 4), and 1 when a JAX accelerator plugin is
installed (kernels on one GPU would compete for its memory). With at least as many cores as workers, each worker
and its kernels run on a core of their own (:func:`worker_cpus`). Each worker's kernels get their own persistent
XLA compilation cache (``_build/jax-cache/worker-<i>``, see ``book_compile_cache``), so two kernels never write the
same cache file at once. The wall time of the whole execution is kept for the status page (``book_status``). The
extension imports neither JAX nor ``igr_tutorial``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import multiprocessing
import os
import pathlib
import tempfile
import time
from pathlib import PurePosixPath

from sphinx.util import logging

logger = logging.getLogger(__name__)

#: Where the build's execution summary is kept on the Sphinx environment (read by ``book_status``).
ENV_ATTRIBUTE = "igr_parallel_execution"


def default_jobs(environ: dict[str, str] | None = None) -> int:
    """How many notebooks to execute at once: ``$IGR_BOOK_JOBS``, else 1 with an accelerator plugin installed,
    else the CPU count capped at 4."""
    environ = os.environ if environ is None else environ
    if environ.get("IGR_BOOK_JOBS"):
        jobs = int(environ["IGR_BOOK_JOBS"])
        if jobs < 1:
            raise ValueError(f"IGR_BOOK_JOBS must be a positive integer, got {environ['IGR_BOOK_JOBS']!r}.")
        return jobs
    if any(importlib.util.find_spec(name) is not None for name in ("jax_cuda12_plugin", "jax_cuda13_plugin",
                                                                      "jax_rocm60_plugin", "libtpu")):
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def excluded(path: str, patterns) -> bool:
    """Whether myst-nb excludes ``path`` from execution (its own rule: a pattern matching the path's end)."""
    posix = PurePosixPath(pathlib.Path(path).as_posix())
    return any(posix.match(pattern) for pattern in patterns)


def longest_first(paths: list[str]) -> list[str]:
    """``paths`` ordered by the execution time recorded in their stored outputs, the longest first (unknown
    times first of all), so that the pool's last notebooks are short ones."""
    import book_status

    def key(path):
        record = book_status.stored_execution(path)
        return -(record["runtime"] if record else float("inf"))

    return sorted(paths, key=key)


def worker_cpus(jobs: int) -> list[set[int] | None]:
    """The CPUs each of ``jobs`` workers (and the kernels it starts) may run on: one core each when there are at
    least as many usable cores as workers (XLA then runs one thread per kernel, no two kernels compete for a core,
    and each chapter runs as the test suite's one-core nbval check runs it), else no restriction (``None``)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if jobs < 2 or len(cpus) < jobs:
        return [None] * jobs
    return [{cpus[i]} for i in range(jobs)]


def worker_cache_dir(root: pathlib.Path | str, slot: int) -> pathlib.Path:
    """The persistent XLA compilation cache of worker ``slot`` under ``root`` (JAX writes cache files without a
    lock, so kernels running at the same time never share one)."""
    return pathlib.Path(root) / f"worker-{slot}"


def _init_worker(counter, cache_root: str | None, cpus: list) -> None:
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if cpus[slot] is not None:
        os.sched_setaffinity(0, cpus[slot])  # inherited by the kernels this worker starts
    if cache_root:
        directory = worker_cache_dir(cache_root, slot)
        directory.mkdir(parents=True, exist_ok=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(directory)  # the kernels this worker starts inherit it


#: How often a notebook whose kernel died before it answered is started again. Two workers that start kernels at
#: the same moment can draw the same free TCP port for them; the second kernel then dies at once ("Address already
#: in use"), before running any cell, and a new start draws other ports.
KERNEL_START_ATTEMPTS = 3


def _kernel_never_started(err: BaseException | None) -> bool:
    """Whether ``err`` is a kernel that died before replying to its first request (no cell ran)."""
    return err is not None and "before replying to kernel_info" in str(err)


def _execute(path: str, in_temp: bool, timeout: int | None, allow_errors: bool) -> dict:
    """Execute one notebook (in a worker process); return it as JSON text, with the time and any error. A kernel
    that died before it started is started again (:data:`KERNEL_START_ATTEMPTS`)."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    notebook = nbformat.read(path, as_version=4)
    for _ in range(KERNEL_START_ATTEMPTS):
        with (tempfile.TemporaryDirectory() if in_temp
              else contextlib.nullcontext(str(pathlib.Path(path).parent))) as cwd:
            result = single_nb_execution(notebook, cwd=os.path.abspath(cwd), timeout=timeout,
                                         allow_errors=allow_errors, meta_override=True)
        if not _kernel_never_started(result.err):
            break
    return {"path": path, "notebook": nbformat.writes(result.nb), "seconds": result.time,
            "error": None if result.err is None else f"{type(result.err).__name__}: {result.err}"}


def _execute_notebooks(app, env, docnames) -> None:
    config = env.mystnb_config  # myst-nb's settings, with the cache path it resolved (in the build folder)
    if config.execution_mode != "cache":
        return
    setattr(env, ENV_ATTRIBUTE, None)
    paths = [str(env.doc2path(doc)) for doc in docnames]
    paths = [p for p in paths if p.endswith(".ipynb") and not excluded(p, config.execution_excludepatterns)]
    if not paths:
        return
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(config.execution_cache_path)
    for path in paths:
        record = None
        try:
            record = cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            pass
        if record is not None:
            cache.remove_cache(record.pk)
        cache.add_nb_to_project(path)
    jobs = min(default_jobs(), len(paths))
    logger.info(f"[igr] executing {len(paths)} notebooks, {jobs} at a time")
    start = time.perf_counter()
    counter = multiprocessing.get_context("fork").Value("i", 0)
    cache_root = getattr(app, "igr_compile_cache", None)
    times: dict[str, float] = {}
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker, initargs=(counter, str(cache_root) if cache_root else None, worker_cpus(jobs)),
    ) as pool:
        futures = {pool.submit(_execute, path, config.execution_in_temp, config.execution_timeout,
                               config.execution_allow_errors): path for path in longest_first(paths)}
        for future in concurrent.futures.as_completed(futures):
            try:
                done = future.result()
            except Exception as exc:  # a kernel that did not start, a worker that died: myst-nb executes it itself
                done = {"path": futures[future], "error": f"{type(exc).__name__}: {exc}"}
            name = pathlib.Path(done["path"]).name
            if done["error"]:
                lines = [line for line in done["error"].splitlines() if line.strip()]
                logger.info(f"[igr] {name} failed ({lines[-1] if lines else done['error']}); myst-nb executes it "
                            "again to report the error")
                continue
            times[done["path"]] = done["seconds"]
            cache.cache_notebook_bundle(
                CacheBundleIn(nbformat.reads(done["notebook"], as_version=4), done["path"],
                              data={"execution_seconds": done["seconds"]}),
                check_validity=False, overwrite=True,
            )
            logger.info(f"[igr] executed {name} in {done['seconds']:.1f} s")
    setattr(env, ENV_ATTRIBUTE, {"jobs": jobs, "notebooks": len(paths), "wall_seconds": time.perf_counter() - start,
                                 "notebook_seconds": sum(times.values())})


def setup(app):
    app.connect("env-before-read-docs", _execute_notebooks)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
