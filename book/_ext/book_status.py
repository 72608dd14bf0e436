"""Sphinx extension behind the book's status page (``book/status.md``): facts recorded by the build itself.

The directive ``{igr-build-status} chapters`` becomes a table of every notebook page with its execution time
and result: as recorded by myst-nb when this build executed it, or, for a page rendered from its stored outputs,
as recorded in those outputs' cell timestamps;
``{igr-build-status} environment`` becomes a table of the versions of the software that built the book
(Python, JAX, jaxlib, NumPy, Jupyter Book, …), the web assets the pages load, and the device JAX runs on.
Both are filled in after every document has been read (a post-transform, like myst-nb's ``nb-exec-table``),
and nothing on the page is typed in by hand.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

KINDS = ("chapters", "environment")
_METADATA_KEY = "igr_build_status"

#: Distributions whose versions the status page lists, in this order.
DISTRIBUTIONS = ("jax", "jaxlib", "numpy", "matplotlib", "jupyter-book", "sphinx", "myst-nb", "igr-tutorial")


class build_status(nodes.General, nodes.Element):
    """Placeholder for a status table, replaced once all documents are read."""


class BuildStatusDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        kind = self.arguments[0]
        if kind not in KINDS:
            raise self.error(f"igr-build-status: the argument must be one of {KINDS}, not {kind!r}")
        from myst_nb.sphinx_ import NbMetadataCollector

        NbMetadataCollector.set_doc_data(self.env, self.env.docname, _METADATA_KEY, True)
        return [build_status(kind=kind)]


def _table(header: list[str], rows: list[list], classes: tuple[str, ...] = ()) -> nodes.table:
    table = nodes.table(classes=["colwidths-auto", "igr-build-status", *classes])
    tgroup = nodes.tgroup(cols=len(header))
    table += tgroup
    for _ in header:
        tgroup += nodes.colspec(colwidth=1)
    thead = nodes.thead()
    tgroup += thead
    row = nodes.row()
    thead += row
    for name in header:
        row += nodes.entry("", nodes.paragraph(text=name))
    tbody = nodes.tbody()
    tgroup += tbody
    for cells in rows:
        row = nodes.row()
        tbody += row
        for cell in cells:
            para = cell if isinstance(cell, nodes.paragraph) else nodes.paragraph(text=str(cell))
            row += nodes.entry("", para)
    return table


def _doc_link(from_doc: str, docname: str, title: str) -> nodes.paragraph:
    ref = pending_xref(
        refdoc=from_doc,
        reftarget="/" + docname,
        reftype="doc",
        refdomain="std",
        refexplicit=True,
        refwarn=True,
    )
    ref += nodes.inline(text=title)
    para = nodes.paragraph()
    para += ref
    return para


def _device_report() -> dict:
    """The JAX backend and devices, asked of a fresh Python (the kernels' environment), not of Sphinx itself:
    on a GPU this process must not take GPU memory, and importing JAX here could differ from a kernel."""
    code = (
        "import json, jax\n"
        "from igr_tutorial.experiments import select_size\n"
        "d = jax.devices()\n"
        "print(json.dumps({'backend': jax.default_backend(), 'devices': [x.device_kind for x in d],"
        " 'platform': d[0].platform, 'size': select_size().name}))\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        return __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - the page reports what went wrong instead of failing the build
        return {"backend": "unknown", "devices": [], "platform": "unknown", "size": "unknown", "error": str(exc)}


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _describe_device(device: dict) -> str:
    """E.g. ``GPU: 1 × NVIDIA H100 80GB HBM3`` or ``CPU: 2 cores, AMD EPYC …``, and JAX's backend."""
    kinds = device.get("devices", [])
    backend = device.get("backend", "unknown")
    if device.get("platform") == "cpu":
        what = f"CPU: {os.cpu_count()} cores, {_cpu_model()}"
    elif kinds:
        what = f"{device.get('platform', '').upper()}: " + ", ".join(
            f"{kinds.count(k)} × {k}" for k in sorted(set(kinds))
        )
    else:
        what = "unknown (" + device.get("error", "JAX did not report its devices") + ")"
    return f"{what} (JAX backend {backend!r})"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def stored_execution(path: str) -> dict | None:
    """The execution recorded in a notebook's stored outputs: nbclient writes each code cell's timestamps
    (``metadata.execution``) when it executes a notebook. Returns the summed cell times in seconds, when the
    execution started, and whether no stored output is an error; ``None`` when the notebook holds no timings."""
    try:
        with open(path, encoding="utf-8") as f:
            cells = json.load(f)["cells"]
    except (OSError, ValueError, KeyError):
        return None
    runtime, start, failed = 0.0, None, False
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        failed = failed or any(out.get("output_type") == "error" for out in cell.get("outputs", []))
        times = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in times and "shell.execute_reply" in times:
            begin = datetime.datetime.fromisoformat(times["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.datetime.fromisoformat(times["shell.execute_reply"].replace("Z", "+00:00"))
            runtime += (end - begin).total_seconds()
            start = start or begin
    if start is None:
        return None
    return {"runtime": runtime, "start": start, "succeeded": not failed}


def _chapters_table(env, docname: str) -> list[nodes.Node]:
    """One row per notebook page: its execution time in this build (as myst-nb recorded it) or, for a notebook
    this build rendered from its stored outputs, the time recorded in those outputs when they were made."""
    from myst_nb.sphinx_ import NbMetadataCollector

    executed = {doc: data.get("exec_data") for doc, data in NbMetadataCollector.get_doc_data(env).items()}
    parallel = getattr(env, "igr_parallel_execution", None)
    rows, total, stored = [], 0.0, 0
    for doc in sorted(env.found_docs):
        path = str(env.doc2path(doc))
        if not path.endswith(".ipynb"):
            continue
        title = env.titles[doc].astext() if doc in env.titles else doc
        exec_data = executed.get(doc)
        if exec_data:
            how = exec_data.get("method", "")
            if how == "cache" and parallel:  # executed by book_parallel_execution, rendered from the cache
                how = f"{parallel['jobs']} at a time"
            runtime, method = exec_data.get("runtime"), f"this build ({how})"
            result = "ok" if exec_data.get("succeeded") else "failed: " + str(exec_data.get("error") or "")
        else:
            record = stored_execution(path)
            if record is None:
                continue
            stored += 1
            runtime = record["runtime"]
            method = "stored outputs, executed " + record["start"].strftime("%Y-%m-%d %H:%M UTC")
            result = "ok" if record["succeeded"] else "failed: an error is stored in the outputs"
        total += runtime or 0.0
        rows.append([_doc_link(docname, doc, title), "-" if runtime is None else f"{runtime:.1f}", method, result])
    mode = env.config.nb_execution_mode
    if not rows:
        return [nodes.paragraph(text=f"No notebook page (execution mode: {mode!r}).")]
    rows.append([nodes.paragraph("", "", nodes.strong(text="total")), f"{total:.1f}", "", ""])
    text = (
        f"Every notebook page with its execution time in seconds (execution mode {mode!r}): as myst-nb recorded "
        "it when this build executed the notebook"
    )
    if stored:
        text += (
            ", or, for a page this build rendered from the outputs stored in the notebook, the time recorded in "
            "those outputs (the sum of the cells' times) when they were made. The test suite checks stored "
            "outputs against a fresh execution (nbval)"
        )
    text += ":"
    if parallel:
        text += (
            f" This build executed {parallel['notebooks']} of them, {parallel['jobs']} at a time, in "
            f"{parallel['wall_seconds']:.0f} s of wall-clock time (their own times add up to "
            f"{parallel['notebook_seconds']:.0f} s)."
        )
    return [nodes.paragraph(text=text), _table(["Page", "Execution time (s)", "Executed", "Result"], rows,
                                                     ("igr-exec-times",))]


def _environment_table(app) -> list[nodes.Node]:
    if not hasattr(app, "_igr_device_report"):
        app._igr_device_report = _device_report()
    device = app._igr_device_report
    import book_assets as assets

    rows = [["Python", platform.python_version()]]
    rows += [[dist, _version(dist)] for dist in DISTRIBUTIONS]
    rows += [[f"{p.name} (served from _static)", p.version] for p in assets.PACKAGES]
    rows += [
        ["Device", _describe_device(device)],
        ["Experiment size (chapters 6 and 7)", device.get("size", "unknown")],
        ["Operating system", f"{platform.system()} {platform.release()} ({platform.machine()})"],
        ["Built", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")],
    ]
    return [_table(["What", "Version or value"], rows, ("igr-environment",))]


class BuildStatusPostTransform(SphinxPostTransform):
    default_priority = 8  # before the reference resolvers, so the page links resolve

    def run(self, **kwargs) -> None:
        for node in list(self.document.findall(build_status)):
            if node["kind"] == "chapters":
                node.replace_self(_chapters_table(self.env, self.env.docname))
            else:
                node.replace_self(_environment_table(self.app))


def _update_status_pages(app, env):
    """When a notebook was (re-)executed, the pages holding a status table are written again."""
    from myst_nb.sphinx_ import NbMetadataCollector

    if not NbMetadataCollector.new_exec_data(env):
        return None
    return [doc for doc, data in NbMetadataCollector.get_doc_data(env).items() if data.get(_METADATA_KEY)]


def setup(app):
    app.add_node(build_status)
    app.add_directive("igr-build-status", BuildStatusDirective)
    app.add_post_transform(BuildStatusPostTransform)
    app.connect("env-updated", _update_status_pages)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
