"""Training MLPs by full-batch GD, SGD, explicit gradient regularization (EGR) and RK4 (chapters 6–8).

Each run is one compiled ``lax.scan``. Learning rates ``h``, EGR strengths ``μ`` and seeds are traced
arguments, so a sweep over them is one ``jax.vmap``-ed call (``mode="vmap"``), a loop over one compiled
function (``mode="loop"``), or the vmapped call split across devices (:func:`train_sweep`'s ``devices``).

Update rules, with ``g = ∇E(θ)`` on the full training set (or a minibatch for SGD):

* ``gd``:  ``θ ← θ − h·g``
* ``sgd``: ``θ ← θ − h·ĝ`` with ``ĝ`` the gradient on a minibatch, reshuffled every epoch
* ``egr``: ``θ ← θ − h·∇(E + μ‖∇E‖²) = θ − h·(g + 2μ·H g)`` — one extra Hessian-vector product per step
  (Barrett & Dherin 2021, Sec. 5)
* ``rk4``: the classical Runge–Kutta step for ``θ' = −∇E`` with the same ``h`` and four gradients: it
  follows the gradient flow to ``O(h⁴)``, so it *removes* implicit gradient regularization (the paper's
  comparison, Sec. 5).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._random import random_normal, random_split
from ._runs import program, run_batch, run_mode
from ._scan import descent_step, minibatch_indices, rk4_step, scan_steps, sgd_step
from ._validate import check_int, check_learning_rate, check_lrs, check_nonnegative, is_integer, require_concrete
from .errors import DivergenceError
from .curvature import hvp, power_iteration_step
from .data import Dataset
from .modified import implicit_regularization_strength, penalized_gradient
from .nets import accuracy, classification_loss, mlp_apply, train_loss_fn  # noqa: F401 (train_loss_fn: its old home)
from .perturbation import perturbed_accuracies, perturbed_accuracy  # noqa: F401 (their old home)
from .tree import num_parameters, tree_sq_norm

__all__ = [
    "METHODS",
    "History",
    "implicit_strength_for",
    "stacked_init",
    "steps_to_target",
    "train",
    "train_sweep",
]

METHODS = ("gd", "sgd", "egr", "rk4")


@dataclasses.dataclass(frozen=True)
class History:
    """Metrics recorded every ``record_every`` steps (NumPy arrays, the step axis last)."""

    step: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    grad_norm_sq: np.ndarray  # ‖∇E‖² of the full training loss
    sharpness: np.ndarray | None = None  # λ_max(∇²E) by warm-started power iteration (``sharpness_iters > 0``)

    def r_ig(self, m: int) -> np.ndarray:
        """``R_IG = ‖∇E‖²/m`` along the run."""
        return self.grad_norm_sq / m


def _arrays(data: Dataset):
    return (jnp.asarray(data.x_train), jnp.asarray(data.y_train), jnp.asarray(data.x_test), jnp.asarray(data.y_test))


def _metrics(params, arrays, activation):
    xtr, ytr, xte, yte = arrays
    loss_fn = lambda p: classification_loss(p, xtr, ytr, activation)  # noqa: E731
    train_loss, g = jax.value_and_grad(loss_fn)(params)
    logits_tr = mlp_apply(params, xtr, activation)
    logits_te = mlp_apply(params, xte, activation)
    return jnp.stack(
        [
            train_loss,
            accuracy(logits_tr, ytr),
            classification_loss(params, xte, yte, activation),
            accuracy(logits_te, yte),
            tree_sq_norm(g),
        ]
    )


def _step_fn(method, activation, batch_size, n_train):
    def batch_loss(p, batch):
        return classification_loss(p, batch[0], batch[1], activation)

    def step(params, i, lr, mu, key, xtr, ytr):
        full_loss = lambda p: batch_loss(p, (xtr, ytr))  # noqa: E731
        if method == "gd":
            return sgd_step(batch_loss, params, (xtr, ytr), lr)
        if method == "egr":  # θ − h·∇(E + μ‖∇E‖²) = θ − h·(g + 2μ·Hg)
            return descent_step(params, penalized_gradient(full_loss, params, mu), lr)
        if method == "rk4":
            return rk4_step(jax.grad(full_loss), params, lr)
        idx = minibatch_indices(key, i, n_train, batch_size)  # random reshuffling, as stochastic.sgd
        return sgd_step(batch_loss, params, (xtr[idx], ytr[idx]), lr)

    return step


def _sharpness(params, u, arrays, activation, iters):
    """``(λ_max estimate, next vector)`` of the full training loss's Hessian at ``params``: ``iters`` damped power
    iterations (:func:`~igr_tutorial.curvature.power_iteration_step`) warm-started from the unit vector ``u``."""
    loss_fn = lambda p: classification_loss(p, arrays[0], arrays[1], activation)  # noqa: E731

    def body(_, state):
        _, v = state
        return power_iteration_step(lambda w: hvp(loss_fn, params, w), v)

    return lax.fori_loop(0, iters, body, (jnp.zeros((), arrays[0].dtype), u))


def _unit_start(params, key):
    """A random unit vector shaped like ``params``, drawn from ``key`` (the power iteration's start)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = random_split(jax.random.fold_in(key, 2**31 - 1), len(leaves))
    u = jax.tree.unflatten(treedef, [random_normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
    norm = jnp.sqrt(tree_sq_norm(u))
    return jax.tree.map(lambda x: x / norm, u)


def _train(params, arrays, lr, mu, key, target, every, *, num_records, method, activation, batch_size,
           sharpness_iters=0):
    # `every` (steps between records) is traced: runs of different step sizes and step counts, with the same
    # number of records (an equal-time sweep: steps = T/h), share one compiled program.
    xtr, ytr = arrays[0], arrays[1]
    lr = jnp.asarray(lr, xtr.dtype)
    mu = jnp.asarray(mu, xtr.dtype)
    step = _step_fn(method, activation, batch_size, xtr.shape[0])

    def segment(p, r):
        return lax.fori_loop(0, every, lambda j, q: step(q, r * every + j, lr, mu, key, xtr, ytr), p)

    def measured(p, u, iters):
        metrics = _metrics(p, arrays, activation)
        if not sharpness_iters:
            return metrics, u
        lam, u = _sharpness(p, u, arrays, activation, iters)
        return jnp.concatenate([metrics, lam[None]]), u

    def outer(carry, r):
        # A run stops for good at the first record whose training loss is at or below `target` (-inf: never);
        # a stopped run keeps its parameters and its last record (nothing is computed again).
        p, metrics, u = carry

        def advance(c):
            p, _, u = c
            p = segment(p, r)
            return (p, *measured(p, u, sharpness_iters))

        return lax.cond(metrics[0] > target, advance, lambda c: c, carry)

    u0 = _unit_start(params, key) if sharpness_iters else None
    init = (params, *measured(params, u0, 4 * sharpness_iters))   # from a random vector: more iterations
    (final, _, _), recs = scan_steps(outer, init, jnp.arange(num_records), record=lambda c: c[1])
    return final, recs


def _default_record_every(steps, record_every):
    """``record_every`` if given, else the largest divisor of ``steps`` not above ``steps // 20`` (≥ 1)."""
    if record_every is not None or not isinstance(steps, int) or steps < 1:
        return record_every  # validated (or rejected) by _check_method
    target = max(1, steps // 20)
    return max(d for d in range(1, target + 1) if steps % d == 0)


def _per_run_schedule(steps, record_every, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``steps`` and ``record_every`` (each one integer or one per run) as arrays of length ``k``, and the common
    number of records ``steps // record_every`` that every run must have."""
    steps_a = [steps] * k if is_integer(steps) else list(steps) if isinstance(steps, (list, tuple, np.ndarray)) else [steps]
    every_a = ([_default_record_every(steps, record_every)] * k if not isinstance(record_every, (list, tuple, np.ndarray))
               else list(record_every))
    if len(steps_a) != k or len(every_a) != k:
        raise ValueError(f"steps and record_every must be one integer or one per run ({k}), got {len(steps_a)} "
                         f"and {len(every_a)} values.")
    for n, r in zip(steps_a, every_a):
        if not is_integer(n) or n < 1:
            raise ValueError(f"steps must be a positive integer, got {n!r}.")
        if not is_integer(r) or r < 1 or n % r:
            raise ValueError(f"record_every must be a positive divisor of steps={n}, got {r!r}.")
    counts = {n // r for n, r in zip(steps_a, every_a)}
    if len(counts) != 1:
        raise ValueError("every run must have the same number of records steps // record_every (e.g. steps = T/h and "
                         f"record_every = Δt/h for an equal-time sweep), got {sorted(counts)}.")
    return np.asarray(steps_a, dtype=int), np.asarray(every_a, dtype=int), counts.pop()


def _check_target(target_loss, method) -> float:
    """``target_loss`` as the float the compiled run compares with (``-inf``: never stop)."""
    if target_loss is None:
        return -np.inf
    if method == "sgd":
        raise ValueError("target_loss stops on the full training loss; it is not available for method='sgd'.")
    if not isinstance(target_loss, (int, float, np.floating, np.integer)) or not np.isfinite(target_loss) or target_loss <= 0:
        raise ValueError(f"target_loss must be a finite positive number (a training loss to stop at), got {target_loss!r}.")
    return float(target_loss)


def steps_to_target(hist: History, target_loss: float) -> np.ndarray:
    """The step of the first record whose training loss is at or below ``target_loss``, per run (``-1`` for a
    run that never reached it): how long each run of a ``target_loss`` sweep trained."""
    reached = np.asarray(hist.train_loss) <= target_loss
    first = np.argmax(reached, axis=-1)
    step = np.broadcast_to(np.asarray(hist.step), reached.shape)
    return np.where(reached.any(axis=-1), np.take_along_axis(step, first[..., None], axis=-1)[..., 0], -1)


def _check_method(method, batch_size, n_train):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "sgd":
        if batch_size is None or not 1 <= batch_size <= n_train:
            raise ValueError(f"SGD needs 1 <= batch_size <= {n_train} (training examples), got {batch_size}.")
    elif batch_size is not None:
        raise ValueError(f"batch_size is only used by method='sgd' (got it with method={method!r}).")


def _history(recs: np.ndarray, record_every: np.ndarray) -> History:
    """The records ``(…, records, 5 or 6)`` as a :class:`History`; ``step`` is 1-D when every run records at the
    same steps, else ``(runs, records)``."""
    recs = np.asarray(recs)
    n = recs.shape[-2]
    every = np.asarray(record_every)
    if every.ndim and np.all(every == every.flat[0]):
        every = every.flat[0]
    return History(
        step=np.arange(n) * every if every.ndim == 0 else every[:, None] * np.arange(n),
        train_loss=recs[..., 0],
        train_accuracy=recs[..., 1],
        test_loss=recs[..., 2],
        test_accuracy=recs[..., 3],
        grad_norm_sq=recs[..., 4],
        sharpness=recs[..., 5] if recs.shape[-1] > 5 else None,
    )


def train(
    params: Any,
    data: Dataset,
    lr: float,
    steps: int,
    *,
    method: str = "gd",
    mu: float = 0.0,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    activation: str = "tanh",
    record_every: int | None = None,
    allow_divergence: bool = False,
    target_loss: float | None = None,
    sharpness_iters: int = 0,
) -> tuple[Any, History]:
    """Train an MLP (see :mod:`igr_tutorial.nets`) for ``steps`` steps; one compiled ``lax.scan``.

    Returns the final parameters and a :class:`History` recorded every ``record_every`` steps (default: the
    largest divisor of ``steps`` up to ``steps // 20``) plus at step 0. ``key`` seeds SGD's shuffling. A run
    whose training loss becomes non-finite raises ``ValueError`` suggesting a smaller ``lr``, unless
    ``allow_divergence=True``.

    ``target_loss``: stop training at the first record whose full training loss is at or below it (the
    parameters and the recorded metrics then stay constant): runs compared *at equal training loss* instead
    of after an equal number of steps (chapters 6–7). See :func:`steps_to_target` for the step reached.

    ``sharpness_iters``: with ``k > 0``, every record also holds the sharpness ``λ_max(∇²E)`` of the full training
    loss (``History.sharpness``), estimated by ``k`` power iterations warm-started from the previous record's
    vector (``4k`` from a random vector at step 0; :func:`~igr_tutorial.curvature.power_iteration_step`). It
    tracks ``h·λ_max`` along the run, so one can tell whether a step stayed below the stability limit 2 the whole
    way (chapters 6 and 7). Where the top eigenvector turns fast (at the edge of stability) a few iterations
    can read low; :func:`~igr_tutorial.curvature.hessian_top_eigenvalue` checks single points.
    Not traceable (it returns NumPy records and checks divergence on the host): a traced argument raises ``TypeError``.
    """
    require_concrete("train (it returns NumPy records)", params, lr, mu, key)
    check_learning_rate(lr)
    sharpness_iters = check_int(sharpness_iters, "sharpness_iters", what="power iterations per record; 0: off")
    if not is_integer(steps):
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    _, every, num_records = _per_run_schedule(steps, record_every, 1)
    _check_method(method, batch_size, data.x_train.shape[0])
    target = _check_target(target_loss, method)
    if method == "egr":
        check_nonnegative(mu, "mu", "the EGR strength")
    key = jax.random.PRNGKey(0) if key is None else key
    arrays = _arrays(data)
    dtype = arrays[0].dtype  # lr and μ as arrays of the data's dtype: the same compiled function as train_sweep
    static = dict(num_records=num_records, method=method, activation=activation, batch_size=batch_size,
                  sharpness_iters=sharpness_iters)
    final, recs = program(_train, tuple(sorted(static.items())))(
        params, arrays, jnp.asarray(lr, dtype), jnp.asarray(mu, dtype), key, jnp.asarray(target, dtype),
        jnp.asarray(every[0], jnp.int32),
    )
    hist = _history(recs, every[0])
    if not allow_divergence and not np.all(np.isfinite(hist.train_loss)):
        bad = int(hist.step[np.argmin(np.isfinite(hist.train_loss))])
        raise DivergenceError(
            f"training diverged: the loss was non-finite by step {bad} with lr={lr:g}. Use a smaller learning "
            "rate, or pass allow_divergence=True to keep the run."
        )
    return final, hist


def train_sweep(
    init_params: Any,
    data: Dataset,
    lrs: Sequence[float],
    steps: int | Sequence[int],
    *,
    mus: Sequence[float] | float = 0.0,
    keys: jax.Array | None = None,
    method: str = "gd",
    batch_size: int | None = None,
    activation: str = "tanh",
    record_every: int | Sequence[int] | None = None,
    mode: str = "auto",
    target_loss: float | None = None,
    devices: Sequence[jax.Device] | None = None,
    sharpness_iters: int = 0,
) -> tuple[Any, History]:
    """Train one run per entry of ``lrs`` (and of ``mus`` and ``keys``, broadcast to the same length).

    ``init_params`` is one parameter pytree (shared by all runs) or a pytree whose leaves have a leading
    axis of that length (one initialization per run, e.g. per seed). ``mode="vmap"`` runs all in one
    compiled ``jax.vmap`` call; ``mode="loop"`` loops over one compiled single-run function (compiled
    once: ``lr``, ``μ`` and the key are traced). ``mode="auto"`` (default) picks ``vmap`` on an accelerator
    and ``loop`` on a CPU, where the benchmarks found the loop as fast and quicker to compile. Diverging runs
    are kept (non-finite entries). Returns stacked final parameters and a :class:`History` whose arrays
    have shape ``(runs, records)``. ``target_loss`` stops every run at the same training loss, as in
    :func:`train`, and ``sharpness_iters`` records the sharpness along every run, as in :func:`train`.

    ``steps`` and ``record_every`` are one integer each, or one per run with the same number of records
    ``steps // record_every`` in every run: an *equal-time* sweep gives step size ``h`` the budget ``T/h`` and
    records every ``Δt/h`` steps, so that record ``r`` of every run is at the gradient-flow time ``t = r·Δt``
    (chapter 6). The step count is traced, so such a sweep is still one compiled program. ``History.step`` is
    then ``(runs, records)``.

    ``devices`` (default: all of ``jax.devices()``): with more than one, the runs are split across them, one
    block of runs per device (``jax.shard_map`` over the run axis of the vmapped program, padded to a multiple
    of the device count; runs never communicate), whatever ``mode`` says. Pass one device to keep a run on it.
    Not traceable (it dispatches the runs and returns NumPy records): a traced argument raises ``TypeError``.
    """
    require_concrete("train_sweep (it dispatches runs and returns NumPy records)", init_params, lrs, mus, keys)
    lrs = check_lrs(lrs)
    k = lrs.size
    mus = np.asarray(mus, dtype=float)
    if mus.ndim > 1 or mus.size not in (1, k):
        raise ValueError(f"mus must be one number or one per learning rate ({k}), got shape {mus.shape}.")
    mus = np.broadcast_to(mus, (k,))
    if method == "egr":
        for mu in mus:
            check_nonnegative(mu, "mu", "the EGR strength")
    keys = jax.random.split(jax.random.PRNGKey(0), k) if keys is None else keys
    if len(keys) != k:
        raise ValueError(f"keys must hold one PRNG key per learning rate ({k}), got {len(keys)}.")
    _, every, num_records = _per_run_schedule(steps, record_every, k)
    _check_method(method, batch_size, data.x_train.shape[0])
    target = _check_target(target_loss, method)
    mode = run_mode(mode)
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device (e.g. jax.devices()[:1]).")
    arrays = _arrays(data)
    static = dict(num_records=num_records, method=method, activation=activation, batch_size=batch_size,
                  sharpness_iters=check_int(sharpness_iters, "sharpness_iters", what="power iterations per record; 0: off"))
    dtype = arrays[0].dtype
    args = (init_params, arrays, jnp.asarray(lrs, dtype), jnp.asarray(mus, dtype), keys, jnp.asarray(target, dtype),
            jnp.asarray(every, jnp.int32))
    axes = (0 if _stacked(init_params, k) else None, None, 0, 0, 0, None, 0)
    final, recs = run_batch(_train, static, args, axes, mode=mode, devices=devices)
    return final, _history(recs, every)


def _stacked(params: Any, k: int) -> bool:
    """Whether ``params`` holds ``k`` stacked initializations (an MLP's first weight is then 3-D)."""
    first = jax.tree.leaves(params)[0]
    return first.ndim == 3 and first.shape[0] == k


def stacked_init(init_fn, keys: jax.Array, *args, **kwargs) -> Any:
    """``init_fn(key, *args)`` for every key, stacked along a leading axis (one initialization per seed)."""
    return jax.vmap(lambda kk: init_fn(kk, *args, **kwargs))(keys)


def implicit_strength_for(lr: float, params: Any) -> float:
    """``λ = h·m/4`` (:func:`~igr_tutorial.modified.implicit_regularization_strength`) for a network with parameters
    ``params``: ``m`` counted, a leading run axis of stacked initializations (see :func:`stacked_init`) excluded."""
    m = num_parameters(params)
    first = jax.tree.leaves(params)[0]
    if first.ndim == 3:  # an MLP's weights stacked along a leading run axis (see stacked_init)
        m //= first.shape[0]
    return implicit_regularization_strength(lr, m)
