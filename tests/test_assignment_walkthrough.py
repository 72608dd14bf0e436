"""The instructor guide's grading walkthrough is a real run: rerunning it reproduces the stored file exactly.

A separate file from tests/test_assignment.py so that pytest-xdist (--dist loadfile) runs the two on two workers.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from _repo import BOOK, ROOT

_spec = importlib.util.spec_from_file_location("assignment", ROOT / "tools" / "assignment.py")
assignment = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = assignment  # dataclasses look their module up there
_spec.loader.exec_module(assignment)

STORED = BOOK / "_grading" / "walkthrough.json"


@pytest.mark.slow
def test_the_stored_walkthrough_is_what_the_tools_produce(tmp_path):
    stored = json.loads(STORED.read_text())
    fresh = assignment.walkthrough(stored["chapters"], tmp_path / "walkthrough.json", jobs=2)
    assert fresh == stored, ("the instructor guide's walkthrough is stale: run "
                             "`python tools/assignment.py walkthrough 3` and commit book/_grading/walkthrough.json")
    # What the guide says about it: full marks, zero, and the mistake's points lost with its hint.
    rows = {line.split(",")[0]: line for line in stored["scores_csv"].splitlines()[1:]}
    auto = stored["autograded_points"]
    assert rows["ch03_alice.ipynb"].endswith(f",{float(auto)},{auto},{stored['points'] - auto}")
    assert rows["ch03_bob.ipynb"].endswith(f",0.0,{auto},{stored['points'] - auto}")
    assert "the factor is h/4, not h/2" in stored["feedback"]["ch03_carol.txt"]


def test_the_guide_reads_the_walkthrough():
    guide = json.loads((BOOK / "instructor_guide.ipynb").read_text())
    sources = ["".join(c["source"]) for c in guide["cells"]]
    assert any('"_grading/walkthrough.json"' in s for s in sources)
    assert any("tools/assignment.py generate 3" in s and "grade" in s and "solutions 3" in s for s in sources)
