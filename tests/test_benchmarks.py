"""The benchmarks (issue 7, top-level `benchmarks/`, outside the wheel): a quick smoke run of one case, the
harness's arithmetic, and the committed report `book/performance.json`, each checked by recomputing it here.

No timing assertions: speed goals are judged by the benchmark itself (`python -m benchmarks`, see the README),
never by a unit test, whose timings would depend on the machine and its load.
"""

from __future__ import annotations

import json
import os
import pkgutil
import statistics
import subprocess
import sys
import tomllib

import pytest

from _repo import BOOK, ROOT

if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import harness, report as rep, run as bench  # noqa: E402

OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
MACHINE_KEYS = {"date", "platform", "cpu_model", "cpu_count", "cpus_usable", "memory", "device", "versions",
                "load_average"}


def check_case(case: dict) -> None:
    """Every number that is derived from others in a case equals the same derivation done here."""
    assert [case["name"], case["title"]] == list(bench.CASES[case["id"]][:2])
    assert "error" not in case, case.get("error")
    assert case["goal"]["text"] and case["variants"]
    for key, v in case["variants"].items():
        assert v["label"] and v["repeats"] >= 1 and len(v["times_s"]) == v["repeats"], key
        assert v["median_s"] == pytest.approx(statistics.median(v["times_s"])), key
    if case["baseline"] is None:
        assert case["ratios"] == {}
    else:
        base = case["variants"][case["baseline"]]["median_s"]
        assert set(case["ratios"]) == set(case["variants"]) - {case["baseline"]}
        for key, ratio in case["ratios"].items():
            assert ratio == pytest.approx(case["variants"][key]["median_s"] / base)
    for cond in case["goal"]["conditions"]:
        assert cond["met"] is (None if cond["value"] is None else OPS[cond["comparison"]](cond["value"], cond["threshold"]))
    flags = [c["met"] for c in case["goal"]["conditions"]]
    assert case["met"] is (None if not flags or None in flags else all(flags))
    assert len(case["load_average"]["before"]) == len(case["load_average"]["after"]) == 3


def check_report(report: dict) -> None:
    assert report["schema"] == rep.SCHEMA_VERSION
    assert MACHINE_KEYS <= set(report["machine"]), MACHINE_KEYS - set(report["machine"])
    assert report["machine"]["device"]["backend"] and report["machine"]["device"]["jax_version"]
    assert report["ratio_definition"] == harness.RATIO_DEFINITION
    for case in report["cases"]:
        check_case(case)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """Case 1 (GD trajectory, 1,000 steps) in the quick mode, through the command line: a few seconds."""
    out = tmp_path_factory.mktemp("benchmarks") / "report.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--cases", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_quick_run_writes_a_complete_report(quick_report):
    report, table = quick_report
    assert report["quick"] is True and report["command"] == "python -m benchmarks --quick --cases 1"
    assert [c["id"] for c in report["cases"]] == [1]
    check_report(report)
    gd = report["cases"][0]
    assert set(gd["variants"]) == {"package_scan", "jit_step_loop", "numpy_loop"}
    assert gd["baseline"] == "jit_step_loop" and gd["settings"]["steps"] == bench.QUICK.gd_steps
    (cond,) = gd["goal"]["conditions"]
    assert cond["threshold"] == 50 and cond["value"] == pytest.approx(1 / gd["ratios"]["package_scan"])
    assert gd["notes"][0].startswith("the three trajectories agree to")
    assert float(gd["notes"][0].split("agree to ")[1].split()[0]) < 1e-12, "the three loops must compute one trajectory"
    for key in gd["variants"]:
        assert key in table
    assert "QUICK MODE" in table and "(quick)" in table, "a quick run must not read as a verdict on the goals"


def test_running_a_case_leaves_jax_configuration_alone():
    """Cases 1 and 3 compute in float64 inside `jax.enable_x64`; importing and running must not switch it on."""
    import jax

    before = jax.config.jax_enable_x64
    case = bench.run_case(1, bench.QUICK)
    assert "error" not in case, case.get("error")
    assert case["settings"]["dtype"] == "float64"
    assert jax.config.jax_enable_x64 == before


def test_harness_times_every_variant_and_interleaves_them():
    calls = []
    stats, results = harness.time_variants({
        "a": harness.Variant("a", lambda: calls.append("a") or 1, repeats=3),
        "b": harness.Variant("b", lambda: calls.append("b") or 2, repeats=2, warmup=False),
    })
    assert calls == ["a", "a", "b", "a", "b", "a"], "one warm-up of a, then round-robin"
    assert stats["a"]["repeats"] == 3 and stats["b"]["repeats"] == 2 and "first_call_s" not in stats["b"]
    assert results == {"a": 1, "b": 2}
    variants = {"x": {"median_s": 2.0}, "y": {"median_s": 0.5}}
    assert harness.ratios(variants, "x") == {"y": 0.25} and harness.ratios(variants, None) == {}


def test_goal_conditions_and_verdicts():
    assert harness.condition("x", "m", ">=", 50, 60.0)["met"] is True
    assert harness.condition("x", "m", ">=", 50, 50.0)["met"] is True
    assert harness.condition("x", "m", ">", 1, 1.0)["met"] is False
    assert harness.condition("x", "m", "<=", 3, 3.5)["met"] is False
    assert harness.condition("x", "m", "<", 1e-4, None)["met"] is None
    assert harness.condition("x", "m", "<", 1e-4, float("nan"))["met"] is None
    assert harness.met(harness.goal("g", [harness.condition("a", "m", ">", 1, 2.0),
                                          harness.condition("b", "m", "<", 1, 2.0)])) is False
    assert harness.met(harness.goal("g", [harness.condition("a", "m", ">", 1, 2.0)])) is True
    assert harness.met(harness.goal("g", [])) is None
    assert rep.format_seconds(2.5e-4) == "250 µs" and rep.format_seconds(300.0) == "5 min"


def test_cases_option_is_validated():
    parser = bench.build_parser()
    assert parser.parse_args(["--cases", "3,1"]).cases == [1, 3]
    for bad in ("9", "1,x", ""):
        with pytest.raises(SystemExit):
            parser.parse_args(["--cases", bad])


def test_committed_report_is_a_full_run_of_every_case():
    """book/performance.json (read by book/performance.ipynb) is a full run: every case, the machine, no errors."""
    report = rep.load_report(BOOK / "performance.json")
    assert report["quick"] is False, "the committed report must come from a full run, not --quick"
    assert [c["id"] for c in report["cases"]] == sorted(bench.CASES)
    check_report(report)
    md = rep.markdown_table(["case", "goal", "measured", "status"], rep.goal_rows(report))
    assert md.count("\n") == 1 + sum(max(1, len(c["goal"]["conditions"])) for c in report["cases"])


def test_a_report_of_another_schema_is_refused_with_what_to_do(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": 1, "cases": []}))
    with pytest.raises(ValueError, match="python -m benchmarks"):
        rep.load_report(old)


def test_the_wheel_holds_no_benchmarks():
    """The benchmarks live in the repository's `benchmarks/`, which the wheel does not package."""
    import igr_tutorial

    modules = {m.name for m in pkgutil.iter_modules(igr_tutorial.__path__)}
    assert "experiments" in modules, "the package directory was not found"
    assert "check_gpu" not in modules, "check-gpu runs the book's notebooks: it lives in tools/, not in the wheel"
    assert not {m for m in modules if "bench" in m}, modules
    assert not list((ROOT / "igr_tutorial").rglob("*bench*"))
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert packaged == ["igr_tutorial"], "only the package goes into the wheel, never benchmarks/"
    for path in (ROOT / "igr_tutorial").glob("*.py"):
        assert "benchmarks" not in {line.split()[1].split(".")[0] for line in path.read_text().splitlines()
                                    if line.startswith(("import ", "from "))}, f"{path.name} imports the benchmarks"
