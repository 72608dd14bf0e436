"""Graded assignments (tools/assignment.py, otter-grader): every Compute exercise has public and hidden tests that
do not call the package, and end to end, an assignment on two chapters grades three submissions as it should.

The end-to-end run is the instructor guide's walkthrough (`tools/assignment.py walkthrough`), run again: it must
reproduce the stored `book/_grading/walkthrough.json` exactly, and the files it leaves are checked here. One otter
pipeline serves both (each costs about 35 s of CPU)."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import re
import subprocess
import sys
import zipfile

import pytest

from _repo import BOOK, ROOT, cell_source, chapter_notebooks, load_notebook

_spec = importlib.util.spec_from_file_location("assignment", ROOT / "tools" / "assignment.py")
assignment = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = assignment  # dataclasses look their module up there
_spec.loader.exec_module(assignment)
student = assignment.student_edition

CHAPTERS = chapter_notebooks()
COMPUTE = [(path, e) for path in CHAPTERS for e in student.exercises(load_notebook(path)) if e.autograded]
#: The instructor guide's walkthrough, which is also the end-to-end assignment: two chapters whose Compute solutions
#: run in seconds (3: one exercise, 9: two).
STORED = BOOK / "_grading" / "walkthrough.json"
E2E_CHAPTERS = (3, 9)


@pytest.mark.parametrize("path,exercise", COMPUTE, ids=[e.label for _, e in COMPUTE])
def test_every_compute_exercise_has_public_and_hidden_tests(path, exercise):
    grading = assignment.load_grading(exercise.label)
    assert any(not hidden for *_, hidden in grading.tests) and any(hidden for *_, hidden in grading.tests)
    for name, source, _ in grading.tests:
        # Independent computations: a test never calls the package it grades.
        tree = ast.parse(source)
        package = [n for n in ast.walk(tree) if (isinstance(n, ast.Name) and n.id in {"igr", "igr_tutorial", "opt", "st"})
                   or (isinstance(n, (ast.Import, ast.ImportFrom)) and "igr_tutorial" in ast.unparse(n))]
        assert not package, f"{exercise.label}.{name} calls the package"
        assert "assert" in source and re.search(r"assert .*,", source.replace("\n", " ")), (
            f"{exercise.label}.{name}: every assertion gives the student a message")
    # The typical wrong answer is a one-place change of the chapter's own solution.
    solution = "\n".join(exercise.solution_code + [grading.solution])
    assert solution.count(grading.mistake[0]) == 1, f"{exercise.label}: MISTAKE must match the solution once"
    # The names the tests read are defined by the solution and set by the student's prompt.
    defined = assignment.names(solution)[0]
    prompted = assignment.names(grading.prompt)[0]
    for name, source, _ in grading.tests:
        args = re.match(r"def \w+\(([^)]*)\)", source).group(1)
        for arg in filter(None, (a.strip() for a in args.split(","))):
            assert arg in defined and arg in prompted, f"{exercise.label}.{name} reads {arg}, which is not answered"


def test_only_compute_exercises_are_autograded():
    graded = {p.stem for p in (ROOT / "book" / "_grading").glob("ex-*.py")}
    assert graded == {e.label for _, e in COMPUTE}, "a grading file for every Compute exercise, and only for those"


def test_context_cells_follow_names_back_to_their_definitions():
    cell = lambda s: {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": s}
    nb = {"cells": [cell("# Colab setup: x"), cell("import numpy as np"), cell("a = np.ones(2)\nslow = 1"),
                    cell("b = a * 2"), cell("unused = 3"), cell("def f(x):\n    return x + b")]}
    assert assignment.context_cells(nb, 10, ["print(f(1))"]) == [1, 2, 3, 5]
    assert assignment.names("def g(t):\n    y = t + z\n    return y")[1] == {"z"}


def test_bad_input_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="there is no chapter 42: the chapters are 1, 2"):
        assignment.chapter_path(42)
    with pytest.raises(FileNotFoundError, match="book/_grading/ex-nope.py does not exist"):
        assignment.load_grading("ex-nope")
    with pytest.raises(FileNotFoundError, match="generate <chapters>"):
        assignment.grade(tmp_path, tmp_path, tmp_path / "scores.csv")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "assignment.py"), "grade", str(tmp_path),
                           "--assignments", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "generate <chapters>" in proc.stderr


def test_myst_roles_become_plain_markdown():
    text = "See {cite}`barrett2021implicit` and {prf:ref}`thm-ch2-first-order`, chapter {doc}`02_backward`."
    assert assignment.plain_markdown(text) == ("See [barrett2021implicit] and *thm-ch2-first-order*, chapter "
                                               "*02_backward*.")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The walkthrough, run again in a kept folder: the assignment on two chapters, and three submissions graded:
    Alice's (the instructor's solutions), Bob's (the untouched student notebook) and Carol's (the solutions with a
    typical mistake in every Compute exercise but the last)."""
    out = tmp_path_factory.mktemp("assign")
    record = assignment.walkthrough(E2E_CHAPTERS, out / "walkthrough.json", jobs=2, workdir=out)
    ((name, info),) = json.loads((out / "assign" / "assignments.json").read_text()).items()
    with (out / "scores.csv").open() as f:
        table = {r["submission"]: r for r in csv.DictReader(f)}
    auto = [e["label"] for e in info["exercises"] if e["autograded"]]
    return out, name, info, table, auto[:-1], record


def test_the_walkthrough_is_the_end_to_end_assignment():
    assert tuple(json.loads(STORED.read_text())["chapters"]) == E2E_CHAPTERS


@pytest.mark.slow
def test_the_stored_walkthrough_is_what_the_tools_produce(graded):
    *_, fresh = graded
    stored = json.loads(STORED.read_text())
    assert fresh == stored, ("the instructor guide's walkthrough is stale: run "
                             "`python tools/assignment.py walkthrough 3 9` and commit book/_grading/walkthrough.json")
    # What the guide says about it: full marks, zero, and the mistakes' points lost with their hints.
    rows = {line.split(",")[0]: line for line in stored["scores_csv"].splitlines()[1:]}
    name, auto, total = stored["assignment"], stored["autograded_points"], stored["points"]
    assert rows[f"{name}_alice.ipynb"].endswith(f",{float(auto)},{auto},{total - auto}")
    assert rows[f"{name}_bob.ipynb"].endswith(f",0.0,{auto},{total - auto}")
    assert "the factor is h/4, not h/2" in stored["feedback"][f"{name}_carol.txt"]


def test_the_guide_reads_the_walkthrough():
    guide = json.loads((BOOK / "instructor_guide.ipynb").read_text())
    sources = ["".join(c["source"]) for c in guide["cells"]]
    chapters = " ".join(map(str, E2E_CHAPTERS))
    assert any('"_grading/walkthrough.json"' in s for s in sources)
    assert any(f"tools/assignment.py walkthrough {chapters}" in s for s in sources)
    assert any("tools/assignment.py generate 3" in s and "grade" in s and "solutions 3" in s for s in sources)


def _shown(nb) -> list:
    """What a notebook's code cells show: their text and Markdown outputs (no execution metadata)."""
    return [[(o["output_type"], o.get("text"), o.get("data", {}).get("text/markdown"), o.get("data", {}).get("text/plain"))
             for o in c["outputs"]] for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_guides_stored_outputs_are_what_it_computes_now():
    """The book renders the guide's stored outputs (the exercise tables, the walkthrough): they must be a fresh
    run's, or a new exercise or a new walkthrough would be missing from the page. (The chapters' stored outputs
    are checked by nbval in tests/test_colab.py.)"""
    import nbclient
    import nbformat

    stored = nbformat.read(BOOK / "instructor_guide.ipynb", as_version=4)
    fresh = nbformat.read(BOOK / "instructor_guide.ipynb", as_version=4)
    nbclient.NotebookClient(fresh, timeout=120, resources={"metadata": {"path": str(BOOK)}}).execute()
    assert _shown(fresh) == _shown(stored), (
        "book/instructor_guide.ipynb's stored outputs are stale: run `jupyter execute --inplace "
        "instructor_guide.ipynb` in book/ and commit it")


@pytest.mark.slow
def test_the_assignment_lists_every_exercise_with_its_points(graded):
    out, name, info, *_ = graded
    labels = [e.label for n in E2E_CHAPTERS for e in student.exercises(load_notebook(assignment.chapter_path(n)))]
    assert [e["label"] for e in info["exercises"]] == labels
    stars = {e.label: e.stars for n in E2E_CHAPTERS for e in student.exercises(load_notebook(assignment.chapter_path(n)))}
    assert all(e["points"] == stars[e["label"]] for e in info["exercises"])
    assert info["points"] == sum(stars.values())


@pytest.mark.slow
def test_the_student_notebook_installs_the_grader_and_carries_only_public_tests(graded):
    out, name, info, *_ = graded
    nb = json.loads((out / "assign" / info["student"]).read_text())
    setup = cell_source(next(c for c in nb["cells"] if c["cell_type"] == "code"))
    assert setup.startswith(assignment.setup_cell.MARKER) and f"otter-grader=={assignment.otter_version()}" in setup
    assert assignment.setup_cell.install_spec() in setup and "_public_tests" in setup
    text = json.dumps(nb, ensure_ascii=False)
    for label in (e["label"] for e in info["exercises"] if e["autograded"]):
        grading = assignment.load_grading(label)
        assert f'grader.check(\\"{label}\\")' in text
        for test, _, hidden in grading.tests:
            assert (test in text) != hidden, f"{label}.{test}: public tests in the notebook, hidden ones not"
        assert json.dumps(grading.mistake[0], ensure_ascii=False)[1:-1] not in text, "solution code in the student notebook"
    with zipfile.ZipFile(out / "assign" / info["autograder"]) as z:
        tests = {n for n in z.namelist() if n.startswith("tests/")}
        hidden_in_zip = all(any(t in z.read(n).decode() for n in tests)
                            for label in (e["label"] for e in info["exercises"] if e["autograded"])
                            for t, _, h in assignment.load_grading(label).tests if h)
    assert hidden_in_zip and {"run_autograder", "setup.sh", "otter_config.json"} <= set(z.namelist())


@pytest.mark.slow
def test_solutions_get_full_marks_untouched_gets_zero(graded):
    out, name, info, table, *_ = graded
    full, empty = table[f"{name}_alice.ipynb"], table[f"{name}_bob.ipynb"]
    assert float(full["autograded score"]) == info["autograded_points"] > 0
    assert float(empty["autograded score"]) == 0
    for e in info["exercises"]:
        col = f"{e['label']} ({'auto' if e['autograded'] else 'manual'}, /{e['points']})"
        if e["autograded"]:
            assert float(full[col]) == e["points"] and float(empty[col]) == 0
        else:
            assert full[col] == "" == empty[col], "manually graded exercises are left to the instructor"
    assert (out / "scores.feedback" / f"{name}_alice.txt").read_text() == "All autograded exercises passed.\n"


@pytest.mark.slow
def test_a_typical_mistake_loses_exactly_its_exercise_and_shows_the_hint(graded):
    out, name, info, table, wrong, _ = graded
    row = table[f"{name}_carol.ipynb"]
    feedback = (out / "scores.feedback" / f"{name}_carol.txt").read_text()
    for e in (e for e in info["exercises"] if e["autograded"]):
        score = float(row[f"{e['label']} (auto, /{e['points']})"])
        assert score == (0 if e["label"] in wrong else e["points"]), e["label"]
        assert (f"## {e['label']}:" in feedback) == (e["label"] in wrong)
    assert "the factor is h/4, not h/2" in feedback                      # ex-ch3-own's hint
    assert "far from β/(1 − β)" in feedback                             # ex-ch9-transient's hint
    lost = sum(e["points"] for e in info["exercises"] if e["label"] in wrong)
    assert float(row["autograded score"]) == info["autograded_points"] - lost


@pytest.mark.slow
def test_the_public_checks_run_from_the_notebook_alone(graded, tmp_path):
    """As in Colab: only the notebook, no tests folder beside it. Its first cell writes the public tests, and
    grader.check passes a right answer and names the mistake of a wrong one."""
    out, name, info, *_ = graded
    nb = json.loads((out / "assign" / info["student"]).read_text())
    (tmp_path / f"{name}.ipynb").write_text(json.dumps(nb))
    setup, init = [cell_source(c) for c in nb["cells"] if c["cell_type"] == "code"][:2]
    script = setup + "\n" + init + "\n" + (
        "import jax, jax.numpy as jnp\n"
        'jax.config.update("jax_enable_x64", True)\n'
        "def answer(factor):\n"
        "    return lambda loss, h: (lambda p: loss(p) + h * factor * sum(jnp.sum(g**2) for g in jax.tree.leaves(jax.grad(loss)(p))))\n"
        "my_modified_loss = answer(1 / 4)\n"
        'print("RIGHT", grader.check("ex-ch3-own", global_env=globals()))\n'
        "my_modified_loss = answer(1 / 2)\n"
        'print("WRONG", grader.check("ex-ch3-own", global_env=globals()))\n')
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    right, wrong = proc.stdout.split("WRONG")
    assert "All test cases passed" in right
    assert "the factor is h/4, not h/2" in wrong and "hidden" not in wrong
    assert sorted(p.name for p in (tmp_path / "tests").glob("*.py")) == sorted(
        f"{e['label']}.py" for e in info["exercises"] if e["autograded"])


def test_solutions_hold_every_answer_without_markers(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "assignment.py"), "solutions", "3", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "ch03-solutions.ipynb").read_text()
    nb = json.loads(text)
    code = "\n".join(cell_source(c) for c in nb["cells"] if c["cell_type"] == "code")
    assert "BEGIN PROMPT" not in code and "BEGIN SOLUTION" not in code
    for e in student.exercises(load_notebook(assignment.chapter_path(3))):
        for snippet in e.solution_code:
            first = next(line for line in snippet.splitlines() if line.strip())
            assert json.dumps(first, ensure_ascii=False)[1:-1] in text, f"{e.label}: its solution is missing"
        if e.solution_markdown:
            line = next(l for l in e.solution_markdown.splitlines() if len(l) > 30 and "{" not in l)
            assert json.dumps(line, ensure_ascii=False)[1:-1] in text, f"{e.label}: its worked answer is missing"
