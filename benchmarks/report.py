"""Reading and showing a report: loading with a schema check, and the tables the CLI and the Performance page print."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

SCHEMA_VERSION = 2
#: how the comparisons of a goal are written for readers
SYMBOLS = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}
_KEYS = {"schema", "command", "quick", "started", "finished", "wall_s", "machine", "load_average", "ratio_definition",
         "settings", "cases"}
_CASE_KEYS = {"id", "name", "title", "description", "variants", "baseline", "ratios", "goal", "met", "notes",
              "skipped", "wall_s", "load_average"}


def load_report(path: str | pathlib.Path) -> dict[str, Any]:
    """Read a report written by ``python -m benchmarks``; a wrong schema or a missing key is a clear error."""
    path = pathlib.Path(path)
    report = json.loads(path.read_text())
    if report.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{path} has report schema {report.get('schema')!r}, this code reads schema {SCHEMA_VERSION}: "
                         "run `python -m benchmarks` from the repository root to write a new report.")
    missing = _KEYS - set(report)
    bad = {c.get("id"): sorted(_CASE_KEYS - set(c)) for c in report.get("cases", []) if _CASE_KEYS - set(c)}
    if missing or bad:
        raise ValueError(f"{path} is not a complete report (missing {sorted(missing)}, cases lacking keys: {bad}): "
                         "run `python -m benchmarks` again.")
    return report


def format_seconds(t: float | None) -> str:
    """``t`` seconds with a unit that keeps three significant digits: µs, ms, s or min."""
    if t is None or not math.isfinite(t):
        return "—"
    if t < 1e-3:
        return f"{t * 1e6:.3g} µs"
    if t < 1:
        return f"{t * 1e3:.3g} ms"
    if t < 120:
        return f"{t:.3g} s"
    return f"{t / 60:.3g} min"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return format_seconds(value)
    if unit == "×":
        return f"{value:.3g}×"
    return f"{value:.2e}"


def goal_status(case: dict[str, Any]) -> str:
    if case.get("error"):
        return "error"
    if case.get("skipped"):
        return "skipped"
    return {True: "met", False: "missed", None: "—"}[case.get("met")]


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows ``[case, variant, median, repeats, ratio to baseline]`` for every variant."""
    rows = []
    for case in report["cases"]:
        head = f"{case['id']} {case['name']}"
        if case.get("skipped") or case.get("error"):
            why = case.get("reason") or case.get("error", "")
            rows.append([head, ("skipped: " if case.get("skipped") else "error: ") + (why[:60] + "…" if len(why) > 60 else why), "", "", ""])
        for key, v in case["variants"].items():
            ratio = "baseline" if key == case.get("baseline") else (
                f"{case['ratios'][key]:.3g}" if key in case.get("ratios", {}) else "")
            rows.append([head, key, format_seconds(v.get("median_s")), str(v.get("repeats", "")), ratio])
    return rows


def goal_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows ``[case, goal, measured, status]``, one per goal condition."""
    rows = []
    for case in report["cases"]:
        conds = case["goal"]["conditions"]
        if not conds:
            rows.append([f"{case['id']} {case['name']}", case["goal"]["text"], "", goal_status(case)])
        for c in conds:
            target = f"{SYMBOLS[c['comparison']]} {format_value(c['threshold'], c['unit'])}"
            status = "skipped" if case.get("skipped") else {True: "met", False: "MISSED", None: "—"}[c["met"]]
            if report.get("quick") and not case.get("skipped"):
                status += " (quick)"
            rows.append([f"{case['id']} {case['name']}", f"{c['label']} {target}", format_value(c["value"], c["unit"]),
                         status])
    return rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(report: dict[str, Any]) -> str:
    """The report as plain text: the machine, every variant's median, then every goal and whether it is met."""
    m, la = report["machine"], report["load_average"]
    head = (f"{m['cpu_model']} ({m['cpus_usable']} usable CPUs), JAX {m['device']['jax_version']} on "
            f"{m['device']['backend']}; load average {la['before'][0]:.2f} before, {la['after'][0]:.2f} after, "
            f"{la['during']['min']:.2f}–{la['during']['max']:.2f} during; {report['started']}")
    if report.get("quick"):
        head += ("\nQUICK MODE: smaller sizes and fewer repetitions than the goals are stated for, so a '(quick)' "
                 "verdict only shows that the machinery runs; run without --quick to judge the goals.")
    return "\n\n".join([
        head,
        _text_table(["case", "variant", "median", "reps", "× baseline time"], table_rows(report)),
        _text_table(["case", "goal", "measured", "status"], goal_rows(report)),
    ])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                     + ["| " + " | ".join(esc(x) for x in r) + " |" for r in rows])
