"""The release command (tools/release.py), end to end on a temporary repository, and its refusals.

The temporary repository holds this working tree's release tooling and configuration (tools/, pyproject.toml,
_config.yml, README.md, CHANGELOG.md, .gitignore) and, instead of the nine chapters (minutes to execute), a tiny
chapter with the real Colab setup cell and one computing cell, plus a notebook without a setup cell that a release
must leave alone. The chapter is executed for real (`jupyter execute`); the test suite is replaced, through the
variable the tool documents for its tests (IGR_RELEASE_TEST_COMMAND), by a script that records what it saw, so
the end-to-end test also checks the order: the suite runs after the version is set and the chapter re-executed.
That the real default is the README's test command is checked separately."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib

import pytest

from _repo import ROOT, project_version

sys.path.insert(0, str(ROOT / "tools"))
import release  # noqa: E402  (tools/release.py)

FILES = ["tools/release.py", "tools/setup_cell.py", "pyproject.toml", "_config.yml", "README.md", "CHANGELOG.md",
         ".gitignore"]
NOTES = "- A tiny chapter, made by tests/test_release.py."


def _notebook(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": kind, "metadata": {}, "source": src,
                       **({"execution_count": None, "outputs": []} if kind == "code" else {})} for kind, src in cells],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def git(repo, *args) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A committed temporary repository at this project's version, with no tags, and what changed in CHANGELOG.md."""
    repo = tmp_path / "repo"
    for name in FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    changelog = (repo / "CHANGELOG.md").read_text()
    (repo / "CHANGELOG.md").write_text(re.sub(r"(## Unreleased\n)(.*?)(?=^## |\Z)", rf"\1\n{NOTES}\n\n", changelog,
                                              flags=re.M | re.S))
    (repo / "book").mkdir()
    setup = "# Colab setup: to be written by tools/setup_cell.py"
    chapter = _notebook(("markdown", "# A tiny chapter"), ("code", setup), ("code", "x = 6 * 7\nprint(f'{x}')"))
    (repo / "book" / "01_tiny.ipynb").write_text(json.dumps(chapter, indent=1) + "\n")
    (repo / "book" / "notes.ipynb").write_text(json.dumps(_notebook(("code", "print('not a chapter')")), indent=1) + "\n")
    subprocess.run([sys.executable, "tools/setup_cell.py"], cwd=repo, check=True, capture_output=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "test")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def run_release(repo, version, test_command=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}  # the setup cell finds the package
    env.pop(release.TEST_COMMAND_VARIABLE, None)
    if test_command is not None:
        env[release.TEST_COMMAND_VARIABLE] = test_command
    return subprocess.run([sys.executable, "tools/release.py", version], cwd=repo, capture_output=True, text=True,
                          env=env, timeout=300)


def _outputs(path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def _setup_source(path) -> str:
    nb = json.loads(path.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def _bump(version: str) -> str:
    major, minor, _ = map(int, version.split("."))
    return f"{major}.{minor + 1}.0"


def test_release_sets_the_version_reexecutes_the_pinned_chapter_runs_the_suite_commits_and_tags(repo, tmp_path):
    old, new = project_version(), _bump(project_version())
    record = tmp_path / "suite.json"
    suite = tmp_path / "suite.py"
    suite.write_text(textwrap.dedent(f"""
        import json, os, pathlib, tomllib
        nb = json.loads(pathlib.Path("book/01_tiny.ipynb").read_text())
        outputs = ["".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
        version = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]["version"]
        pathlib.Path({str(record)!r}).write_text(json.dumps({{"cwd": os.getcwd(), "version": version,
                                                              "outputs": outputs}}))
    """))
    assert _outputs(repo / "book" / "01_tiny.ipynb") == []
    head = git(repo, "rev-parse", "HEAD")

    proc = run_release(repo, new, f"{sys.executable} {suite}")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    seen = json.loads(record.read_text())  # what the suite saw, when it ran
    assert seen == {"cwd": str(repo), "version": new, "outputs": ["42\n"]}
    assert git(repo, "tag", "--list") == f"v{new}"
    assert git(repo, "rev-parse", f"v{new}^{{commit}}") == git(repo, "rev-parse", "HEAD") != head
    assert git(repo, "rev-parse", "HEAD~1") == head, "one release commit on top of the previous head"
    assert git(repo, "log", "-1", "--format=%s") == f"Release v{new}"
    assert git(repo, "cat-file", "-t", f"v{new}") == "tag", "an annotated tag"
    assert git(repo, "status", "--porcelain") == "", "everything the release changed is committed"
    tagged = tomllib.loads(git(repo, "show", f"v{new}:pyproject.toml"))["project"]["version"]
    assert tagged == new
    assert f'@v{new}"' in _setup_source(repo / "book" / "01_tiny.ipynb") and f"@v{old}" not in _setup_source(
        repo / "book" / "01_tiny.ipynb")
    assert _outputs(repo / "book" / "01_tiny.ipynb") == ["42\n"], "the chapter was re-executed and committed"
    assert _outputs(repo / "book" / "notes.ipynb") == [], "a notebook without a setup cell is not re-executed"
    changelog = (repo / "CHANGELOG.md").read_text()
    today = datetime.date.today().isoformat()
    assert re.search(rf"## Unreleased\n\n## {re.escape(new)} — {today}\n\n{re.escape(NOTES)}\n", changelog), changelog

    # The same version again, or an older one, is refused; so is a release with nothing new in the changelog.
    for version, reason in ((new, "already exists"), (old, "not newer"), (_bump(new), "nothing under")):
        proc = run_release(repo, version, "false")
        assert proc.returncode == 1 and reason in proc.stderr, (version, proc.stderr)
    assert git(repo, "tag", "--list") == f"v{new}" and git(repo, "status", "--porcelain") == ""


def test_a_failing_suite_leaves_no_commit_and_no_tag(repo):
    head = git(repo, "rev-parse", "HEAD")
    proc = run_release(repo, _bump(project_version()), f"{sys.executable} -c 'raise SystemExit(3)'")
    assert proc.returncode == 1 and "test suite failed" in proc.stderr, proc.stderr
    assert git(repo, "tag", "--list") == "" and git(repo, "rev-parse", "HEAD") == head
    assert "pyproject.toml" in git(repo, "status", "--porcelain"), "the changes stay in the tree to inspect"


@pytest.mark.parametrize("dirt", ["untracked", "modified"])
def test_a_dirty_tree_is_refused_before_anything_changes(repo, dirt):
    if dirt == "untracked":
        (repo / "scratch.txt").write_text("x")
    else:
        (repo / "README.md").write_text((repo / "README.md").read_text() + "\nedited\n")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}
    proc = run_release(repo, _bump(project_version()), "false")
    assert proc.returncode == 1 and "not clean" in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in before} == before and git(repo, "tag", "--list") == ""


@pytest.mark.parametrize("version", ["0.2", "v0.2.0", "0.2.0-rc1", "01.2.0", ""])
def test_a_malformed_version_is_refused_with_the_expected_form(repo, version):
    proc = run_release(repo, version, "false")
    assert proc.returncode == 1 and "X.Y.Z" in proc.stderr, proc.stderr


def test_versions_must_be_newer_than_every_tag_and_not_older_than_pyproject():
    release.check_newer("0.1.0", "0.1.0", [])  # the first release of the version the chapters already pin
    release.check_newer("0.10.0", "0.9.3", ["v0.9.2"])  # compared as numbers, not strings
    release.check_newer("1.0.0", "0.1.0", ["v0.1.0", "not-a-version"])
    for version, current, tags in [("0.1.0", "0.1.0", ["v0.1.0"]), ("0.0.9", "0.1.0", []),
                                   ("0.2.0", "0.1.0", ["v0.3.0"]), ("0.9.0", "0.10.0", [])]:
        with pytest.raises(release.ReleaseError):
            release.check_newer(version, current, tags)


def test_set_version_changes_only_the_project_version():
    text = '[build-system]\nrequires = ["x"]\n\n[project]\nname = "p"\nversion = "0.1.0"\n\n[tool.x]\nversion = "7"\n'
    out = release.set_version(text, "2.3.4")
    assert out == text.replace('version = "0.1.0"', 'version = "2.3.4"')
    assert tomllib.loads(out)["tool"]["x"]["version"] == "7"
    real = (ROOT / "pyproject.toml").read_text()
    assert tomllib.loads(release.set_version(real, "9.9.9"))["project"]["version"] == "9.9.9"


def test_the_real_suite_command_is_the_readme_test_command_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    second = re.search(r"```bash\n[^\n]+\n([^\n]+)\n", readme).group(1).strip()
    assert release.suite_command(ROOT) == second
    assert second in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_chapter_pins_the_current_version_so_a_release_reexecutes_them_all():
    from _repo import chapter_notebooks

    assert release.pinned_chapters(ROOT, project_version()) == sorted(chapter_notebooks())
    assert release.pinned_chapters(ROOT, "999.0.0") == []


def test_the_changelog_has_notes_for_the_next_release_or_a_section_per_tag():
    """CHANGELOG.md records what each version changed: the release tool needs its `## Unreleased` heading."""
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in text
    tags = subprocess.run(["git", "tag", "--list", "v*"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for tag in tags:  # none in a shallow CI checkout; every release made here
        assert re.search(rf"^## {re.escape(tag[1:])} — ", text, re.M), f"CHANGELOG.md has no section for {tag}"
    with pytest.raises(release.ReleaseError, match="nothing under"):
        release.changelog_with_release("# Changelog\n\n## Unreleased\n\n## 0.1.0 — 2026-01-01\n\n- x\n", "0.2.0",
                                       datetime.date(2026, 2, 1))


def test_readme_describes_publishing_in_five_lines_or_fewer():
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Publishing\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section, "the README has no '## Publishing' section"
    lines = [line for line in section.group(1).splitlines() if line.strip()]
    assert 0 < len(lines) <= 5, lines
    assert "tools/release.py" in section.group(1) and ".github/workflows/book.yml" in section.group(1)
