"""The benchmark machinery (issue 7) in its smallest mode, and the structure of the committed report.

No timing assertions: speed goals are checked by the benchmark itself (`python -m igr_tutorial.benchmarks`,
see the README), never by a unit test, whose timings would depend on the machine and its load.
"""

from __future__ import annotations

import json

import pytest

from _repo import BOOK
from igr_tutorial import benchmarks as bm

CASE_KEYS = {"id", "name", "title", "description", "variants", "baseline", "ratios", "goal", "met", "notes",
             "skipped", "load_average", "wall_s"}
MACHINE_KEYS = {"date", "platform", "python", "cpu_model", "cpu_count", "cpus_usable", "memory", "jax_backend",
                "jax_devices", "versions", "load_average"}


def check_case(case: dict) -> None:
    assert CASE_KEYS <= set(case), f"case {case.get('id')} lacks {CASE_KEYS - set(case)}"
    assert [case["name"], case["title"]] == list(bm.CASES[case["id"]])
    assert case["met"] in (True, False, None)
    assert case["goal"]["text"]
    for cond in case["goal"]["conditions"]:
        assert cond["comparison"] in (">=", ">", "<=", "<")
        assert isinstance(cond["threshold"], (int, float))
        assert cond["met"] in (True, False, None)
    assert len(case["load_average"]["before"]) == 3 and len(case["load_average"]["after"]) == 3
    if case["skipped"]:
        assert case["reason"] and case["met"] is None
        return
    assert "error" not in case, case.get("error")
    assert case["variants"]
    for key, v in case["variants"].items():
        assert v["label"] and v["repeats"] >= 1 and len(v["times_s"]) == v["repeats"], key
        assert 0 < min(v["times_s"]) <= v["median_s"] <= max(v["times_s"]), key
    if case["baseline"] is not None:
        base = case["variants"][case["baseline"]]["median_s"]
        assert set(case["ratios"]) == set(case["variants"]) - {case["baseline"]}
        for key, ratio in case["ratios"].items():
            assert ratio == pytest.approx(case["variants"][key]["median_s"] / base)
    if case["goal"]["conditions"]:
        assert case["met"] == all(c["met"] for c in case["goal"]["conditions"])


def check_report(report: dict) -> None:
    assert report["schema"] == bm.SCHEMA_VERSION
    assert MACHINE_KEYS <= set(report["machine"]), f"machine section lacks {MACHINE_KEYS - set(report['machine'])}"
    assert report["machine"]["versions"]["jax"]
    for when in ("before", "after"):
        assert len(report["load_average"][when]) == 3
    assert report["ratio_definition"]
    for case in report["cases"]:
        check_case(case)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """Cases 1 (GD trajectory, 1,000 steps) and 6 (skipped on a CPU) in the quick mode: a few seconds."""
    out = tmp_path_factory.mktemp("benchmarks") / "report.json"
    assert bm.main(["--quick", "--cases", "1,6", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_run_writes_a_complete_report(quick_report):
    assert quick_report["quick"] is True
    assert [c["id"] for c in quick_report["cases"]] == [1, 6]
    check_report(quick_report)
    gd = quick_report["cases"][0]
    assert set(gd["variants"]) == {"package_scan", "jit_step_loop", "numpy_loop"}
    assert gd["baseline"] == "jit_step_loop"
    assert gd["goal"]["threshold"] == 50


def test_gpu_case_is_skipped_with_a_reason_on_a_cpu(quick_report):
    import jax

    gpu = quick_report["cases"][1]
    if jax.default_backend() == "cpu":
        assert gpu["skipped"] and "cpu" in gpu["reason"]


def test_table_lists_every_variant_and_goal(quick_report):
    table = bm.format_table(quick_report)
    for key in quick_report["cases"][0]["variants"]:
        assert key in table
    assert "goal" in table and "gpu_paper_sweep" in table
    assert "QUICK MODE" in table and "(quick)" in table, "a quick run must not read as a verdict on the goals"
    md = bm.markdown_table(["case", "goal", "measured", "status"], bm.goal_rows(quick_report))
    assert md.count("\n") == 1 + len(bm.goal_rows(quick_report))


def test_goal_conditions_and_verdicts():
    assert bm._condition("x", "m", ">=", 50, 60.0)["met"] is True
    assert bm._condition("x", "m", "<=", 3, 3.5)["met"] is False
    assert bm._condition("x", "m", "<", 1e-4, None)["met"] is None
    goal = bm._goal("g", [bm._condition("a", "m", ">", 1, 2.0), bm._condition("b", "m", "<", 1, 2.0)])
    assert bm._met(goal) is False and goal["threshold"] == 1
    assert bm.format_seconds(2.5e-4) == "250 µs" and bm.format_seconds(300.0) == "5 min"


def test_cases_option_is_validated():
    parser = bm.build_parser()
    assert parser.parse_args(["--cases", "3,1"]).cases == [1, 3]
    with pytest.raises(SystemExit):
        parser.parse_args(["--cases", "9"])


def test_committed_report_has_every_case_and_the_machine():
    """book/performance.json (read by book/performance.ipynb) is a full run: every case, the machine, no errors."""
    report = json.loads((BOOK / "performance.json").read_text())
    assert report["quick"] is False, "the committed report must come from a full run, not --quick"
    assert [c["id"] for c in report["cases"]] == sorted(bm.CASES)
    check_report(report)
