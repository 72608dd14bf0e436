"""Run the benchmarks and write the report: ``python -m benchmarks`` (or ``python benchmarks/run.py``) from the
repository root.

Five cases, each judging a goal of issue 7 against a baseline measured in the same run (:mod:`benchmarks.harness`):
1 GD trajectory, 2 learning-rate sweep, 3 top Hessian eigenvalue, 4 EGR step cost, 5 executing the book.
``--profile`` adds XLA cost-model profiles (:mod:`benchmarks.profile`). Nothing here changes JAX's global
configuration: the float64 cases enable it inside themselves only.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import pathlib
import sys
import time
import traceback
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script, `python benchmarks/run.py`: import the folder as a package
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import case_book, case_egr, case_gd, case_hessian, case_sweep  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    RATIO_DEFINITION, LoadSampler, goal, load, machine_info, met, now, progress, ratios)
from benchmarks.report import SCHEMA_VERSION, format_table  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "book" / "performance.json"
QUICK_OUT = ROOT / "_build" / "benchmarks" / "performance-quick.json"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes and repetition counts of every case (``FULL`` for the report, ``QUICK`` for a smoke test)."""

    gd_steps: int = 10_000
    gd_lr: float = 0.01
    gd_repeats: int = 7
    gd_loop_repeats: int = 5

    sweep_runs: int = 32
    sweep_steps: int = 200
    sweep_record_every: int = 20
    sweep_train: int = 1000
    sweep_test: int = 500
    sweep_width: int = 32
    sweep_depth: int = 2
    sweep_repeats: int = 3
    sweep_variant_budget_s: float = 30.0  # stop repeating a variant once its timed repetitions took this long

    hess_widths: tuple[int, ...] = (76, 290)  # 2 hidden layers: m = 9,738 and 99,190 parameters
    hess_labels: tuple[str, ...] = ("~10k", "~100k")
    hess_train: int = 128
    hess_repeats: int = 5
    hess_dense_repeats: int = 1  # a dense run takes about a minute at ~10k parameters

    egr_steps: int = 200
    egr_repeats: int = 9
    egr_width: int = 32
    egr_train: int | None = None  # None: the "small" experiment size's training set

    book_chapters: int | None = None  # None: every chapter
    book_cell_timeout: int = 300  # seconds per cell, as in the book build (_config.yml)
    book_chapter_timeout: int = 1200  # seconds per chapter before its process group is killed
    book_attempts: int = 2  # a chapter whose execution fails or hangs is run once more


FULL = Settings()
QUICK = Settings(
    gd_steps=1000, gd_repeats=3, gd_loop_repeats=2,
    sweep_runs=4, sweep_steps=20, sweep_record_every=10, sweep_train=200, sweep_test=100, sweep_width=8,
    sweep_repeats=2, sweep_variant_budget_s=10.0,
    hess_widths=(8, 16), hess_labels=("tiny", "small"), hess_train=32, hess_repeats=2,
    egr_steps=20, egr_repeats=3, egr_width=8, egr_train=200,
    book_chapters=1,
)

#: case id -> (name, title, runner(settings, profile))
CASES: dict[int, tuple[str, str, Callable[[Settings, bool], dict[str, Any]]]] = {
    1: ("gd_trajectory", "GD trajectory on the two-parameter model", lambda s, profile: case_gd.run(s)),
    2: ("learning_rate_sweep", "Learning-rate sweep of small MLPs on MNIST-1D", case_sweep.run),
    3: ("hessian_top_eigenvalue", "Top Hessian eigenvalue of an MLP", lambda s, profile: case_hessian.run(s)),
    4: ("egr_step_cost", "Cost of one EGR step relative to one GD step", case_egr.run),
    5: ("book_execution", "Executing the whole book", case_book.run),
}


def _jsonable(x: Any) -> Any:
    """Plain JSON: NumPy scalars as Python numbers, non-finite floats as null, tuples as lists."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def run_case(case_id: int, settings: Settings, profile: bool = False) -> dict[str, Any]:
    """Run one case; a failure is recorded in the case (``error``) instead of stopping the others."""
    import jax

    name, title, runner = CASES[case_id]
    load0, t0 = load(), time.perf_counter()
    try:
        body = runner(settings, profile)
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        body = {"description": "", "variants": {}, "baseline": None, "goal": goal("", []),
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:], "notes": []}
    case = {"id": case_id, "name": name, "title": title, **body}
    case["ratios"] = ratios(case["variants"], case.get("baseline"))
    case["met"] = None if case.get("error") else met(case["goal"])
    case["skipped"] = False
    case["wall_s"] = time.perf_counter() - t0
    case["load_average"] = {"before": load0, "after": load()}
    gc.collect()
    jax.clear_caches()  # memory: the next case compiles its own programs
    return _jsonable(case)


def run_benchmarks(cases: list[int] | None = None, quick: bool = False, profile: bool = False) -> dict[str, Any]:
    """Run the cases (default: all) and return the report (a JSON-ready dict)."""
    cases = sorted(CASES) if cases is None else sorted(cases)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; the cases are {sorted(CASES)}")
    settings = QUICK if quick else FULL
    started, t0 = now(), time.perf_counter()
    machine, load_before = machine_info(), load()
    results = []
    with LoadSampler() as sampler:
        for c in cases:
            progress(f"[{c}] {CASES[c][1]} …")
            case = run_case(c, settings, profile)
            status = "ERROR" if case.get("error") else {True: "goal met", False: "goal missed", None: "no verdict"}[case["met"]]
            progress(f"[{c}] done in {case['wall_s']:.1f} s: {status}" + (" (quick sizes: not the goal's verdict)" if quick else ""))
            results.append(case)
    options = (" --quick" if quick else "") + (" --profile" if profile else "") + (
        "" if cases == sorted(CASES) else " --cases " + ",".join(map(str, cases)))
    return _jsonable({
        "schema": SCHEMA_VERSION,
        "command": "python -m benchmarks" + options,
        "quick": quick,
        "started": started,
        "finished": now(),
        "wall_s": time.perf_counter() - t0,
        "machine": machine,
        "load_average": {"before": load_before, "after": load(), "during": sampler.summary()},
        "ratio_definition": RATIO_DEFINITION,
        "settings": dataclasses.asdict(settings),
        "cases": results,
    })


def _parse_cases(text: str) -> list[int]:
    try:
        cases = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cases takes comma-separated case numbers, e.g. 1,3; got {text!r}") from None
    if not cases or any(c not in CASES for c in cases):
        raise argparse.ArgumentTypeError(f"--cases must name cases among {sorted(CASES)}; got {text!r}")
    return cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time the package's compiled paths against the loops a reader would write, check the speed "
                    "goals, write a JSON report and print a table. Cases: "
                    + "; ".join(f"{k}: {t}" for k, (_, t, _) in CASES.items()) + ".",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repetitions: a smoke test of the machinery (seconds per case, "
                             "except case 5, which then executes only the first chapter)")
    parser.add_argument("--profile", action="store_true",
                        help="also record XLA cost-model profiles that explain cases 2, 4 and 5 (slower)")
    parser.add_argument("--out", type=pathlib.Path, default=None, metavar="PATH",
                        help="where to write the JSON report (default: book/performance.json; with --quick: "
                             "_build/benchmarks/performance-quick.json)")
    parser.add_argument("--cases", type=_parse_cases, default=None, metavar="1,2,…",
                        help="which cases to run (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    report = run_benchmarks(args.cases, quick=args.quick, profile=args.profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(format_table(report))
    print(f"\nwrote {out}")
    return 1 if any(c.get("error") for c in report["cases"]) else 0


if __name__ == "__main__":
    sys.exit(main())
