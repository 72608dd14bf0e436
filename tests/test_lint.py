"""The package, the tests, the tools, the benchmarks and the book's Sphinx extensions pass ruff with the configuration in pyproject.toml."""

import subprocess
import sys

from _repo import ROOT


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "igr_tutorial", "tests", "tools", "benchmarks", "book/_ext"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
