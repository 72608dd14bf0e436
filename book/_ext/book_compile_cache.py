"""Sphinx extension: the kernels that execute the book's notebooks share one persistent XLA compilation cache.

The chapters compile many of the same programs (the training loop of chapters 6–9, Lanczos, the measurements);
with a cache, a program compiled by one chapter's kernel is loaded, not recompiled, by the next. A cached program
is the same compiled code, so no output changes; only the execution time does. Kernels inherit the build process's
environment, so setting JAX's environment variables here reaches every kernel the build starts. The cache lives in
the build folder (``_build/jax-cache``); a reader's own ``JAX_COMPILATION_CACHE_DIR`` is left as it is. The
extension imports neither JAX nor ``igr_tutorial``.
"""

from __future__ import annotations

import os
import pathlib

#: JAX's settings, as environment variables: cache every program, however quick to compile or small.
SETTINGS = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def compile_cache_environment(directory: pathlib.Path, environ: dict[str, str]) -> dict[str, str]:
    """The variables to add to ``environ`` so that JAX caches compiled programs in ``directory``: none when
    ``environ`` already names a cache directory."""
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return {}
    return {"JAX_COMPILATION_CACHE_DIR": str(directory), **{k: v for k, v in SETTINGS.items() if k not in environ}}


def _configure(app, config) -> None:
    directory = pathlib.Path(app.doctreedir).parent / "jax-cache"
    added = compile_cache_environment(directory, dict(os.environ))
    app.igr_compile_cache = None
    if added:
        directory.mkdir(parents=True, exist_ok=True)
        os.environ.update(added)
        app.igr_compile_cache = directory  # book_parallel_execution gives each of its workers a subfolder


def setup(app):
    app.connect("config-inited", _configure)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
