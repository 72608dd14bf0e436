"""One-off: convert a schema-1 report (written by the old ``python -m igr_tutorial.benchmarks``) to schema 2.

Run once on ``book/performance.json`` when the benchmarks moved out of the package. It changes no measured number:
every time, ratio, goal verdict and note is the measured run's. It only moves or drops fields:

- ``schema`` 1 → 2, and a ``converted`` record saying so;
- ``machine``: the JAX fields (``jax_backend``, ``jax_devices``, ``python``, ``versions.jax``) move into
  ``machine.device``, the shape of :func:`igr_tutorial.experiments.device_info`; the device's ``str`` was not
  recorded by schema 1, so it is ``null``;
- case 6 (the GPU sweep, skipped on the measuring CPU and without a goal) is dropped: ``check-gpu`` covers GPUs;
- ``settings`` of the dropped case and of the removed diagnostics (``paper_size``, ``sweep_chunk``,
  ``hess_short_frame``) are dropped.

Diagnostic variants and profiles that the new benchmarks no longer measure are kept as measured.

    python benchmarks/convert_v1.py book/performance.json
"""

from __future__ import annotations

import json
import pathlib
import sys


def convert(report: dict) -> dict:
    if report.get("schema") != 1:
        raise ValueError(f"expected a schema-1 report, got schema {report.get('schema')!r}")
    out = dict(report, schema=2)
    m = dict(report["machine"])
    versions = dict(m.pop("versions"))
    devices = m.pop("jax_devices")
    m["device"] = {"backend": m.pop("jax_backend"), "device": None,
                   "device_kind": devices[0].split(":", 1)[-1], "device_count": len(devices),
                   "jax_version": versions.pop("jax"), "python": m.pop("python")}
    m["versions"] = versions
    out["machine"] = m
    out["settings"] = {k: v for k, v in report["settings"].items()
                       if k not in ("paper_size", "sweep_chunk", "hess_short_frame")}
    out["cases"] = [c for c in report["cases"] if c["id"] != 6]
    out["converted"] = {
        "from_schema": 1, "by": "benchmarks/convert_v1.py",
        "what": "every number is the measured run's (the command above, at the dates above); only fields moved "
                "(the JAX fields of machine into machine.device) or were dropped (case 6, skipped on this CPU and "
                "without a goal, and the settings of removed cases and diagnostics)",
    }
    return out


if __name__ == "__main__":
    path = pathlib.Path(sys.argv[1])
    path.write_text(json.dumps(convert(json.loads(path.read_text())), indent=1, ensure_ascii=False) + "\n")
    print(f"converted {path} to schema 2")
