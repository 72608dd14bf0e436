"""Test-wide settings: CPU JAX in float64 for the unit tests; notebook kernels inherit the environment."""

import os

# A GPU machine's CUDA warnings on stderr would otherwise enter the nbval comparison of notebook outputs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


_SESSION_START = __import__("time").time()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say where the browser test put its screenshots of the chapter pages (tests/test_book.py)."""
    import pathlib

    shots = pathlib.Path(__file__).resolve().parents[1] / "_build" / "screenshots"
    fresh = [p for p in shots.glob("*.*") if p.stat().st_mtime >= _SESSION_START] if shots.is_dir() else []
    if fresh:
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(fresh)} screenshots of the chapter pages (light, and figures in dark mode): {shots}")
