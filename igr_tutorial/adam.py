"""Adam, RMSProp and any optax optimizer, full batch, and Adam's first-order memory correction (chapter 9).

Adam and RMSProp are not re-implemented: :func:`optax_descent` runs any ``optax`` optimizer as one compiled
``lax.scan``, :func:`adam_sweep` many full-batch Adam runs in one program. With ``ε`` inside the square root
(optax's ``eps_root``), Adam's memory adds ``h·(b1/(1−b1) − b2/(1−b2))·‖∇E‖₁,ε`` to its modified loss where
``√ε ≪ |∂ᵢE|`` (:func:`adam_update_first_order`, :func:`adam_modified_loss`; Cattaneo, Klusowski & Shigida 2024).
Arguments follow optax: ``b1``, ``b2``, ``eps`` (added outside the root), ``eps_root`` (inside it).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._deprecation import renamed_arguments
from ._scan import leaf_dtype, raise_if_diverged, scan_steps
from ._types import Loss, PyTree
from ._validate import (check_learning_rate, check_lrs, check_momentum, check_nonnegative, check_scalar_loss, check_steps,
                        is_traced)
from .curvature import hvp
from .sharpness import _num_runs, _per_run

__all__ = [
    "adam_memory_coefficient",
    "adam_modified_loss",
    "adam_sweep",
    "adam_update_first_order",
    "optax_descent",
    "perturbed_one_norm",
]


def optax_descent(optimizer: Any, loss: Loss, params: PyTree, steps: int, *, allow_divergence: bool = False) -> PyTree:
    """Run ``steps`` full-batch steps of an ``optax`` optimizer (e.g. ``optax.adam(1e-2)``) on ``loss``.

    ``updates, state = optimizer.update(∇E(θ), state, θ)``; ``θ ← θ + updates``, all inside one ``lax.scan``.
    Returns the ``steps + 1`` iterates with a leading time axis, like
    :func:`~igr_tutorial.flows.gradient_descent`. ``optax.sgd(h)`` reproduces gradient descent with step
    ``h``. Chapter 9 uses it for RMSProp and Adam (Cattaneo et al. 2024 study their implicit bias).
    """
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError("optimizer must be an optax GradientTransformation, e.g. optax.adam(1e-2).")
    steps = check_steps(steps)
    check_scalar_loss(loss, params)
    traj = _optax_scan(optimizer, loss, params, steps)
    if not allow_divergence:
        raise_if_diverged(traj, "the optax optimizer", "the optimizer passed in", of=steps)
    return traj


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _optax_scan(optimizer: Any, loss: Loss, p0: PyTree, steps: int) -> PyTree:
    """The ``steps + 1`` iterates of ``optimizer`` on ``loss``: compiled once per optimizer, loss and shape."""
    step = _optax_step(optimizer, jax.grad(loss))
    return scan_steps(lambda c, _: step(c), (p0, optimizer.init(p0)), length=steps, record=lambda c: c[0])[1]


def _optax_step(optimizer: Any, grad):
    """``(θ, state) ↦ (θ + updates, state')`` with ``updates, state' = optimizer.update(∇E(θ), state, θ)``."""

    def step(carry):
        p, state = carry
        updates, state = optimizer.update(grad(p), state, p)
        return jax.tree.map(lambda x, u: x + u.astype(x.dtype), p, updates), state

    return step


@renamed_arguments(eps="eps_root")
def perturbed_one_norm(grads: PyTree, eps_root: float) -> jax.Array:
    """``‖g‖₁,ε = Σᵢ √(gᵢ² + ε)`` over all entries of the pytree ``grads``, ``ε = eps_root`` (Cattaneo, Klusowski &
    Shigida 2024, who write it ``‖g‖₁,ε``; optax's ``eps_root`` is the ``ε`` inside Adam's square root).

    It tends to the one-norm ``‖g‖₁`` as ``ε → 0``; for ``|gᵢ| ≪ √ε`` it is ``d·√ε + ‖g‖²/(2√ε)``, a shifted
    two-norm. Chapter 9.
    """
    return sum(jnp.sum(jnp.sqrt(g**2 + eps_root)) for g in jax.tree.leaves(grads))


@renamed_arguments(beta1="b1", beta2="b2")
def adam_memory_coefficient(b1: float, b2: float) -> float:
    """``b1/(1 − b1) − b2/(1 − b2)`` (β₁, β₂ of Adam, optax's ``b1``, ``b2``): the sign and size of Adam's implicit
    one-norm term.

    Negative (anti-regularization: the term hinders the decrease of ``‖∇E‖₁,ε``) iff ``β₂ > β₁``, as for the
    defaults ``(0.9, 0.999)`` (−990) and for RMSProp (``β₁ = 0``); zero at ``β₁ = β₂``. See
    :func:`adam_modified_loss`. Chapter 9.
    """
    check_momentum(b1)
    check_momentum(b2)
    return b1 / (1.0 - b1) - b2 / (1.0 - b2)


@renamed_arguments(beta1="b1", beta2="b2", eps="eps_root")
def adam_update_first_order(loss: Loss, params: PyTree, lr: float, b1: float, b2: float, eps_root: float) -> PyTree:
    """Adam's steady-state step direction to first order in ``h``: ``P + h·M`` with ``θₙ₊₁ ≈ θₙ − h·(P + hM)``.

    For full-batch Adam with ``ε = eps_root`` inside the root (``optax.adam(h, b1, b2, eps=0, eps_root=ε)``), once the
    bias corrections and the start-up transient have decayed, with ``g = ∇E``, ``s = √(g² + ε)``
    (componentwise) and ``u = H·(g/s) = ∇‖∇E‖₁,ε``:

    ``P = g/s``, ``M = [β₁/(1−β₁)]·u/s − [β₂/(1−β₂)]·g²·u/s³``.

    Derived by replacing the past iterates in Adam's moving averages by ``θₙ₋ₖ = θₙ + k·h·P + O(k²h²)``
    (the memory expansion of Cattaneo, Klusowski & Shigida 2024 and Cattaneo & Shigida 2025); Adam's actual
    step differs from ``P + hM`` by ``O(h²)`` and from ``P`` by ``O(h)`` (tested; chapter 9). For
    ``√ε ≪ |gᵢ|``, ``M ≈ c·u/s`` with ``c`` = :func:`adam_memory_coefficient`.
    """
    check_learning_rate(lr)
    check_momentum(b1)
    check_momentum(b2)
    check_scalar_loss(loss, params)
    grad = jax.grad(loss)
    g = grad(params)
    s = jax.tree.map(lambda gi: jnp.sqrt(gi**2 + eps_root), g)
    p = jax.tree.map(jnp.divide, g, s)
    u = hvp(loss, params, p)
    a1, a2 = b1 / (1.0 - b1), b2 / (1.0 - b2)
    return jax.tree.map(lambda pi, gi, si, ui: pi + lr * (a1 * ui / si - a2 * gi**2 * ui / si**3), p, g, s, u)


@renamed_arguments(beta1="b1", beta2="b2", eps="eps_root")
def adam_modified_loss(loss: Loss, lr: float, b1: float, b2: float, eps_root: float) -> Loss:
    """``θ ↦ E(θ) + h·(β₁/(1−β₁) − β₂/(1−β₂))·‖∇E(θ)‖₁,ε``: Adam's modified loss where ``√ε ≪ |∂ᵢE|``.

    In that regime full-batch Adam (``ε`` inside the root) moves, to first order in ``h``, along the
    preconditioned flow ``θ̇ = −∇Ẽ/√(∇E² + ε)`` (componentwise) of this loss: the one-norm term is penalized
    when ``β₁ > β₂`` and anti-penalized (typical) when ``β₂ > β₁`` (Cattaneo, Klusowski & Shigida 2024; the
    coefficient is the memory expansion of :func:`adam_update_first_order`). Chapter 9.
    """
    c = lr * adam_memory_coefficient(b1, b2)

    def loss_tilde(params: PyTree) -> jax.Array:
        value, grads = jax.value_and_grad(loss)(params)
        return value + c * perturbed_one_norm(grads, eps_root)

    return loss_tilde


@functools.partial(jax.jit, static_argnums=(0,))
def _adam_many(loss, params, lrs, b1s, b2s, steps, eps, eps_root):
    import optax  # imported here: the rest of the package does not need it

    grad = jax.grad(loss)

    def one(p0, lr, b1, b2, n):
        optimizer = optax.adam(lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
        step = _optax_step(optimizer, grad)
        return lax.fori_loop(0, n, lambda _, c: step(c), (p0, optimizer.init(p0)))[0]

    return jax.vmap(one)(params, lrs, b1s, b2s, steps)


def adam_sweep(
    loss: Loss,
    params: PyTree,
    lrs: Any,
    steps: Any,
    *,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: float = 0.0,
    eps_root: float = 1e-8,
) -> PyTree:
    """Final iterates of full-batch ``optax.adam(lr, b1, b2, eps=eps, eps_root=eps_root)`` runs, one per run.

    ``params`` holds one start per run, stacked along a leading axis; ``lrs``, ``steps``, ``b1`` and ``b2`` are one
    value or one per run. Update: ``θ ← θ − lr·m̂/(√(v̂ + eps_root) + eps)`` with bias-corrected moments
    ``m̂, v̂`` (optax). The default puts ``ε`` inside the root (``eps=0, eps_root=1e-8``), the form analysed by
    Cattaneo, Klusowski & Shigida (2024). One compiled program for all runs: hyperparameters and step counts are
    traced (a vmapped loop runs ``max(steps)`` iterations and leaves finished runs unchanged), so a sweep
    compiles once. Matches :func:`optax_descent` run by run (tested). Chapter 9.
    """
    runs = _num_runs(params, "start")
    lr_np, b1_np, b2_np = (_per_run(v, n, runs, float) for v, n in ((lrs, "lrs"), (b1, "b1"), (b2, "b2")))
    steps_np = _per_run(steps, "steps", runs, np.int64)
    check_lrs(lr_np)
    for b in (*b1_np, *b2_np):
        check_momentum(b)
    if not is_traced(steps_np) and np.any(steps_np < 0):
        raise ValueError("steps must be >= 0.")
    for name, e in (("eps", eps), ("eps_root", eps_root)):
        check_nonnegative(e, name, "added to Adam's denominator", traced=False)
    dtype = leaf_dtype(params)
    return _adam_many(
        loss, params, jnp.asarray(lr_np, dtype), jnp.asarray(b1_np, dtype), jnp.asarray(b2_np, dtype),
        jnp.asarray(steps_np, jnp.int32), jnp.asarray(eps, dtype), jnp.asarray(eps_root, dtype),
    )
