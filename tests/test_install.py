"""The Colab install path, offline: the chapters' own setup cell installs the tagged release from a git clone.

What Colab runs is the first code cell of a chapter: when `igr_tutorial` is missing, it runs
`pip install "igr-tutorial @ git+<repository.url>@v<version>"`. This test runs exactly that cell's code, with one
substitution: `repository.url` (read from _config.yml) becomes the `file://` URL of a local clone of this repository,
tagged `v<version>`. The URL names the host, `file://localhost/<path>`: a `name @ url` requirement's URL must have
one (pip rejects `git+file:///<path>` there as "Invalid URL"), and git reads both forms alike. So it checks, minus GitHub, that the tag the chapters pin installs and imports.

- The clone is `git clone` of this repository plus, committed on top, any uncommitted change of the working tree
  (tracked and untracked files that git does not ignore), so the test checks the code under test, not the last commit.
- The virtual environment is fresh and does not see the repository (no system site-packages, no PYTHONPATH, run
  from an empty folder). The package is then imported there and its version checked against pyproject.toml, and
  pip's record of the install (`direct_url.json`) against the clone's tag.
- Importing the package imports jax, diffrax, equinox…, so its dependencies must be installed too: pip resolves
  them from the package registry, pinned to requirements.txt through `PIP_CONSTRAINT` (the versions the book is
  tested with, which pip's cache usually serves; Colab keeps its own instead). A `--no-deps` install would avoid
  the registry but could not import the package, which is what a reader's next cell does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv

import pytest
import yaml

from _repo import ROOT, cell_source, chapter_notebooks, load_notebook, project_version


def run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{(proc.stdout + proc.stderr)[-5000:]}"
    return proc


def _working_tree_files(repo) -> set[str]:
    out = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo).stdout
    return {name for name in out.split("\0") if name and (repo / name).is_file()}


def _clone_of_the_working_tree(clone) -> str:
    """Clone ROOT, commit its uncommitted state on top, tag `v<version>`; return the tagged commit."""
    run(["git", "clone", "-q", "--no-hardlinks", ROOT, clone])
    wanted, present = _working_tree_files(ROOT), _working_tree_files(clone)
    for name in present - wanted:
        (clone / name).unlink()
    for name in wanted:
        source, target = ROOT / name, clone / name
        if not target.is_file() or target.read_bytes() != source.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    run([*git, "add", "-A"], cwd=clone)
    if run(["git", "status", "--porcelain"], cwd=clone).stdout.strip():
        run([*git, "commit", "-q", "-m", "the working tree under test"], cwd=clone)
    run([*git, "tag", "-f", "-a", f"v{project_version()}", "-m", "test release"], cwd=clone)
    return run(["git", "rev-parse", f"v{project_version()}^{{commit}}"], cwd=clone).stdout.strip()


def _file_url(path) -> str:
    return "file://localhost" + path.as_uri().removeprefix("file://")


def _setup_cell() -> str:
    cells = {cell_source(next(c for c in load_notebook(nb)["cells"] if c["cell_type"] == "code"))
             for nb in chapter_notebooks()}
    assert len(cells) == 1, "the chapters' setup cells differ: run tools/setup_cell.py"
    return cells.pop()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not (ROOT / ".git").exists():
        pytest.skip("the repository is not a git clone (no .git): the install path needs one")
    tmp = tmp_path_factory.mktemp("install")
    clone = tmp / "igr-tutorial"
    commit = _clone_of_the_working_tree(clone)

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    cell = _setup_cell()
    remote = f"git+{url}@v{project_version()}"
    assert cell.count(remote) == 1, f"the setup cell does not install {remote!r}:\n{cell}"
    local = cell.replace(f"git+{url}@", f"git+{_file_url(clone)}@")

    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(tmp / "venv")
    py = tmp / "venv" / "bin" / "python"
    pins = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith(("#", "-e"))]
    (tmp / "constraints.txt").write_text("\n".join(pins) + "\n")
    work = tmp / "colab"  # an empty working folder, like Colab's /content
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env.update(JAX_PLATFORMS="cpu", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([py, "-c", local], cwd=work, env={**env, "PIP_CONSTRAINT": str(tmp / "constraints.txt")}, timeout=1200)
    return {"tmp": tmp, "clone": clone, "commit": commit, "py": py, "work": work, "env": env, "cell": local}


def test_the_setup_cell_installs_the_tag_and_the_package_imports_with_its_version(installed):
    code = ("import json, importlib.metadata as m, igr_tutorial\n"
            "d = m.distribution('igr-tutorial')\n"
            "print(json.dumps({'file': igr_tutorial.__file__, 'version': igr_tutorial.__version__,\n"
            "                  'metadata': d.version, 'direct_url': json.loads(d.read_text('direct_url.json'))}))")
    out = json.loads(run([installed["py"], "-c", code], cwd=installed["work"], env=installed["env"]).stdout)
    site = installed["tmp"] / "venv" / "lib"
    assert out["file"].startswith(str(site)) and "site-packages" in out["file"], out["file"]
    assert out["version"] == out["metadata"] == project_version()
    direct = out["direct_url"]
    assert direct["url"] == _file_url(installed["clone"]), direct
    assert direct["vcs_info"]["vcs"] == "git" and direct["vcs_info"]["requested_revision"] == f"v{project_version()}"
    assert direct["vcs_info"]["commit_id"] == installed["commit"], "pip installed another commit than the tag's"


def test_the_installed_package_is_the_working_tree_code(installed):
    """The clone carries the working tree: the installed modules are byte for byte this repository's."""
    code = "import igr_tutorial, pathlib; print(pathlib.Path(igr_tutorial.__file__).parent)"
    package = run([installed["py"], "-c", code], cwd=installed["work"], env=installed["env"]).stdout.strip()
    for source in (ROOT / "igr_tutorial").glob("*.py"):
        installed_file = os.path.join(package, source.name)
        assert open(installed_file, "rb").read() == source.read_bytes(), f"{source.name} differs from the working tree"


def test_the_setup_cell_does_nothing_once_the_package_is_present(installed):
    """Run again, the cell must not call pip: an index that cannot be reached and a missing constraints file
    would make any pip install fail."""
    env = {**installed["env"], "PIP_NO_INDEX": "1", "PIP_CONSTRAINT": str(installed["tmp"] / "missing.txt")}
    proc = run([installed["py"], "-c", installed["cell"]], cwd=installed["work"], env=env)
    assert proc.stdout == proc.stderr == ""
