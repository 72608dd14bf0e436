"""Paths and facts about the repository that several test files use."""

from __future__ import annotations

import json
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


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
