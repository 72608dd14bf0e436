"""The edge of stability (chapter 9): the sharpness along training, and why no modified equation describes it.

* :func:`sharpness_trace` trains batches of runs (GD, heavy ball, RK4) and tracks the top Hessian eigenvalue by
  warm-started power iteration (Cohen et al. 2021).
* Gradient descent on a quadratic is exact, ``θₙ = (1 − hλ)ⁿθ₀``; its modified equation is the series
  ``λ̃ = λ·Σₖ (hλ)ᵏ/(k+1) = −log(1 − hλ)/h``, which on a quadratic converges only for ``hλ < 1``
  (:func:`gd_quadratic_modified_rate`, :func:`gd_quadratic_exact_rate`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._pytree import split_arrays
from ._runs import run_batch, run_mode
from ._scan import leaf_dtype, rk4_step
from ._types import Loss, PyTree
from ._validate import (check_int, check_learning_rate, check_lrs, check_momentum, check_order, check_steps, is_traced,
                        require_concrete)
from .curvature import hvp, power_iteration_step
from .momentum import heavy_ball_update

__all__ = ["SharpnessTrace", "gd_quadratic_exact_rate", "gd_quadratic_modified_rate", "sharpness_trace"]


def gd_quadratic_exact_rate(lr: float, eigenvalue: Any) -> jax.Array:
    """``λ̃ = −log(1 − lr·λ)/lr``: the rate of the flow ``θ' = −λ̃θ`` that passes exactly through GD's iterates.

    GD on ``E = ½λθ²`` gives ``θₙ = (1 − lr·λ)ⁿθ₀ = exp(−λ̃·n·lr)·θ₀``. A real ``λ̃`` exists only for
    ``lr·λ < 1``: at ``lr·λ ≥ 1`` the factor ``1 − lr·λ`` is zero or negative (the iterates hit zero or
    alternate in sign), which no flow of a real ODE can do, and a ``ValueError`` says so (under a trace, where
    nothing can be raised, the rate is NaN there). Chapter 9.
    """
    check_learning_rate(lr)
    z = jnp.asarray(lr) * jnp.asarray(eigenvalue)
    if not is_traced(z) and np.any(np.asarray(z) >= 1):
        raise ValueError(
            f"lr·λ = {float(np.max(np.asarray(z))):g} >= 1: GD's factor 1 − lr·λ is not positive, so no real flow "
            "passes through its iterates (they alternate in sign for 1 < lr·λ < 2). The modified equation does not "
            "exist here."
        )
    return jnp.where(z < 1, -jnp.log1p(-jnp.minimum(z, 0.5)) / lr, jnp.nan) if is_traced(z) else -jnp.log1p(-z) / lr


def gd_quadratic_modified_rate(lr: float, eigenvalue: Any, order: int) -> np.ndarray:
    """``λ·Σₖ₌₀ᴷ (lr·λ)ᵏ/(k+1)`` with ``K = order``: GD's modified equation on ``½λθ²`` truncated at ``lrᴷ``.

    Order 0 is the gradient flow (``λ``), order 1 the flow of ``E + (lr/4)‖∇E‖²`` (``λ + lr·λ²/2``), order 2
    adds ``lr²λ³/3`` (the ``⅓H²∇E`` term; ``∇³E = 0`` here). The full series is
    :func:`gd_quadratic_exact_rate`'s ``−log(1 − lr·λ)/lr``, whose Taylor series in ``lr·λ`` has radius of
    convergence 1: for ``lr·λ > 1`` the terms grow without bound. Chapter 9.
    """
    check_learning_rate(lr)
    order = check_order(order)
    lam = np.asarray(eigenvalue, dtype=float)
    z = lr * lam
    k = np.arange(order + 1).reshape((-1,) + (1,) * z.ndim)
    return lam * np.sum(z**k / (k + 1), axis=0)


@dataclasses.dataclass(frozen=True)
class SharpnessTrace:
    """Sharpness and loss along a batch of runs (NumPy arrays; the run axis first).

    ``step``: the steps at which the sharpness was measured (0 and every ``record_every``);
    ``sharpness``: ``(runs, len(step))``; ``loss``: ``(runs, steps + 1)``, the loss at every iterate;
    ``final``: the final parameters, stacked along the run axis.
    """

    step: np.ndarray
    sharpness: np.ndarray
    loss: np.ndarray
    final: Any


def _trace_one(loss, params, u0, lr, beta, steps, record_every, power_iters, method):
    x0, unravel = jax.flatten_util.ravel_pytree(params)
    dtype = x0.dtype
    lr, beta = lr.astype(dtype), beta.astype(dtype)
    f = lambda x: loss(unravel(x))  # noqa: E731
    value_grad = jax.value_and_grad(f)

    def step(carry, _):
        x, v = carry
        if method == "heavy_ball":
            val, g = value_grad(x)
            return heavy_ball_update(x, v, g, lr, beta), val
        val, k1 = value_grad(x)  # RK4 for θ' = −∇E
        return (rk4_step(jax.grad(f), x, lr, k1), v), val

    def power(_, state):
        x, u, _ = state
        rayleigh, u = power_iteration_step(lambda v: hvp(f, x, v), u)
        return x, u, rayleigh

    def record(carry, i):
        x, v, u = carry
        (x, v), vals = lax.cond(
            i > 0,
            lambda: lax.scan(step, (x, v), None, length=record_every),
            lambda: ((x, v), jnp.zeros(record_every, dtype)),
        )
        iters = jnp.where(i > 0, power_iters, 4 * power_iters)  # from a random vector at step 0
        _, u, lam = lax.fori_loop(0, iters, power, (x, u, jnp.zeros((), dtype)))
        return (x, v, u), (lam, vals)

    init = (x0, jnp.zeros_like(x0), u0.astype(dtype) / jnp.linalg.norm(u0))
    (x, _, _), (lams, vals) = lax.scan(record, init, jnp.arange(steps // record_every + 1))
    losses = jnp.concatenate([vals[1:].reshape(-1), f(x)[None]])
    return unravel(x), lams, losses


def _num_runs(params: PyTree, what: str) -> int:
    """The number of runs in ``params``, which holds one ``what`` per run stacked along a leading axis."""
    leaves = jax.tree.leaves(params)
    if not leaves or any(jnp.ndim(x) < 1 for x in leaves) or len({jnp.shape(x)[0] for x in leaves}) != 1:
        raise ValueError(f"params must hold one {what} per run, stacked along a leading axis.")
    return jnp.shape(leaves[0])[0]


def _per_run(value: Any, name: str, runs: int, dtype: Any) -> Any:
    """``value`` (one number or one per run) as an array of length ``runs`` (NumPy; a traced value stays traced);
    ``ValueError`` otherwise."""
    traced = is_traced(value)
    arr = jnp.asarray(value, dtype=dtype) if traced else np.asarray(value, dtype=dtype)
    if arr.ndim > 1 or arr.size not in (1, runs):
        raise ValueError(f"{name} must be one value or one per run ({runs}), got shape {arr.shape}.")
    return (jnp if traced else np).broadcast_to(arr.reshape(-1), (runs,))


def _trace_run(loss_arrays, params, start, lr, beta, *, loss_static, steps, record_every, power_iters, method):
    """One run of :func:`sharpness_trace`, the loss rebuilt from its arrays (a loss bound to its data passes the
    data as arguments, not as constants, which XLA compiles far more slowly) and its static part
    (:func:`~igr_tutorial._pytree.split_arrays`): the single-run program that
    :func:`~igr_tutorial._runs.run_batch` loops, vmaps or shards."""
    loss = loss_static.combine(loss_arrays)
    return _trace_one(loss, params, start, lr, beta, steps, record_every, power_iters, method)


def sharpness_trace(
    loss: Loss,
    params: PyTree,
    lrs: Any,
    steps: int,
    *,
    betas: Any = 0.0,
    method: str = "heavy_ball",
    record_every: int = 50,
    power_iters: int = 20,
    seed: int = 0,
    mode: str = "auto",
) -> SharpnessTrace:
    """Train a batch of runs and measure the sharpness ``λ_max(∇²E)`` every ``record_every`` steps.

    ``params`` holds one initialization per run, stacked along a leading axis (e.g.
    :func:`~igr_tutorial.train.stacked_init`); ``lrs`` and ``betas`` are one number or one per run. ``method``:

    * ``"heavy_ball"``: ``vₙ₊₁ = β·vₙ − h·∇E(θₙ)``, ``θₙ₊₁ = θₙ + vₙ₊₁`` from rest (``β = 0``: gradient
      descent), stable on curvature below ``2(1 + β)/h`` (:func:`~igr_tutorial.momentum.heavy_ball_stability_limit`);
    * ``"rk4"``: classical Runge–Kutta on ``θ' = −∇E`` with step ``h`` (``betas`` ignored): the gradient flow
      up to ``O(h⁴)``, a control without discretization effects as long as ``h·λ_max`` stays well below RK4's
      stability limit 2.78.

    The sharpness is the Rayleigh quotient after ``power_iters`` power iterations on Hessian-vector
    products, each warm-started from the previous eigenvector (at step 0: ``4·power_iters`` from a random
    vector drawn by NumPy from ``seed``, outside the compiled program). Each iteration multiplies by
    ``H + σI`` with ``σ = ‖Hu‖ − uᵀHu ≥ 0``: plain power iteration once ``u`` is the top eigenvector, a damping
    of the negative eigenvalues while they dominate ``u``; this converges fast when the most negative
    eigenvalue is close in magnitude to the top one (at the initializations of chapter 9 it is 0.6–0.8 times
    as large), and needs the top eigenvalue to be the largest in magnitude. Checked against exact eigenvalues
    in the tests. With few iterations per record it can read low where the top eigenvector turns fast (at the
    edge of stability); :func:`~igr_tutorial.curvature.hessian_top_eigenvalue` (Lanczos) checks single points. Each run is one
    compiled ``lax.scan``; diverging runs are kept (non-finite entries). ``steps`` must be a multiple of
    ``record_every``. ``mode``: ``"vmap"`` runs all runs in one compiled ``jax.vmap``,
    ``"loop"`` loops over one compiled single-run program (``lr`` and ``β`` are traced, so it compiles once);
    ``"auto"`` picks ``loop`` on a CPU, where a batch of small networks runs no faster vmapped but compiles
    longer, and ``vmap`` on an accelerator.
    Chapter 9 (the edge of stability, Cohen et al. 2021).
    Not traceable (it dispatches the runs and returns NumPy records): a traced argument raises ``TypeError``.
    """
    require_concrete("sharpness_trace (it dispatches runs and returns NumPy records)", params, lrs, betas)
    steps = check_steps(steps)
    record_every = check_int(record_every, "record_every", minimum=1, what=f"a divisor of steps={steps}")
    if steps % record_every:
        raise ValueError(f"record_every must be a positive divisor of steps={steps}, got {record_every!r}.")
    power_iters = check_int(power_iters, "power_iters", minimum=1, what="power iterations per record")
    if method not in ("heavy_ball", "rk4"):
        raise ValueError(f"method must be 'heavy_ball' or 'rk4', got {method!r}.")
    mode = run_mode(mode)
    runs = _num_runs(params, "initialization")
    lrs_np, betas_np = _per_run(lrs, "lrs", runs, float), _per_run(betas, "betas", runs, float)
    check_lrs(lrs_np)
    for beta in betas_np:
        check_momentum(beta)
    dtype = leaf_dtype(params)
    size = sum(int(np.prod(jnp.shape(x)[1:])) for x in jax.tree.leaves(params))
    starts = jnp.asarray(np.random.default_rng(seed).standard_normal((runs, size)), dtype)
    lr_arr, beta_arr = jnp.asarray(lrs_np, dtype), jnp.asarray(betas_np, dtype)
    loss_static, loss_arrays = split_arrays(loss, "the loss")
    static = dict(loss_static=loss_static, steps=steps, record_every=record_every, power_iters=power_iters,
                  method=method)
    final, sharp, losses = run_batch(_trace_run, static, (loss_arrays, params, starts, lr_arr, beta_arr),
                                     (None, 0, 0, 0, 0), mode=mode, devices=jax.devices()[:1])
    return SharpnessTrace(
        step=np.arange(steps // record_every + 1) * record_every,
        sharpness=np.asarray(sharp),
        loss=np.asarray(losses),
        final=final,
    )
