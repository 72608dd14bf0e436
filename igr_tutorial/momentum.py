"""Heavy-ball momentum and its modified loss (chapter 9).

Heavy ball ``θₙ₊₁ = θₙ − h·∇E(θₙ) + β·(θₙ − θₙ₋₁)`` follows, in the time ``t = n·h/(1−β)``, the gradient flow of
``E + h(1+β)/(4(1−β)²)·‖∇E‖²`` to second order (Ghosh et al. 2023, ICLR, Thm. 3.1; derived in chapter 9). On
``E = ½λθ²`` it is stable for ``hλ < 2(1+β)`` (:func:`heavy_ball_stability_limit`); on networks the sharpness
hovers near ``(2+2β)/h`` (Cohen et al. 2021).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ._scan import leaf_dtype, raise_if_diverged, scan_steps
from ._types import Loss, PyTree
from ._validate import check_learning_rate, check_momentum, check_scalar_loss, check_steps
from .modified import penalized_loss

__all__ = [
    "flow_matched_velocity",
    "heavy_ball",
    "heavy_ball_spectral_radius",
    "heavy_ball_stability_limit",
    "heavy_ball_update",
    "momentum_effective_lr",
    "momentum_modified_loss",
    "momentum_regularization_strength",
]


def heavy_ball_update(params: PyTree, velocity: PyTree, grads: PyTree, lr: Any, beta: Any) -> tuple[PyTree, PyTree]:
    """One heavy-ball step from ``(θ, v)`` with ``g = ∇E(θ)``: ``v' = β·v − h·g``, ``θ' = θ + v'``; returns
    ``(θ', v')``. The one heavy-ball update of the package (:func:`heavy_ball`, the sharpness traces of
    :mod:`igr_tutorial.sharpness`). Polyak (1964); chapter 9."""
    v_new = jax.tree.map(lambda vi, gi: jnp.asarray(beta).astype(vi.dtype) * vi - jnp.asarray(lr).astype(vi.dtype) * gi,
                         velocity, grads)
    return jax.tree.map(jnp.add, params, v_new), v_new


@functools.partial(jax.jit, static_argnums=(0, 5))
def _heavy_ball_scan(loss, params, velocity, lr, beta, steps):
    grad = jax.grad(loss)

    def step(carry, _):
        p, v = carry
        return heavy_ball_update(p, v, grad(p), lr, beta)

    return scan_steps(step, (params, velocity), length=steps, record=lambda c: c[0])[1]


def heavy_ball(
    loss: Loss,
    params: PyTree,
    lr: float,
    beta: float,
    steps: int,
    *,
    initial_velocity: PyTree | None = None,
    allow_divergence: bool = False,
) -> PyTree:
    """Heavy-ball momentum ``θₙ₊₁ = θₙ − lr·∇E(θₙ) + beta·(θₙ − θₙ₋₁)`` (Polyak 1964).

    Written with the velocity ``vₙ = θₙ − θₙ₋₁``: ``vₙ₊₁ = beta·vₙ − lr·∇E(θₙ)``, ``θₙ₊₁ = θₙ + vₙ₊₁``.
    ``initial_velocity`` is ``v₀ = θ₀ − θ₋₁`` (default zero, i.e. ``θ₋₁ = θ₀``, the usual start); pass
    :func:`flow_matched_velocity` to start on the modified flow instead (chapter 9 explains the difference).
    Returns the ``steps + 1`` iterates ``θ₀ = params, θ₁, …`` with a leading time axis. One compiled
    ``lax.scan``; ``lr`` and ``beta`` are traced, so new values do not recompile. ``beta = 0`` is
    :func:`~igr_tutorial.flows.gradient_descent`. Raises :class:`~igr_tutorial.errors.DivergenceError` on
    non-finite iterates unless ``allow_divergence=True``.
    """
    check_learning_rate(lr)
    check_momentum(beta)
    steps = check_steps(steps)
    check_scalar_loss(loss, params)
    dtype = leaf_dtype(params)
    if initial_velocity is None:
        initial_velocity = jax.tree.map(jnp.zeros_like, params)
    elif jax.tree.structure(initial_velocity) != jax.tree.structure(params) or any(
        jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree.leaves(initial_velocity), jax.tree.leaves(params))
    ):
        raise ValueError("initial_velocity must have the same pytree structure and shapes as params.")
    traj = _heavy_ball_scan(loss, params, initial_velocity, jnp.asarray(lr, dtype), jnp.asarray(beta, dtype), steps)
    if not allow_divergence:
        raise_if_diverged(traj, "heavy-ball momentum", lambda: f"lr={float(lr):g}, beta={float(beta):g}", of=steps)
    return traj


def momentum_effective_lr(lr: float, beta: float) -> float:
    """``η = lr/(1 − beta)``: the step of gradient descent that heavy ball moves like at steady velocity.

    A constant gradient ``g`` drives the velocity to ``−lr·g/(1−beta)``; heavy-ball iterate ``n`` sits near
    the gradient flow at time ``t = n·η`` (chapter 9).
    """
    check_learning_rate(lr)
    check_momentum(beta)
    return lr / (1.0 - beta)


def momentum_regularization_strength(lr: float, beta: float) -> float:
    """``lr·(1 + beta)/(4·(1 − beta)²)``: the coefficient of ``‖∇E‖²`` in heavy ball's modified loss.

    Equals ``(η/4)·(1+beta)/(1−beta)`` with ``η = lr/(1−beta)``: at the same effective step, momentum's
    implicit regularization is ``(1+beta)/(1−beta)`` times that of gradient descent (``lr/4`` at
    ``beta = 0``). Ghosh et al. (2023), Thm. 3.1; derived in chapter 9.
    """
    check_learning_rate(lr)
    check_momentum(beta)
    return lr * (1.0 + beta) / (4.0 * (1.0 - beta) ** 2)


def momentum_modified_loss(loss: Loss, lr: float, beta: float) -> Loss:
    """``θ ↦ E(θ) + lr·(1+beta)/(4(1−beta)²)·‖∇E(θ)‖²``, heavy ball's first-order modified loss.

    Its gradient flow, sampled at ``t = n·lr/(1−beta)``, stays within ``O(lr²)`` of the heavy-ball iterates
    started with :func:`flow_matched_velocity` (chapter 9; Ghosh et al. 2023). Pass it to
    :func:`~igr_tutorial.flows.gradient_flow`.
    """
    return penalized_loss(loss, momentum_regularization_strength(lr, beta))


def flow_matched_velocity(loss: Loss, params: PyTree, lr: float, beta: float) -> PyTree:
    """``v₀ = −lr/(1−beta)·∇E(θ₀)``: the steady-state velocity of heavy ball at ``θ₀``.

    Equivalent to ``θ₋₁ = θ₀ + η·∇E(θ₀)``, the gradient flow run back by one step ``η = lr/(1−beta)`` up to
    ``O(η²)``. With it heavy ball starts on its modified flow; with ``v₀ = 0`` it first spends a transient
    building up speed, which shifts the whole trajectory by ``O(lr)`` (chapter 9).
    """
    eta = momentum_effective_lr(lr, beta)
    return jax.tree.map(lambda g: -eta * g, jax.grad(loss)(params))


def heavy_ball_spectral_radius(lr: Any, beta: float, eigenvalue: Any) -> jax.Array:
    """``max |r|`` over the roots of ``r² − (1 + β − hλ)·r + β = 0``: heavy ball's growth factor per step on
    ``E = ½λθ²`` (for ``λ ≥ 0``).

    The iterates decay iff it is below 1, which (for ``0 ≤ β < 1``) holds iff ``0 < hλ < 2(1 + β)``
    (:func:`heavy_ball_stability_limit`): at ``hλ = 2(1 + β)`` the root ``r = −1`` crosses the unit circle. Array
    arguments broadcast. Chapter 9.
    """
    check_momentum(beta)
    b = 1.0 + beta - jnp.asarray(lr) * jnp.asarray(eigenvalue)
    root = jnp.sqrt(jax.lax.complex(b * b - 4.0 * beta, jnp.zeros_like(b)))  # complex roots when b² < 4β
    return jnp.maximum(jnp.abs((b + root) / 2.0), jnp.abs((b - root) / 2.0))


def heavy_ball_stability_limit(lr: float, beta: float) -> float:
    """``2(1 + β)/h``: the largest curvature on which heavy ball with step ``h`` and momentum ``β`` is stable.

    On ``E = ½λθ²`` the recurrence ``θₙ₊₁ = (1 + β − hλ)θₙ − βθₙ₋₁`` decays iff ``0 < hλ < 2(1 + β)`` (Jury's
    criterion for ``r² − (1 + β − hλ)r + β``). Gradient descent (``β = 0``) gives ``2/h``. At the edge of
    stability the sharpness of full-batch heavy ball hovers near this value (Cohen et al. 2021; measured in
    chapter 9).
    """
    check_learning_rate(lr)
    check_momentum(beta)
    return 2.0 * (1.0 + beta) / lr
