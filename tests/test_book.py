"""The whole book builds, executing every chapter, with warnings as errors (`-W -n --keep-going`).

The build goes to `_build/html`, the same place as the README's first command, with `--all` so that no
page is skipped as unchanged (a skipped page would hide its warnings)."""

from __future__ import annotations

import html
import pathlib
import re
import subprocess
import sys

import pytest

from _repo import ROOT, chapter_notebooks, toc_files

HTML = ROOT / "_build" / "html"


@pytest.fixture(scope="module")
def build():
    exe = pathlib.Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe), "build", str(ROOT), "--all", "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    log = proc.stdout + proc.stderr
    return proc.returncode, log


def test_book_builds_with_warnings_as_errors(build):
    code, log = build
    # Sphinx's own diagnostics ("path:line: WARNING: …"); the kernels' "[IPKernelApp] WARNING | …" start-up
    # notes about local TCP transport are not about the book.
    warnings = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL):", line)]
    assert code == 0 and not warnings, "book build failed:\n" + "\n".join(warnings[-30:]) + "\n" + log[-3000:]


def test_every_page_is_built(build):
    for entry in toc_files():
        assert (HTML / f"{entry}.html").exists(), f"{entry}.html missing from the build"


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_page_shows_figures_exercises_and_colab_link(build, nb):
    page = (HTML / "book" / f"{nb.stem}.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    figures = [src for src in images if "_images/" in src]
    assert len(figures) >= 2, f"{nb.stem}: the built page shows {len(figures)} figures"
    for src in figures:
        assert (HTML / "book" / html.unescape(src)).resolve().exists(), f"{nb.stem}: broken image {src}"
    assert "exercise admonition" in page, f"{nb.stem}: exercises not rendered"
    assert f"colab.research.google.com/github/" in page and f"/blob/main/book/{nb.stem}.ipynb" in page
