"""The student edition: the chapters with every solution removed, and a build of the book without them.

    python tools/student_edition.py --out _student          # notebooks + book build
    python tools/student_edition.py --out _student --no-build

Solutions written as ``{solution}`` blocks disappear. Gated code solutions (``{solution-start}`` …
``{solution-end}``) are replaced by one stub cell per exercise that raises ``NotImplementedError`` naming
the exercise; everything before the first stub runs as in the instructor's edition. Where the exercise names
a self-check of :mod:`igr_tutorial.checks` (``check_modified_loss`` …), its stub defines the function the
exercise asks for, raising ``NotImplementedError``, and calls the check on it: the student replaces the body and
reruns the cell. The student book is built from the stored outputs (its notebooks are not executed: the stubs
would stop them).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Iterable

FENCE = re.compile(r"^(?P<marker>`{3,}|:{3,})\{(?P<name>solution(?:-start|-end)?)\}\s*(?P<label>\S*)")
STUB_TAG = "student-stub"
#: Pages for instructors only: left out of the student edition (notebooks and table of contents).
INSTRUCTOR_ONLY = ("instructor_guide",)


#: The function each self-check takes, as the exercises name it: ``check name -> "function(arguments)"``.
CHECKED_FUNCTIONS = {
    "check_modified_loss": "my_modified_loss(loss, h)",
    "check_r_ig": "my_r_ig(loss, params)",
    "check_gd_step": "my_gd_step(loss, params, h)",
    "check_hvp": "my_hvp(loss, params, v)",
    "check_implicit_strength": "my_strength(h, m)",
    "check_convergence_order": "my_order(hs, errors)",
    "check_flow_landing": "my_landing(a0, b0, x, y)",
}
EXERCISE = re.compile(r"^(`{3,}|:{3,})\{exercise\}[^\n]*\n:label:\s*(\S+)\n(.*?)^\1", re.S | re.M)


def exercise_checks(nb: dict) -> dict[str, str]:
    """``label -> check name`` for every exercise whose statement names a self-check of ``CHECKED_FUNCTIONS``."""
    md = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                   for c in nb["cells"] if c["cell_type"] == "markdown")
    found = {}
    for m in EXERCISE.finditer(md):
        names = [n for n in re.findall(r"\b(check_\w+)", m.group(3)) if n in CHECKED_FUNCTIONS]
        if names:
            found[m.group(2)] = names[0]
    return found


#: The header of an exercise directive: ``{exercise} Kind · ★★ · 15 min — Title`` then ``:label: ex-…``.
EXERCISE_HEADER = re.compile(
    r"^(?P<marker>`{3,}|:{3,})\{exercise\}\s*(?P<kind>[A-Za-z ]+?) · (?P<stars>★+) · (?P<minutes>\d+) min — "
    r"(?P<title>[^\n]*)\n:label:\s*(?P<label>\S+)\n(?P<body>.*?)^(?P=marker)\s*$",
    re.S | re.M,
)


@dataclasses.dataclass
class Exercise:
    """One exercise of a chapter, as its directive and its solution state it.

    ``kind`` is the classification in the title (Derive, Compute, Explore, or a combination such as
    "Derive and Compute"); ``solution_markdown`` is the prose of its solution; ``solution_code`` the sources of
    the code cells of a gated solution (``{solution-start}`` … ``{solution-end}``), in order."""

    label: str
    kind: str
    stars: int
    minutes: int
    title: str
    body: str
    solution_markdown: str = ""
    solution_code: list[str] = dataclasses.field(default_factory=list)
    cell: int = 0  # index of the markdown cell holding the directive

    @property
    def autograded(self) -> bool:
        """Compute exercises are graded by code; Derive and Explore answers are read by a person."""
        return "Compute" in self.kind.split()


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def exercises(nb: dict) -> list[Exercise]:
    """Every exercise of notebook ``nb``, with its solution (prose and gated code), in the chapter's order."""
    found: dict[str, Exercise] = {}
    inside: str | None = None
    for index, cell in enumerate(nb["cells"]):
        src = _source(cell)
        if cell["cell_type"] == "code":
            if inside is not None:
                found[inside].solution_code.append(src)
            continue
        for m in EXERCISE_HEADER.finditer(src):
            found[m["label"]] = Exercise(m["label"], m["kind"].strip(), len(m["stars"]), int(m["minutes"]),
                                         m["title"].strip(), m["body"].strip("\n"), cell=index)
        lines, i = src.split("\n"), 0
        while i < len(lines):
            m = FENCE.match(lines[i].strip())
            if inside is None and m and m["name"] == "solution":
                j = _skip_block(lines, i, m["marker"])
                body = [line for line in lines[i + 1 : j - 1] if not line.startswith(":class:")]
                if m["label"] in found:
                    found[m["label"]].solution_markdown = "\n".join(body).strip("\n")
                i = j
            elif inside is None and m and m["name"] == "solution-start":
                inside = m["label"]
                if inside not in found:
                    raise ValueError(f"a {{solution-start}} names {inside}, which no exercise above it defines.")
                i = _skip_block(lines, i, m["marker"])
            elif inside is not None and m and m["name"] == "solution-end":
                inside = None
                i = _skip_block(lines, i, m["marker"])
            else:
                if inside is not None:
                    ex = found[inside]
                    ex.solution_markdown = (ex.solution_markdown + "\n" + lines[i]) if ex.solution_markdown else lines[i]
                i += 1
    if inside is not None:
        raise ValueError(f"a {{solution-start}} for {inside} has no matching {{solution-end}}.")
    for ex in found.values():
        ex.solution_markdown = ex.solution_markdown.strip("\n")
    return list(found.values())


def stub_source(label: str, check: str | None = None) -> str:
    if check is None:
        return (
            f"# Exercise {label}: write your answer here (the exercise is stated above).\n"
            f'raise NotImplementedError("Exercise {label} is yours to solve: replace this cell with your own code.")\n'
        )
    signature = CHECKED_FUNCTIONS[check]
    return (
        f"# Exercise {label}: write the function below (the exercise is stated above), then run this cell:\n"
        f"# the self-check tries it on random problems and gives a hint when something is off.\n"
        f"from igr_tutorial.checks import {check}\n\n\n"
        f"def {signature}:\n"
        f'    raise NotImplementedError("Exercise {label} is yours to solve: write this function.")\n\n\n'
        f"result = {check}({signature.split('(')[0]})\n"
        f"print(result)\n"
        f"assert result, str(result)\n"
    )


def _skip_block(lines: list[str], i: int, marker: str) -> int:
    """Index just past the fenced block opened at ``lines[i]`` (closed by a line equal to ``marker``)."""
    j = i + 1
    while j < len(lines) and lines[j].strip() != marker:
        j += 1
    return j + 1


def strip_solutions(nb: dict) -> tuple[dict, list[str]]:
    """Return a copy of notebook ``nb`` without solutions, and the labels of the exercises given stubs."""
    out = copy.deepcopy(nb)
    checks = exercise_checks(nb)
    cells = []
    inside: str | None = None  # label of the gated solution we are in
    stubbed: list[str] = []
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code":
            lines, kept, i = src.split("\n"), [], 0
            while i < len(lines):
                m = FENCE.match(lines[i].strip())
                if inside is None and m and m["name"] == "solution":
                    i = _skip_block(lines, i, m["marker"])
                    kept.append("*(The worked answer is not part of the student edition.)*")
                elif inside is None and m and m["name"] == "solution-start":
                    inside = m["label"]
                    i = _skip_block(lines, i, m["marker"])
                elif inside is not None and m and m["name"] == "solution-end":
                    inside = None
                    i = _skip_block(lines, i, m["marker"])
                elif inside is not None:
                    i += 1  # prose of a gated solution
                else:
                    kept.append(lines[i])
                    i += 1
            text = "\n".join(kept).strip("\n")
            if text.strip():
                new = copy.deepcopy(cell)
                new["source"] = text
                cells.append(new)
        elif inside is not None:
            if inside not in stubbed:
                stubbed.append(inside)
                cells.append({
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"stub-{inside}"[:64],
                    "metadata": {"tags": [STUB_TAG]},
                    "outputs": [],
                    "source": stub_source(inside, checks.get(inside)),
                })
        else:
            cells.append(copy.deepcopy(cell))
    if inside is not None:
        raise ValueError(f"a {{solution-start}} for {inside} has no matching {{solution-end}}.")
    out["cells"] = cells
    return out, stubbed


def make_student_notebooks(book_dir: pathlib.Path, out_dir: pathlib.Path) -> dict[str, list[str]]:
    """Write the student version of every ``book_dir/*.ipynb`` to ``out_dir``; returns the stubs per file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for path in sorted(book_dir.glob("*.ipynb")):
        if path.stem in INSTRUCTOR_ONLY:
            continue
        nb, stubs = strip_solutions(json.loads(path.read_text()))
        (out_dir / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        report[path.name] = stubs
    return report


def student_toc(text: str) -> str:
    """The table of contents without instructor-only pages (and without parts they leave empty)."""
    import yaml

    toc = yaml.safe_load(text)
    keep = lambda entry: not any(entry.get("file") == f"book/{page}" for page in INSTRUCTOR_ONLY)  # noqa: E731
    for part in toc.get("parts", []):
        part["chapters"] = [c for c in part.get("chapters", []) if keep(c)]
    if "parts" in toc:
        toc["parts"] = [p for p in toc["parts"] if p["chapters"]]
    if "chapters" in toc:
        toc["chapters"] = [c for c in toc["chapters"] if keep(c)]
    return yaml.safe_dump(toc, sort_keys=False, allow_unicode=True)


def _copy_book(root: pathlib.Path, out: pathlib.Path) -> None:
    """Copy the book's sources (not its notebooks) and a config that builds from stored outputs."""
    (out / "book").mkdir(parents=True, exist_ok=True)
    for f in (root / "book").iterdir():
        if f.is_file() and f.suffix != ".ipynb" and f.stem not in INSTRUCTOR_ONLY:
            shutil.copy2(f, out / "book" / f.name)
    ext = root / "book" / "_ext"  # the book's Sphinx extensions (sphinx.local_extensions in _config.yml)
    if ext.is_dir():
        shutil.copytree(ext, out / "book" / "_ext", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    (out / "_toc.yml").write_text(student_toc((root / "_toc.yml").read_text()))
    config = (root / "_config.yml").read_text()
    config = re.sub(r"execute_notebooks:\s*\w+", "execute_notebooks: \"off\"", config)
    config = re.sub(r'^title:\s*"?([^"\n]*)"?', r'title: "\1 (student edition)"', config, count=1, flags=re.M)
    (out / "_config.yml").write_text(config)


def make_student_edition(
    root: pathlib.Path, out: pathlib.Path, *, build: bool = True, extra_args: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Student notebooks under ``out/book`` and, with ``build``, their book under ``out/_build/html``."""
    out = out.resolve()
    if out == root.resolve():
        raise ValueError("the student edition must go to a folder other than the book itself.")
    _copy_book(root, out)
    report = make_student_notebooks(root / "book", out / "book")
    if build:
        exe = pathlib.Path(sys.executable).parent / "jupyter-book"
        cmd = [str(exe if exe.exists() else "jupyter-book"), "build", str(out), "--all", "-W", "-n", "--keep-going", *extra_args]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("the student book did not build:\n" + (proc.stdout + proc.stderr)[-4000:])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/student_edition.py",
        description="Make the student edition: chapters without solutions (stubs raise NotImplementedError) "
        "and a build of the book without them.",
    )
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path("."), help="the book's repository (default: .)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("_student"), help="output folder (default: _student)")
    parser.add_argument("--no-build", action="store_true", help="write the notebooks only, do not build the book")
    args = parser.parse_args(argv)
    if not (args.root / "_toc.yml").exists():
        parser.error(f"{args.root} has no _toc.yml: run from the repository root or pass --root.")
    report = make_student_edition(args.root, args.out, build=not args.no_build)
    for name, stubs in report.items():
        print(f"{name}: {len(stubs)} exercise stub(s)")
    print(f"student notebooks: {args.out / 'book'}")
    if not args.no_build:
        print(f"student book: {args.out / '_build' / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
