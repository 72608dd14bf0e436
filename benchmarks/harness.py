"""The one timing harness of the benchmarks: warm-up, interleaved repetitions, medians, ratios and goals.

Every variant of a case is called once as a warm-up (its time is kept as ``first_call_s``: compilation plus one
run), then the variants are timed round-robin, so that a change in the machine's load hits all of them alike;
the report keeps each variant's median. A ratio is the median time of a variant divided by the median time of
its case's baseline, both from the same run. A goal is a list of conditions on measured values; it is met when
every condition is.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import pathlib
import platform
import sys
import threading
import time
from importlib import metadata as _metadata
from typing import Any, Callable

import numpy as np

RATIO_DEFINITION = (
    "median time of the variant divided by the median time of the case's baseline, both measured in the same "
    "run (below 1: faster than the baseline)"
)
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


@dataclasses.dataclass
class Variant:
    """One way of computing a case's result: ``fn()`` does the whole computation and waits for it."""

    label: str
    fn: Callable[[], Any]
    repeats: int
    warmup: bool = True
    budget_s: float | None = None  # stop repeating once the timed repetitions add up to this
    warmup_fn: Callable[[], Any] | None = None  # a cheaper warm-up than fn (when there is nothing to compile)


def time_variants(variants: dict[str, Variant]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Warm up every variant once, then time them round-robin; returns (per-variant stats, last results).

    Stats per variant: ``median_s``, ``min_s``, ``max_s``, ``repeats``, ``times_s`` (wall clock, seconds),
    ``median_cpu_s`` (CPU time of this process, all threads) and ``first_call_s`` (the warm-up call).
    """
    stats: dict[str, dict[str, Any]] = {k: {"label": v.label, "times_s": [], "cpu_s": []} for k, v in variants.items()}
    results: dict[str, Any] = {}
    for key, v in variants.items():
        if v.warmup:
            t0 = time.perf_counter()
            results[key] = (v.warmup_fn or v.fn)()
            stats[key]["first_call_s"] = time.perf_counter() - t0
    for _ in range(max(v.repeats for v in variants.values())):
        for key, v in variants.items():
            times = stats[key]["times_s"]
            if len(times) >= v.repeats or (v.budget_s is not None and times and sum(times) >= v.budget_s):
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            results[key] = v.fn()
            times.append(time.perf_counter() - t0)
            stats[key]["cpu_s"].append(time.process_time() - c0)
    for key, v in variants.items():
        s = stats[key]
        t = np.asarray(s["times_s"])
        s.update(median_s=float(np.median(t)), min_s=float(t.min()), max_s=float(t.max()), repeats=int(t.size),
                 median_cpu_s=float(np.median(s.pop("cpu_s"))), times_s=[float(x) for x in t])
        if t.size < v.repeats:
            s["stopped_early"] = f"repetitions stopped after {t.size}: their time passed the budget of {v.budget_s:g} s"
    return stats, results


def ratios(variants: dict[str, dict[str, Any]], baseline: str | None) -> dict[str, float]:
    """``median_s`` of every other variant divided by the baseline's (empty without a baseline)."""
    if baseline is None or baseline not in variants:
        return {}
    base = variants[baseline]["median_s"]
    return {k: v["median_s"] / base for k, v in variants.items() if k != baseline and "median_s" in v}


def condition(label: str, metric: str, comparison: str, threshold: float, value: float | None,
              unit: str = "") -> dict[str, Any]:
    """One condition of a goal: ``value comparison threshold``; ``met`` is None when nothing was measured."""
    met = None if value is None or not math.isfinite(value) else bool(COMPARISONS[comparison](value, threshold))
    return {"label": label, "metric": metric, "comparison": comparison, "threshold": threshold, "value": value,
            "unit": unit, "met": met}


def goal(text: str, conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"text": text, "conditions": conditions}


def met(g: dict[str, Any]) -> bool | None:
    """True when every condition is met, False when one is missed, None when one was not measured (or none)."""
    flags = [c["met"] for c in g["conditions"]]
    if not flags or any(f is None for f in flags):
        return None
    return all(flags)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def block(x: Any) -> Any:
    import jax

    return jax.block_until_ready(x)


# --------------------------------------------------------------------------------------------------
# The machine and its load
# --------------------------------------------------------------------------------------------------


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def meminfo() -> dict[str, int | None]:
    """Total and available memory in bytes (Linux ``/proc/meminfo``; sysconf elsewhere)."""
    out: dict[str, int] = {}
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            key, val = line.split(":", 1)
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    if "MemTotal" not in out:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            out["MemTotal"] = page * os.sysconf("SC_PHYS_PAGES")
            out["MemAvailable"] = page * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
    return {"total_bytes": out.get("MemTotal"), "available_bytes": out.get("MemAvailable")}


def _cache_sizes() -> dict[str, int]:
    """CPU cache sizes in bytes from ``/sys`` (Linux), e.g. ``{"L1d": …, "L2": …, "L3": …}``."""
    sizes = {}
    for index in sorted(pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1], 1)
            sizes[f"L{level}" + ("d" if kind == "Data" else "")] = int(size.rstrip("KMG")) * mult
    return sizes


def _version(dist: str) -> str | None:
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: the CPU and memory, the package's device report
    (:func:`igr_tutorial.experiments.device_info`), versions, load, thread settings and the date."""
    from igr_tutorial.experiments import device_info

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "date": now(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_caches_bytes": _cache_sizes(),
        "memory": meminfo(),
        "device": device_info(),
        "versions": {name: _version(dist) for name, dist in (
            ("igr_tutorial", "igr-tutorial"), ("jaxlib", "jaxlib"), ("numpy", "numpy"), ("torch", "torch"),
            ("nbclient", "nbclient"))},
        "load_average": load(),
        "thread_settings": {k: os.environ.get(k) for k in (
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS")},
    }


class LoadSampler:
    """Samples the 1-minute load average every ``interval`` seconds in a daemon thread (a context manager)."""

    def __init__(self, interval: float = 5.0):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append([round(time.perf_counter() - self._t0, 1), round(os.getloadavg()[0], 2)])
            self._stop.wait(self.interval)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval)

    def summary(self) -> dict[str, Any]:
        loads = np.asarray([s[1] for s in self.samples] or [os.getloadavg()[0]])
        return {"interval_s": self.interval, "min": float(loads.min()), "median": float(np.median(loads)),
                "max": float(loads.max()), "samples": self.samples}
