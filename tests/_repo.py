"""Paths and facts about the repository that several test files use."""

from __future__ import annotations

import json
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


#: Added to XLA_FLAGS for the suite by tests/conftest.py. The unit tests compile hundreds of small programs and run
#: each once or a few times, so compiling is most of their time; these flags make XLA's CPU compiler cheaper:
#: - ``--xla_backend_optimization_level=0``: no LLVM optimization passes (the non-slow unit tests took 437 s instead
#:   of 535 s on one core);
#: - ``--xla_cpu_use_fusion_emitters=false``: fusions are emitted by XLA's older CPU emitter instead of the MLIR
#:   fusion emitters, which take longer to compile (the in-process unit tests took 180 s of CPU instead of 306 s).
#: They compute the same operations; a result can differ in its last bits (e.g. only the optimizing backend fuses a
#: multiply and an add into one rounding), which the tests' tolerances allow. Chapters whose printed outputs are
#: compared with the stored ones run without them, with the flags of the book build (:func:`book_environment`): the
#: older emitter runs the chapters' training loops slower, and last bits can move an edge-of-stability run.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def with_test_xla_flags(flags: str | None) -> str:
    """``flags`` (an XLA_FLAGS value) with each of :data:`TEST_XLA_FLAGS` appended once."""
    words = (flags or "").split()
    return " ".join([*words, *(f for f in TEST_XLA_FLAGS if f not in words)])


def book_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the suite's :data:`TEST_XLA_FLAGS`: how the book build runs the chapters."""
    env = dict(env)
    words = [w for w in env.pop("XLA_FLAGS", "").split() if w not in TEST_XLA_FLAGS]
    if words:
        env["XLA_FLAGS"] = " ".join(words)
    return env


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def toc_files() -> list[str]:
    """Every `file:` entry of _toc.yml (without suffix), the root first."""
    text = (ROOT / "_toc.yml").read_text()
    root = re.search(r"^root:\s*(\S+)", text, re.M).group(1)
    return [root] + re.findall(r"^\s*-\s*file:\s*(\S+)", text, re.M)


def chapter_notebooks() -> list[pathlib.Path]:
    """The chapters: every numbered notebook `book/NN_*.ipynb`, in table-of-contents order."""
    order = {name: i for i, name in enumerate(toc_files())}
    nbs = [p for p in BOOK.glob("[0-9][0-9]_*.ipynb")]
    return sorted(nbs, key=lambda p: order.get(f"book/{p.stem}", 10**6))


def book_config() -> dict:
    """`_config.yml`, the book's Jupyter Book configuration, as parsed YAML."""
    import yaml

    return yaml.safe_load((ROOT / "_config.yml").read_text())


def readme_commands() -> list[str]:
    """The commands of the README's opening ``bash`` block (install and build; test), stripped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index(block.group(0)) < 40, "the README must open with its commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def load_notebook(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src
