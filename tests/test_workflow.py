"""The deploy workflow (.github/workflows/book.yml), checked offline: GitHub Actions cannot run here.

What can be checked without GitHub: the file parses as YAML; its shell steps are exactly the README's two commands,
in order, and nothing else; it uses the Python version the README states, and installs nothing beside the pins the
commands install; it keeps the status page and the Performance JSON as artifacts; and the steps that publish to
GitHub Pages run only for a push to main. The last point is checked by evaluating the workflow's own `if:`
expressions for simulated events (a push to main, a push to another branch, pull requests) with a small evaluator
of the expression syntax GitHub documents (`==`, `!=`, `&&`, `||`, `!`, parentheses, string literals, `always()`)."""

from __future__ import annotations

import re

import pytest
import yaml

from _repo import ROOT, readme_commands

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
PUBLISHING_ACTIONS = ("actions/upload-pages-artifact", "actions/deploy-pages")


def _workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True; GitHub reads it as "on".
    if True in data:
        data["on"] = data.pop(True)
    return data


def _steps(data: dict) -> list[tuple[str, dict, dict]]:
    return [(name, job, step) for name, job in data["jobs"].items() for step in job.get("steps", [])]


# --- a small evaluator of GitHub's `if:` expressions ---------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\|\||&&|==|!=|!|\(|\))|'((?:[^']|'')*)'|([A-Za-z_][A-Za-z0-9_.\-]*)(\(\))?)")


def _evaluate(expression: str, context: dict[str, str], *, status_ok: bool = True) -> bool:
    """Evaluate an Actions `if:` expression for ``context`` (e.g. ``{"github.ref": "refs/heads/main"}``).

    A job or step with no `if:` runs when the previous ones succeeded (``success()``); ``${{ }}`` is optional."""
    expr = expression.strip()
    if expr.startswith("${{") and expr.endswith("}}"):
        expr = expr[3:-2].strip()
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"the test's evaluator cannot read {expr[pos:]!r} in {expression!r}: extend it")
        op, literal, name, call = m.groups()
        if op:
            out.append({"||": " or ", "&&": " and ", "!": " not ", "==": "==", "!=": "!="}.get(op, op))
        elif literal is not None:
            out.append(repr(literal.replace("''", "'")))
        elif call:
            if name not in {"always", "success", "failure", "cancelled"}:
                raise ValueError(f"unknown function {name}() in {expression!r}")
            out.append(repr({"always": True, "success": status_ok, "failure": not status_ok, "cancelled": False}[name]))
        else:
            if name not in context:
                raise ValueError(f"{name} in {expression!r} is not in the simulated context {sorted(context)}")
            out.append(repr(context[name]))
        pos = m.end()
    return bool(eval("".join(out), {"__builtins__": {}}, {}))  # only literals and operators remain


def _runs(item: dict, context: dict[str, str]) -> bool:
    return _evaluate(item.get("if", "success()"), context)


def _triggered(data: dict, event: str, ref: str) -> bool:
    trigger = data["on"].get(event, False) if isinstance(data["on"], dict) else event in data["on"]
    if trigger is False:
        return False
    branches = (trigger or {}).get("branches") if event == "push" else None
    return branches is None or ref.removeprefix("refs/heads/") in branches


# event name, github.ref, github.head_ref (the pull request's source branch), github.base_ref (its target)
EVENTS = {
    "push to main": ("push", "refs/heads/main", "", ""),
    "push to another branch": ("push", "refs/heads/feature", "", ""),
    "pull request": ("pull_request", "refs/pull/7/merge", "feature", "main"),
    "pull request from a fork's branch named main": ("pull_request", "refs/pull/8/merge", "main", "main"),
}


def test_evaluator_reads_expressions_as_github_does():
    """The evaluator itself, on cases whose value is known, so that a wrong evaluator cannot pass the tests below."""
    ctx = {"github.event_name": "push", "github.ref": "refs/heads/main"}
    assert _evaluate("github.event_name == 'push' && github.ref == 'refs/heads/main'", ctx)
    assert not _evaluate("${{ github.event_name == 'pull_request' }}", ctx)
    assert _evaluate("github.ref != 'refs/heads/x' || github.event_name == 'nope'", ctx)
    assert not _evaluate("!(github.ref == 'refs/heads/main')", ctx)
    assert _evaluate("always()", ctx) and _evaluate("success()", ctx)
    with pytest.raises(ValueError):
        _evaluate("github.sha == 'x'", ctx)


# --- the workflow ------------------------------------------------------------------------------------------


def test_workflow_parses_and_triggers_on_pushes_to_main_and_pull_requests():
    data = _workflow()
    assert set(data["on"]) == {"push", "pull_request"}, data["on"]
    assert data["on"]["push"]["branches"] == ["main"]
    assert data["jobs"], "the workflow has no jobs"


def test_workflow_runs_exactly_the_readme_commands_in_order():
    commands = readme_commands()
    assert len(commands) == 2, commands
    runs = [step["run"].strip() for _, _, step in _steps(_workflow()) if "run" in step]
    assert runs == commands, f"the workflow's shell steps must be the README's two commands verbatim:\n{runs}"
    # The tests' command is also what .ci/run runs (tests/test_readme.py): CI and the workflow agree.
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_workflow_uses_the_readme_python_and_only_the_pinned_requirements():
    readme = (ROOT / "README.md").read_text()
    stated = set(re.findall(r"\bPython (3\.\d+)\b", readme))
    assert len(stated) == 1, f"the README should state one Python version, found {stated}"
    (python,) = stated
    versions = [step["with"]["python-version"] for _, _, step in _steps(_workflow())
                if str(step.get("uses", "")).startswith("actions/setup-python")]
    assert [str(v) for v in versions] == [python], versions
    assert "# Pinned set" in (ROOT / "requirements.txt").read_text() and f"Python {python}" in (
        ROOT / "requirements.txt").read_text()
    for _, _, step in _steps(_workflow()):
        if "run" in step:
            installs = re.findall(r"pip install[^&]*", step["run"])
            assert all(re.fullmatch(r"pip install (-q )?-r requirements.txt ?", i) for i in installs), installs


def test_workflow_keeps_the_status_page_and_performance_json_even_when_a_step_fails():
    uploads = [(job, step) for _, job, step in _steps(_workflow())
               if str(step.get("uses", "")).startswith("actions/upload-artifact")]
    assert len(uploads) == 1, uploads
    _, step = uploads[0]
    paths = step["with"]["path"].split()
    assert "_build/html/book/status.html" in paths and "book/performance.json" in paths, paths
    assert (ROOT / "book" / "status.md").exists() and (ROOT / "book" / "performance.json").exists()
    assert _evaluate(step["if"], {}, status_ok=False), "the artifacts must be uploaded when the build fails too"


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.replace(" ", "-"))
def test_workflow_publishes_only_from_a_push_to_main(event):
    data = _workflow()
    name, ref, head, base = EVENTS[event]
    if not _triggered(data, name, ref):
        assert event == "push to another branch"
        return
    ctx = {"github.event_name": name, "github.ref": ref, "github.head_ref": head, "github.base_ref": base}
    publishing = [(job, step) for _, job, step in _steps(data)
                  if str(step.get("uses", "")).startswith(PUBLISHING_ACTIONS)]
    assert {s["uses"].split("@")[0] for _, s in publishing} == set(PUBLISHING_ACTIONS), publishing
    ran = [s["uses"] for job, s in publishing if _runs(job, ctx) and _runs(s, ctx)]
    if event == "push to main":
        assert len(ran) == len(PUBLISHING_ACTIONS), f"a push to main must deploy; ran {ran}"
    else:
        assert not ran, f"{event}: nothing may be published, but {ran} would run"
    # The build and the tests run for every event that triggers the workflow.
    commands = [s["run"] for _, job, s in _steps(data) if "run" in s and _runs(job, ctx) and _runs(s, ctx)]
    assert len(commands) == 2


def test_the_deploy_job_waits_for_the_build_and_only_it_may_write_pages():
    data = _workflow()
    assert data["permissions"] == {"contents": "read"}, "by default, jobs only read the repository"
    for name, job in data["jobs"].items():
        uses = [str(s.get("uses", "")) for s in job.get("steps", [])]
        if any(u.startswith("actions/deploy-pages") for u in uses):
            assert job["needs"] == "build" and job["permissions"] == {"pages": "write", "id-token": "write"}
            assert job["environment"]["name"] == "github-pages"
        else:
            assert "pages" not in job.get("permissions", {}), f"job {name} must not get write access to Pages"
