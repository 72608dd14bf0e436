"""The student edition: no solution survives, stubs point at their exercise and raise NotImplementedError,
everything before the first stub is the instructor's code unchanged, and the student book builds."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from _repo import BOOK, ROOT, cell_source, chapter_notebooks, load_notebook
import importlib.util

_spec = importlib.util.spec_from_file_location("student_edition", ROOT / "tools" / "student_edition.py")
student = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = student  # dataclasses look their module up there
_spec.loader.exec_module(student)

CHAPTERS = chapter_notebooks()


def solution_texts(nb: dict) -> list[str]:
    """Every line of solution content in an instructor notebook (prose of {solution} blocks and gated code)
    that does not also appear outside the solutions (a loop header shared with the chapter is no leak)."""
    texts, public, inside = [], set(), False
    for cell in nb["cells"]:
        src = cell_source(cell)
        if cell["cell_type"] == "code":
            if inside:
                texts += [l for l in src.splitlines() if len(l.strip()) > 25]
            else:
                public.update(l.strip() for l in src.splitlines())
            continue
        lines = src.splitlines()
        i = 0
        while i < len(lines):
            m = student.FENCE.match(lines[i].strip())
            if m and m["name"] == "solution" and not inside:
                j = student._skip_block(lines, i, m["marker"])
                texts += [l for l in lines[i + 1 : j - 1] if len(l.strip()) > 25 and not l.startswith(":")]
                i = j
                continue
            if m and m["name"] == "solution-start":
                inside = True
            elif m and m["name"] == "solution-end":
                inside = False
            elif inside and len(lines[i].strip()) > 25:
                texts.append(lines[i])
            elif not inside:
                public.add(lines[i].strip())
            i += 1
    return [t for t in texts if t.strip() not in public]


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    report = student.make_student_edition(ROOT, out, build=True)
    return out, report


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_solution_text_survives(edition, path):
    out, report = edition
    original = json.loads(path.read_text())
    text = (out / "book" / path.name).read_text()
    assert "{solution" not in text
    # Stub cells are generated from a template (they may repeat the signature the exercise states and the
    # self-check it names): each must be exactly that template, and the rest must hold no solution line.
    checks = student.exercise_checks(original)
    cells = json.loads(text)["cells"]
    for cell in cells:
        if student.STUB_TAG in cell.get("metadata", {}).get("tags", []):
            label = cell["id"][len("stub-"):]
            assert cell_source(cell) == student.stub_source(label, checks.get(label)), f"stub {label} differs"
    rest = json.dumps([c for c in cells if student.STUB_TAG not in c.get("metadata", {}).get("tags", [])],
                      ensure_ascii=False)
    leftovers = [t for t in solution_texts(original) if json.dumps(t, ensure_ascii=False)[1:-1] in rest]
    assert not leftovers, f"solution text left in the student {path.name}: {leftovers[:3]}"
    assert solution_texts(original), f"{path.name} has no solutions to remove"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_stubs_point_at_their_exercise_and_code_before_them_is_unchanged(edition, path):
    out, report = edition
    nb = json.loads((out / "book" / path.name).read_text())
    stubs = [c for c in nb["cells"] if student.STUB_TAG in c.get("metadata", {}).get("tags", [])]
    assert stubs and len(stubs) == len(report[path.name])
    md = "\n".join(cell_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    for cell, label in zip(stubs, report[path.name]):
        assert "NotImplementedError" in cell_source(cell) and label in cell_source(cell)
        assert re.search(r":label:\s*" + re.escape(label), md), f"the stub for {label} points at no exercise"
    code_student = [cell_source(c) for c in nb["cells"] if c["cell_type"] == "code"]
    code_original = [cell_source(c) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    first = code_student.index(cell_source(stubs[0]))
    assert code_student[:first] == code_original[:first], "code before the first stub must be the instructor's"


def test_every_stub_run_on_its_own_stops_with_its_exercise(edition):
    """Every stub cell of every chapter, executed (in one kernel, each cell on its own): it must stop with its own
    exercise's NotImplementedError, directly or, for a stub that calls its self-check, as the check's failed
    result ("your function raised NotImplementedError: Exercise … is yours to solve"). The code before each
    stub is the instructor's, unchanged (the test above), and tests/test_colab.py runs that under nbval: the suite
    runs each chapter once, not a second time here."""
    out, report = edition
    cells, labels = [], []
    for path in CHAPTERS:
        nb = nbformat.read(out / "book" / path.name, as_version=4)
        stubs = [c for c in nb.cells if student.STUB_TAG in c.metadata.get("tags", [])]
        assert [c.id[len("stub-"):] for c in stubs] == report[path.name]
        cells += [nbformat.v4.new_code_cell(c.source) for c in stubs]
        labels += report[path.name]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                        "language": "python"}})
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(out / "book")}}).execute()
    for cell, label in zip(nb.cells, labels):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert len(errors) == 1, f"the stub of {label} did not stop with an error: {cell.outputs}"
        (error,) = errors
        assert error.ename in {"NotImplementedError", "AssertionError"}, (label, error.ename, error.evalue)
        assert f"Exercise {label} is yours to solve" in error.evalue, (label, error.evalue)
        if error.ename == "AssertionError":
            assert "raised NotImplementedError" in error.evalue, (label, error.evalue)


def test_the_student_book_builds_without_solutions(edition):
    out, _ = edition
    html = out / "_build" / "html" / "book"
    for path in CHAPTERS:
        page = (html / f"{path.stem}.html").read_text()
        assert 'class="solution' not in page and "solution-start" not in page
        original = json.loads(path.read_text())
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
        for line in solution_texts(original):
            words = re.sub(r"[`$*_\\{}]", "", line).strip()
            if len(words) > 40 and re.fullmatch(r"[A-Za-z ,.;:'()-]+", words):
                assert words not in text, f"solution prose shown in the student {path.stem}: {words}"
        assert "exercise admonition" in page


def test_command_line_writes_the_notebooks(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "student_edition.py"), "--root", str(ROOT), "--out", str(tmp_path),
                           "--no-build"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in (tmp_path / "book").glob("*.ipynb"))
    expected = sorted(p.name for p in BOOK.glob("*.ipynb") if p.stem not in student.INSTRUCTOR_ONLY)
    assert set(p.name for p in CHAPTERS) <= set(expected) and "instructor_guide.ipynb" not in expected
    assert written == expected, "every chapter and reference notebook, and no instructor-only page"
    assert "exercise stub" in proc.stdout


def test_a_stub_calls_the_self_check_its_exercise_names():
    """An exercise that names a check gets a stub defining the asked-for function and checking it: run as
    given, it stops with the check's report of the NotImplementedError; with a right body, the check passes."""
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source":
         "```{exercise} Compute · ★ · 5 min — Own\n:label: ex-own\nWrite `my_modified_loss(loss, h)`; check it "
         "with `igr_tutorial.checks.check_modified_loss`.\n```\n```{solution-start} ex-own\n```"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": "answer = 1"},
        {"cell_type": "markdown", "metadata": {}, "source": "```{solution-end}\n```"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    assert student.exercise_checks(nb) == {"ex-own": "check_modified_loss"}
    out, stubs = student.strip_solutions(nb)
    (stub,) = [c for c in out["cells"] if student.STUB_TAG in c["metadata"].get("tags", [])]
    src = stub["source"]
    assert stubs == ["ex-own"] and "def my_modified_loss(loss, h):" in src and "check_modified_loss(my_modified_loss)" in src
    with pytest.raises(AssertionError, match="NotImplementedError.*ex-own"):
        exec(src, {})
    import jax

    solved = src.replace('raise NotImplementedError("Exercise ex-own is yours to solve: write this function.")',
                         "return lambda t: loss(t) + h / 4 * sum(jax.numpy.sum(g ** 2) for g in "
                         "jax.tree.leaves(jax.grad(loss)(t)))")
    exec(solved, {"jax": jax})  # passes: no AssertionError


def test_every_check_an_exercise_names_exists_and_the_checks_are_used():
    from igr_tutorial import checks

    used = {}
    for nb in CHAPTERS:
        for label, check in student.exercise_checks(load_notebook(nb)).items():
            assert hasattr(checks, check), f"{label} names {check}, which igr_tutorial.checks lacks"
            used[label] = check
    assert used.get("ex-ch3-own") == "check_modified_loss", used


def test_exercises_reads_kind_points_and_both_kinds_of_solution():
    """The parser the assignment tool shares: header fields, {solution} prose, gated prose and code cells."""
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source":
         "```{exercise} Derive · ★ · 10 min — By hand\n:label: ex-a\nShow it.\n```\n\n"
         "```{solution} ex-a\n:class: dropdown\nBecause.\n```\n\n"
         "```{exercise} Derive and Compute · ★★ · 15 min — In code\n:label: ex-b\nCompute it.\n```\n"
         "````{solution-start} ex-b\n:class: dropdown\n````\nThe code below."},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": "answer = 1"},
        {"cell_type": "markdown", "metadata": {}, "source": "````{solution-end}\n````\nAfter."},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": "public = 2"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    a, b = student.exercises(nb)
    assert (a.label, a.kind, a.stars, a.minutes, a.title, a.body) == ("ex-a", "Derive", 1, 10, "By hand", "Show it.")
    assert a.solution_markdown == "Because." and a.solution_code == [] and not a.autograded
    assert (b.kind, b.stars, b.autograded) == ("Derive and Compute", 2, True)
    assert b.solution_markdown == "The code below." and b.solution_code == ["answer = 1"]


def test_the_chapters_have_eleven_autograded_exercises():
    per_chapter = [sum(e.autograded for e in student.exercises(load_notebook(p))) for p in CHAPTERS]
    assert per_chapter == [1, 2, 1, 1, 1, 1, 1, 1, 2], per_chapter
