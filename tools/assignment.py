"""Graded assignments from the chapters, with otter-grader: generate, grade, solutions.

    python tools/assignment.py generate 3 --out _assign             # student notebook + autograder zip
    python tools/assignment.py grade submissions/ --assignments _assign --out scores.csv
    python tools/assignment.py solutions 3 --out _solutions         # the instructor's solution notebook

``generate 3`` makes the assignment ``ch03``; ``generate 3 5`` one assignment ``ch03-ch05`` on both chapters.
Its master notebook (otter's "assign" format) is built from the chapter notebooks, never edited by hand:

- the chapters' Colab setup cell, extended to install otter-grader and (in the student notebook) to write the
  public tests, so that ``grader.check("ex-…")`` works in Colab as in Jupyter;
- per chapter, the code cells that its exercises' solutions need, found by following the names the solutions
  use back to the cells that define them (plus the chapter's import cell), not the whole chapter and its long
  experiments;
- every exercise of the chapter as an otter question worth its number of stars. Compute exercises are
  autograded: the student's cell starts from the prompt of the exercise's grading file, the solution is the
  chapter's gated solution code, and the tests (public and hidden) are the ``public_*``/``hidden_*`` functions of
  ``book/_grading/<label>.py``. Derive and Explore exercises are manually graded questions whose solution is the
  chapter's worked answer.

A grading file ``book/_grading/<label>.py`` holds ``ANSWER`` (what the student must define, shown under the
exercise), ``PROMPT`` (the student's starting code), optionally ``SOLUTION`` (code appended to the chapter's
solution to define the graded names), ``MISTAKE`` (``(old, new)``: a typical wrong answer, graded by the
end-to-end test), and self-contained test functions ``public_*`` and ``hidden_*`` whose arguments are the names
they read from the notebook; an ``assert``'s message is the hint the student sees.

``otter assign`` turns the master into the student notebook (``<name>/student``) and the autograder zip
(``<name>/autograder``, Gradescope-compatible). ``grade`` runs ``otter run`` (no Docker) on every submitted
notebook and writes one row per submission, one column per exercise. Requires ``otter-grader`` (requirements.txt).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import csv
import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Iterable

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import setup_cell  # noqa: E402
import student_edition  # noqa: E402

GRADING = ROOT / "book" / "_grading"
#: Where the submissions grade: a student notebook that takes longer than this is stopped (seconds).
TIMEOUT = 600
MANUAL_ANSWER = "_Write your answer here: a derivation in Markdown (LaTeX between dollar signs), or code and its output._"


# ------------------------------------------------------------------------------------------------
# The grading files: book/_grading/<label>.py
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Grading:
    """What ``book/_grading/<label>.py`` says about one Compute exercise.

    ``answer``: what the student must define (Markdown, shown under the exercise); ``prompt``: the student's
    starting code; ``solution``: code appended to the chapter's solution to define the graded names;
    ``mistake``: ``(old, new)``, a typical wrong answer made by replacing ``old`` in the solution with ``new``;
    ``tests``: ``(name, source, hidden)`` of every ``public_*``/``hidden_*`` function."""

    label: str
    answer: str
    prompt: str
    solution: str
    mistake: tuple[str, str]
    tests: list[tuple[str, str, bool]]


def grading_path(label: str, root: pathlib.Path = ROOT) -> pathlib.Path:
    return root / "book" / "_grading" / f"{label}.py"


def load_grading(label: str, root: pathlib.Path = ROOT) -> Grading:
    """Read the grading file of exercise ``label``; a clear error says what is missing."""
    path = grading_path(label, root)
    if not path.exists():
        raise FileNotFoundError(f"{label} is a Compute exercise but {path.relative_to(root)} does not exist: write its "
                                "public and hidden tests there (see the docstring of tools/assignment.py).")
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    values: dict = {}
    tests = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.FunctionDef) and node.name.startswith(("public_", "hidden_")):
            tests.append((node.name, ast.get_source_segment(text, node), node.name.startswith("hidden_")))
    missing = [k for k in ("ANSWER", "PROMPT", "MISTAKE") if k not in values]
    if missing or not any(h for *_, h in tests) or not any(not h for *_, h in tests):
        raise ValueError(f"{path.relative_to(root)} needs ANSWER, PROMPT, MISTAKE, at least one public_* and one "
                         f"hidden_* test function (missing: {', '.join(missing) or 'tests'}).")
    return Grading(label, values["ANSWER"].strip(), values["PROMPT"].strip("\n") + "\n",
                   values.get("SOLUTION", "").strip("\n"), tuple(values["MISTAKE"]), tests)


# ------------------------------------------------------------------------------------------------
# Which chapter cells the exercises need
# ------------------------------------------------------------------------------------------------

_BUILTINS = set(dir(builtins))


def _code(src: str) -> str:
    """Cell source without IPython magics and shell lines (which are not Python)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.split("\n"))


def names(src: str) -> tuple[set[str], set[str]]:
    """``(defined, free)`` names of a cell: what it binds anywhere, and what it reads without binding."""
    tree = ast.parse(_code(src))
    defined, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, (ast.Store, ast.Del)) else used).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
            args = node.args if not isinstance(node, ast.ClassDef) else None
            if args is not None:
                defined.update(a.arg for a in args.args + args.kwonlyargs + args.posonlyargs)
                defined.update(a.arg for a in (args.vararg, args.kwarg) if a is not None)
        elif isinstance(node, ast.Lambda):
            defined.update(a.arg for a in node.args.args + node.args.kwonlyargs)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    return defined, used - defined - _BUILTINS


def context_cells(nb: dict, before: int, sources: Iterable[str]) -> list[int]:
    """Indices of the chapter's code cells (before cell ``before``) that code ``sources`` needs: the import cell
    (the first code cell after the Colab setup cell) and, transitively, the last cell defining each free name."""
    code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and i < before]
    setup = [i for i in code if student_edition._source(nb["cells"][i]).startswith(setup_cell.MARKER)]
    code = [i for i in code if i not in setup]
    need: set[str] = set()
    for src in sources:
        need |= names(src)[1]
    chosen = {code[0]} if code else set()
    for i in reversed(code):
        defined, free = names(student_edition._source(nb["cells"][i]))
        if defined & need or i in chosen:
            chosen.add(i)
            need = (need - defined) | free
    return sorted(chosen)


# ------------------------------------------------------------------------------------------------
# The master notebook (otter assign format)
# ------------------------------------------------------------------------------------------------


def chapter_path(number: int, root: pathlib.Path = ROOT) -> pathlib.Path:
    found = sorted((root / "book").glob(f"{number:02d}_*.ipynb"))
    if not found:
        chapters = ", ".join(str(int(p.name[:2])) for p in setup_cell.chapters(root))
        raise ValueError(f"there is no chapter {number}: the chapters are {chapters}.")
    return found[0]


def assignment_name(numbers: Iterable[int]) -> str:
    """``ch03`` for chapter 3, ``ch03-ch09`` for an assignment on chapters 3 and 9."""
    return "-".join(f"ch{n:02d}" for n in dict.fromkeys(numbers))


def plain_markdown(text: str) -> str:
    """MyST roles as plain Markdown (Jupyter and Colab do not know ``{cite}`` or ``{prf:ref}``)."""
    text = re.sub(r"\{cite(?::\w+)?\}`([^`]*)`", r"[\1]", text)
    text = re.sub(r"\{[\w:-]+\}`([^`<]*?)\s*(?:<[^`]*>)?`", r"*\1*", text)
    return text


def _raw(text: str) -> dict:
    return {"cell_type": "raw", "metadata": {}, "source": text}


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def _code_cell(text: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": text}


def otter_version() -> str:
    """The otter-grader version pinned in requirements.txt (the student notebook installs the same)."""
    pins = (ROOT / "requirements.txt").read_text()
    match = re.search(r"^otter-grader==(\S+)", pins, re.M)
    if not match:
        raise SystemExit("requirements.txt does not pin otter-grader: add otter-grader==<version>.")
    return match.group(1)


def setup_source(root: pathlib.Path = ROOT) -> str:
    """The chapter's Colab setup cell, plus otter-grader (what the public checks need)."""
    return (
        setup_cell.setup_cell_source(root).replace(
            "# Colab setup: installs this book's package", "# Colab setup: installs this book's package and the grader")
        + "\n"
        'if importlib.util.find_spec("otter") is None:\n'
        f'    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "otter-grader=={otter_version()}"], check=True)\n'
    )


def _split_asserts(code: str) -> tuple[str, list[str]]:
    """``code`` without its top-level ``assert`` statements, and those statements (the chapter's own checks)."""
    lines = code.rstrip("\n").split("\n")
    asserts, drop = [], set()
    for node in ast.parse(_code(code)).body:
        if isinstance(node, ast.Assert):
            asserts.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
            drop.update(range(node.lineno - 1, node.end_lineno))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop), asserts


def _solution_cell(grading: Grading, code: list[str]) -> str:
    """The student's prompt and the solution: the chapter's code, then the lines that define the graded names,
    then the chapter's own top-level asserts (so that an answer the chapter's checks reject is still graded)."""
    prompt = grading.prompt.rstrip("\n")
    parts = [_split_asserts(c) for c in code]
    body = "\n\n".join(c for c, _ in parts)
    if grading.solution:
        body += "\n\n" + grading.solution
    checks = [a for _, asserts in parts for a in asserts]
    if checks:
        body += "\n\n" + "\n".join(checks)
    return f'""" # BEGIN PROMPT\n{prompt}\n""" # END PROMPT\n# BEGIN SOLUTION NO PROMPT\n{body}\n# END SOLUTION\n'


def _test_cell(name: str, source: str, hidden: bool) -> str:
    return f'""" # BEGIN TEST CONFIG\nhidden: {str(hidden).lower()}\n""" # END TEST CONFIG\n{source}\n'


def _chapter_title(nb: dict, fallback: str) -> str:
    return next((student_edition._source(c).split("\n")[0].lstrip("# ").strip() for c in nb["cells"]
                 if c["cell_type"] == "markdown"), fallback)


def master_notebook(numbers: Iterable[int], root: pathlib.Path = ROOT) -> tuple[dict, list[dict]]:
    """The otter master notebook of one assignment on chapters ``numbers`` and a summary row per exercise
    (``label``, ``chapter``, ``kind``, ``points``, ``autograded``).

    Per chapter, in order: the chapter's code cells that its Compute solutions need, then its exercises (so that
    each chapter's names are defined again before its own exercises)."""
    numbers = list(dict.fromkeys(numbers))
    name = assignment_name(numbers)
    config = {
        "name": name,
        "init_cell": False,
        "check_all_cell": False,
        "export_cell": {"pdf": False, "run_tests": False,
                        "instructions": "In Colab, submit the notebook itself instead: File → Download → Download .ipynb."},
        "generate": {"pdf": False, "filtering": False},
        "requirements": "requirements.txt",
        "run_tests": False,
        "solutions_pdf": False,
        "tests": {"files": True, "ok_format": False},
        "python_version": "3.11",
    }
    chapters = [(n, chapter_path(n, root)) for n in numbers]
    titles = [_chapter_title(json.loads(p.read_text()), p.stem) for _, p in chapters]
    cells = [_raw("# ASSIGNMENT CONFIG\n" + _yaml(config))]
    cells.append(_md(
        f"# Assignment {name}: {'; '.join(titles)}\n\n"
        "Run the first cells, then solve each exercise below in the cell under it. Exercises marked *Compute* are "
        "graded automatically: `grader.check(\"…\")` under your answer runs the public tests and gives a hint when "
        "something is off; hidden tests grade it after you submit. *Derive* and *Explore* exercises are read and "
        "graded by your instructor. The exercises come from the chapters, which explain everything they use."))
    cells.append(_code_cell(setup_source(root)))
    cells.append(_code_cell(f'import otter\n\ngrader = otter.Notebook("{name}.ipynb")'))
    summary = []
    for (number, path), title in zip(chapters, titles):
        nb = json.loads(path.read_text())
        exs = student_edition.exercises(nb)
        if not exs:
            raise ValueError(f"{path.name} has no exercises to assign.")
        gradings = {e.label: load_grading(e.label, root) for e in exs if e.autograded}
        sources = []
        for e in exs:
            if e.autograded:
                sources += e.solution_code + [gradings[e.label].solution]
        context = context_cells(nb, min(e.cell for e in exs), sources)
        cells.append(_md(f"## {title}\n\nCode from the chapter that its exercises use: run these cells as they are."))
        cells += [_code_cell(student_edition._source(nb["cells"][i])) for i in context]
        for e in exs:
            header = {"name": e.label, "points": e.stars}
            if not e.autograded:
                header["manual"] = True
            cells.append(_raw("# BEGIN QUESTION\n" + _yaml(header)))
            kind = "autograded" if e.autograded else "graded by your instructor"
            statement = f"### Exercise `{e.label}` ({e.kind} · {'★' * e.stars} · {e.minutes} min, {kind}): {e.title}\n\n"
            statement += plain_markdown(e.body)
            if e.autograded:
                statement += "\n\n**What the grader checks.** " + plain_markdown(gradings[e.label].answer)
            cells.append(_md(statement))
            if e.autograded:
                cells += [_raw("# BEGIN SOLUTION"), _code_cell(_solution_cell(gradings[e.label], e.solution_code)),
                          _raw("# END SOLUTION"), _raw("# BEGIN TESTS")]
                cells += [_code_cell(_test_cell(n, s, h)) for n, s, h in gradings[e.label].tests]
                cells.append(_raw("# END TESTS"))
            else:
                answer = plain_markdown(e.solution_markdown) or "(The chapter states no worked answer.)"
                for code in e.solution_code:
                    answer += f"\n\n```python\n{code.rstrip()}\n```"
                if e.solution_code:
                    answer += "\n\n(The code runs in the chapter, after the cells above it.)"
                cells += [_raw("# BEGIN SOLUTION"), _md(answer), _raw("# END SOLUTION")]
            cells.append(_raw("# END QUESTION"))
            summary.append({"label": e.label, "chapter": number, "kind": e.kind, "points": e.stars,
                            "autograded": e.autograded})
    cells.append(_md("## Submit\n\nSave the notebook (in Colab: File → Download → Download .ipynb) and hand in the "
                     f"file `{name}.ipynb` as your instructor asks (a folder, an LMS, or Gradescope)."))
    first = json.loads(chapters[0][1].read_text())
    master = {"cells": cells, "metadata": {k: v for k, v in first["metadata"].items()
                                           if k in ("kernelspec", "language_info")},
              "nbformat": 4, "nbformat_minor": 5}
    return master, summary


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _install_public_tests(student_nb: pathlib.Path) -> None:
    """Put the public tests into the student notebook's setup cell, which writes them to ``tests/`` when missing:
    Colab has no tests folder next to the notebook, and otter's checks need one there."""
    nb = json.loads(student_nb.read_text())
    tests_dir = student_nb.parent / "tests"
    files = {p.name: p.read_text() for p in sorted(tests_dir.glob("*.py"))}
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    src = student_edition._source(cell)
    src = src.rstrip("\n") + (
        "\n\n# The public tests of the exercises (grader.check reads them from tests/).\n"
        "import pathlib\n"
        f"_public_tests = {json.dumps(files, indent=1, ensure_ascii=False)}\n"
        'pathlib.Path("tests").mkdir(exist_ok=True)\n'
        "for _name, _text in _public_tests.items():\n"
        '    if not (pathlib.Path("tests") / _name).exists():\n'
        '        (pathlib.Path("tests") / _name).write_text(_text)\n'
    )
    cell["source"] = src
    student_nb.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _otter(*args: str) -> None:
    exe = pathlib.Path(sys.executable).parent / "otter"
    cmd = [str(exe) if exe.exists() else "otter", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n" + (proc.stdout + proc.stderr)[-4000:])


def generate(chapters: Iterable[int], out: pathlib.Path, root: pathlib.Path = ROOT) -> dict:
    """One assignment on ``chapters``, named :func:`assignment_name`: writes ``out/<name>/master`` (the otter master),
    ``out/<name>/student`` (the notebook to hand out, with its public tests) and ``out/<name>/autograder`` (the
    solutions notebook and the autograder zip, which Gradescope takes as it is). Records it in
    ``out/assignments.json`` (``{name: {"exercises": [...], "points", "autograder", "student", ...}}``) and returns
    that record."""
    chapters = list(dict.fromkeys(chapters))
    name = assignment_name(chapters)
    master, summary = master_notebook(chapters, root)
    out.mkdir(parents=True, exist_ok=True)
    base = out / name
    if base.exists():
        shutil.rmtree(base)
    (base / "master").mkdir(parents=True)
    (base / "master" / f"{name}.ipynb").write_text(json.dumps(master, indent=1, ensure_ascii=False) + "\n")
    (base / "master" / "requirements.txt").write_text(setup_cell.install_spec(root) + "\n")
    _otter("assign", "--no-run-tests", "--no-pdfs", str(base / "master" / f"{name}.ipynb"), str(base / "dist"))
    (base / "dist" / "student").rename(base / "student")
    (base / "dist" / "autograder").rename(base / "autograder")
    shutil.rmtree(base / "dist")
    _install_public_tests(base / "student" / f"{name}.ipynb")
    zips = sorted((base / "autograder").glob("*.zip"))
    record = {
        "chapters": chapters,
        "exercises": summary,
        "points": sum(e["points"] for e in summary),
        "autograded_points": sum(e["points"] for e in summary if e["autograded"]),
        "student": (base / "student" / f"{name}.ipynb").relative_to(out).as_posix(),
        "autograder": zips[-1].relative_to(out).as_posix(),
        "solutions": (base / "autograder" / f"{name}.ipynb").relative_to(out).as_posix(),
    }
    index_path = out / "assignments.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[name] = record
    index_path.write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    return {name: record}


# ------------------------------------------------------------------------------------------------
# Grading and solutions
# ------------------------------------------------------------------------------------------------


def submission_assignment(path: pathlib.Path, names: Iterable[str]) -> str:
    """The assignment a submitted notebook belongs to: otter's name in its metadata, else its file name."""
    known = sorted(names, key=len, reverse=True)
    try:
        meta = json.loads(path.read_text()).get("metadata", {}).get("otter", {})
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = {}
    if meta.get("assignment_name") in known:
        return meta["assignment_name"]
    for name in known:
        if name in path.stem:
            return name
    raise ValueError(f"{path.name}: cannot tell which assignment this is (known: {', '.join(known)}); "
                     f"name the file after it, e.g. {known[0]}_<student>.ipynb.")


def _start_run(submission: pathlib.Path, autograder: pathlib.Path, workdir: pathlib.Path) -> subprocess.Popen:
    """``otter run`` (no container) on one notebook, in ``workdir`` (where it leaves ``results.pkl``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    exe = pathlib.Path(sys.executable).parent / "otter"
    cmd = [str(exe) if exe.exists() else "otter", "run", "--no-logo", "-p", "-a", str(autograder.resolve()),
           "-o", str(workdir.resolve()), str(submission.resolve())]
    log = (workdir / "otter-run.log").open("w")
    return subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)


def _scores(workdir: pathlib.Path) -> dict[str, tuple[float, float, str]]:
    """``{question: (score, possible, hints of the failed tests)}`` from the results ``otter run`` left."""
    import dill

    pkl = workdir / "results.pkl"
    if not pkl.exists():
        log = (workdir / "otter-run.log").read_text()[-3000:]
        raise RuntimeError(f"otter run left no results in {workdir}:\n{log}")
    with pkl.open("rb") as f:
        results = dill.load(f)
    scores = {}
    for question, result in results.results.items():
        messages = "\n".join(r.message for r in result.test_case_results if not r.passed and r.message)
        scores[question] = (float(result.score), float(result.possible), messages)
    return scores


def grade(submissions: pathlib.Path, assignments: pathlib.Path, out: pathlib.Path, jobs: int = 1) -> list[dict]:
    """Grade every ``*.ipynb`` under ``submissions`` with the autograder of its assignment, ``jobs`` at a time;
    write ``out`` (CSV: one row per submission, one column per exercise; manually graded exercises have a column
    left empty for the instructor) and ``<out stem>.feedback/<submission>.txt`` (the hints of the failed tests)."""
    index_path = assignments / "assignments.json"
    if not index_path.exists():
        raise FileNotFoundError(f"{assignments} holds no generated assignment: run `python tools/assignment.py "
                                f"generate <chapters> --out {assignments}` first.")
    index = json.loads(index_path.read_text())
    files = sorted(p for p in submissions.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not files:
        raise FileNotFoundError(f"no notebook (*.ipynb) under {submissions}.")
    names = [submission_assignment(p, index) for p in files]
    feedback = out.parent / (out.stem + ".feedback")
    feedback.mkdir(parents=True, exist_ok=True)
    rows, columns = [], []
    with tempfile.TemporaryDirectory() as tmp:
        procs, workdirs = [], []
        for k, (path, name) in enumerate(zip(files, names)):
            while sum(p.poll() is None for p in procs) >= max(1, jobs):
                time.sleep(0.2)
            workdirs.append(pathlib.Path(tmp) / f"run{k}")
            procs.append(_start_run(path, assignments / index[name]["autograder"], workdirs[-1]))
        for proc in procs:
            proc.wait()
        for path, name, workdir in zip(files, names, workdirs):
            info = index[name]
            scores = _scores(workdir)
            row = {"submission": path.relative_to(submissions).as_posix(), "assignment": name}
            text = []
            for ex in info["exercises"]:
                col = f"{ex['label']} ({'auto' if ex['autograded'] else 'manual'}, /{ex['points']})"
                if col not in columns:
                    columns.append(col)
                if ex["autograded"]:
                    score, _, messages = scores.get(ex["label"], (0.0, ex["points"], "not graded"))
                    row[col] = round(score, 4)
                    if messages:
                        text.append(f"## {ex['label']}: {score:g} of {ex['points']}\n{messages}\n")
                else:
                    row[col] = ""
            row["autograded score"] = round(sum(v for k, v in row.items() if "(auto," in k), 4)
            row["autograded points"] = info["autograded_points"]
            row["manual points"] = info["points"] - info["autograded_points"]
            (feedback / f"{path.stem}.txt").write_text("\n".join(text) or "All autograded exercises passed.\n")
            rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["submission", "assignment", *columns, "autograded score", "autograded points", "manual points"]
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def solutions(chapters: Iterable[int], out: pathlib.Path, root: pathlib.Path = ROOT) -> pathlib.Path:
    """The solution notebook of the assignment on ``chapters``, ``out/<name>-solutions.ipynb``: otter's autograder
    notebook, i.e. the exercises with the chapters' answers (and the tests of the Compute exercises)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ((name, info),) = generate(chapters, pathlib.Path(tmp), root).items()
        nb = json.loads((pathlib.Path(tmp) / info["solutions"]).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["source"] = _without_markers(student_edition._source(cell))
    target = out / f"{name}-solutions.ipynb"
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return target


def _without_markers(src: str) -> str:
    """A solution cell without otter's markers and the student's prompt (for the instructor's reading copy)."""
    src = re.sub(r'""" # BEGIN PROMPT\n.*?""" # END PROMPT\n', "", src, flags=re.S)
    return "\n".join(line for line in src.split("\n")
                     if line.strip() not in ("# BEGIN SOLUTION NO PROMPT", "# BEGIN SOLUTION", "# END SOLUTION"))


def with_mistakes(nb: dict, labels: Iterable[str], root: pathlib.Path = ROOT) -> dict:
    """A copy of a solutions notebook with the typical wrong answer (``MISTAKE`` of the grading file) of each
    exercise in ``labels``: a made-up submission, for tests and the instructor guide."""
    nb = json.loads(json.dumps(nb))
    for label in labels:
        old, new = load_grading(label, root).mistake
        hits = [c for c in nb["cells"] if c["cell_type"] == "code" and old in student_edition._source(c)]
        if len(hits) != 1:
            raise ValueError(f"the mistake of {label} ({old!r}) matches {len(hits)} cells of the notebook, not 1.")
        hits[0]["source"] = student_edition._source(hits[0]).replace(old, new)
    return nb


def walkthrough(chapters: Iterable[int], out: pathlib.Path, jobs: int = 2, root: pathlib.Path = ROOT,
                workdir: pathlib.Path | None = None) -> dict:
    """A real run for the instructor guide: generate the assignment, make three submissions (the solutions, the
    untouched student notebook, the solutions with the typical mistake of every Compute exercise but the last, or
    of the only one), grade them, and write what the guide shows (points per exercise, the CSV, the hints) to
    ``out`` (JSON). The run happens in ``workdir`` and stays there when one is given (``assign/`` as `generate`
    writes it, ``submissions/``, ``scores.csv``, ``scores.feedback/``: the test suite checks them), else in a
    temporary folder."""
    with tempfile.TemporaryDirectory() if workdir is None else contextlib.nullcontext(workdir) as tmp:
        tmp = pathlib.Path(tmp)
        ((name, info),) = generate(chapters, tmp / "assign", root).items()
        subs = tmp / "submissions"
        subs.mkdir()
        solved = json.loads((tmp / "assign" / info["solutions"]).read_text())
        auto = [e["label"] for e in info["exercises"] if e["autograded"]]
        wrong = auto if len(auto) == 1 else auto[:-1]
        (subs / f"{name}_alice.ipynb").write_text(json.dumps(solved))
        shutil.copy(tmp / "assign" / info["student"], subs / f"{name}_bob.ipynb")
        (subs / f"{name}_carol.ipynb").write_text(json.dumps(with_mistakes(solved, wrong, root)))
        grade(subs, tmp / "assign", tmp / "scores.csv", jobs=jobs)
        record = {
            "assignment": name,
            "chapters": info["chapters"],
            "submissions": {f"{name}_alice.ipynb": "the instructor's solutions",
                            f"{name}_bob.ipynb": "the student notebook, untouched",
                            f"{name}_carol.ipynb": "the solutions with a typical mistake in " + ", ".join(wrong)},
            "exercises": info["exercises"],
            "points": info["points"],
            "autograded_points": info["autograded_points"],
            "scores_csv": (tmp / "scores.csv").read_text(),
            "feedback": {p.name: p.read_text() for p in sorted((tmp / "scores.feedback").glob("*.txt"))},
        }
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/assignment.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="one assignment on the chapters: the student notebook with public tests, "
                       "and the autograder zip")
    g.add_argument("chapters", type=int, nargs="+", help="chapter numbers, e.g. 3 (or 3 5: one assignment on both)")
    g.add_argument("--out", type=pathlib.Path, default=pathlib.Path("_assign"))
    r = sub.add_parser("grade", help="grade a folder of submitted notebooks locally (no Docker) to a CSV")
    r.add_argument("submissions", type=pathlib.Path)
    r.add_argument("--assignments", type=pathlib.Path, default=pathlib.Path("_assign"),
                   help="the folder `generate` wrote (default: _assign)")
    r.add_argument("--out", type=pathlib.Path, default=pathlib.Path("scores.csv"))
    r.add_argument("--jobs", type=int, default=1, help="notebooks graded at the same time (default: 1)")
    s = sub.add_parser("solutions", help="the solution notebook of the assignment on the chapters")
    s.add_argument("chapters", type=int, nargs="+")
    s.add_argument("--out", type=pathlib.Path, default=pathlib.Path("_solutions"))
    w = sub.add_parser("walkthrough", help="regenerate the instructor guide's walkthrough (a real run, as JSON)")
    w.add_argument("chapters", type=int, nargs="+")
    w.add_argument("--out", type=pathlib.Path, default=ROOT / "book" / "_grading" / "walkthrough.json")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            for name, info in generate(args.chapters, args.out).items():  # one assignment
                print(f"{name}: {len(info['exercises'])} exercises, {info['autograded_points']} of {info['points']} "
                      f"points autograded; student notebook {args.out / info['student']}, "
                      f"autograder {args.out / info['autograder']}")
        elif args.command == "grade":
            rows = grade(args.submissions, args.assignments, args.out, jobs=args.jobs)
            print(f"graded {len(rows)} submission(s): {args.out} (hints in {args.out.parent / (args.out.stem + '.feedback')})")
        elif args.command == "solutions":
            print(f"solutions: {solutions(args.chapters, args.out)}")
        else:
            walkthrough(args.chapters, args.out)
            print(f"walkthrough: {args.out}")
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
