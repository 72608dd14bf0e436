"""Colab, offline: the chapters' own setup cell installs the tagged release into a fresh environment, where every
module imports and every chapter runs and matches its stored outputs.

What Colab runs is the first code cell of a chapter: when `igr_tutorial` is missing, it runs
`pip install "igr-tutorial @ git+<repository.url>@v<version>"`. The fixture runs exactly that cell's code, with one
substitution: `repository.url` (read from _config.yml) becomes the `file://` URL of a local clone of this repository,
tagged `v<version>`. The URL names the host, `file://localhost/<path>`: a `name @ url` requirement's URL must have
one (pip rejects `git+file:///<path>` there as "Invalid URL"), and git reads both forms alike. So it checks, minus
GitHub, that the tag the chapters pin installs and imports.

- The clone is `git clone` of this repository plus, committed on top, any uncommitted change of the working tree
  (tracked and untracked files that git does not ignore), so the test checks the code under test, not the last commit.
- The virtual environment is fresh and does not see the repository (no system site-packages, no PYTHONPATH, run
  from an empty folder). Importing the package imports jax, scipy, optax…, so pip resolves its dependencies from
  the package registry, pinned to requirements.txt through `PIP_CONSTRAINT` (the versions the book is tested with,
  which pip's cache usually serves; Colab keeps its own instead). Then only what runs notebooks (pytest, nbval,
  ipykernel, nbclient) is added.
- The chapters are copied out of the repository and run there under nbval (`--nbval`: stored text outputs are
  compared with a fresh run), each nbval process pinned to one CPU core. Their setup cell finds the package
  installed and does nothing, exactly as in Colab after the install. This is the suite's only execution of the
  chapters: tests/test_book.py renders their stored outputs."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import venv

import pytest

from _repo import (ROOT, TEST_XLA_FLAGS, book_config, book_environment, cell_source, chapter_notebooks, load_notebook,
                   project_version, with_test_xla_flags)

sys.path.insert(0, str(ROOT / "book" / "_ext"))
from book_compile_cache import compile_cache_environment  # noqa: E402
from book_status import stored_execution  # noqa: E402

TOOLS = ["pytest", "nbval", "ipykernel", "nbclient"]  # what runs the notebooks; the rest comes with the package


def run(cmd, **kw):
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
def colab(tmp_path_factory):
    if not (ROOT / ".git").exists():
        pytest.skip("the repository is not a git clone (no .git): the install path needs one")
    tmp = tmp_path_factory.mktemp("colab")
    clone = tmp / "igr-tutorial"
    commit = _clone_of_the_working_tree(clone)

    url = book_config()["repository"]["url"].rstrip("/")
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
    # PIP_COMPILE=0 is `--no-compile`: pip does not byte-compile every installed file (most are never imported
    # here; it was half of the install's CPU time). Not PIP_NO_COMPILE=1: pip reads a `--no-…` flag's variable as
    # the value of its destination, so that one *turns compilation on*. Python then compiles what the chapters
    # import on first import and keeps it, as in Colab: PYTHONDONTWRITEBYTECODE, if the calling shell sets it, is
    # dropped, or every kernel would compile jax, matplotlib and IPython from source again (about 5 s each).
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(JAX_PLATFORMS="cpu", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_COMPILE="0")
    started, cpu = time.perf_counter(), _children_cpu()
    run([py, "-c", local], cwd=work, env={**env, "PIP_CONSTRAINT": str(tmp / "constraints.txt")}, timeout=1200)
    run([py, "-m", "pip", "install", "-q", "-c", tmp / "constraints.txt", *TOOLS], cwd=work, env=env, timeout=1200)
    pip_install = {"wall_s": time.perf_counter() - started, "cpu_s": _children_cpu() - cpu}
    site = next((tmp / "venv" / "lib").glob("python3*/site-packages"))
    assert not any((site / "jax").rglob("*.pyc")), "pip byte-compiled the installed packages (PIP_COMPILE=0 ignored?)"
    book = tmp / "book"
    book.mkdir()
    for nb in chapter_notebooks():
        shutil.copy2(nb, book / nb.name)
    return {"tmp": tmp, "clone": clone, "commit": commit, "py": py, "work": work, "env": env, "cell": local,
            "book": book, "pip_install": pip_install}


def _children_cpu() -> float:
    """CPU seconds (user and system) of this process's finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.network
def test_the_setup_cell_installs_the_tag_and_the_package_imports_with_its_version(colab, record_property):
    # The install's duration, for the suite's summary (tests/conftest.py): the suite's time goal (8 minutes on 2
    # cores) does not count pip install.
    record_property("pip_install", colab["pip_install"])
    code = ("import json, importlib.metadata as m, igr_tutorial\n"
            "d = m.distribution('igr-tutorial')\n"
            "print(json.dumps({'file': igr_tutorial.__file__, 'version': igr_tutorial.__version__,\n"
            "                  'metadata': d.version, 'direct_url': json.loads(d.read_text('direct_url.json'))}))")
    out = json.loads(run([colab["py"], "-c", code], cwd=colab["work"], env=colab["env"]).stdout)
    site = colab["tmp"] / "venv" / "lib"
    assert out["file"].startswith(str(site)) and "site-packages" in out["file"], out["file"]
    assert out["version"] == out["metadata"] == project_version()
    direct = out["direct_url"]
    assert direct["url"] == _file_url(colab["clone"]), direct
    assert direct["vcs_info"]["vcs"] == "git" and direct["vcs_info"]["requested_revision"] == f"v{project_version()}"
    assert direct["vcs_info"]["commit_id"] == colab["commit"], "pip installed another commit than the tag's"

@pytest.mark.network
def test_the_installed_package_is_the_working_tree_code(colab):
    """The clone carries the working tree: the installed modules are byte for byte this repository's."""
    code = "import igr_tutorial, pathlib; print(pathlib.Path(igr_tutorial.__file__).parent)"
    package = run([colab["py"], "-c", code], cwd=colab["work"], env=colab["env"]).stdout.strip()
    for source in (ROOT / "igr_tutorial").glob("*.py"):
        installed_file = os.path.join(package, source.name)
        assert open(installed_file, "rb").read() == source.read_bytes(), f"{source.name} differs from the working tree"
    assert os.path.isfile(os.path.join(package, "py.typed")), "the wheel lacks py.typed (PEP 561): type checkers ignore it"

@pytest.mark.network
def test_the_setup_cell_does_nothing_once_the_package_is_present(colab):
    """Run again, the cell must not call pip: an index that cannot be reached and a missing constraints file
    would make any pip install fail."""
    env = {**colab["env"], "PIP_NO_INDEX": "1", "PIP_CONSTRAINT": str(colab["tmp"] / "missing.txt")}
    proc = run([colab["py"], "-c", colab["cell"]], cwd=colab["work"], env=env)
    assert proc.stdout == proc.stderr == ""


@pytest.mark.network
def test_the_wheel_only_sets_floors_so_colab_keeps_its_own_versions(colab):
    """Colab ships jax, numpy and matplotlib; installing the book's package must not downgrade them. Every
    dependency in the installed wheel's metadata is a lower bound (`>=`), never a pin or a ceiling."""
    code = "import importlib.metadata as m, json; print(json.dumps(m.distribution('igr-tutorial').requires))"
    requires = json.loads(run([colab["py"], "-c", code], cwd=colab["work"], env=colab["env"]).stdout)
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requires}
    assert {"jax", "numpy", "matplotlib"} <= names, requires
    for req in requires:
        spec = req.split(";")[0]
        assert re.fullmatch(r"[A-Za-z0-9_.-]+>=[0-9][0-9A-Za-z.]*", spec.replace(" ", "")), (
            f"{req!r}: dependencies must be floors only (name>=version), so Colab's newer versions stay"
        )


@pytest.mark.network
def test_every_module_of_the_wheel_imports_with_only_its_declared_dependencies(colab):
    """The wheel holds what readers import: every module loads in an environment that has only the wheel's
    dependencies (no Sphinx, no docutils, no yaml, no jupyter-book), as in Colab."""
    code = ("import importlib, pkgutil, igr_tutorial\n"
            "names = [m.name for m in pkgutil.iter_modules(igr_tutorial.__path__) if m.name != '__main__']\n"
            "for n in names: importlib.import_module('igr_tutorial.' + n)\n"
            "import importlib.util as u\n"
            "print(' '.join(sorted(names)), all(u.find_spec(x) is None for x in ('sphinx', 'docutils', 'yaml')))")
    out = run([colab["py"], "-c", code], cwd=colab["work"], env=colab["env"]).stdout.split()
    modules, clean = out[:-1], out[-1]
    assert clean == "True", "the Colab-like environment has Sphinx, docutils or yaml: the test would prove nothing"
    # tooling lives outside the wheel: the Sphinx extensions, the student edition, the benchmarks
    assert not {"assets", "sphinx_status", "student", "benchmarks"} & set(modules), modules
    assert "curvature" in modules and "experiments" in modules


def _stored_seconds(nb) -> float:
    """How long the notebook's stored execution took (the status page's reading of nbclient's cell
    timestamps), to balance the groups; 60 s for a notebook without timings."""
    record = stored_execution(str(nb))
    return record["runtime"] if record and record["runtime"] else 60.0


def _shares_the_data_set(nb) -> bool:
    """Whether a chapter trains networks on the experiments' data set (``load_data(size)``): chapters 6–9, which can
    compile the same programs (chapter 6's and 7's share their training loop's shapes, Lanczos and the random draws
    of their initializations)."""
    return any("load_data(" in cell_source(c) for c in load_notebook(nb)["cells"] if c["cell_type"] == "code")


def chapter_groups(chapters, cores: int) -> list[list]:
    """Split the chapters into at most ``cores`` groups of about equal stored execution time (longest first,
    each to the least loaded group), keeping the chapters that share the data set in one group: its nbval process
    shares one compile cache, so a program one of them compiled is loaded by the next (chapter 7 took 71 s
    instead of 83 s after chapter 6, on one core)."""
    shared = [nb for nb in chapters if _shares_the_data_set(nb)]
    units = ([shared] if shared else []) + [[nb] for nb in chapters if nb not in shared]
    seconds = [sum(map(_stored_seconds, unit)) for unit in units]
    groups: list[list] = [[] for _ in range(max(1, min(cores, len(units))))]
    load = [0.0] * len(groups)
    for s, unit in sorted(zip(seconds, units), key=lambda pair: pair[0], reverse=True):
        i = load.index(min(load))
        groups[i].extend(unit)
        load[i] += s
    return [g for g in groups if g]


def test_chapter_groups_cover_every_chapter_once_and_balance():
    chapters = chapter_notebooks()
    shared = [nb.name for nb in chapters if _shares_the_data_set(nb)]
    assert shared == ["06_deep_networks.ipynb", "07_explicit_regularization.ipynb",
                      "08_stochastic_gradient_descent.ipynb", "09_momentum_adam_eos_sam.ipynb"]
    for cores in (1, 2, 3):
        groups = chapter_groups(chapters, cores)
        assert sorted(nb for g in groups for nb in g) == sorted(chapters)
        assert len(groups) == min(cores, len(chapters) - len(shared) + 1)
        assert sum(set(shared) <= {nb.name for nb in g} for g in groups) == 1  # together, in one group
    two = [sum(map(_stored_seconds, g)) for g in chapter_groups(chapters, 2)]
    largest_unit = max(sum(_stored_seconds(nb) for nb in chapters if nb.name in shared),
                       *(_stored_seconds(nb) for nb in chapters if nb.name not in shared))
    assert max(two) - min(two) <= largest_unit  # greedy's bound


def _pinned(py, cpu: int, *args) -> list[str]:
    """The command ``py -m pytest *args`` pinned, with the kernels it starts, to one CPU, like ``taskset -c N``:
    XLA then runs on one thread. A small Python trampoline sets the affinity and execs pytest, so the parent
    (which runs JAX's threads) never forks with a ``preexec_fn``."""
    trampoline = (f"import os, sys; os.sched_setaffinity(0, {{{cpu}}}); "
                  "os.execv(sys.executable, [sys.executable, '-m', 'pytest', *sys.argv[1:]])")
    return [str(py), "-c", trampoline, *map(str, args)]


def test_the_suite_compiles_cheaply_and_the_chapters_with_the_builds_flags():
    """tests/conftest.py adds TEST_XLA_FLAGS for the suite; the chapters compared with their stored outputs run
    without them, keeping any other XLA flag."""
    flags = " ".join(TEST_XLA_FLAGS)
    assert set(TEST_XLA_FLAGS) <= set(os.environ["XLA_FLAGS"].split())
    assert with_test_xla_flags(with_test_xla_flags("--a=1")) == f"--a=1 {flags}"
    assert with_test_xla_flags(f"{TEST_XLA_FLAGS[1]} --a=1") == f"{TEST_XLA_FLAGS[1]} --a=1 {TEST_XLA_FLAGS[0]}"
    assert book_environment({"XLA_FLAGS": f"--a=1 {flags}", "X": "y"}) == {"XLA_FLAGS": "--a=1", "X": "y"}
    assert book_environment({"XLA_FLAGS": flags, "X": "y"}) == {"X": "y"}


def test_the_pinned_command_runs_pytest_on_one_cpu(tmp_path):
    (tmp_path / "test_affinity.py").write_text(
        "import os\n\ndef test_one_cpu():\n    assert len(os.sched_getaffinity(0)) == 1\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    cpu = max(os.sched_getaffinity(0))
    proc = subprocess.run(_pinned(sys.executable, cpu, "-c", tmp_path / "pytest.ini", "-p", "no:cacheprovider", "-q",
                                  tmp_path / "test_affinity.py"), capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.network
def test_every_chapter_runs_from_the_wheel_and_matches_its_stored_outputs(colab):
    """The stored outputs come from a default, multi-threaded execution; this run is pinned to one core, where
    XLA reduces in another order. Passing proves the printed digits do not depend on the thread count.

    This is the suite's only execution of the chapters (tests/test_book.py renders their stored outputs). The
    chapters are split into groups, one per available core (two on the project's machine), and each group runs in
    its own nbval process pinned to its own core: every kernel still sees one CPU."""
    tmp, py, book = colab["tmp"], colab["py"], colab["book"]
    (tmp / "pytest.ini").write_text("[pytest]\n")  # keep the repository's pytest options (xdist) out
    env = {**book_environment(colab["env"]), "JAX_PLATFORMS": "cpu"}  # the build's XLA flags, not the suite's
    # A persistent XLA compilation cache per process, as the book build's kernels share one
    # (book/_ext/book_compile_cache.py): a chapter loads the programs an earlier chapter of its group compiled
    # (the same compiled code). One per process: JAX writes cache files without a lock.
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cpus = sorted(os.sched_getaffinity(0))
    groups = chapter_groups(chapter_notebooks(), min(2, len(cpus)))
    procs = [
        subprocess.Popen(
            _pinned(py, cpus[i % len(cpus)], "-c", tmp / "pytest.ini", "--rootdir", tmp, "-p", "no:cacheprovider",
             "--nbval", "--nbval-current-env", "--nbval-cell-timeout=600",
             "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "-q", "-ra",
             *[book / nb.name for nb in group]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp,
            env={**env, **compile_cache_environment(tmp / f"jax-cache-{i}", env)},
        )
        for i, group in enumerate(groups)
    ]
    outputs = [p.communicate()[0] for p in procs]
    passed = 0
    for group, proc, out in zip(groups, procs, outputs):
        names = ", ".join(nb.stem for nb in group)
        assert proc.returncode == 0, f"chapters failed in the Colab-like environment ({names}):\n" + out[-8000:]
        found = re.search(r"(\d+) passed", out)
        assert found, f"no nbval summary for {names}:\n" + out[-3000:]
        assert int(found.group(1)) >= 10 * len(group), f"too few cells compared in {names}:\n" + out[-3000:]
        passed += int(found.group(1))
    assert passed >= 10 * len(chapter_notebooks())
