"""Beyond plain gradient descent: heavy-ball momentum, Adam/RMSProp (via optax), the edge of stability, SAM.

Chapter 9 of the book. Every function is pure and takes a scalar loss ``loss(params)`` with parameters given
as any JAX pytree, like :mod:`igr_tutorial.flows`.

* **Heavy-ball momentum** ``θₙ₊₁ = θₙ − h·∇E(θₙ) + β·(θₙ − θₙ₋₁)`` follows, in the time ``t = n·h/(1−β)``, the
  gradient flow of ``E + h(1+β)/(4(1−β)²)·‖∇E‖²`` to second order (Ghosh et al. 2023, ICLR, Thm. 3.1;
  derived in chapter 9).
* **Heavy ball's stability limit** on ``E = ½λθ²`` is ``hλ < 2(1+β)`` (:func:`heavy_ball_stability_limit`,
  :func:`heavy_ball_spectral_radius`); on networks the sharpness hovers near ``(2+2β)/h`` (Cohen et al. 2021).
* **Adam and RMSProp** are not re-implemented: :func:`optax_descent` runs any ``optax`` optimizer as one
  compiled ``lax.scan``, :func:`adam_sweep` many full-batch Adam runs in one program. With ``ε`` inside the
  square root, Adam's memory adds ``h·(β₁/(1−β₁) − β₂/(1−β₂))·‖∇E‖₁,ε`` to its modified loss where
  ``√ε ≪ |∂ᵢE|`` (Cattaneo, Klusowski & Shigida 2024; :func:`adam_update_first_order`,
  :func:`adam_modified_loss`).
* **The edge of stability**: :func:`sharpness_trace` trains batches of runs (GD, heavy ball, RK4) and tracks
  the top Hessian eigenvalue by warm-started power iteration.
* **Gradient descent on a quadratic** is exact, ``θₙ = (1 − hλ)ⁿθ₀``; its modified equation is the series
  ``λ̃ = λ·Σₖ (hλ)ᵏ/(k+1) = −log(1 − hλ)/h``, which converges only for ``hλ < 1``
  (:func:`gd_quadratic_modified_rate`, :func:`gd_quadratic_exact_rate`).
* **SAM** (Foret et al. 2021, ICLR, Eq. 2–3) evaluates the gradient at ``θ + ρ·∇E/‖∇E‖``; unnormalized, at
  ``θ + ρ·∇E``, which to first order in ``ρ`` is the gradient of ``E + (ρ/2)·‖∇E‖²`` (EGR with ``μ = ρ/2``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._ode import GRADIENT_FLOW_HINT, solve_ode
from ._scan import descent_step, leaf_dtype, raise_if_diverged, rk4_step, run_mode, scan_steps, stack_runs
from ._types import Loss, PyTree
from ._validate import check_learning_rate, check_nonnegative, check_scalar_loss, check_steps, real_scalar
from .curvature import hvp, power_iteration_step
from .flows import check_order
from .modified import penalized_gradient, penalized_loss
from .tree import tree_sq_norm


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
    check_nonnegative(rho, "rho", "the SAM radius, e.g. 0.05")


# --------------------------------------------------------------------------------------------------
# Heavy-ball momentum
# --------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0, 5))
def _heavy_ball_scan(loss, params, velocity, lr, beta, steps):
    grad = jax.grad(loss)

    def step(carry, _):
        p, v = carry
        v_new = jax.tree.map(lambda vi, gi: beta.astype(vi.dtype) * vi - lr.astype(vi.dtype) * gi, v, grad(p))
        return jax.tree.map(jnp.add, p, v_new), v_new

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
    :func:`~igr_tutorial.flows.gradient_descent`. Raises :class:`~igr_tutorial.flows.DivergenceError` on
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


def penalized_gradient_flow(
    loss: Loss,
    params: PyTree,
    strength: float,
    times: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 100_000,
) -> PyTree:
    """The gradient flow of ``E + c·‖∇E‖²`` (``c = strength ≥ 0``) from ``params``, sampled at ``times``.

    ``c = 0`` is the gradient flow of ``E``; ``c = h/4`` is GD's modified flow
    (:func:`~igr_tutorial.flows.modified_flow`); ``c`` = :func:`momentum_regularization_strength` is heavy
    ball's. Same adaptive solver and tolerances as :func:`~igr_tutorial.flows.gradient_flow`, but ``c`` is an
    argument of the compiled vector field, so one compilation serves every ``c``, the gradient flow included
    (``gradient_flow`` and ``modified_flow`` compile a field of their own). Chapter 9.
    """
    check_nonnegative(strength, "strength", "the coefficient of ‖∇E‖²", traced=False)
    check_scalar_loss(loss, params)
    return solve_ode(
        _penalized_field, params, times, (loss, jnp.asarray(strength, leaf_dtype(params))),
        rtol=rtol, atol=atol, max_steps=max_steps,
        hint=GRADIENT_FLOW_HINT,
    )


def _penalized_field(t, y, args):
    loss, strength = args
    return jax.tree.map(jnp.negative, penalized_gradient(loss, y, strength))


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
    order = check_order(order)
    lam = np.asarray(eigenvalue, dtype=float)
    z = lr * lam
    k = np.arange(order + 1).reshape((-1,) + (1,) * z.ndim)
    return lam * np.sum(z**k / (k + 1), axis=0)


# --------------------------------------------------------------------------------------------------
# Sharpness-aware minimization (SAM)
# --------------------------------------------------------------------------------------------------


def _sam_direction(g: PyTree, normalize: bool) -> tuple[PyTree, jax.Array]:
    if not normalize:
        return g, jnp.asarray(1.0, leaf_dtype(g))
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
        return descent_step(p, grad(jax.tree.map(lambda x, vi: x + rho.astype(x.dtype) * vi, p, v)), lr)

    return scan_steps(step, params, length=steps, record=lambda p: p)[1]


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
    dtype = leaf_dtype(params)
    traj = _sam_scan(loss, params, jnp.asarray(lr, dtype), jnp.asarray(rho, dtype), steps, bool(normalize))
    if not allow_divergence:
        raise_if_diverged(traj, "SAM", lambda: f"lr={float(lr):g}, rho={float(rho):g}", of=steps)
    return traj


# --------------------------------------------------------------------------------------------------
# Heavy ball's stability limit on a quadratic
# --------------------------------------------------------------------------------------------------


def heavy_ball_spectral_radius(lr: Any, beta: float, eigenvalue: Any) -> np.ndarray:
    """``max |r|`` over the roots of ``r² − (1 + β − hλ)·r + β = 0``: heavy ball's growth factor per step on
    ``E = ½λθ²`` (for ``λ ≥ 0``).

    The iterates decay iff it is below 1, which (for ``0 ≤ β < 1``) holds iff ``0 < hλ < 2(1 + β)``
    (:func:`heavy_ball_stability_limit`): at ``hλ = 2(1 + β)`` the root ``r = −1`` crosses the unit circle. Array
    arguments broadcast. Chapter 9.
    """
    check_momentum(beta)
    b = 1.0 + beta - np.asarray(lr, dtype=float) * np.asarray(eigenvalue, dtype=float)
    disc = np.asarray(b * b - 4.0 * beta, dtype=complex)
    root = np.sqrt(disc)
    return np.maximum(np.abs((b + root) / 2.0), np.abs((b - root) / 2.0))


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


# --------------------------------------------------------------------------------------------------
# Adam's memory correction (ε inside the square root, optax's eps_root)
# --------------------------------------------------------------------------------------------------


def perturbed_one_norm(grads: PyTree, eps: float) -> jax.Array:
    """``‖g‖₁,ε = Σᵢ √(gᵢ² + ε)`` over all entries of the pytree ``grads`` (Cattaneo, Klusowski & Shigida 2024).

    It tends to the one-norm ``‖g‖₁`` as ``ε → 0``; for ``|gᵢ| ≪ √ε`` it is ``d·√ε + ‖g‖²/(2√ε)``, a shifted
    two-norm. Chapter 9.
    """
    return sum(jnp.sum(jnp.sqrt(g**2 + eps)) for g in jax.tree.leaves(grads))


def adam_memory_coefficient(beta1: float, beta2: float) -> float:
    """``β₁/(1 − β₁) − β₂/(1 − β₂)``: the sign and size of Adam's implicit one-norm term.

    Negative (anti-regularization: the term hinders the decrease of ``‖∇E‖₁,ε``) iff ``β₂ > β₁``, as for the
    defaults ``(0.9, 0.999)`` (−990) and for RMSProp (``β₁ = 0``); zero at ``β₁ = β₂``. See
    :func:`adam_modified_loss`. Chapter 9.
    """
    check_momentum(beta1)
    check_momentum(beta2)
    return beta1 / (1.0 - beta1) - beta2 / (1.0 - beta2)


def adam_update_first_order(loss: Loss, params: PyTree, lr: float, beta1: float, beta2: float, eps: float) -> PyTree:
    """Adam's steady-state step direction to first order in ``h``: ``P + h·M`` with ``θₙ₊₁ ≈ θₙ − h·(P + hM)``.

    For full-batch Adam with ``ε`` inside the root (``optax.adam(h, β₁, β₂, eps=0, eps_root=ε)``), once the
    bias corrections and the start-up transient have decayed, with ``g = ∇E``, ``s = √(g² + ε)``
    (componentwise) and ``u = H·(g/s) = ∇‖∇E‖₁,ε``:

    ``P = g/s``, ``M = [β₁/(1−β₁)]·u/s − [β₂/(1−β₂)]·g²·u/s³``.

    Derived by replacing the past iterates in Adam's moving averages by ``θₙ₋ₖ = θₙ + k·h·P + O(k²h²)``
    (the memory expansion of Cattaneo, Klusowski & Shigida 2024 and Cattaneo & Shigida 2025); Adam's actual
    step differs from ``P + hM`` by ``O(h²)`` and from ``P`` by ``O(h)`` (tested; chapter 9). For
    ``√ε ≪ |gᵢ|``, ``M ≈ c·u/s`` with ``c`` = :func:`adam_memory_coefficient`.
    """
    check_learning_rate(lr)
    check_momentum(beta1)
    check_momentum(beta2)
    check_scalar_loss(loss, params)
    grad = jax.grad(loss)
    g = grad(params)
    s = jax.tree.map(lambda gi: jnp.sqrt(gi**2 + eps), g)
    p = jax.tree.map(jnp.divide, g, s)
    u = hvp(loss, params, p)
    a1, a2 = beta1 / (1.0 - beta1), beta2 / (1.0 - beta2)
    return jax.tree.map(lambda pi, gi, si, ui: pi + lr * (a1 * ui / si - a2 * gi**2 * ui / si**3), p, g, s, u)


def adam_modified_loss(loss: Loss, lr: float, beta1: float, beta2: float, eps: float) -> Loss:
    """``θ ↦ E(θ) + h·(β₁/(1−β₁) − β₂/(1−β₂))·‖∇E(θ)‖₁,ε``: Adam's modified loss where ``√ε ≪ |∂ᵢE|``.

    In that regime full-batch Adam (``ε`` inside the root) moves, to first order in ``h``, along the
    preconditioned flow ``θ̇ = −∇Ẽ/√(∇E² + ε)`` (componentwise) of this loss: the one-norm term is penalized
    when ``β₁ > β₂`` and anti-penalized (typical) when ``β₂ > β₁`` (Cattaneo, Klusowski & Shigida 2024; the
    coefficient is the memory expansion of :func:`adam_update_first_order`). Chapter 9.
    """
    c = lr * adam_memory_coefficient(beta1, beta2)

    def loss_tilde(params: PyTree) -> jax.Array:
        value, grads = jax.value_and_grad(loss)(params)
        return value + c * perturbed_one_norm(grads, eps)

    return loss_tilde


# --------------------------------------------------------------------------------------------------
# Sharpness along training: the edge of stability
# --------------------------------------------------------------------------------------------------


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
            v = beta * v - lr * g
            return (x + v, v), val
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


def _per_run(value: Any, name: str, runs: int, dtype: Any) -> np.ndarray:
    """``value`` (one number or one per run) as an array of length ``runs``; ``ValueError`` otherwise."""
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim > 1 or arr.size not in (1, runs):
        raise ValueError(f"{name} must be one value or one per run ({runs}), got shape {arr.shape}.")
    return np.broadcast_to(arr.reshape(-1), (runs,))


def _split_loss(loss):
    """``(array leaves, static part)`` of a loss: a pytree loss such as ``train_loss_fn``'s passes its data as
    arguments of the compiled program (not as constants, which XLA compiles far more slowly); any other
    callable is static."""
    leaves, treedef = jax.tree.flatten(loss)
    if leaves and all(isinstance(x, (jax.Array, np.ndarray)) for x in leaves):
        return tuple(leaves), treedef
    return (), loss


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("steps", "record_every", "power_iters", "method", "vmap"))
def _trace_many(static, leaves, params, starts, lrs, betas, *, steps, record_every, power_iters, method, vmap):
    loss = jax.tree.unflatten(static, leaves) if leaves else static
    one = lambda p, k, h, b: _trace_one(loss, p, k, h, b, steps, record_every, power_iters, method)  # noqa: E731
    return jax.vmap(one)(params, starts, lrs, betas) if vmap else one(params, starts, lrs, betas)


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
      descent), stable on curvature below ``2(1 + β)/h`` (:func:`heavy_ball_stability_limit`);
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
    several times longer (measured: 20 runs of a 40-16-16-10 MLP, 2 cores), and ``vmap`` on an accelerator.
    Chapter 9 (the edge of stability, Cohen et al. 2021).
    """
    steps = check_steps(steps)
    if not isinstance(record_every, (int, np.integer)) or record_every < 1 or steps % record_every:
        raise ValueError(f"record_every must be a positive divisor of steps={steps}, got {record_every!r}.")
    if not isinstance(power_iters, (int, np.integer)) or power_iters < 1:
        raise ValueError(f"power_iters must be a positive integer, got {power_iters!r}.")
    if method not in ("heavy_ball", "rk4"):
        raise ValueError(f"method must be 'heavy_ball' or 'rk4', got {method!r}.")
    mode = run_mode(mode)
    runs = _num_runs(params, "initialization")
    lrs_np, betas_np = _per_run(lrs, "lrs", runs, float), _per_run(betas, "betas", runs, float)
    for lr in lrs_np:
        check_learning_rate(lr, name="every entry of lrs")
    for beta in betas_np:
        check_momentum(beta)
    dtype = leaf_dtype(params)
    size = sum(int(np.prod(jnp.shape(x)[1:])) for x in jax.tree.leaves(params))
    starts = jnp.asarray(np.random.default_rng(seed).standard_normal((runs, size)), dtype)
    lr_arr, beta_arr = jnp.asarray(lrs_np, dtype), jnp.asarray(betas_np, dtype)
    leaves, static = _split_loss(loss)
    static_args = dict(steps=steps, record_every=int(record_every), power_iters=int(power_iters), method=method)
    if mode == "vmap":
        final, sharp, losses = _trace_many(static, leaves, params, starts, lr_arr, beta_arr, vmap=True, **static_args)
    else:
        outs = [
            _trace_many(static, leaves, jax.tree.map(lambda x: x[i], params), starts[i], lr_arr[i], beta_arr[i],
                        vmap=False, **static_args)
            for i in range(runs)
        ]
        final, sharp, losses = stack_runs(outs)
    return SharpnessTrace(
        step=np.arange(steps // record_every + 1) * record_every,
        sharpness=np.asarray(sharp),
        loss=np.asarray(losses),
        final=final,
    )


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
    for lr in lr_np:
        check_learning_rate(lr, name="every entry of lrs")
    for b in (*b1_np, *b2_np):
        check_momentum(b)
    if np.any(steps_np < 0):
        raise ValueError("steps must be >= 0.")
    for name, e in (("eps", eps), ("eps_root", eps_root)):
        check_nonnegative(e, name, "added to Adam's denominator", traced=False)
    dtype = leaf_dtype(params)
    return _adam_many(
        loss, params, jnp.asarray(lr_np, dtype), jnp.asarray(b1_np, dtype), jnp.asarray(b2_np, dtype),
        jnp.asarray(steps_np, jnp.int32), jnp.asarray(eps, dtype), jnp.asarray(eps_root, dtype),
    )
