"""The deep-network experiments of chapters 6 and 7, at the size chosen by one switch (:mod:`igr_tutorial.sizes`).

Chapter 6 (:func:`learning_rate_sweep`) compares step sizes at equal gradient-flow time and at equal training
loss, with the sharpness tracked along every run; chapter 7 (:func:`egr_sweep`, :func:`rk4_versus_gd`) compares GD,
explicit gradient regularization and RK4 at equal time, as distances between the trained networks. Every function
returns plain Python data (JSON-ready) so that the command line (``python -m igr_tutorial``) can save the numbers
behind each figure. The sizes (:class:`~igr_tutorial.sizes.ExperimentSize`, :func:`~igr_tutorial.sizes.select_size`)
and the data they load are importable from here too, as before.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._records import seed_grid
from .curvature import hessian_top_eigenvalue, hessian_trace
from .data import Dataset
from .modified import implicit_regularization_strength
from .nets import init_mlp, mlp_apply, train_loss_fn
from .perturbation import perturbed_accuracies
from .sizes import SIZES, ExperimentSize, data_source, device_info, load_data, select_size  # noqa: F401
from .stats import mean_se
from .train import stacked_init, train_sweep
from .tree import num_parameters, tree_sq_norm

__all__ = [
    "egr_sweep",
    "equal_time_schedule",
    "layer_sizes",
    "learning_rate_sweep",
    "rk4_versus_gd",
    "seed_table",
]


def layer_sizes(data: Dataset, width: int, depth: int) -> list[int]:
    return [data.x_train.shape[1]] + [width] * depth + [data.num_classes]


def _progress(message: str, stream=None) -> None:
    print(message, file=stream or sys.stderr, flush=True)


def _finite(x) -> list[float | None]:
    """Floats for JSON, with ``None`` where a run diverged."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=float).ravel()]


def _seed_inits(data: Dataset, width: int, depth: int, seeds: int, seed: int) -> Any:
    """One MLP initialization per seed, stacked along a leading axis (seed ``s`` uses ``PRNGKey(1000·seed + s)``)."""
    keys = jnp.stack([jax.random.PRNGKey(1000 * seed + s) for s in range(seeds)])
    return stacked_init(init_mlp, keys, layer_sizes(data, width, depth))


def _per_run(tree: Any, repeats: int) -> Any:
    """Repeat every seed's initialization ``repeats`` times (seed-major): the run axis of a seeds × grid sweep."""
    return jax.tree.map(lambda x: jnp.repeat(x, repeats, axis=0), tree)


def _measure(loss, params, seed: int, trace_samples: int) -> dict[str, Any]:
    """Curvature and weight scale of one trained network (chapter 5's tools)."""
    eig = hessian_top_eigenvalue(loss, params, tol=1e-3, max_iters=60, on_failure="ignore")
    trace = hessian_trace(loss, params, jax.random.PRNGKey(11 + seed), num_samples=trace_samples)
    return {
        "sharpness": float(eig.eigenvalue),
        "sharpness_converged": bool(eig.converged),
        "trace": float(trace),
        "weight_rms": float(jnp.sqrt(tree_sq_norm(params) / num_parameters(params))),
    }


def _weight_rms(finals: Any) -> np.ndarray:
    """``‖θ‖/√m`` of every run of a sweep (the runs stacked along the leading axis)."""
    leaves = jax.tree.leaves(finals)
    sq = sum(np.sum(np.asarray(x, dtype=float).reshape(x.shape[0], -1) ** 2, axis=1) for x in leaves)
    m = sum(int(np.prod(x.shape[1:])) for x in leaves)
    return np.sqrt(sq / m)


def _noisy_accuracies(finals: Any, data: Dataset, size: ExperimentSize, seeds: Sequence[int]) -> np.ndarray:
    """Test accuracy of every run of a sweep under parameter noise ``σ = r·(RMS weight)`` for each ``r`` of
    ``size.noise_ratios`` (:func:`~igr_tutorial.train.perturbed_accuracies`): the noise is relative to each
    network's own weight scale, so a network with larger weights is not favoured. Run ``j`` draws its
    ``size.noise_draws`` noise vectors from ``PRNGKey(7 + seeds[j])``. Returns ``(runs, len(size.noise_ratios))``."""
    keys = jnp.stack([jax.random.PRNGKey(7 + int(s)) for s in seeds])
    sigmas = _weight_rms(finals)[:, None] * np.asarray(size.noise_ratios, dtype=float)[None, :]
    return perturbed_accuracies(finals, data, sigmas, keys, size.noise_draws, size.activation)


def equal_time_schedule(lrs: Sequence[float], horizon: float, record_time: float) -> tuple[list[int], list[int]]:
    """``(steps, record_every)`` of an equal-time sweep: step size ``h`` runs ``T/h`` steps and records every
    ``Δt/h`` steps, so that every run is recorded at the gradient-flow times ``t = 0, Δt, 2Δt, …, T``. Each ratio
    must be a whole number (e.g. powers of two for ``h``), else ``ValueError``."""
    steps, every = [], []
    for h in lrs:
        n, r = horizon / h, record_time / h
        if abs(n - round(n)) > 1e-9 * n or abs(r - round(r)) > 1e-9 * r or round(r) < 1:
            raise ValueError(f"horizon/h and record_time/h must be whole numbers, got {n:g} and {r:g} for h = {h:g} "
                             "(choose step sizes that divide record_time, e.g. powers of two).")
        steps.append(int(round(n)))
        every.append(int(round(r)))
    return steps, every


def _stop_index(hist, target: float) -> np.ndarray:
    """Per run, the index of the first record at or below ``target`` (the record count − 1 if never)."""
    reached = np.asarray(hist.train_loss) <= target
    return np.where(reached.any(axis=-1), np.argmax(reached, axis=-1), reached.shape[-1] - 1)


def learning_rate_sweep(
    size: str | ExperimentSize | None = None,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = _progress,
) -> dict[str, Any]:
    """Chapter 6: full-batch GD at every step size ``h`` of ``size.lrs``, every width and seed, compared at equal
    gradient-flow time and at equal training loss.

    Protocol: for a given (width, seed) every ``h`` starts from the same initialization; run ``h`` records its
    training loss and accuracy, test accuracy, ``R_IG = ‖∇E‖²/m`` and (tracked by power iteration) the sharpness
    ``λ_max`` every ``size.record_time`` of flow time ``t = steps·h``, and stops at the first record whose
    training loss is at or below ``size.target_loss`` (at most ``size.horizon/h`` steps). The stopped network is
    the *equal-loss* comparison: measured there are the top Hessian eigenvalue (Lanczos) and the Hutchinson trace
    of ``∇²E``, train and test accuracy, ``R_IG``, the RMS weight ``‖θ‖/√m``, and the test accuracy under
    parameter noise ``σ = r·RMS weight`` for each ``r`` of ``size.noise_ratios`` (Predictions 2.1–2.4). The
    records give the *equal-time* comparison at any ``t`` before the first run of a width stopped (after its stop,
    a run's records repeat its last one). ``peak_sharpness`` is the largest tracked ``λ_max`` up to the stop: with
    ``h·peak`` one can tell the steps that stayed inside the range of backward error analysis from those that went
    past it. All seeds × step sizes of a width are one :func:`~igr_tutorial.train.train_sweep` (one compiled
    program). Runs whose loss became non-finite are reported as diverged and left out.
    """
    size = select_size(size)
    data = load_data(size)
    loss = train_loss_fn(data, size.activation)
    steps, every = equal_time_schedule(size.lrs, size.horizon, size.record_time)
    out: dict[str, Any] = {"size": dataclasses.asdict(size), "data": data.name, "record_time": size.record_time,
                           "target_loss": size.target_loss, "runs": []}
    k = len(size.lrs)
    for n, width in enumerate(size.widths, 1):
        t0 = time.perf_counter()
        inits = _seed_inits(data, width, size.depth, size.seeds, seed)
        m = num_parameters(inits) // size.seeds
        finals, hist = train_sweep(
            _per_run(inits, k), data, list(size.lrs) * size.seeds, steps * size.seeds,
            record_every=every * size.seeds, activation=size.activation, target_loss=size.target_loss,
            sharpness_iters=size.sharpness_iters,
        )
        stop = _stop_index(hist, size.target_loss)
        noisy = _noisy_accuracies(finals, data, size, [j // k for j in range(size.seeds * k)])
        for j in range(size.seeds * k):
            s, lr = j // k, size.lrs[j % k]
            diverged = not np.all(np.isfinite(hist.train_loss[j]))
            reached = bool(hist.train_loss[j, stop[j]] <= size.target_loss) and not diverged
            lam = np.asarray(hist.sharpness[j, : stop[j] + 1], dtype=float)
            run = {
                "width": width, "seed": s, "lr": lr, "m": m, "lambda": implicit_regularization_strength(lr, m), "diverged": diverged,
                "reached_target": reached, "stop_time": float(stop[j] * size.record_time) if reached else None,
                "train_loss_curve": _finite(hist.train_loss[j]),
                "train_accuracy_curve": _finite(hist.train_accuracy[j]),
                "test_accuracy_curve": _finite(hist.test_accuracy[j]),
                "r_ig_curve": _finite(hist.grad_norm_sq[j] / m),
                "sharpness_curve": _finite(hist.sharpness[j]),
                "peak_sharpness": float(np.max(lam)) if np.all(np.isfinite(lam)) else None,
            }
            run["peak_h_sharpness"] = None if run["peak_sharpness"] is None else lr * run["peak_sharpness"]
            if diverged:
                run.update({**dict.fromkeys(_NOT_MEASURED), "perturbed_accuracy": [None] * len(size.noise_ratios)})
            else:
                run.update({
                    "r_ig": float(hist.grad_norm_sq[j, stop[j]] / m),
                    "train_loss": float(hist.train_loss[j, stop[j]]),
                    "train_accuracy": float(hist.train_accuracy[j, stop[j]]),
                    "test_accuracy": float(hist.test_accuracy[j, stop[j]]),
                    **_measure(loss, jax.tree.map(lambda x: x[j], finals), s, size.trace_samples),
                    "perturbed_accuracy": _finite(noisy[j]),
                })
            out["runs"].append(run)
        if progress:
            progress(f"[{n}/{len(size.widths)}] width {width}: {size.seeds} seeds × {k} step sizes "
                     f"in {time.perf_counter() - t0:.1f} s")
    return out


_NOT_MEASURED = ("r_ig", "train_loss", "sharpness", "sharpness_converged", "trace", "weight_rms", "train_accuracy",
                 "test_accuracy")


def seed_table(results: dict[str, Any], key: str, *, width: int | None = None, by: str = "lr",
               method: str | None = None) -> dict[str, np.ndarray]:
    """The values of ``run[key]`` as an array ``(seeds, grid)`` over the grid ``by`` (``"lr"`` or ``"mu"``), with
    NaN for diverged runs, for one width (default: the only or first one) and, for results with several methods,
    one ``method``; with the grid, the mean and the standard error over seeds (:func:`~igr_tutorial.stats.mean_se`)
    and ``"diverged"``, the grid values where some seed diverged. List-valued keys (``perturbed_accuracy``,
    curves) give ``(seeds, grid, len)``."""
    runs = [r for r in results["runs"] if method is None or r.get("method") == method]
    widths = sorted({r.get("width") for r in runs}, key=lambda w: (w is None, w))
    width = widths[0] if width is None else width
    runs = [r for r in runs if r.get("width") == width]
    grid, values, diverged = seed_grid(runs, key, by)
    mean, se = mean_se(values, axis=0)
    return {"grid": grid, "values": values, "mean": mean, "se": se, "diverged": np.array(diverged)}


def _flat_runs(finals: Any) -> np.ndarray:
    """Every run's parameters as one flat vector, ``(runs, m)`` (float64, for distances)."""
    leaves = jax.tree.leaves(finals)
    return np.concatenate([np.asarray(x, dtype=float).reshape(x.shape[0], -1) for x in leaves], axis=1)


def _test_logits(finals: Any, data: Dataset, activation: str) -> np.ndarray:
    """Every run's test-set logits, flattened, ``(runs, n_test·classes)``: the network as a function."""
    x = jnp.asarray(data.x_test)
    return np.asarray(jax.vmap(lambda p: mlp_apply(p, x, activation).ravel())(finals), dtype=float)


def _equal_time_runs(method: str, lrs: Sequence[float], mus: Sequence[float] | float, inits: Any, data: Dataset,
                     size: ExperimentSize, horizon: float, seeds: int) -> tuple[Any, Any]:
    """``method`` at every step of ``lrs`` (and strength of ``mus``) from every seed's initialization, for the flow
    time ``horizon``, recording every ``horizon/8`` with the sharpness tracked: one compiled sweep. Runs are
    seed-major: run ``j`` is seed ``j // len(lrs)``."""
    k = len(lrs)
    steps, every = equal_time_schedule(lrs, horizon, horizon / 8)
    mus = list(mus) if np.ndim(mus) else [float(mus)] * k
    return train_sweep(_per_run(inits, k), data, list(lrs) * seeds, steps * seeds, record_every=every * seeds,
                       mus=mus * seeds, method=method, activation=size.activation,
                       sharpness_iters=size.sharpness_iters)


def _run_records(method, lrs, mus, finals, hist, m, seeds) -> list[dict]:
    """The JSON-ready record of every run of an equal-time sweep (its end values, curves, tracked peak sharpness)."""
    k = len(lrs)
    mus = list(mus) if np.ndim(mus) else [float(mus)] * k
    rms = _weight_rms(finals)
    runs = []
    for j in range(seeds * k):
        s, lr, mu = j // k, lrs[j % k], mus[j % k]
        diverged = not np.all(np.isfinite(hist.train_loss[j]))
        lam = np.asarray(hist.sharpness[j], dtype=float)
        run = {"method": method, "seed": s, "lr": float(lr), "mu": float(mu), "m": m, "diverged": diverged,
               "train_loss_curve": _finite(hist.train_loss[j]), "test_accuracy_curve": _finite(hist.test_accuracy[j]),
               "sharpness_curve": _finite(lam)}
        if diverged:
            run.update(dict.fromkeys(("train_loss", "train_accuracy", "test_accuracy", "r_ig", "weight_rms",
                                      "peak_sharpness", "peak_h_sharpness")))
        else:
            run.update(train_loss=float(hist.train_loss[j, -1]), train_accuracy=float(hist.train_accuracy[j, -1]),
                       test_accuracy=float(hist.test_accuracy[j, -1]), r_ig=float(hist.grad_norm_sq[j, -1] / m),
                       weight_rms=float(rms[j]), peak_sharpness=float(lam.max()), peak_h_sharpness=float(lr * lam.max()))
        runs.append(run)
    return runs


def egr_sweep(
    size: str | ExperimentSize | None = None,
    *,
    width: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = _progress,
) -> dict[str, Any]:
    """Chapter 7: does GD at a larger step ``h`` follow the flow of ``E + (h/4)‖∇E‖²``? Tested on a network by
    explicit gradient regularization (EGR), at equal gradient-flow time.

    From every seed's initialization, for the flow time ``size.egr_horizon`` (all runs fit their training data):

    * GD at the small step ``h₀ = size.egr_lr`` (EGR with ``μ = 0``) and at every partner ``h`` of
      ``size.egr_partners``;
    * EGR, GD on ``E + μ‖∇E‖²``, at ``h₀`` with ``μ = (h − h₀)/4``: to first order it follows the flow of
      ``E + (μ + h₀/4)‖∇E‖² = E + (h/4)‖∇E‖²``, the modified loss of GD at ``h`` (chapter 7's proposition);
    * RK4 at every partner ``h``: the gradient flow to ``O(h⁴)``, implicit regularization removed.

    For each seed and partner ``h`` the distances between the final networks are reported, in parameter space
    (``‖θ_a − θ_b‖``) and as functions (the RMS difference of their test-set logits): GD at ``h`` to its EGR
    partner (``gd_egr``), EGR to GD at ``h₀`` (``egr_gd0``: EGR's effect), GD at ``h`` to GD at ``h₀``
    (``gd_gd0``), GD to RK4 at the same ``h`` (``gd_rk4``: what implicit regularization does), and RK4 at ``h``
    to RK4 at the smallest partner (``rk4_rk4``: RK4's own step-size dependence), with the distance travelled
    from the initialization (``travel``). Every run records its training loss, accuracies, ``R_IG`` and tracked
    sharpness (``peak_h_sharpness``: the largest ``h·λ_max`` along the run, for stability). Uses
    ``size.egr_width`` unless ``width`` is given.
    """
    size = select_size(size)
    data = load_data(size)
    width, seeds = width or size.egr_width, size.egr_seeds
    inits = _seed_inits(data, width, size.depth, seeds, seed)
    m = num_parameters(inits) // seeds
    h0, partners, mus = size.egr_lr, list(size.egr_partners), list(size.egr_mus)
    plan = {"gd": ([h0] + partners, 0.0), "egr": ([h0] * len(partners), mus), "rk4": (partners, 0.0)}
    runs, flat, logits = [], {}, {}
    for method, (lrs, mu) in plan.items():
        t0 = time.perf_counter()
        finals, hist = _equal_time_runs(method, lrs, mu, inits, data, size, size.egr_horizon, seeds)
        runs += _run_records(method, lrs, mu, finals, hist, m, seeds)
        flat[method] = _flat_runs(finals).reshape(seeds, len(lrs), -1)
        logits[method] = _test_logits(finals, data, size.activation).reshape(seeds, len(lrs), -1)
        if progress:
            progress(f"{method.upper()}: {seeds} seeds × {len(lrs)} runs to t = {size.egr_horizon:g} "
                     f"in {time.perf_counter() - t0:.1f} s")
    theta0 = _flat_runs(inits)

    def dist(a, b, space):
        return (np.linalg.norm(a - b, axis=-1) if space == "params"
                else np.sqrt(np.mean((a - b) ** 2, axis=-1))).tolist()

    distances = {}
    for space, v in (("params", flat), ("logits", logits)):
        gd0 = v["gd"][:, 0]
        distances[space] = {
            "gd_egr": [dist(v["gd"][:, 1 + i], v["egr"][:, i], space) for i in range(len(partners))],
            "egr_gd0": [dist(v["egr"][:, i], gd0, space) for i in range(len(partners))],
            "gd_gd0": [dist(v["gd"][:, 1 + i], gd0, space) for i in range(len(partners))],
            "gd_rk4": [dist(v["gd"][:, 1 + i], v["rk4"][:, i], space) for i in range(len(partners))],
            "rk4_rk4": [dist(v["rk4"][:, i], v["rk4"][:, 0], space) for i in range(len(partners))],
        }
    distances["params"]["travel"] = np.linalg.norm(flat["gd"][:, 0] - theta0, axis=-1).tolist()
    distances["logits"]["travel"] = np.sqrt(np.mean(logits["gd"][:, 0] ** 2, axis=-1)).tolist()
    return {"size": dataclasses.asdict(size), "data": data.name, "width": width, "m": m, "lr": h0,
            "partners": partners, "mus": mus, "horizon": size.egr_horizon, "distances": distances, "runs": runs}


def rk4_versus_gd(
    size: str | ExperimentSize | None = None,
    *,
    lrs: Sequence[float] | None = None,
    width: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = _progress,
) -> dict[str, Any]:
    """Chapter 7: GD (implicit regularization present) against RK4 (it removed) at the same steps ``h`` (default
    ``size.egr_partners``) for the same flow time ``size.egr_horizon``, from every seed's initialization.

    RK4 follows the gradient flow to ``O(h⁴)``, so where both are stable the difference between the two is what
    implicit gradient regularization does. Every run records its curves, its end values (training loss and
    accuracy, test accuracy, ``R_IG``) and the sharpness tracked along it (``peak_h_sharpness``: GD is stable for
    ``hλ < 2``, RK4 for ``hλ < 2.785``). The same runs are part of :func:`egr_sweep`.
    """
    size = select_size(size)
    data = load_data(size)
    width, seeds = width or size.egr_width, size.egr_seeds
    lrs = [float(h) for h in (lrs or size.egr_partners)]
    inits = _seed_inits(data, width, size.depth, seeds, seed)
    m = num_parameters(inits) // seeds
    runs = []
    for method in ("gd", "rk4"):
        t0 = time.perf_counter()
        finals, hist = _equal_time_runs(method, lrs, 0.0, inits, data, size, size.egr_horizon, seeds)
        runs += _run_records(method, lrs, 0.0, finals, hist, m, seeds)
        if progress:
            progress(f"{method.upper()}: {seeds} seeds × {len(lrs)} steps h to t = {size.egr_horizon:g} "
                     f"in {time.perf_counter() - t0:.1f} s")
    return {"size": dataclasses.asdict(size), "data": data.name, "width": width, "m": m,
            "horizon": size.egr_horizon, "lrs": lrs, "runs": runs}
