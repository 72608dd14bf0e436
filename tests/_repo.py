"""Paths and facts about the repository that several test files use."""

from __future__ import annotations

import json
import os
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


#: Added to XLA_FLAGS for the suite by tests/conftest.py: XLA compiles without LLVM's optimization passes. The
#: unit tests compile hundreds of small programs and run each once or a few times, so compiling is most of their
#: time, and at -O0 they take about a fifth less (437 s instead of 535 s on one core). They compute the same
#: operations; a result can differ in its last bit (only the optimizing backend fuses a multiply and an add into
#: one rounding), which their tolerances allow. Chapters whose printed outputs are compared with the stored ones run
#: without it, with the flags of the book build (:func:`book_environment`).
TEST_XLA_FLAG = "--xla_backend_optimization_level=0"


def with_test_xla_flag(flags: str | None) -> str:
    """``flags`` (an XLA_FLAGS value) with :data:`TEST_XLA_FLAG` appended once."""
    words = (flags or "").split()
    return " ".join(words if TEST_XLA_FLAG in words else [*words, TEST_XLA_FLAG])


def book_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the suite's :data:`TEST_XLA_FLAG`: how the book build runs the chapters."""
    env = dict(env)
    words = [w for w in env.pop("XLA_FLAGS", "").split() if w != TEST_XLA_FLAG]
    if words:
        env["XLA_FLAGS"] = " ".join(words)
    return env


def use_book_xla_flags(mp) -> None:
    """With the pytest ``MonkeyPatch`` ``mp``: the kernels started until it is undone run chapter code with the book
    build's XLA flags (chapter code runs long programs, which -O0 makes slower to run)."""
    flags = book_environment(dict(os.environ)).get("XLA_FLAGS")
    if flags is None:
        mp.delenv("XLA_FLAGS", raising=False)
    else:
        mp.setenv("XLA_FLAGS", flags)


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
