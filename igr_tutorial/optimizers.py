"""Beyond plain gradient descent: heavy-ball momentum, Adam/RMSProp (via optax), the edge of stability, SAM.

Chapter 9 of the book. Every function is pure and takes a scalar loss ``loss(params)`` with parameters given
as any JAX pytree, like :mod:`igr_tutorial.flows`.

* **Heavy-ball momentum** ``θₙ₊₁ = θₙ − h·∇E(θₙ) + β·(θₙ − θₙ₋₁)`` follows, in the time ``t = n·h/(1−β)``, the
  gradient flow of ``E + h(1+β)/(4(1−β)²)·‖∇E‖²`` to second order (Ghosh et al. 2023, ICLR, Thm. 3.1;
  derived in chapter 9).
* **Adam and RMSProp** are not re-implemented: :func:`optax_descent` runs any ``optax`` optimizer as one
  compiled ``lax.scan`` (Cattaneo, Klusowski & Shigida 2024 analyse their implicit bias).
* **Gradient descent on a quadratic** is exact, ``θₙ = (1 − hλ)ⁿθ₀``; its modified equation is the series
  ``λ̃ = λ·Σₖ (hλ)ᵏ/(k+1) = −log(1 − hλ)/h``, which converges only for ``hλ < 1``
  (:func:`gd_quadratic_modified_rate`, :func:`gd_quadratic_exact_rate`).
* **SAM** (Foret et al. 2021, ICLR, Eq. 2–3) evaluates the gradient at ``θ + ρ·∇E/‖∇E‖``; unnormalized, at
  ``θ + ρ·∇E``, which to first order in ``ρ`` is the gradient of ``E + (ρ/2)·‖∇E‖²`` (EGR with ``μ = ρ/2``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._checks import check_learning_rate, check_scalar_loss, check_steps, is_traced, real_scalar
from .curvature import hvp
from .flows import _leaf_dtype, _raise_if_diverged
from .tree import PyTree, tree_sq_norm

Loss = Callable[[PyTree], jax.Array]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def check_momentum(beta: Any) -> None:
    """Raise ``ValueError`` unless ``0 ≤ beta < 1`` (skipped under tracing)."""
    value = real_scalar(beta, "beta", "a single real number in [0, 1)")
    if value is not None and not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(
            f"beta must lie in [0, 1), got {value}. beta = 0 is plain gradient descent; beta → 1 gives the "
            "momentum method an infinite memory (typical values: 0.5 to 0.99)."
        )


def check_radius(rho: Any) -> None:
    """Raise ``ValueError`` unless the SAM radius ``rho`` is a finite number ``≥ 0`` (skipped under tracing)."""
    value = real_scalar(rho, "rho", "a single real number >= 0")
    if value is not None and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"rho must be a finite number >= 0 (the SAM radius, e.g. 0.05), got {value}.")


# --------------------------------------------------------------------------------------------------
# Heavy-ball momentum
# --------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0, 5))
def _heavy_ball_scan(loss, params, velocity, lr, beta, steps):
    grad = jax.grad(loss)

    def step(carry, _):
        p, v = carry
        v_new = jax.tree.map(lambda vi, gi: beta.astype(vi.dtype) * vi - lr.astype(vi.dtype) * gi, v, grad(p))
        p_new = jax.tree.map(jnp.add, p, v_new)
        return (p_new, v_new), p_new

    _, traj = lax.scan(step, (params, velocity), None, length=steps)
    return jax.tree.map(lambda p0, t: jnp.concatenate([p0[None], t]), params, traj)


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
    :func:`~igr_tutorial.flows.gradient_descent`. Raises :class:`~igr_tutorial.flows.DivergenceError` on
    non-finite iterates unless ``allow_divergence=True``.
    """
    check_learning_rate(lr)
    check_momentum(beta)
    steps = check_steps(steps)
    check_scalar_loss(loss, params)
    dtype = _leaf_dtype(params)
    if initial_velocity is None:
        initial_velocity = jax.tree.map(jnp.zeros_like, params)
    elif jax.tree.structure(initial_velocity) != jax.tree.structure(params) or any(
        jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree.leaves(initial_velocity), jax.tree.leaves(params))
    ):
        raise ValueError("initial_velocity must have the same pytree structure and shapes as params.")
    traj = _heavy_ball_scan(loss, params, initial_velocity, jnp.asarray(lr, dtype), jnp.asarray(beta, dtype), steps)
    if not allow_divergence and not is_traced(lr) and not is_traced(beta):
        _raise_if_diverged(traj, "heavy-ball momentum", f"lr={float(lr):g}, beta={float(beta):g}", of=steps)
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
    strength = momentum_regularization_strength(lr, beta)

    def loss_tilde(params: PyTree) -> jax.Array:
        value, grads = jax.value_and_grad(loss)(params)
        return value + strength * tree_sq_norm(grads)

    return loss_tilde


def flow_matched_velocity(loss: Loss, params: PyTree, lr: float, beta: float) -> PyTree:
    """``v₀ = −lr/(1−beta)·∇E(θ₀)``: the steady-state velocity of heavy ball at ``θ₀``.

    Equivalent to ``θ₋₁ = θ₀ + η·∇E(θ₀)``, the gradient flow run back by one step ``η = lr/(1−beta)`` up to
    ``O(η²)``. With it heavy ball starts on its modified flow; with ``v₀ = 0`` it first spends a transient
    building up speed, which shifts the whole trajectory by ``O(lr)`` (chapter 9).
    """
    eta = momentum_effective_lr(lr, beta)
    return jax.tree.map(lambda g: -eta * g, jax.grad(loss)(params))


# --------------------------------------------------------------------------------------------------
# Any optax optimizer (Adam, RMSProp, …) as one compiled scan
# --------------------------------------------------------------------------------------------------


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
    grad = jax.grad(loss)

    @jax.jit
    def run(p0):
        def step(carry, _):
            p, state = carry
            updates, state = optimizer.update(grad(p), state, p)
            p = jax.tree.map(lambda x, u: x + u.astype(x.dtype), p, updates)
            return (p, state), p

        _, traj = lax.scan(step, (p0, optimizer.init(p0)), None, length=steps)
        return jax.tree.map(lambda a, t: jnp.concatenate([a[None], t]), p0, traj)

    traj = run(params)
    if not allow_divergence:
        _raise_if_diverged(traj, "the optax optimizer", type(optimizer).__name__, of=steps)
    return traj


# --------------------------------------------------------------------------------------------------
# Gradient descent on a quadratic: the exact modified equation and its series
# --------------------------------------------------------------------------------------------------


def gd_quadratic_exact_rate(lr: float, eigenvalue: Any) -> np.ndarray:
    """``λ̃ = −log(1 − lr·λ)/lr``: the rate of the flow ``θ' = −λ̃θ`` that passes exactly through GD's iterates.

    GD on ``E = ½λθ²`` gives ``θₙ = (1 − lr·λ)ⁿθ₀ = exp(−λ̃·n·lr)·θ₀``. A real ``λ̃`` exists only for
    ``lr·λ < 1``: at ``lr·λ ≥ 1`` the factor ``1 − lr·λ`` is zero or negative (the iterates hit zero or
    alternate in sign), which no flow of a real ODE can do, and a ``ValueError`` says so. Chapter 9.
    """
    check_learning_rate(lr)
    lam = np.asarray(eigenvalue, dtype=float)
    z = lr * lam
    if np.any(z >= 1):
        raise ValueError(
            f"lr·λ = {np.max(z):g} >= 1: GD's factor 1 − lr·λ is not positive, so no real flow passes through "
            "its iterates (they alternate in sign for 1 < lr·λ < 2). The modified equation does not exist here."
        )
    return -np.log1p(-z) / lr


def gd_quadratic_modified_rate(lr: float, eigenvalue: Any, order: int) -> np.ndarray:
    """``λ·Σₖ₌₀ᴷ (lr·λ)ᵏ/(k+1)`` with ``K = order``: GD's modified equation on ``½λθ²`` truncated at ``lrᴷ``.

    Order 0 is the gradient flow (``λ``), order 1 the flow of ``E + (lr/4)‖∇E‖²`` (``λ + lr·λ²/2``), order 2
    adds ``lr²λ³/3`` (the ``⅓H²∇E`` term; ``∇³E = 0`` here). The full series is
    :func:`gd_quadratic_exact_rate`'s ``−log(1 − lr·λ)/lr``, whose Taylor series in ``lr·λ`` has radius of
    convergence 1: for ``lr·λ > 1`` the terms grow without bound. Chapter 9.
    """
    check_learning_rate(lr)
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}.")
    lam = np.asarray(eigenvalue, dtype=float)
    z = lr * lam
    k = np.arange(int(order) + 1).reshape((-1,) + (1,) * z.ndim)
    return lam * np.sum(z**k / (k + 1), axis=0)


# --------------------------------------------------------------------------------------------------
# Sharpness-aware minimization (SAM)
# --------------------------------------------------------------------------------------------------


def _sam_direction(g: PyTree, normalize: bool) -> tuple[PyTree, jax.Array]:
    if not normalize:
        return g, jnp.asarray(1.0, _leaf_dtype(g))
    norm = jnp.sqrt(tree_sq_norm(g))
    inv = jnp.where(norm > 0, 1.0 / jnp.where(norm > 0, norm, 1.0), 0.0)
    return jax.tree.map(lambda x: x * inv.astype(x.dtype), g), inv


def sam_gradient(loss: Loss, params: PyTree, rho: float, normalize: bool = True) -> PyTree:
    """The SAM gradient ``∇E(θ + ρ·v)`` with ``v = ∇E/‖∇E‖`` (``normalize=True``) or ``v = ∇E`` (``False``).

    Foret et al. (2021), Eq. 3: SAM approximates ``max_{‖ε‖≤ρ} E(θ + ε)`` by one ascent step and uses the
    gradient there (without differentiating through the ascent step). Unnormalized, ``∇E(θ + ρ∇E) =
    ∇(E + (ρ/2)‖∇E‖²) + O(ρ²)``: EGR with ``μ = ρ/2``. At a point with ``∇E = 0`` the normalized direction is
    undefined and taken as zero (the SAM gradient is then ``∇E = 0``). Chapters 7 and 9.
    """
    check_radius(rho)
    check_scalar_loss(loss, params)
    grad = jax.grad(loss)
    v, _ = _sam_direction(grad(params), normalize)
    return grad(jax.tree.map(lambda p, vi: p + rho * vi, params, v))


def sam_gradient_first_order(loss: Loss, params: PyTree, rho: float, normalize: bool = True) -> PyTree:
    """``∇E + ρ·H∇E/‖∇E‖`` (``normalize=True``) or ``∇E + ρ·H∇E`` (``False``): SAM's gradient to first order in ρ.

    The first is ``∇(E + ρ‖∇E‖)``, the second ``∇(E + (ρ/2)‖∇E‖²)`` (the EGR gradient with ``μ = ρ/2``).
    Uses one Hessian-vector product. The SAM gradient differs from it by ``O(ρ²)`` (chapter 9).
    """
    check_radius(rho)
    check_scalar_loss(loss, params)
    g = jax.grad(loss)(params)
    v, _ = _sam_direction(g, normalize)
    hv = hvp(loss, params, v)
    return jax.tree.map(lambda gi, hi: gi + rho * hi, g, hv)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _sam_scan(loss, params, lr, rho, steps, normalize):
    grad = jax.grad(loss)

    def step(p, _):
        v, _ = _sam_direction(grad(p), normalize)
        g_sam = grad(jax.tree.map(lambda x, vi: x + rho.astype(x.dtype) * vi, p, v))
        new = jax.tree.map(lambda x, gi: x - lr.astype(x.dtype) * gi, p, g_sam)
        return new, new

    _, traj = lax.scan(step, params, None, length=steps)
    return jax.tree.map(lambda p0, t: jnp.concatenate([p0[None], t]), params, traj)


def sam_descent(
    loss: Loss,
    params: PyTree,
    lr: float,
    rho: float,
    steps: int,
    *,
    normalize: bool = True,
    allow_divergence: bool = False,
) -> PyTree:
    """``steps`` steps of SAM, ``θ ← θ − lr·∇E(θ + ρ·v(θ))`` (:func:`sam_gradient`), as one ``lax.scan``.

    Returns the ``steps + 1`` iterates with a leading time axis. ``rho = 0`` is gradient descent.
    Foret et al. (2021), Algorithm 1 (full batch); chapter 9.
    """
    check_learning_rate(lr)
    check_radius(rho)
    steps = check_steps(steps)
    check_scalar_loss(loss, params)
    dtype = _leaf_dtype(params)
    traj = _sam_scan(loss, params, jnp.asarray(lr, dtype), jnp.asarray(rho, dtype), steps, bool(normalize))
    if not allow_divergence and not is_traced(lr):
        _raise_if_diverged(traj, "SAM", f"lr={float(lr):g}, rho={float(rho):g}", of=steps)
    return traj
