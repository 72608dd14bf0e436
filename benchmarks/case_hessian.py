"""Case 3: the top Hessian eigenvalue of MLPs with about 10k and 100k parameters (chapter 5's sharpness).

:func:`igr_tutorial.hessian_top_eigenvalue` (Lanczos on Hessian-vector products) against a dense
``jax.hessian`` followed by ``numpy.linalg.eigvalsh`` (the baseline), where the dense matrix fits in memory.
Goal: at least 20× faster at ~10k parameters, with a relative difference of the eigenvalue below 1e-4.
Float64 inside this case only (``jax.enable_x64`` as a context manager).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.harness import Variant, block, condition, goal, meminfo, time_variants

GOAL_SPEEDUP, GOAL_RELATIVE_DIFFERENCE = 20.0, 1e-4


def dense_fits(m: int, n_train: int, widths: list[int]) -> tuple[bool, dict[str, float]]:
    """Whether a dense float64 Hessian and ``eigvalsh`` fit in the available memory (with a safety margin).

    Needed: the matrix (8·m² bytes) about four times over (JAX's result, the NumPy copy, LAPACK's work space
    and slack), plus ``jax.hessian``'s batched tangents (about 2·8·n·m·Σwidths bytes), within 70 % of the
    memory available now.
    """
    mem = meminfo()
    need_total = 4 * 8.0 * m * m + 2 * 8.0 * n_train * m * sum(widths)
    avail = mem["available_bytes"] or mem["total_bytes"] or 0
    info = {"hessian_bytes_float64": 8.0 * m * m, "estimated_peak_bytes": need_total,
            "available_bytes": float(avail), "total_bytes": float(mem["total_bytes"] or 0)}
    return need_total <= 0.7 * avail, info


def run(s: Any) -> dict[str, Any]:
    import jax

    with jax.enable_x64(True):
        return _run(s)


def _run(s: Any) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from igr_tutorial import hessian_top_eigenvalue
    from igr_tutorial.data import Dataset, load_mnist1d
    from igr_tutorial.nets import init_mlp
    from igr_tutorial.train import train_loss_fn

    n = s.hess_train
    raw = load_mnist1d(num_samples=n + 100, train_split=n / (n + 100))
    data = Dataset(raw.name, raw.x_train.astype(np.float64), raw.y_train, raw.x_test.astype(np.float64), raw.y_test)
    loss = train_loss_fn(data)
    variants: dict[str, dict[str, Any]] = {}
    notes, per_size = [], []
    dense_measured = None  # (m, hessian_s, eigvalsh_s) of the last dense run, to extrapolate from
    for label, width in zip(s.hess_labels, s.hess_widths):
        sizes = [data.x_train.shape[1], width, width, data.num_classes]
        params = init_mlp(jax.random.PRNGKey(0), sizes, dtype=jnp.float64)
        m = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
        stats, res = time_variants({f"lanczos_{label}": Variant(
            f"igr.hessian_top_eigenvalue, m = {m:,} (Lanczos, max_iters=100)",
            lambda: hessian_top_eigenvalue(loss, params), s.hess_repeats)})
        top = res[f"lanczos_{label}"]
        stats[f"lanczos_{label}"].update(eigenvalue=top.eigenvalue, iterations=top.iterations, parameters=m)
        variants.update(stats)
        fits, mem = dense_fits(m, n, sizes[1:])
        entry: dict[str, Any] = {"label": label, "parameters": m, "memory": mem, "dense_fits": fits}
        if fits:
            x, unravel = ravel_pytree(params)
            hess = jax.jit(jax.hessian(lambda v: loss(unravel(v)))).lower(x).compile()
            parts: dict[str, list[float]] = {"hessian_s": [], "eigvalsh_s": []}

            def dense():
                t1 = time.perf_counter()
                H = np.asarray(block(hess(x)))
                t2 = time.perf_counter()
                lam = float(np.linalg.eigvalsh(H)[-1])
                parts["hessian_s"].append(t2 - t1)
                parts["eigvalsh_s"].append(time.perf_counter() - t2)
                return lam

            # compiled above, so no warm-up: one dense run takes about a minute at ~10k parameters
            dstats, dres = time_variants({f"dense_{label}": Variant(
                f"jax.hessian + numpy.linalg.eigvalsh, m = {m:,}", dense, s.hess_dense_repeats, warmup=False)})
            d = dstats[f"dense_{label}"]
            d.update(eigenvalue=dres[f"dense_{label}"], parameters=m,
                     **{k: float(np.median(v)) for k, v in parts.items()})
            variants.update(dstats)
            rel = abs(top.eigenvalue - d["eigenvalue"]) / abs(d["eigenvalue"])
            speedup = d["median_s"] / variants[f"lanczos_{label}"]["median_s"]
            entry.update(relative_difference=rel, speedup=speedup)
            dense_measured = (m, d["hessian_s"], d["eigvalsh_s"])
            notes.append(f"{label} (m = {m:,}): the dense run takes {d['median_s']:.3g} s (jax.hessian "
                         f"{d['hessian_s']:.3g} s, eigvalsh {d['eigvalsh_s']:.3g} s); Lanczos is {speedup:.3g}× faster "
                         f"({top.iterations} iterations), relative difference {rel:.1e}")
            del hess
        else:
            reason = (f"dense Hessian skipped at {label} (m = {m:,}): the matrix alone needs "
                      f"{mem['hessian_bytes_float64'] / 1e9:.1f} GB in float64, eigvalsh about as much again, and "
                      f"this machine has {mem['total_bytes'] / 1e9:.1f} GB ({mem['available_bytes'] / 1e9:.1f} GB available)")
            if dense_measured is not None:
                m0, h0, e0 = dense_measured
                entry["dense_time_extrapolated_s"] = est = h0 * (m / m0) ** 2 + e0 * (m / m0) ** 3
                reason += (f"; extrapolating the {m0:,}-parameter run (jax.hessian ∝ m², eigvalsh ∝ m³) gives "
                           f"about {est / 3600:.3g} hours")
            entry["skipped_reason"] = reason
            notes.append(reason)
        per_size.append(entry)
    first = per_size[0]
    baseline = f"dense_{first['label']}"
    counts = ", ".join(f"{e['parameters']:,}" for e in per_size)
    return {
        "description": f"λ_max of the training-loss Hessian of 40-w-w-10 tanh MLPs "
                       f"({counts} parameters) on {n} MNIST-1D signals, "
                       "float64, at initialization. Dense: jax.jit(jax.hessian) of the flattened loss, then "
                       "numpy.linalg.eigvalsh.",
        "settings": {"train": n, "widths": list(s.hess_widths), "labels": list(s.hess_labels), "dtype": "float64",
                     "lanczos": {"tol": 1e-6, "max_iters": 100}},
        "variants": variants, "baseline": baseline if baseline in variants else None,
        "goal": goal(f"Lanczos at least {GOAL_SPEEDUP:g}× faster than the dense Hessian at {first['label']} "
                     f"parameters, relative difference below {GOAL_RELATIVE_DIFFERENCE:g}",
                     [condition(f"speed-up over dense at {first['label']} parameters", "t(dense) / t(lanczos)",
                                ">=", GOAL_SPEEDUP, first.get("speedup"), "×"),
                      condition(f"relative difference of the eigenvalue at {first['label']}",
                                "|λ_lanczos − λ_dense| / |λ_dense|", "<", GOAL_RELATIVE_DIFFERENCE,
                                first.get("relative_difference"))]),
        "notes": notes, "sizes": per_size,
    }
