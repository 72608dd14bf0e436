"""The README opens with exactly two commands, and CI runs the second one verbatim."""

import re

from _repo import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index(block.group(0)) < 40, "the README must open with its commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    install_and_build, test = commands
    assert "pip install -r requirements.txt" in install_and_build and "jupyter-book build" in install_and_build
    assert "-W" in install_and_build and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci
