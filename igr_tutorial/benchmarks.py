"""Benchmarks: the package's compiled paths against the loops a reader would write (issue 7).

Run from the repository root::

    python -m igr_tutorial.benchmarks                      # every case; writes book/performance.json
    python -m igr_tutorial.benchmarks --quick --cases 1,4  # a smoke test: small sizes, few repetitions

Six cases, each timed in one process and compared with a baseline measured in the same run:

1. a 10,000-step GD trajectory on the two-parameter model: :func:`igr_tutorial.flows.gradient_descent` (one compiled
   ``lax.scan``) vs a Python loop of per-step jitted updates vs the plain-NumPy loop with a hand-written gradient;
2. a learning-rate sweep of 32 small MLP trainings on MNIST-1D: ``train_sweep(mode="vmap")`` vs
   ``mode="loop"`` vs the same training written in PyTorch (when ``import torch`` works);
3. the top Hessian eigenvalue of an MLP with ~10k and ~100k parameters: :func:`~igr_tutorial.curvature.hessian_top_eigenvalue`
   (Lanczos on Hessian-vector products) vs a dense ``jax.hessian`` and ``numpy.linalg.eigvalsh``, where the
   dense matrix fits in memory;
4. one EGR step vs one GD step of :func:`igr_tutorial.train.train` on the same MLP;
5. executing every chapter ``book/NN_*.ipynb`` (each in its own subprocess, with nbclient);
6. on a GPU only: the paper-sized chapter-6 learning-rate sweep end to end.

Every variant is called once as a warm-up (its time is kept as ``first_call_s``: compilation plus one run),
then timed over several repetitions, interleaved across the variants of a case so that a change in the
machine's load hits all of them alike; the report keeps the medians. ``ratios`` are the median time of a
variant divided by the median time of the case's baseline. Goals are checked here, never in unit tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import pathlib
import platform
import re
import resource
import subprocess
import sys
import threading
import time
import traceback
from importlib import metadata as _metadata
from typing import Any, Callable

import numpy as np

SCHEMA_VERSION = 1
DEFAULT_OUT = pathlib.Path("book") / "performance.json"
QUICK_OUT = pathlib.Path("_build") / "benchmarks" / "performance-quick.json"
RATIO_DEFINITION = (
    "median time of the variant divided by the median time of the case's baseline, both measured in the same "
    "run (below 1: faster than the baseline)"
)

#: case id -> (name, title)
CASES: dict[int, tuple[str, str]] = {
    1: ("gd_trajectory", "GD trajectory on the two-parameter model"),
    2: ("learning_rate_sweep", "Learning-rate sweep of small MLPs on MNIST-1D"),
    3: ("hessian_top_eigenvalue", "Top Hessian eigenvalue of an MLP"),
    4: ("egr_step_cost", "Cost of one EGR step relative to one GD step"),
    5: ("book_execution", "Executing the whole book"),
    6: ("gpu_paper_sweep", "Paper-sized chapter-6 sweep on a GPU"),
}


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
    sweep_chunk: int = 4
    sweep_repeats: int = 3
    sweep_variant_budget_s: float = 30.0  # stop repeating a variant once its timed repetitions took this long

    hess_widths: tuple[int, ...] = (76, 290)  # 2 hidden layers: m = 9,738 and 99,190 parameters
    hess_labels: tuple[str, ...] = ("~10k", "~100k")
    hess_train: int = 128
    hess_repeats: int = 5
    hess_dense_repeats: int = 1  # a dense run takes minutes at ~10k parameters
    hess_short_frame: int = 32

    egr_steps: int = 200
    egr_repeats: int = 9
    egr_width: int = 32
    egr_train: int | None = None  # None: the "small" experiment size's training set (4000 MNIST-1D signals)

    book_chapters: int | None = None  # None: every chapter
    book_cell_timeout: int = 300  # seconds per cell, as in the book build (_config.yml)
    book_chapter_timeout: int = 1200  # seconds per chapter before its process group is killed
    book_attempts: int = 2  # a chapter whose execution fails or hangs is run once more

    paper_size: str = "paper"


FULL = Settings()
QUICK = Settings(
    gd_steps=1000, gd_repeats=3, gd_loop_repeats=2,
    sweep_runs=4, sweep_steps=20, sweep_record_every=10, sweep_train=200, sweep_test=100, sweep_width=8,
    sweep_chunk=2, sweep_repeats=2, sweep_variant_budget_s=10.0,
    hess_widths=(8, 16), hess_labels=("tiny", "small"), hess_train=32, hess_repeats=2, hess_short_frame=16,
    egr_steps=20, egr_repeats=3, egr_width=8, egr_train=200,
    book_chapters=1,
    paper_size="tiny",
)


# --------------------------------------------------------------------------------------------------
# Machine information and load
# --------------------------------------------------------------------------------------------------


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo() -> dict[str, int]:
    """Total and available memory in bytes (Linux ``/proc/meminfo``; sysconf elsewhere)."""
    out = {}
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
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1], 1)
        sizes[f"L{level}" + ("d" if kind == "Data" else "")] = int(size.rstrip("KMG")) * mult
    return sizes


def _version(dist: str) -> str | None:
    try:
        return _metadata.version(dist)
    except _metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: platform, CPU, memory, JAX backend and devices, versions, load, date."""
    import jax

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "date": _now(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_caches_bytes": _cache_sizes(),
        "memory": _meminfo(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{getattr(d, 'device_kind', '')}".rstrip(":") for d in jax.devices()],
        "versions": {name: _version(dist) for name, dist in (
            ("igr_tutorial", "igr-tutorial"), ("jax", "jax"), ("jaxlib", "jaxlib"), ("numpy", "numpy"),
            ("torch", "torch"), ("nbclient", "nbclient"))},
        "load_average": _load(),
        "thread_settings": {k: os.environ.get(k) for k in (
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS")},
    }


class _LoadSampler:
    """Samples the 1-minute load average every ``interval`` seconds in a daemon thread."""

    def __init__(self, interval: float = 5.0):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append([round(time.perf_counter() - self._t0, 1), round(os.getloadavg()[0], 2)])
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2 * self.interval)

    def summary(self) -> dict[str, Any]:
        loads = np.asarray([s[1] for s in self.samples] or [os.getloadavg()[0]])
        return {"interval_s": self.interval, "min": float(loads.min()), "median": float(np.median(loads)),
                "max": float(loads.max()), "samples": self.samples}


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Variant:
    """One way of computing a case's result: ``fn()`` does the whole computation and waits for it."""

    label: str
    fn: Callable[[], Any]
    repeats: int
    warmup: bool = True
    pause_s: float = 0.0  # idle time after each call (lets another library's spinning threads settle)
    budget_s: float | None = None  # stop repeating once the timed repetitions add up to this
    warmup_fn: Callable[[], Any] | None = None  # a cheaper warm-up than fn (nothing to compile)


def time_variants(variants: dict[str, Variant]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Warm up every variant once, then time them round-robin; returns (per-variant stats, last results).

    Stats per variant: ``median_s``, ``min_s``, ``max_s``, ``repeats``, ``times_s`` (wall clock, seconds),
    ``median_cpu_s`` (CPU time of this process, all threads) and ``first_call_s`` (the warm-up call:
    compilation plus one run).
    """
    stats: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    for key, v in variants.items():
        stats[key] = {"label": v.label, "times_s": [], "cpu_times_s": []}
        if v.warmup:
            t0, c0 = time.perf_counter(), time.process_time()
            results[key] = (v.warmup_fn or v.fn)()
            stats[key]["first_call_s"] = time.perf_counter() - t0
            stats[key]["first_call_cpu_s"] = time.process_time() - c0
            if v.pause_s:
                time.sleep(v.pause_s)
    for _ in range(max(v.repeats for v in variants.values())):
        for key, v in variants.items():
            times = stats[key]["times_s"]
            if len(times) >= v.repeats or (v.budget_s is not None and times and sum(times) >= v.budget_s):
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            results[key] = v.fn()
            times.append(time.perf_counter() - t0)
            stats[key]["cpu_times_s"].append(time.process_time() - c0)
            if v.pause_s:
                time.sleep(v.pause_s)
    for key, v in variants.items():
        s = stats[key]
        t = np.asarray(s["times_s"])
        s.update(median_s=float(np.median(t)), min_s=float(t.min()), max_s=float(t.max()), repeats=int(t.size),
                 median_cpu_s=float(np.median(s.pop("cpu_times_s"))))
        s["times_s"] = [float(x) for x in t]
        if v.budget_s is not None and t.size < v.repeats:
            s["stopped_early"] = f"repetitions stopped after {t.size}: their time passed the budget of {v.budget_s:g} s"
    return stats, results


def _ratios(variants: dict[str, dict[str, Any]], baseline: str | None) -> dict[str, float]:
    if baseline is None or baseline not in variants:
        return {}
    base = variants[baseline]["median_s"]
    return {k: v["median_s"] / base for k, v in variants.items() if k != baseline and "median_s" in v}


def _condition(label: str, metric: str, comparison: str, threshold: float, value: float | None, unit: str = "") -> dict:
    ops = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
    met = None if value is None or not math.isfinite(value) else bool(ops[comparison](value, threshold))
    return {"label": label, "metric": metric, "comparison": comparison, "threshold": threshold, "value": value,
            "unit": unit, "met": met}


def _goal(text: str, conditions: list[dict]) -> dict:
    return {"text": text, "threshold": conditions[0]["threshold"] if conditions else None, "conditions": conditions}


def _met(goal: dict) -> bool | None:
    flags = [c["met"] for c in goal["conditions"]]
    if not flags or any(f is None for f in flags):
        return None
    return all(flags)


def _block(x):
    import jax

    return jax.block_until_ready(x)


# --------------------------------------------------------------------------------------------------
# Case 1: a GD trajectory
# --------------------------------------------------------------------------------------------------


def case_gd_trajectory(s: Settings) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from .flows import gradient_descent
    from .losses import two_parameter_model

    x_data, y_data = 1.0, 1.0
    loss = two_parameter_model(x_data, y_data)  # E(a, b) = ½(y − a·b·x)²
    theta0 = np.array([2.0, 0.1])
    lr, steps = s.gd_lr, s.gd_steps

    def package():
        return np.asarray(_block(gradient_descent(loss, jnp.asarray(theta0), lr, steps)))

    grad = jax.grad(loss)

    @jax.jit
    def step(theta):
        return theta - lr * grad(theta)

    def jit_loop():
        theta = jnp.asarray(theta0)
        traj = [theta]
        for _ in range(steps):
            theta = step(theta)
            traj.append(theta)
        return np.asarray(_block(jnp.stack(traj)))

    def numpy_loop():
        theta = theta0.copy()
        traj = np.empty((steps + 1, 2))
        traj[0] = theta
        for n in range(steps):
            a, b = theta
            r = y_data - a * b * x_data
            g = np.array([-r * b * x_data, -r * a * x_data])  # ∂E/∂a, ∂E/∂b by hand
            theta = theta - lr * g
            traj[n + 1] = theta
        return traj

    variants, results = time_variants({
        "package_scan": Variant("igr.gradient_descent (one compiled lax.scan)", package, s.gd_repeats),
        "jit_step_loop": Variant("Python loop of per-step jitted updates", jit_loop, s.gd_loop_repeats),
        "numpy_loop": Variant("plain-NumPy loop, hand-written gradient", numpy_loop, s.gd_loop_repeats),
    })
    ref = results["package_scan"]
    diff = max(float(np.max(np.abs(results[k] - ref))) for k in ("jit_step_loop", "numpy_loop"))
    speedup = variants["jit_step_loop"]["median_s"] / variants["package_scan"]["median_s"]
    for v in variants.values():
        v["per_step_us"] = v["median_s"] / steps * 1e6
    goal = _goal(f"igr.gradient_descent at least 50× faster than the per-step jitted loop ({steps:,} steps)",
                 [_condition("speed-up over the per-step jitted loop", "t(jit_step_loop) / t(package_scan)",
                             ">=", 50.0, speedup, "×")])
    return {
        "description": f"{steps:,} steps of GD (h = {lr:g}) on E(a, b) = ½(1 − ab)² from (a, b) = (2, 0.1) in "
                       "float64; each variant returns the whole trajectory of steps + 1 iterates.",
        "settings": {"steps": steps, "lr": lr, "theta0": theta0.tolist(), "dtype": "float64"},
        "variants": variants, "baseline": "jit_step_loop", "goal": goal,
        "notes": [f"the three trajectories agree to {diff:.1e} (largest absolute difference)",
                  f"per step: package {variants['package_scan']['per_step_us']:.3f} µs, per-step jit "
                  f"{variants['jit_step_loop']['per_step_us']:.2f} µs (dispatch of one compiled call from "
                  f"Python), NumPy {variants['numpy_loop']['per_step_us']:.2f} µs",
                  f"first calls (excluded from the medians): package {variants['package_scan']['first_call_s']:.2f} s "
                  f"(compiling the scan), per-step loop {variants['jit_step_loop']['first_call_s']:.1f} s, almost all of "
                  f"it compiling jnp.stack of the {steps + 1:,} iterates (one XLA concatenation with {steps + 1:,} "
                  "operands; cached afterwards)"],
    }


# --------------------------------------------------------------------------------------------------
# Case 2: a learning-rate sweep of small MLPs
# --------------------------------------------------------------------------------------------------


def _torch_sweep(torch, init_params, data, lrs, steps, record_every, threads):
    """The chapter-6 training written the way a PyTorch user would: nn.Sequential, SGD, full batch.

    Same initialization (copied from the JAX parameters), same metrics at the same steps. Returns an
    array of shape ``(runs, records, 5)``: train loss, train accuracy, test loss, test accuracy, ‖∇E‖².
    """
    nn = torch.nn
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        xtr, ytr = torch.tensor(np.array(data.x_train)), torch.tensor(np.array(data.y_train), dtype=torch.long)
        xte, yte = torch.tensor(np.array(data.x_test)), torch.tensor(np.array(data.y_test), dtype=torch.long)
        weights = [(np.array(layer["W"]).T.copy(), np.array(layer["b"])) for layer in init_params]
        loss_fn = nn.CrossEntropyLoss()

        def metrics(model):
            model.zero_grad()
            out = model(xtr)
            loss = loss_fn(out, ytr)
            loss.backward()
            with torch.no_grad():
                gn = sum(float((p.grad**2).sum()) for p in model.parameters())
                te = model(xte)
                return [float(loss), float((out.argmax(1) == ytr).float().mean()), float(loss_fn(te, yte)),
                        float((te.argmax(1) == yte).float().mean()), gn]

        runs = []
        for lr in lrs:
            layers = []
            for i, (w, b) in enumerate(weights):
                lin = nn.Linear(w.shape[1], w.shape[0])
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(w))
                    lin.bias.copy_(torch.from_numpy(b))
                layers.append(lin)
                if i < len(weights) - 1:
                    layers.append(nn.Tanh())
            model = nn.Sequential(*layers)
            opt = torch.optim.SGD(model.parameters(), lr=float(lr))
            records = [metrics(model)]
            for step in range(1, steps + 1):
                opt.zero_grad()
                loss_fn(model(xtr), ytr).backward()
                opt.step()
                if step % record_every == 0:
                    records.append(metrics(model))
            runs.append(records)
        return np.asarray(runs)
    finally:
        torch.set_num_threads(previous)


def _hlo_op_counts(compiled_text: str, ops=("dot", "transpose", "copy", "fusion")) -> dict[str, int]:
    found = re.findall(r"= \S+ ([\w-]+)\(", compiled_text)
    return {op: sum(1 for f in found if f == op) for op in ops}


def _cost(compiled) -> dict[str, float]:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return {"flops": float(ca.get("flops", float("nan"))), "bytes_accessed": float(ca.get("bytes accessed", float("nan")))}


_OP_KINDS = (("dot", "XLA dot"), ("ynn", "YNNPACK fusion"), ("copy", "layout copy"), ("transpose", "layout copy"))


def _op_time_profile(step, params, lrs, batch_sizes, steps: int = 50, calls: int = 3) -> dict[str, Any]:
    """Time per run and step of every XLA op kind, from a ``jax.profiler`` trace of bare GD steps.

    Programs: ``steps`` steps of ``step`` for one run, and the same ``jax.vmap``-ed over the first ``R``
    learning rates for each ``R`` in ``batch_sizes``. Op kinds: XLA dot thunks, YNNPACK fusions (matrix
    products and reductions), layout copies/transposes, and other (element-wise) fusions; the ``while`` loop
    that contains them is left out. Returns ``{"error": …}`` if the trace has no op-level events.
    """
    import glob
    import gzip
    import tempfile

    import jax
    from jax import lax

    def program(name, fn):
        fn.__name__ = name
        return jax.jit(fn), f"jit_{name}"

    progs = {"single": (*program("bench_single", lambda p: lax.fori_loop(0, steps, lambda i, q: step(q, lrs[0]), p)), 1, params)}
    for r in batch_sizes:
        stacked = jax.tree.map(lambda a: _stack_runs(a, r), params)
        lr_r = lrs[:r]
        progs[f"vmap_{r}"] = (*program(f"bench_vmap_{r}", lambda p, lr_r=lr_r: lax.fori_loop(
            0, steps, lambda i, q: jax.vmap(step)(q, lr_r), p)), r, stacked)
    try:
        for fn, _, _, args in progs.values():
            _block(fn(args))
        with tempfile.TemporaryDirectory() as tmp:
            with jax.profiler.trace(tmp):
                for fn, _, _, args in progs.values():
                    for _ in range(calls):
                        _block(fn(args))
            files = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
            events = json.load(gzip.open(files[0]))["traceEvents"] if files else []
    except Exception as exc:  # noqa: BLE001 - the profile is optional
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {}
    for key, (_, module, r, _) in progs.items():
        by_kind: dict[str, float] = {}
        for e in events:
            args = e.get("args", {})
            if e.get("ph") != "X" or args.get("hlo_module") != module or "hlo_op" not in args:
                continue
            op = args["hlo_op"]
            if op.startswith("while"):
                continue
            kind = next((k for prefix, k in _OP_KINDS if op.startswith(prefix) or prefix in op), "other fusion")
            by_kind[kind] = by_kind.get(kind, 0.0) + e["dur"] / (calls * steps * r)
        if not by_kind:
            return {"error": "the trace has no op-level events for the profiled programs"}
        order = ("XLA dot", "YNNPACK fusion", "other fusion", "layout copy")
        out[key] = {"runs": r, "total": sum(by_kind.values()),
                    "by_kind": {k: by_kind.get(k, 0.0) for k in order}}
    return out


def _stack_runs(a, r: int):
    import jax.numpy as jnp

    return jnp.stack([a] * r)



def case_learning_rate_sweep(s: Settings) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from .data import load_mnist1d
    from .nets import classification_loss, init_mlp
    from .train import train_sweep

    n_tr, n_te = s.sweep_train, s.sweep_test
    data = load_mnist1d(num_samples=n_tr + n_te, train_split=n_tr / (n_tr + n_te))
    sizes = [data.x_train.shape[1]] + [s.sweep_width] * s.sweep_depth + [data.num_classes]
    init = init_mlp(jax.random.PRNGKey(0), sizes)
    m = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    lrs = [float(x) for x in np.geomspace(0.01, 1.0, s.sweep_runs)]
    steps, rec = s.sweep_steps, s.sweep_record_every
    common = dict(record_every=rec)

    def sweep(mode):
        def run():
            final, hist = train_sweep(init, data, lrs, steps, mode=mode, **common)
            _block(final)
            return np.asarray(hist.train_loss[:, -1])
        return run

    def chunked():
        losses = []
        for i in range(0, len(lrs), s.sweep_chunk):
            final, hist = train_sweep(init, data, lrs[i:i + s.sweep_chunk], steps, mode="vmap", **common)
            _block(final)
            losses.append(np.asarray(hist.train_loss[:, -1]))
        return np.concatenate(losses)

    budget = s.sweep_variant_budget_s
    variants = {
        "vmap": Variant(f'train_sweep(mode="vmap"): all {len(lrs)} runs in one compiled call', sweep("vmap"), s.sweep_repeats, budget_s=budget),
        "loop": Variant('train_sweep(mode="loop"): a loop over one compiled single run', sweep("loop"), s.sweep_repeats, budget_s=budget),
        f"vmap_chunks_{s.sweep_chunk}": Variant(
            f'diagnostic: mode="vmap" on chunks of {s.sweep_chunk} runs, one after another', chunked, s.sweep_repeats, budget_s=budget),
    }
    notes = []
    try:
        import torch  # noqa: F401  (optional: only to measure the PyTorch baseline)

        torch_ok = True
    except Exception as exc:  # ImportError, or a broken installation
        torch_ok = False
        notes.append(f"PyTorch baseline skipped: `import torch` failed ({type(exc).__name__}: {exc}).")
    if torch_ok:
        default_threads = torch.get_num_threads()
        for key, threads in (("torch", default_threads), ("torch_1_thread", 1)):
            if key == "torch_1_thread" and default_threads == 1:
                continue
            variants[key] = Variant(
                f"PyTorch {torch.__version__} loop (nn.Sequential + SGD), {threads} thread{'s' * (threads > 1)}",
                (lambda t=threads: _torch_sweep(torch, init, data, lrs, steps, rec, t)[:, -1, 0]),
                s.sweep_repeats, pause_s=0.25, budget_s=budget,
                warmup_fn=(lambda t=threads: _torch_sweep(torch, init, data, lrs[:1], rec, rec, t)))
    stats, results = time_variants(variants)
    runs_steps = len(lrs) * steps
    for key, v in stats.items():
        v["per_run_step_us"] = v["median_s"] / runs_steps * 1e6
        if not key.startswith("torch"):  # the PyTorch warm-up is one short run: nothing to compile
            v["first_call_minus_median_s"] = v["first_call_s"] - v["median_s"]
    ref = np.asarray(results["loop"], dtype=float)
    parts = []
    for k, r in results.items():
        if k != "loop":
            d = np.abs(np.asarray(r, dtype=float) - ref)
            parts.append(f"{k}: median {np.nanmedian(d):.1e}, largest {np.nanmax(d):.1e} at h = {lrs[int(np.nanargmax(d))]:.3g}")
    half = len(lrs) // 2
    note = "final training losses compared with mode=\"loop\" (float32) — " + "; ".join(parts)
    if max(np.nanmax(np.abs(np.asarray(r, dtype=float) - ref)) for r in results.values()) > 1e-3:
        note += (". Large differences come from large h: there full-batch GD oscillates at the edge of stability, "
                 "which amplifies the rounding differences between two compiled programs; over the smaller half of "
                 f"the learning rates (h ≤ {lrs[half - 1]:.3g}) the largest difference is "
                 + ", ".join(f"{np.nanmax(np.abs(np.asarray(results[k], dtype=float)[:half] - ref[:half])):.1e} ({k})"
                             for k in results if k != "loop"))
    notes.append(note)
    torch_keys = [k for k in stats if k.startswith("torch")]
    t_vmap, t_loop = stats["vmap"]["median_s"], stats["loop"]["median_s"]
    conditions = [_condition('speed-up of mode="vmap" over mode="loop"', "t(loop) / t(vmap)", ">", 1.0, t_loop / t_vmap, "×")]
    if torch_keys:
        best = min(torch_keys, key=lambda k: stats[k]["median_s"])
        conditions.append(_condition(f'speed-up of mode="vmap" over the faster PyTorch variant ({best})',
                                     f"t({best}) / t(vmap)", ">", 1.0, stats[best]["median_s"] / t_vmap, "×"))
    goal = _goal('train_sweep(mode="vmap") faster than both the loop of compiled runs and PyTorch', conditions)

    # Profile: why vmap and loop differ: compile vs run, XLA's cost model, and where the time goes, op by op.
    xtr, ytr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def gd_step(p, lr):
        g = jax.grad(classification_loss)(p, xtr, ytr)
        return jax.tree.map(lambda a, b: a - lr * b, p, g)

    stacked = jax.tree.map(lambda a: jnp.stack([a] * len(lrs)), init)
    lr_arr = jnp.asarray(lrs, jnp.float32)
    single_c = jax.jit(gd_step).lower(init, lr_arr[0]).compile()
    vmap_c = jax.jit(jax.vmap(gd_step)).lower(stacked, lr_arr).compile()
    cost_single, cost_vmap = _cost(single_c), _cost(vmap_c)
    cost_vmap_per_run = {k: v / len(lrs) for k, v in cost_vmap.items()}
    ops_s, ops_v = _hlo_op_counts(single_c.as_text()), _hlo_op_counts(vmap_c.as_text())
    op_profile = _op_time_profile(gd_step, init, lr_arr, sorted({len(lrs), s.sweep_chunk}))
    profile = {
        "first_call_minus_median_s": {k: stats[k].get("first_call_minus_median_s") for k in ("vmap", "loop")},
        "per_run_step_us": {k: v["per_run_step_us"] for k, v in stats.items()},
        "xla_cost_per_run_one_gd_step": {"single": cost_single, "vmap": cost_vmap_per_run},
        "hlo_ops_one_gd_step": {"single": ops_s, "vmap": ops_v},
        "op_time_per_run_step_us": op_profile,
        "median_cpu_over_wall": {k: v["median_cpu_s"] / v["median_s"] for k, v in stats.items()},
    }
    notes.append(
        f'XLA\'s cost model counts the same work per run for one GD step in both modes ({cost_single["flops"]:.3g} '
        f'vs {cost_vmap_per_run["flops"]:.3g} flops, {cost_single["bytes_accessed"]:.3g} vs '
        f'{cost_vmap_per_run["bytes_accessed"]:.3g} bytes); the vmapped step has {ops_v["transpose"]} transposes and '
        f'{ops_v["copy"]} copies where the single-run step has {ops_s["transpose"]} and {ops_s["copy"]}')
    if "error" not in op_profile:
        single = op_profile["single"]
        parts = []
        for key, prof in op_profile.items():
            if key.startswith("vmap"):
                parts.append(f"{key}: {prof['total']:.0f} µs ("
                             + ", ".join(f"{cat} {prof['by_kind'].get(cat, 0):.0f}" for cat in single["by_kind"]) + ")")
        notes.append("XLA's own op timings (jax.profiler trace of 50 bare GD steps), µs per run and step: single run "
                     f"{single['total']:.0f} µs (" + ", ".join(f"{cat} {t:.0f}" for cat, t in single["by_kind"].items())
                     + "); " + "; ".join(parts))
    return {
        "description": f"{len(lrs)} full-batch GD trainings (h log-spaced from {lrs[0]:g} to {lrs[-1]:g}) of a "
                       f"{'-'.join(map(str, sizes))} tanh MLP ({m:,} parameters, float32) on {n_tr} MNIST-1D "
                       f"signals, {steps} steps each, metrics on the train and {n_te} test signals every {rec} steps.",
        "settings": {"runs": len(lrs), "steps": steps, "record_every": rec, "layers": sizes, "parameters": m,
                     "train": n_tr, "test": n_te, "lrs": lrs, "chunk": s.sweep_chunk, "dtype": "float32"},
        "variants": stats, "baseline": "loop", "goal": goal, "notes": notes, "profile": profile,
    }


# --------------------------------------------------------------------------------------------------
# Case 3: top Hessian eigenvalue
# --------------------------------------------------------------------------------------------------


def _dense_fits(m: int, n_train: int, widths: list[int]) -> tuple[bool, dict[str, float]]:
    """Whether a dense float64 Hessian and ``eigvalsh`` fit in the available memory (with a safety margin).

    Needed: the matrix (8·m² bytes) about four times over (JAX's result, the NumPy copy, LAPACK's work space
    and slack), plus ``jax.hessian``'s batched tangents (about 2·8·n·m·Σwidths bytes), within 70 % of the
    memory available now.
    """
    mem = _meminfo()
    need_matrix = 8.0 * m * m
    need_total = 4 * need_matrix + 2 * 8.0 * n_train * m * sum(widths)
    avail = mem["available_bytes"] or mem["total_bytes"] or 0
    info = {"hessian_bytes_float64": need_matrix, "hessian_bytes_float32": 4.0 * m * m,
            "estimated_peak_bytes": need_total, "available_bytes": float(avail),
            "total_bytes": float(mem["total_bytes"] or 0)}
    return need_total <= 0.7 * avail, info


def _lanczos_frame(k: int, j: int):
    """A ``k × k`` matrix of the form ``hessian_top_eigenvalue``'s Ritz step diagonalizes after ``j`` steps.

    A ``j × j`` tridiagonal block (random entries, fixed seed) and the unused rows decoupled on the diagonal
    at ``−finfo(float64).max / 8``, as in ``curvature._lanczos_top``.
    """
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    idx = np.arange(k)
    big = float(jnp.finfo(jnp.float64).max) / 8
    diag = np.where(idx < j, rng.random(k), -big)
    off = np.where(idx[:-1] < j - 1, rng.random(k - 1), 0.0)
    return jnp.asarray(np.diag(diag) + np.diag(off, 1) + np.diag(off, -1))


_REORTH_ITERS = 10


def _reorthogonalization(k: int, m: int) -> Callable[[], Any]:
    """``_REORTH_ITERS`` iterations of the basis work each Lanczos iteration of ``hessian_top_eigenvalue`` does.

    Two passes ``w ← w − Vᵀ(Vw)`` against a ``k × m`` basis ``V`` and the update of one row of ``V``, carried
    through a ``fori_loop`` as in ``curvature._lanczos_top``, without the Hessian-vector product.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    rng = np.random.default_rng(0)
    V0 = jnp.asarray(rng.standard_normal((k, m)) / np.sqrt(m))
    w0 = jnp.asarray(rng.standard_normal(m))

    @jax.jit
    def run(V, w):
        def body(j, state):
            V, w = state
            w = w - V.T @ (V @ w)
            w = w - V.T @ (V @ w)
            return V.at[jnp.minimum(j + 1, k - 1)].set(w / jnp.linalg.norm(w)), w

        return lax.fori_loop(0, _REORTH_ITERS, body, (V, w))

    return lambda: _block(run(V0, w0))


def case_hessian_top_eigenvalue(s: Settings) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from .curvature import hessian_top_eigenvalue, hvp
    from .data import Dataset, load_mnist1d
    from .nets import init_mlp
    from .train import train_loss_fn

    n = s.hess_train
    raw = load_mnist1d(num_samples=n + 100, train_split=n / (n + 100))
    data = Dataset(raw.name, raw.x_train.astype(np.float64), raw.y_train, raw.x_test.astype(np.float64), raw.y_test)
    loss = train_loss_fn(data)
    variants: dict[str, dict[str, Any]] = {}
    notes, conditions, per_size = [], [], []
    dense_measured = None  # (m, hessian_s, eigvalsh_s) of the largest dense run, for extrapolation
    for label, width in zip(s.hess_labels, s.hess_widths):
        sizes = [data.x_train.shape[1], width, width, data.num_classes]
        params = init_mlp(jax.random.PRNGKey(0), sizes, dtype=jnp.float64)
        m = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
        frame = min(s.hess_short_frame, m)
        lanczos = lambda: hessian_top_eigenvalue(loss, params)  # noqa: E731
        short = lambda: hessian_top_eigenvalue(loss, params, max_iters=frame, on_failure="ignore")  # noqa: E731
        hvp_jit = jax.jit(lambda v: hvp(loss, params, v))
        k = min(100, m)  # the frame hessian_top_eigenvalue's Ritz step diagonalizes every iteration
        frame_T = _lanczos_frame(k, min(24, k))
        eigh_jit = jax.jit(jnp.linalg.eigh)
        reorth = _reorthogonalization(k, m)
        todo = {
            f"lanczos_{label}": Variant(f"igr.hessian_top_eigenvalue, m = {m:,} (Lanczos, max_iters=100)", lanczos, s.hess_repeats),
            f"lanczos_frame{frame}_{label}": Variant(
                f"diagnostic: the same with max_iters={frame}, m = {m:,}", short, s.hess_repeats),
            f"hvp_{label}": Variant(f"diagnostic: one jitted Hessian-vector product, m = {m:,}",
                                    lambda: _block(hvp_jit(params)), s.hess_repeats),
            f"ritz_eigh_{label}": Variant(
                f"diagnostic: one jitted eigh of a {k}×{k} tridiagonal frame like the Lanczos Ritz step's",
                lambda: _block(eigh_jit(frame_T)), max(s.hess_repeats, 5)),
            f"reorth_{label}": Variant(
                f"diagnostic: {_REORTH_ITERS} iterations of the re-orthogonalization against a {k} × {m:,} basis",
                reorth, s.hess_repeats),
        }
        stats, res = time_variants(todo)
        top = res[f"lanczos_{label}"]
        stats[f"lanczos_{label}"].update(eigenvalue=top.eigenvalue, iterations=top.iterations,
                                         residual=top.residual, parameters=m)
        stats[f"lanczos_{label}"]["per_iteration_s"] = stats[f"lanczos_{label}"]["median_s"] / max(top.iterations, 1)
        sh = res[f"lanczos_frame{frame}_{label}"]
        stats[f"lanczos_frame{frame}_{label}"].update(eigenvalue=sh.eigenvalue, iterations=sh.iterations,
                                                      converged=sh.converged, parameters=m)
        variants.update(stats)
        fits, mem = _dense_fits(m, n, [width, width, data.num_classes])
        entry = {"label": label, "parameters": m, "memory": mem, "dense_fits": fits}
        if fits:
            x, unravel = ravel_pytree(params)
            flat = lambda v: loss(unravel(v))  # noqa: E731
            t0 = time.perf_counter()
            hess = jax.jit(jax.hessian(flat)).lower(x).compile()
            compile_s = time.perf_counter() - t0
            parts: dict[str, list[float]] = {"hessian_s": [], "eigvalsh_s": []}

            def dense():
                t1 = time.perf_counter()
                H = np.asarray(_block(hess(x)))
                t2 = time.perf_counter()
                lam = float(np.linalg.eigvalsh(H)[-1])
                parts["hessian_s"].append(t2 - t1)
                parts["eigvalsh_s"].append(time.perf_counter() - t2)
                return lam

            dstats, dres = time_variants({f"dense_{label}": Variant(
                f"jax.hessian + numpy.linalg.eigvalsh, m = {m:,}", dense, s.hess_dense_repeats, warmup=False)})
            d = dstats[f"dense_{label}"]
            lam_dense = dres[f"dense_{label}"]
            rel = abs(top.eigenvalue - lam_dense) / abs(lam_dense)
            d.update(compile_s=compile_s, eigenvalue=lam_dense, parameters=m,
                     hessian_s=float(np.median(parts["hessian_s"])), eigvalsh_s=float(np.median(parts["eigvalsh_s"])),
                     peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            variants.update(dstats)
            speedup = d["median_s"] / variants[f"lanczos_{label}"]["median_s"]
            entry.update(relative_difference=rel, speedup=speedup)
            dense_measured = (m, d["hessian_s"], d["eigvalsh_s"])
            notes.append(f"{label} (m = {m:,}): dense needs {mem['hessian_bytes_float64'] / 1e9:.3g} GB for the "
                         f"float64 matrix ({mem['hessian_bytes_float32'] / 1e9:.3g} GB in float32); measured once "
                         f"after compiling (a dense run takes {d['median_s']:.0f} s: jax.hessian {d['hessian_s']:.1f} s, "
                         f"eigvalsh {d['eigvalsh_s']:.1f} s); Lanczos is {speedup:.3g}× faster, relative "
                         f"difference {rel:.1e}")
            del hess
        else:
            reason = (f"dense Hessian skipped at {label} (m = {m:,}): the matrix alone needs "
                      f"{mem['hessian_bytes_float64'] / 1e9:.1f} GB in float64 ({mem['hessian_bytes_float32'] / 1e9:.1f} GB "
                      f"in float32), eigvalsh needs about as much again, and this machine has "
                      f"{mem['total_bytes'] / 1e9:.1f} GB ({mem['available_bytes'] / 1e9:.1f} GB available)")
            if dense_measured is not None:
                m0, h0, e0 = dense_measured
                est = h0 * (m / m0) ** 2 + e0 * (m / m0) ** 3
                entry["dense_time_extrapolated_s"] = est
                reason += (f"; were it to fit, extrapolating the {m0:,}-parameter run (jax.hessian ∝ m², eigvalsh ∝ m³) "
                           f"gives about {est / 3600:.0f} hours")
            entry["skipped_reason"] = reason
            notes.append(reason)
        lz = variants[f"lanczos_{label}"]
        t_hvp, t_eigh = variants[f"hvp_{label}"]["median_s"], variants[f"ritz_eigh_{label}"]["median_s"]
        t_orth = variants[f"reorth_{label}"]["median_s"] / _REORTH_ITERS
        variants[f"reorth_{label}"]["per_iteration_s"] = t_orth
        notes.append(f"{label}: Lanczos took {top.iterations} iterations of {lz['per_iteration_s'] * 1e3:.1f} ms each "
                     f"(the whole call divided by the iterations); per iteration, the Hessian-vector product takes "
                     f"{t_hvp * 1e3:.2f} ms, the eigh of the {k}×{k} Ritz frame {t_eigh * 1e3:.2f} ms and the "
                     f"re-orthogonalization against the {k}-row basis (sized by max_iters, not by the iterations used) "
                     f"{t_orth * 1e3:.2f} ms; with max_iters={frame} the whole call takes "
                     f"{variants[f'lanczos_frame{frame}_{label}']['median_s']:.3f} s (converged: {sh.converged})")
        per_size.append(entry)
    first = per_size[0]
    conditions.append(_condition(f"speed-up over dense at {first['label']} parameters", "t(dense) / t(lanczos)",
                                 ">=", 20.0, first.get("speedup"), "×"))
    conditions.append(_condition(f"relative difference of the eigenvalue at {first['label']}",
                                 "|λ_lanczos − λ_dense| / |λ_dense|", "<", 1e-4, first.get("relative_difference")))
    goal = _goal(f"Lanczos at least 20× faster than the dense Hessian at {first['label']} parameters, "
                 "relative difference below 1e-4", conditions)
    return {
        "description": f"λ_max of the training-loss Hessian of 40-w-w-10 tanh MLPs ({', '.join(str(e['parameters']) for e in per_size)} "
                       f"parameters) on {n} MNIST-1D signals, float64, at initialization. Dense: jax.jit(jax.hessian) "
                       "of the flattened loss, then numpy.linalg.eigvalsh.",
        "settings": {"train": n, "widths": list(s.hess_widths), "labels": list(s.hess_labels), "dtype": "float64",
                     "lanczos": {"tol": 1e-6, "max_iters": 100}},
        "variants": variants, "baseline": f"dense_{first['label']}" if f"dense_{first['label']}" in variants else None,
        "goal": goal, "notes": notes, "sizes": per_size,
    }


# --------------------------------------------------------------------------------------------------
# Case 4: EGR step vs GD step
# --------------------------------------------------------------------------------------------------


def case_egr_step_cost(s: Settings) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from .experiments import SIZES, layer_sizes, load_data
    from .nets import init_mlp
    from .train import _step_fn, train

    size = SIZES["small"]
    data = load_data(size)
    if s.egr_train is not None:
        data = data.subset(s.egr_train, s.egr_train // 2)
    sizes = layer_sizes(data, s.egr_width, size.depth)
    params = init_mlp(jax.random.PRNGKey(0), sizes)
    m = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    steps, lr, mu = s.egr_steps, size.egr_lr, size.mus[2]

    def run(method):
        def fn():
            final, _ = train(params, data, lr, steps, method=method, mu=mu, record_every=steps)
            return _block(final)
        return fn

    stats, _ = time_variants({
        "gd": Variant(f'train(method="gd"), {steps} steps', run("gd"), s.egr_repeats),
        "egr": Variant(f'train(method="egr", mu={mu:g}), {steps} steps', run("egr"), s.egr_repeats),
    })
    for v in stats.values():
        v["per_step_s"] = v["median_s"] / steps
    ratio = stats["egr"]["median_s"] / stats["gd"]["median_s"]
    # XLA's cost model for exactly the step train() runs (the same _step_fn), one step each.
    xtr, ytr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    key = jax.random.PRNGKey(0)
    costs, ops = {}, {}
    for method in ("gd", "egr"):
        step = _step_fn(method, "tanh", None, xtr.shape[0])
        c = jax.jit(lambda p, a, b: step(p, 0, jnp.float32(lr), jnp.float32(mu), key, a, b)).lower(params, xtr, ytr).compile()
        costs[method], ops[method] = _cost(c), _hlo_op_counts(c.as_text())
    flop_ratio = costs["egr"]["flops"] / costs["gd"]["flops"]
    byte_ratio = costs["egr"]["bytes_accessed"] / costs["gd"]["bytes_accessed"]
    goal = _goal("one EGR step costs at most 3× one GD step",
                 [_condition("EGR step ÷ GD step", "t(egr) / t(gd)", "<=", 3.0, ratio, "×")])
    return {
        "description": f"Per-step cost of train() with method=\"egr\" (θ ← θ − h(g + 2μHg), one Hessian-vector product "
                       f"per step) vs method=\"gd\", {'-'.join(map(str, sizes))} tanh MLP ({m:,} parameters, float32) "
                       f"on {data.x_train.shape[0]} MNIST-1D signals (chapter 7's small size), {steps} steps per call.",
        "settings": {"steps": steps, "lr": lr, "mu": mu, "layers": sizes, "parameters": m,
                     "train": int(data.x_train.shape[0]), "dtype": "float32"},
        "variants": stats, "baseline": "gd", "goal": goal,
        "profile": {"xla_cost_one_step": costs, "hlo_ops_one_step": ops, "flop_ratio": flop_ratio,
                    "bytes_ratio": byte_ratio},
        "notes": [f"XLA's cost model: an EGR step does {flop_ratio:.2f}× the flops and moves {byte_ratio:.2f}× the bytes "
                  f"of a GD step ({ops['egr']['dot']} matrix products vs {ops['gd']['dot']}): the gradient plus a "
                  "forward-mode pass through the backward pass (forward-over-reverse HVP). Measured: "
                  f"{ratio:.2f}×."],
    }


# --------------------------------------------------------------------------------------------------
# Case 5: executing the book
# --------------------------------------------------------------------------------------------------

_NOTEBOOK_RUNNER = r"""
import datetime, json, pathlib, sys, time
import nbformat
from nbclient import NotebookClient

path, timeout = pathlib.Path(sys.argv[1]), int(sys.argv[2])
nb = nbformat.read(path, as_version=4)
t0 = time.perf_counter()
NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
execute_s = time.perf_counter() - t0
def when(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
cells = []
for i, cell in enumerate(nb.cells):
    ex = cell.get("metadata", {}).get("execution", {})
    if cell.cell_type == "code" and "iopub.execute_input" in ex and "shell.execute_reply" in ex:
        lines = [l for l in cell.source.splitlines() if l.strip() and not l.lstrip().startswith("#")]
        cells.append({"cell": i, "seconds": (when(ex["shell.execute_reply"]) - when(ex["iopub.execute_input"])).total_seconds(),
                      "first_line": (lines[0] if lines else "")[:90]})
print("RESULT " + json.dumps({"execute_s": execute_s, "cells": cells}))
"""


def book_chapters(root: pathlib.Path | None = None) -> list[pathlib.Path]:
    """The chapters ``book/NN_*.ipynb`` in order."""
    root = root or pathlib.Path(__file__).resolve().parents[1]
    return sorted((root / "book").glob("[0-9][0-9]_*.ipynb"))


def _execute_chapter(path: pathlib.Path, cell_timeout: int, chapter_timeout: int) -> dict[str, Any]:
    """Execute one notebook in a fresh process and kernel; wall and CPU time, slowest cells or the error."""
    import signal

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = _load()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _NOTEBOOK_RUNNER, str(path), str(cell_timeout)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=path.parent,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=chapter_timeout)
        hung = False
    except subprocess.TimeoutExpired:  # kill the runner and its kernel (one process group)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hung = True
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    entry: dict[str, Any] = {"label": path.stem, "median_s": wall, "repeats": 1, "times_s": [wall],
                             "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                             "load_average_before": load0, "load_average_after": _load()}
    line = next((l for l in reversed(out.splitlines()) if l.startswith("RESULT ")), None)
    if hung or proc.returncode != 0 or line is None:
        entry["error"] = (f"killed after {chapter_timeout} s. " if hung else "") + (err or out)[-1500:]
        return entry
    res = json.loads(line[len("RESULT "):])
    entry["execute_s"] = res["execute_s"]
    entry["outside_kernel_s"] = wall - res["execute_s"]  # interpreter start, imports, reading the notebook
    entry["slowest_cells"] = sorted(res["cells"], key=lambda c: -c["seconds"])[:3]
    return entry


def _training_floor() -> dict[str, Any]:
    """The arithmetic the deep-network chapters cannot avoid, and how fast this machine does it.

    XLA's cost model gives the flops of one training step of exactly the programs chapter 6's
    ``learning_rate_sweep`` (GD) and chapter 7's ``egr_sweep`` (EGR) run at the default size; times the steps
    and runs, that is each experiment's training work. Dividing by the flop rate ``train()`` sustains here
    (GD on the wider network, timed) gives the least time those cells can take with this code; a large
    float32 matrix product gives the machine's rate for the most favourable kernel, for scale.
    """
    import jax
    import jax.numpy as jnp

    from .experiments import layer_sizes, load_data, select_size
    from .nets import init_mlp
    from .train import _step_fn, train

    size = select_size()
    data = load_data(size)
    xtr, ytr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    key = jax.random.PRNGKey(0)

    def step_flops(method: str, width: int) -> float:
        params = init_mlp(key, layer_sizes(data, width, size.depth))
        step = _step_fn(method, size.activation, None, xtr.shape[0])
        f = jax.jit(lambda p, a, b: step(p, 0, jnp.float32(0.01), jnp.float32(0.01), key, a, b))
        return _cost(f.lower(params, xtr, ytr).compile())["flops"]

    work = {
        "06 learning_rate_sweep (GD)": sum(step_flops("gd", w) for w in size.widths) * size.steps * len(size.lrs) * size.seeds,
        # An upper bound: every EGR run of every seed for the whole step budget (runs stop at the target loss).
        "07 egr_sweep (EGR)": step_flops("egr", size.widths[0]) * size.egr_steps * len(size.mus) * size.seeds,
    }
    width = max(size.widths)
    params = init_mlp(key, layer_sizes(data, width, size.depth))
    steps = 200

    def run():
        final, _ = train(params, data, 0.05, steps, record_every=steps, activation=size.activation)
        return _block(final)

    stats, _ = time_variants({"train": Variant(f"train(), width {width}, {steps} steps", run, 5)})
    rate = step_flops("gd", width) * steps / stats["train"]["median_s"]
    a = jnp.ones((2048, 2048), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    stats_mm, _ = time_variants({"matmul": Variant("2048×2048 float32 matrix product", lambda: _block(matmul(a)), 7)})
    peak = 2 * 2048**3 / stats_mm["matmul"]["median_s"]
    return {"size": size.name, "flops": work, "train_flops_per_s": rate, "matmul_flops_per_s": peak,
            "floor_s": {k: v / rate for k, v in work.items()}}


def _floor_note(profile: dict[str, Any], variants: dict[str, Any], total: float) -> str:
    """Case 5's verdict on the compute floor: the floor of each experiment cell against its measured time."""
    cells = {}  # the measured time of the cell that runs each experiment, from the chapter's slowest cells
    for name in profile["flops"]:
        chapter = next((k for k in variants if k.startswith(name[:2])), None)
        call = name.split()[1]
        cell = next((c for c in variants.get(chapter, {}).get("slowest_cells", []) if call in c["first_line"]), None)
        cells[name] = cell["seconds"] if cell else None
    floors = "; ".join(
        f"{k}: {f / 1e9:,.0f} GFLOP, at least {profile['floor_s'][k]:.0f} s"
        + (f" of the cell's {cells[k]:.0f} s" if cells[k] else "")
        for k, f in profile["flops"].items())
    floor = sum(profile["floor_s"].values())
    rest = total - sum(c for c in cells.values() if c)
    return (
        f"compute floor ({profile['size']} size): {floors}, at the {profile['train_flops_per_s'] / 1e9:.0f} GFLOP/s "
        f"that train() sustains on this machine ({100 * profile['train_flops_per_s'] / profile['matmul_flops_per_s']:.0f} % "
        f"of a large float32 matrix product's {profile['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s). The rest of those "
        "cells is compiling, the narrower network's lower flop rate, and the measurements after training "
        f"(sharpness, noise). Everything outside these two cells takes {rest:.0f} s"
        + (f", {rest + floor - 180:.0f} s over the goal even if both cells ran at the floor: the goal needs smaller "
           "experiments or fewer chapters, not faster code" if rest + floor > 180 else ""))


def case_book_execution(s: Settings) -> dict[str, Any]:
    chapters = book_chapters()
    if s.book_chapters is not None:
        chapters = chapters[: s.book_chapters]
    if not chapters:
        return {"description": "no chapters found", "variants": {}, "baseline": None, "skipped": True,
                "reason": "no book/NN_*.ipynb next to the package (an installed copy, not the repository)",
                "goal": _goal("the whole book executes in under 3 minutes", []), "notes": []}
    variants: dict[str, dict[str, Any]] = {}
    errors, retried = [], []
    for path in chapters:
        failed: list[dict[str, Any]] = []
        for attempt in range(s.book_attempts):
            _progress(f"  executing {path.name} …" + (f" (attempt {attempt + 1})" if attempt else ""))
            entry = _execute_chapter(path, s.book_cell_timeout, s.book_chapter_timeout)
            _progress(f"  {path.name}: {entry['median_s']:.1f} s" + (" FAILED" if "error" in entry else ""))
            if "error" not in entry:
                break
            failed.append({"wall_s": entry["median_s"], "error": entry["error"]})
        if failed:
            entry["failed_attempts"] = failed
            (errors if "error" in entry else retried).append(path.stem)
        variants[path.stem] = entry
    total = sum(v["median_s"] for v in variants.values())
    variants = {"book": {"label": f"all {len(chapters)} chapters, one after another", "median_s": total, "repeats": 1,
                         "times_s": [total], "cpu_s": sum(v["cpu_s"] for v in variants.values())}, **variants}
    per = sorted(((k, v["median_s"]) for k, v in variants.items() if k != "book"), key=lambda kv: -kv[1])
    notes = ["each chapter executed once, in its own Python process and Jupyter kernel (a fresh kernel compiles "
             "everything it uses, as in a book build); no warm-up: the cold run is what a reader or the build sees"]
    if s.book_chapters is not None:
        notes.append(f"quick run: only the first {len(chapters)} chapter(s), so the total is not the book's")
    if total > 0 and len(per) > 1:
        top2 = per[:2]
        notes.append(f"the two slowest chapters, {top2[0][0]} ({top2[0][1]:.0f} s) and {top2[1][0]} "
                     f"({top2[1][1]:.0f} s), take {100 * sum(t for _, t in top2) / total:.0f} % of the total {total:.0f} s")
    if total > 0:
        slow = sorted(((c["seconds"], k, c["first_line"]) for k, v in variants.items() if k != "book"
                       for c in v.get("slowest_cells", [])), reverse=True)[:3]
        notes.append("slowest cells: " + "; ".join(f"{k} cell starting `{line}` ({sec:.0f} s)" for sec, k, line in slow))
    profile = None
    if s.book_chapters is None and total > 0:
        profile = _training_floor()
        notes.append(_floor_note(profile, variants, total))
    if retried:
        notes.append("executed on the second attempt (the first failed or hung; its time is kept under "
                     "failed_attempts and left out of the total): " + ", ".join(retried))
    if errors:
        notes.append("FAILED to execute: " + ", ".join(errors))
    goal = _goal("the whole book executes in under 3 minutes on this machine",
                 [_condition("time to execute every chapter", "total seconds", "<", 180.0, total if not errors else None, "s")])
    return {
        "description": "Each book/NN_*.ipynb executed with nbclient in a subprocess (cwd book/, default experiment "
                       "size for this backend), timed from process start to exit; per chapter and in total.",
        "settings": {"chapters": [p.stem for p in chapters], "cell_timeout_s": s.book_cell_timeout,
                     "chapter_timeout_s": s.book_chapter_timeout, "attempts": s.book_attempts,
                     "IGR_TUTORIAL_SIZE": os.environ.get("IGR_TUTORIAL_SIZE")},
        "variants": variants, "baseline": None, "goal": goal, "notes": notes,
        **({"profile": profile} if profile else {}),
    }


# --------------------------------------------------------------------------------------------------
# Case 6: the paper-sized sweep on a GPU
# --------------------------------------------------------------------------------------------------


def case_gpu_paper_sweep(s: Settings) -> dict[str, Any]:
    import jax

    from .experiments import learning_rate_sweep, select_size

    backend = jax.default_backend()
    goal = _goal("recorded on a GPU (no numeric goal)", [])
    if backend == "cpu":
        return {"description": "learning_rate_sweep('paper') end to end on an accelerator", "variants": {},
                "baseline": None, "goal": goal, "skipped": True,
                "reason": "JAX backend is cpu: the paper-sized sweep (full MNIST, 4 hidden layers of 400 and 800, "
                          "9 learning rates, 3 seeds, 10,000 steps) is measured only on a GPU",
                "notes": []}
    size = select_size(s.paper_size)
    device = jax.devices()[0]
    t0 = time.perf_counter()
    out = learning_rate_sweep(size, progress=None)
    wall = time.perf_counter() - t0
    diverged = sum(1 for r in out["runs"] if r["diverged"])
    return {
        "description": f"learning_rate_sweep({size.name!r}) end to end (data loading, compilation, training, "
                       "sharpness and robustness measurements), once.",
        "settings": {"size": dataclasses.asdict(size)},
        "variants": {"paper_sweep": {"label": f"learning_rate_sweep({size.name!r}) on {device.device_kind}",
                                     "median_s": wall, "repeats": 1, "times_s": [wall], "runs": len(out["runs"]),
                                     "diverged_runs": diverged}},
        "baseline": None, "goal": goal, "device": f"{device.platform}: {device.device_kind}",
        "notes": [f"{len(out['runs'])} runs ({diverged} diverged) in {wall:.0f} s on {device.device_kind}"],
    }


_CASE_FUNCTIONS: dict[int, Callable[[Settings], dict[str, Any]]] = {
    1: case_gd_trajectory,
    2: case_learning_rate_sweep,
    3: case_hessian_top_eigenvalue,
    4: case_egr_step_cost,
    5: case_book_execution,
    6: case_gpu_paper_sweep,
}


# --------------------------------------------------------------------------------------------------
# Running, reporting
# --------------------------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def run_case(case_id: int, settings: Settings) -> dict[str, Any]:
    """Run one case; a failure is recorded in the case (``error``) instead of stopping the others."""
    import jax

    name, title = CASES[case_id]
    load0, t0 = _load(), time.perf_counter()
    try:
        body = _CASE_FUNCTIONS[case_id](settings)
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        body = {"description": "", "variants": {}, "baseline": None, "goal": _goal("", []),
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:], "notes": []}
    case = {"id": case_id, "name": name, "title": title, **body}
    case["ratios"] = _ratios(case["variants"], case.get("baseline"))
    case["met"] = None if case.get("skipped") or case.get("error") else _met(case["goal"])
    case.setdefault("skipped", False)
    case["wall_s"] = time.perf_counter() - t0
    case["load_average"] = {"before": load0, "after": _load()}
    gc.collect()
    jax.clear_caches()
    return _jsonable(case)


def run_benchmarks(cases: list[int] | None = None, quick: bool = False) -> dict[str, Any]:
    """Run the cases (default: all) and return the report (a JSON-ready dict).

    Enables float64 in JAX, as the book's chapters do (the MLP cases are float32 by their data and
    initialization; cases 1 and 3 use float64).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    cases = sorted(CASES) if cases is None else list(cases)
    for c in cases:
        if c not in CASES:
            raise ValueError(f"unknown case {c!r}; the cases are {sorted(CASES)}")
    settings = QUICK if quick else FULL
    started, t0 = _now(), time.perf_counter()
    machine = machine_info()
    load_before = _load()
    results = []
    with _LoadSampler() as sampler:
        for c in cases:
            _progress(f"[{c}] {CASES[c][1]} …")
            case = run_case(c, settings)
            status = ("skipped" if case["skipped"] else "ERROR" if case.get("error")
                      else {True: "goal met", False: "goal missed", None: "no goal"}[case["met"]])
            _progress(f"[{c}] done in {case['wall_s']:.1f} s: {status}" + (" (quick sizes: not the goal's verdict)"
                                                                          if quick and not case["skipped"] else ""))
            results.append(case)
    return _jsonable({
        "schema": SCHEMA_VERSION,
        "command": "python -m igr_tutorial.benchmarks" + (" --quick" if quick else "")
                   + ("" if cases == sorted(CASES) else " --cases " + ",".join(map(str, cases))),
        "quick": quick,
        "started": started,
        "finished": _now(),
        "wall_s": time.perf_counter() - t0,
        "machine": machine,
        "load_average": {"before": load_before, "after": _load(), "during": sampler.summary()},
        "ratio_definition": RATIO_DEFINITION,
        "settings": dataclasses.asdict(settings),
        "cases": results,
    })


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


#: how the comparisons of a goal are written for readers
SYMBOLS = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}


def goal_status(case: dict[str, Any]) -> str:
    if case.get("error"):
        return "error"
    if case.get("skipped"):
        return "skipped"
    return {True: "met", False: "missed", None: "—"}[case.get("met")]


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows ``[case, variant, median, repeats, ratio to baseline]`` for every variant, then each goal."""
    rows = []
    for case in report["cases"]:
        head = f"{case['id']} {case['name']}"
        if case.get("skipped") or case.get("error"):
            why = case.get("reason") or case.get("error", "")
            rows.append([head, ("skipped: " if case.get("skipped") else "error: ") + (why[:60] + "…" if len(why) > 60 else why), "", "", ""])
        for key, v in case["variants"].items():
            if key == case.get("baseline"):
                ratio = "baseline"
            elif key in case.get("ratios", {}):
                ratio = f"{case['ratios'][key]:.3g}"
            else:
                ratio = ""
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
            rows.append([f"{case['id']} {case['name']}", f"{c['label']} {target}",
                         format_value(c["value"], c["unit"]),
                         "skipped" if case.get("skipped") else {True: "met", False: "MISSED", None: "—"}[c["met"]]
                         + (" (quick)" if report.get("quick") and not case.get("skipped") else "")])
    return rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(report: dict[str, Any]) -> str:
    """The report as plain text: every variant's median, then every goal and whether it is met."""
    m = report["machine"]
    during = report["load_average"]["during"]
    head = (f"{m['cpu_model']} ({m['cpus_usable']} usable CPUs), JAX {m['versions']['jax']} on {m['jax_backend']}; "
            f"load average {report['load_average']['before'][0]:.2f} before, {report['load_average']['after'][0]:.2f} after, "
            f"{during['min']:.2f}–{during['max']:.2f} during; {report['started']}")
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


def _parse_cases(text: str) -> list[int]:
    try:
        cases = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cases takes comma-separated case numbers, e.g. 1,3; got {text!r}") from None
    bad = [c for c in cases if c not in CASES]
    if bad or not cases:
        raise argparse.ArgumentTypeError(f"--cases must name cases among {sorted(CASES)}; got {text!r}")
    return cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m igr_tutorial.benchmarks",
        description="Time the package's compiled paths against the loops a reader would write, and write a JSON "
                    "report (and print a table). Cases: " + "; ".join(f"{k}: {t}" for k, (_, t) in CASES.items()) + ".",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repetitions: a smoke test of the machinery (seconds per case, "
                             "except case 5, which then executes only the first chapter)")
    parser.add_argument("--out", type=pathlib.Path, default=None, metavar="PATH",
                        help=f"where to write the JSON report (default: {DEFAULT_OUT}; with --quick: {QUICK_OUT})")
    parser.add_argument("--cases", type=_parse_cases, default=None, metavar="1,2,…",
                        help="which cases to run (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    report = run_benchmarks(args.cases, quick=args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(format_table(report))
    print(f"\nwrote {out}")
    return 1 if any(c.get("error") for c in report["cases"]) else 0


if __name__ == "__main__":
    sys.exit(main())
