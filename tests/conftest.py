"""Test-wide settings: CPU JAX in float64 for the unit tests, compiled cheaply (_repo.TEST_XLA_FLAGS); notebook
kernels inherit the environment, except the chapters compared with their stored outputs (tests/test_colab.py,
tests/test_book.py)."""

import os

from _repo import with_test_xla_flags

# A GPU machine's CUDA warnings on stderr would otherwise enter the nbval comparison of notebook outputs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Before JAX starts its backend, which reads XLA_FLAGS once; the processes the tests start inherit it.
os.environ["XLA_FLAGS"] = with_test_xla_flags(os.environ.get("XLA_FLAGS"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


_SESSION_START = __import__("time").time()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how long the Colab test's pip install took (tests/test_colab.py) and where the browser test put its
    screenshots of the chapter pages (tests/test_book.py)."""
    import pathlib

    for report in terminalreporter.stats.get("passed", []):
        pip = dict(getattr(report, "user_properties", ())).get("pip_install")
        if report.when == "call" and pip:
            terminalreporter.write_sep("-", "pip install inside the suite")
            terminalreporter.write_line(
                f"the Colab-like environment's two pip installs (tests/test_colab.py): {pip['wall_s']:.0f} s of wall "
                f"clock, {pip['cpu_s']:.0f} s of CPU")

    shots = pathlib.Path(__file__).resolve().parents[1] / "_build" / "screenshots"
    fresh = [p for p in shots.glob("*.*") if p.stat().st_mtime >= _SESSION_START] if shots.is_dir() else []
    if fresh:
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(fresh)} screenshots of the chapter pages (light, and figures in dark mode): {shots}")


#: The test files that take more than about 15 s of CPU, longest first (measured on 2 cores, 2026-11): started
#: first, so that pytest-xdist's workers run them side by side and the quick files fill in at the end, where they
#: keep the two workers finishing together. Files are handed out in collection order only with
#: `--no-loadscope-reorder` (pyproject.toml's addopts): by default pytest-xdist hands out the files with the most
#: tests first, which started the chapters' run (tests/test_colab.py, few tests) after about 280 s, last of all.
LONGEST_FIRST = ("test_colab.py", "test_book.py", "test_train.py", "test_assignment.py",
                 "test_student_edition.py", "test_sharding.py",
                 "test_modified_orders.py", "test_stochastic.py", "test_hessian_spectrum.py", "test_cli.py",
                 "test_parallel_execution.py", "test_optimizers.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each file is kept
