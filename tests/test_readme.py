"""The README opens with exactly two commands, and CI runs the second one verbatim."""

import re

from _repo import ROOT, readme_commands


def test_readme_starts_with_exactly_two_commands():
    commands = readme_commands()
    assert len(commands) == 2
    install_and_build, test = commands
    assert "pip install -r requirements.txt" in install_and_build and "jupyter-book build" in install_and_build
    assert "-W" in install_and_build and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_the_one_chapter_command_parses_with_the_project_options():
    """The README's one-chapter check runs under the project's pytest options (which turn on xdist with -n 2):
    its arguments must parse and collect the chapter's cells. `--collect-only` keeps it fast."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    line = next(l for l in text.splitlines() if l.startswith(".venv/bin/python -m pytest book/"))
    args = line.split()[3:]  # after ".venv/bin/python -m pytest"
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"\d+ tests? collected|\d+ items?", proc.stdout + proc.stderr), proc.stdout[-1000:]


def test_the_suite_starts_the_longest_files_first_in_the_order_conftest_names():
    """The README's test command runs the files handed out in collection order (`--no-loadscope-reorder`), and
    every file tests/conftest.py starts first exists (a renamed file would silently fall back to the end)."""
    import tomllib

    from conftest import LONGEST_FIRST

    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"].split()
    assert "--no-loadscope-reorder" in addopts and "loadfile" in addopts
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    assert all((ROOT / "tests" / name).is_file() for name in LONGEST_FIRST), LONGEST_FIRST
