"""Release the book and its package in one command: ``.venv/bin/python tools/release.py X.Y.Z``.

A release is the tag ``vX.Y.Z`` that every chapter's Colab setup cell installs from
(``pip install "igr-tutorial @ git+<repository.url>@vX.Y.Z"``, written by ``tools/setup_cell.py``). In order:

1. checks, before changing anything: ``X.Y.Z`` is three integers; it is newer than every ``v*`` tag and not older
   than ``project.version`` in ``pyproject.toml`` (the version already there may be released once, while its tag
   does not exist: the first release of what the chapters already pin); the working tree is clean; and
   ``CHANGELOG.md`` says what changed, under its ``## Unreleased`` heading;
2. sets ``project.version`` in ``pyproject.toml``, rewrites every chapter's setup cell (``tools/setup_cell.py``)
   and turns ``## Unreleased`` into ``## X.Y.Z — <date>`` (above it, a new empty ``## Unreleased``);
3. re-executes, in place, the chapters whose setup cell pins ``vX.Y.Z`` (all of them today), so their stored
   outputs come from this version (``jupyter execute --inplace``, as the README's "Editing a chapter" does);
4. runs the test suite with the README's test command (its second command; about 25 minutes on 2 cores);
5. commits those files as "Release vX.Y.Z" and creates the annotated tag ``vX.Y.Z``. Pushing stays with you:
   ``git push origin main vX.Y.Z`` (the deploy workflow then publishes the book).

If a step fails, nothing is committed or tagged, and the working tree keeps the changes made so far, to inspect;
``git checkout -- .`` undoes them.

For this tool's own tests only: the environment variable ``IGR_RELEASE_TEST_COMMAND`` replaces the README's test
command (a shell command run in the repository root), so that a test can release a temporary repository in seconds.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import setup_cell  # noqa: E402  (tools/setup_cell.py, beside this file)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_COMMAND_VARIABLE = "IGR_RELEASE_TEST_COMMAND"
UNRELEASED = "## Unreleased"


class ReleaseError(Exception):
    """A release cannot go on; the message says why and what to do."""


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` → ``(1, 2, 3)``; anything but three dot-separated integers is refused."""
    match = re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", text)
    if not match:
        raise ReleaseError(f"{text!r} is not a version of the form X.Y.Z (three integers, no 'v'): e.g. 0.2.0")
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def check_newer(version: str, current: str, tags: list[str]) -> None:
    """Refuse ``version`` unless it is newer than every release tag and not older than ``current``.

    ``current`` is ``project.version`` in ``pyproject.toml``. Equal to it is allowed only while ``v<current>``
    is not a tag: the chapters already pin that version, and this is its first release."""
    new = parse_version(version)
    if f"v{version}" in tags:
        raise ReleaseError(f"the tag v{version} already exists: releases are never moved; choose a newer version.")
    released = sorted(parse_version(t[1:]) for t in tags if re.fullmatch(r"v\d+\.\d+\.\d+", t))
    if released and new <= released[-1]:
        latest = ".".join(map(str, released[-1]))
        raise ReleaseError(f"{version} is not newer than the latest release v{latest}: choose a newer version.")
    if new < parse_version(current):
        raise ReleaseError(f"{version} is older than the version in pyproject.toml ({current}): choose a newer one.")


def set_version(pyproject: str, version: str) -> str:
    """``pyproject.toml``'s text with ``project.version`` set to ``version`` (the rest of the file untouched)."""
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", pyproject, re.M | re.S)
    line = table and re.search(r'^version\s*=\s*"[^"]*"', table.group(1), re.M)
    if not line:
        raise ReleaseError('pyproject.toml has no `version = "..."` line in its [project] table: add one.')
    start = table.start(1) + line.start()
    text = pyproject[:start] + f'version = "{version}"' + pyproject[table.start(1) + line.end():]
    assert tomllib.loads(text)["project"]["version"] == version
    return text


def changelog_with_release(changelog: str, version: str, date: datetime.date) -> str:
    """Move the notes under ``## Unreleased`` to a new ``## X.Y.Z — date`` section, leaving ``## Unreleased`` empty.

    Refuses a changelog without that heading or with nothing under it: a release says what it changed."""
    match = re.search(rf"^{UNRELEASED}[ \t]*\n(.*?)(?=^## |\Z)", changelog, re.M | re.S)
    if not match:
        raise ReleaseError(f"CHANGELOG.md has no '{UNRELEASED}' heading: add it, with what changed under it.")
    notes = match.group(1).strip()
    if not notes:
        raise ReleaseError(f"CHANGELOG.md has nothing under '{UNRELEASED}': write what this release changed, "
                           "commit it, and run the release again.")
    section = f"{UNRELEASED}\n\n## {version} — {date.isoformat()}\n\n{notes}\n\n"
    return changelog[:match.start()] + section + changelog[match.end():]


def pinned_chapters(root: pathlib.Path, version: str) -> list[pathlib.Path]:
    """The chapters whose Colab setup cell installs ``v<version>``: those a release re-executes."""
    pinned = []
    for path in setup_cell.chapters(root):
        nb = json.loads(path.read_text())
        cell = next((c for c in nb["cells"] if c["cell_type"] == "code"), None)
        source = "" if cell is None else "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if source.startswith(setup_cell.MARKER) and f'@v{version}"' in source:
            pinned.append(path)
    return pinned


def suite_command(root: pathlib.Path) -> str:
    """The README's test command: the second line of its opening ``bash`` block (what CI runs, ``.ci/run``)."""
    block = re.search(r"```bash\n(.*?)```", (root / "README.md").read_text(), re.S)
    commands = [line.strip() for line in block.group(1).splitlines() if line.strip()] if block else []
    if len(commands) != 2 or "pytest" not in commands[1]:
        raise ReleaseError("README.md does not open with its two commands (install and build; test): restore them.")
    return commands[1]


def _git(root: pathlib.Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _changed_files(root: pathlib.Path) -> list[str]:
    return [line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=all").splitlines()]


def _execute(root: pathlib.Path, chapter: pathlib.Path) -> None:
    jupyter = pathlib.Path(sys.executable).parent / "jupyter"
    exe = str(jupyter) if jupyter.exists() else shutil.which("jupyter")
    if exe is None:
        raise ReleaseError("jupyter is not installed next to this Python: run the release with .venv/bin/python.")
    proc = subprocess.run([exe, "execute", "--inplace", chapter.name], cwd=chapter.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"{chapter.relative_to(root)} failed to execute; nothing is committed or tagged:\n"
                           + (proc.stdout + proc.stderr)[-3000:])


def release(version: str, root: pathlib.Path = ROOT, *, today: datetime.date | None = None) -> None:
    """Set the version, re-execute the chapters that pin it, run the suite, commit and tag ``v<version>``."""
    today = today or datetime.date.today()
    if pathlib.Path(_git(root, "rev-parse", "--show-toplevel").strip()).resolve() != root.resolve():
        raise ReleaseError(f"{root} is not the top of a git repository.")
    current = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    check_newer(version, current, _git(root, "tag", "--list", "v*").split())
    dirty = _changed_files(root)
    if dirty:
        raise ReleaseError("the working tree is not clean; commit or remove these first, so that the release holds "
                           "exactly what is committed:\n  " + "\n  ".join(dirty))
    changelog = changelog_with_release((root / "CHANGELOG.md").read_text(), version, today)
    command = os.environ.get(TEST_COMMAND_VARIABLE) or suite_command(root)

    print(f"release: version {current} -> {version}")
    (root / "pyproject.toml").write_text(set_version((root / "pyproject.toml").read_text(), version))
    (root / "CHANGELOG.md").write_text(changelog)
    setup_cell.write_setup_cells(root)
    chapters = pinned_chapters(root, version)
    if not chapters:
        raise ReleaseError("no chapter's setup cell pins the new version: check tools/setup_cell.py.")
    for chapter in chapters:
        print(f"release: executing {chapter.relative_to(root)}", flush=True)
        _execute(root, chapter)
    print(f"release: running the test suite: {command}", flush=True)
    if subprocess.run(command, shell=True, cwd=root, executable="/bin/bash").returncode != 0:
        raise ReleaseError("the test suite failed; nothing is committed or tagged. The version change and the "
                           "re-executed chapters are left in the working tree (`git checkout -- .` undoes them).")
    expected = {"pyproject.toml", "CHANGELOG.md", *(str(c.relative_to(root)) for c in chapters)}
    unexpected = sorted(set(_changed_files(root)) - expected)
    if unexpected:
        raise ReleaseError("the test suite changed files a release does not touch; nothing is committed or tagged. "
                           "Remove or commit them first:\n  " + "\n  ".join(unexpected))
    changed = sorted(set(_changed_files(root)) & expected)
    _git(root, "add", "--", *changed)
    _git(root, "commit", "-q", "-m", f"Release v{version}", "--", *changed)
    _git(root, "tag", "-a", f"v{version}", "-m", f"igr-tutorial {version}")
    print(f"release: tagged v{version}. Publish it with: git push origin main v{version}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in {"-h", "--help"}:
        print(__doc__.split("\n\n")[0] + "\n\nUsage: python tools/release.py X.Y.Z", file=sys.stderr)
        return 2
    try:
        release(args[0])
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
