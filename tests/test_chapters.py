"""Structure every chapter must have: objectives, the Colab setup cell, exercises with solutions, citations,
captioned figures, stored outputs. (nbval checks the outputs themselves; test_book.py builds the book.)"""

from __future__ import annotations

import re

import pytest

from _repo import BOOK, ROOT, book_config, cell_source, chapter_notebooks, load_notebook, project_version, toc_files

CHAPTERS = chapter_notebooks()
IDS = [p.stem for p in CHAPTERS]


def test_there_are_chapters_and_all_are_in_the_toc():
    assert len(CHAPTERS) >= 3
    toc = toc_files()
    for nb in CHAPTERS:
        assert f"book/{nb.stem}" in toc, f"{nb.name} is not listed in _toc.yml"
    for entry in toc:
        assert list(ROOT.glob(entry + ".*")), f"_toc.yml lists {entry}, which does not exist"


@pytest.fixture(params=CHAPTERS, ids=IDS)
def chapter(request):
    return request.param, load_notebook(request.param)


def _markdown(nb: dict) -> str:
    return "\n".join(cell_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_opens_with_title_objectives_and_prerequisites(chapter):
    path, nb = chapter
    first = cell_source(nb["cells"][0])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.lstrip().startswith("# "), "first cell must be the title"
    assert "Learning objectives" in first, f"{path.name}: learning objectives missing from the first cell"
    assert "Prerequisites" in first, f"{path.name}: prerequisites missing from the first cell"


def _repository_url() -> str:
    return book_config()["repository"]["url"].rstrip("/")


def test_first_code_cell_installs_this_version_from_the_repository_only_when_missing(chapter):
    """Colab has no igr_tutorial: the first cell installs it from the book's repository (`repository.url` in
    _config.yml) at the tag of the book's version (pyproject.toml), the one source of each."""
    path, nb = chapter
    cell = _code_cells(nb)[0]
    src = cell_source(cell)
    specs = re.findall(r'"(igr-tutorial[^"]*)"', src)
    expected = f"igr-tutorial @ git+{_repository_url()}@v{project_version()}"
    assert specs == [expected], f"{path.name}: the setup cell must install {expected!r} (run tools/setup_cell.py)"
    assert 'find_spec("igr_tutorial") is None' in src, "the install must be skipped when the package is present"
    assert src.count("pip") == 1, "the setup cell installs the package and nothing else"
    assert "hide-input" in cell.get("metadata", {}).get("tags", []), f"{path.name}: collapse the setup cell"
    assert not cell.get("outputs"), f"{path.name}: the setup cell prints nothing where the package is present"


def test_setup_cells_are_what_the_tool_writes(tmp_path):
    """tools/setup_cell.py rewrites the cells from the two sources: a new version or URL reaches every chapter."""
    import shutil
    import subprocess
    import sys

    for name in ("_config.yml", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "book").mkdir()
    for nb in CHAPTERS[:2]:
        shutil.copy2(nb, tmp_path / "book" / nb.name)
    (tmp_path / "tools").mkdir()
    shutil.copy2(ROOT / "tools" / "setup_cell.py", tmp_path / "tools" / "setup_cell.py")
    out = subprocess.run([sys.executable, "tools/setup_cell.py"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr  # already up to date
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace(f'version = "{project_version()}"', 'version = "9.8.7"'))
    cfg = (tmp_path / "_config.yml").read_text().replace(_repository_url(), "https://github.com/someone/fork")
    (tmp_path / "_config.yml").write_text(cfg)
    out = subprocess.run([sys.executable, "tools/setup_cell.py"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.count("updated") == 2, out.stdout + out.stderr
    for nb in CHAPTERS[:2]:
        src = cell_source(_code_cells(load_notebook(tmp_path / "book" / nb.name))[0])
        assert '"igr-tutorial @ git+https://github.com/someone/fork@v9.8.7"' in src


def test_exercises_have_labels_kinds_and_solutions(chapter):
    path, nb = chapter
    md = _markdown(nb)
    labels = re.findall(r"```\{exercise\}[^\n]*\n:label:\s*(\S+)", md)
    assert len(labels) >= 4, f"{path.name}: needs at least four labelled exercises, found {len(labels)}"
    titles = re.findall(r"```\{exercise\}([^\n]*)", md)
    kinds = {k for t in titles for k in re.findall(r"Derive|Compute|Explore", t)}
    assert kinds == {"Derive", "Compute", "Explore"}, f"{path.name}: exercises of all three kinds, found {kinds}"
    # sphinx-exercise renders the title in parentheses after the number: "Exercise 3 (Derive · ★★ · 15 min — …)".
    kind = r"(Derive|Compute|Explore)"
    for title in titles:
        assert re.fullmatch(rf" {kind}( and {kind})* · ★{{1,3}} · [1-9]\d* min — \S.*", title), (
            f"exercise title {title!r} must read 'Kind · ★★ · N min — Title' (kind Derive, Compute or Explore; "
            "one to three stars; minutes)"
        )
    for label in labels:
        assert re.search(r"\{solution(-start)?\}\s*" + re.escape(label) + r"\b", md), f"{label} has no solution"


def test_code_solutions_are_executed_code(chapter):
    path, nb = chapter
    inside = False
    executed = 0
    for cell in nb["cells"]:
        src = cell_source(cell)
        if cell["cell_type"] == "markdown":
            if "{solution-start}" in src:
                inside = True
            if "{solution-end}" in src:
                inside = False
        elif inside:
            assert cell.get("execution_count") is not None, f"{path.name}: a solution cell was not executed"
            executed += 1
    assert executed >= 1, f"{path.name}: at least one exercise should have an executable code solution"


def test_cites_the_paper(chapter):
    path, nb = chapter
    assert "{cite}`barrett2021implicit" in _markdown(nb) or "barrett2021implicit" in _markdown(nb)


def test_outputs_are_stored_and_clean(chapter):
    path, nb = chapter
    for i, cell in enumerate(_code_cells(nb)):
        assert cell.get("execution_count") is not None, f"{path.name}: code cell {i} has not been executed"
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name}: code cell {i} stores an error"
            if out["output_type"] == "stream" and out["name"] == "stderr":
                pytest.fail(f"{path.name}: code cell {i} stores stderr output: {''.join(out['text'])[:200]}")
    assert path.stat().st_size < 3_000_000, f"{path.name} is over 3 MB; reduce frame counts or dpi"


def test_every_figure_has_a_caption_and_alt_text(chapter):
    path, nb = chapter
    figures = 0
    for i, cell in enumerate(_code_cells(nb)):
        if any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
            figures += 1
            meta = cell.get("metadata", {}).get("mystnb", {})
            caption = meta.get("figure", {}).get("caption", "")
            alt = meta.get("image", {}).get("alt", "")
            assert len(caption) > 20, f"{path.name}: figure in code cell {i} has no caption saying what to see"
            assert len(alt) > 10, f"{path.name}: figure in code cell {i} has no alt text"
    assert figures >= 2, f"{path.name}: a chapter shows its claims in figures"


def test_chapters_enable_float64_and_use_the_package(chapter):
    path, nb = chapter
    code = "\n".join(cell_source(c) for c in _code_cells(nb))
    assert 'jax.config.update("jax_enable_x64", True)' in code
    assert "import igr_tutorial as igr" in code


def test_bibliography_page_exists_and_keys_resolve():
    bib = (BOOK / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert "{bibliography}" in (BOOK / "references.md").read_text()
    for nb in CHAPTERS:
        for key in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", _markdown(load_notebook(nb))):
            for k in key.split(","):
                assert k.strip() in keys, f"{nb.name} cites unknown key {k.strip()}"


def test_no_chapter_uses_an_output_widget(chapter):
    """`ipywidgets.interact` and `Output` widgets make a batch executor (nbclient: jupyter-book, nbval) answer
    the kernel on the shell channel while it waits there for the cell's reply; a chapter-3 execution hung on
    that race with the kernel idle. Live sliders use `igr_tutorial.plotting.figure_slider` instead."""
    path, nb = chapter
    code = "\n".join(cell_source(c) for c in _code_cells(nb))
    for pattern in (r"\binteract(ive)?\s*\(", r"\binteract_manual\b", r"\bOutput\s*\(", r"@interact\b"):
        assert not re.search(pattern, code), f"{path.name}: {pattern} (use igr_tutorial.plotting.figure_slider)"
