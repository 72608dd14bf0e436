"""Write every chapter's Colab setup cell from the book's two sources of truth.

The cell installs the package from the book's own repository at the book's version,
``pip install "igr-tutorial @ git+<repository.url>@v<version>"``, only when it is missing:

- the repository URL is ``repository.url`` in ``_config.yml`` (the URL the launch buttons use);
- the version is ``project.version`` in ``pyproject.toml`` (the tag ``v<version>`` must exist there).

The cell is tagged ``hide-input`` so the rendered page opens with the chapter, not with a long pip line.
Run ``python tools/setup_cell.py`` after changing either source; ``tests/test_chapters.py`` checks the cells.
The cells have no output (in the book's environment the package is present), so no chapter needs re-executing.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARKER = "# Colab setup:"


def repository_url(root: pathlib.Path = ROOT) -> str:
    """``repository.url`` from ``_config.yml`` (read without a YAML parser: the key is one line)."""
    text = (root / "_config.yml").read_text()
    block = re.search(r"^repository:\s*\n((?:[ \t]+.*\n?)+)", text, re.M)
    match = block and re.search(r"^\s+url:\s*['\"]?([^'\"\s#]+)", block.group(1), re.M)
    if not match:
        raise SystemExit("_config.yml has no repository.url: set it to the repository the book is served from.")
    return match.group(1).rstrip("/")


def project_version(root: pathlib.Path = ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def install_spec(root: pathlib.Path = ROOT) -> str:
    """The pip requirement the setup cell installs: ``igr-tutorial @ git+<url>@v<version>``."""
    return f"igr-tutorial @ git+{repository_url(root)}@v{project_version(root)}"


def setup_cell_source(root: pathlib.Path = ROOT) -> str:
    return (
        f"{MARKER} installs this book's package from its repository at the book's version, only when it is missing.\n"
        "import importlib.util, subprocess, sys\n"
        'if importlib.util.find_spec("igr_tutorial") is None:\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q",\n'
        f'                    "{install_spec(root)}"], check=True)'
    )


def chapters(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    return sorted((root / "book").glob("[0-9][0-9]_*.ipynb"))


def write_setup_cells(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """Rewrite the first code cell of every chapter; return the notebooks that changed."""
    source = setup_cell_source(root)
    changed = []
    for path in chapters(root):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        old = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if not old.startswith(MARKER):
            raise SystemExit(f"{path.name}: the first code cell is not the Colab setup cell ({MARKER!r}).")
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if old == source and "hide-input" in tags:
            continue
        cell["source"] = source.splitlines(keepends=True)
        if "hide-input" not in tags:
            tags.append("hide-input")
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        changed.append(path)
    return changed


if __name__ == "__main__":
    for p in write_setup_cells():
        print(f"updated {p.relative_to(ROOT)}")
    sys.exit(0)
