"""Gradient descent, gradient flow, and the flow of GD's modified equation.

Gradient descent ``θₙ₊₁ = θₙ − h·∇E(θₙ)`` is the explicit Euler step of the gradient flow
``θ' = −∇E(θ)`` (chapter 1). Backward error analysis (Hairer, Lubich & Wanner 2006, ch. IX; Barrett &
Dherin 2021, Sec. 3; chapter 2) finds a *modified* vector field whose exact flow passes through the GD
iterates up to a higher power of ``h``:

    θ' = −∇E − (h/2)·H∇E − h²·(⅓·H²∇E + (1/12)·∇³E[∇E, ∇E]) + O(h³),

where ``H = ∇²E``. The first two terms equal ``−∇Ẽ`` with ``Ẽ = E + (h/4)‖∇E‖²`` (the first-order modified
equation: local error ``O(h³)``, global error ``O(h²)``). :func:`modified_vector_field` gives any order.

All functions take a scalar loss ``loss(params)`` and parameters given as any JAX pytree; trajectories
come back as the same pytree with a leading time axis.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from ._ode import GRADIENT_FLOW_HINT, solve_ode
from ._scan import descent_step, first_nonfinite_step, leaf_dtype, raise_if_diverged, scan_steps
from ._types import Loss, PyTree
from ._deprecation import deprecated_alias
from ._validate import (check_learning_rate, check_lrs, check_nonnegative, check_order as _check_order, check_scalar_loss,
                        check_steps, require_concrete)
from .errors import DivergenceError, FlowError  # noqa: F401  (also importable from here, as before)
from .curvature import hvp, third_derivative_contraction
from .modified import penalized_gradient

__all__ = [
    "first_nonfinite_step",
    "gradient_descent",
    "gradient_descent_sweep",
    "gradient_flow",
    "modified_field_coefficients",
    "modified_flow",
    "modified_vector_field",
    "penalized_gradient_flow",
]


# --------------------------------------------------------------------------------------------------
# Gradient descent
# --------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0, 3))
def _gd_scan(loss: Loss, params: PyTree, lr: jax.Array, steps: int) -> PyTree:
    grad = jax.grad(loss)
    return scan_steps(lambda p, _: descent_step(p, grad(p), lr), params, length=steps, record=lambda p: p)[1]


def gradient_descent(
    loss: Loss,
    params: PyTree,
    lr: float,
    steps: int,
    *,
    allow_divergence: bool = False,
) -> PyTree:
    """Run ``steps`` steps of full-batch gradient descent ``θₙ₊₁ = θₙ − lr·∇E(θₙ)``.

    Returns ``steps + 1`` iterates ``θ₀ = params, θ₁, …`` as the pytree of ``params`` with a leading
    time axis. The whole loop is one compiled ``lax.scan``; ``lr`` is a traced argument, so changing it
    does not recompile, and the function can be ``jax.vmap``-ed over ``lr`` (see
    :func:`gradient_descent_sweep`).

    If the iterates become non-finite, a :class:`~igr_tutorial.errors.DivergenceError` (a ``ValueError``) names the first bad
    step, unless ``allow_divergence=True`` (chapter 1 uses that to show the instability past
    ``lr = 2/λ_max``). Used in every chapter.
    """
    check_learning_rate(lr)
    steps = check_steps(steps)
    check_scalar_loss(loss, params)
    lr_arr = jnp.asarray(lr, dtype=leaf_dtype(params))
    traj = _gd_scan(loss, params, lr_arr, steps)
    if not allow_divergence:
        raise_if_diverged(traj, "gradient descent", lambda: f"lr={float(lr):g}", of=steps,
                          hint=" (on a quadratic GD is stable only for lr < 2/λ_max, λ_max the largest Hessian "
                               "eigenvalue)")
    return traj


def gradient_descent_sweep(loss: Loss, params: PyTree, lrs: Any, steps: int) -> PyTree:
    """Gradient descent for many learning rates in one compiled call (``jax.vmap`` over ``lrs``).

    Returns the trajectories as the pytree of ``params`` with leading axes ``(len(lrs), steps + 1)``.
    Diverging runs are kept (their entries are non-finite); check them with :func:`first_nonfinite_step`.
    """
    lrs_np = check_lrs(lrs)
    steps = check_steps(steps)
    check_scalar_loss(loss, params)
    lr_arr = jnp.asarray(lrs_np, dtype=leaf_dtype(params))
    return jax.vmap(lambda h: _gd_scan(loss, params, h, steps))(lr_arr)


# --------------------------------------------------------------------------------------------------
# Flows (exact ODE solutions with an adaptive solver)
# --------------------------------------------------------------------------------------------------


def _euler_iterate_series(field: Callable[[jax.Array], jax.Array], y: jax.Array, degree: int, count: int):
    """Taylor coefficients in the step ``h`` of the Euler iterates ``θ₀ = y``, ``θₗ₊₁ = θₗ + h·field(θₗ)``.

    Returns an array of shape ``(count + 1, degree + 1) + y.shape`` whose entry ``[l, j]`` is the coefficient
    of ``hʲ`` in ``θₗ(h)``. Taylor-mode AD (``jax.experimental.jet``) propagates the series through
    ``field``: one ``jet`` call of degree ``degree − 1`` per iterate, no derivative tensors.
    """
    from jax.experimental.jet import jet

    # jet works with derivatives: x(h) = Σ_j x⁽ʲ⁾ hʲ/j!. Keep the derivatives x⁽¹⁾…x⁽ᵈᵉᵍʳᵉᵉ⁾ of the iterate.
    fact = [float(np.prod(np.arange(1, j + 1))) for j in range(degree + 1)]
    zero = jnp.zeros_like(y)
    derivs = [zero] * degree                          # θ₀(h) = y: every derivative in h vanishes
    out = [[y] + [zero] * degree]
    for _ in range(count):
        y_l = out[-1][0]
        if degree > 1:
            f0, fser = jet(field, (y_l,), (derivs[: degree - 1],))
        else:
            f0, fser = field(y_l), []
        fd = [f0] + list(fser)                        # F⁽⁰⁾…F⁽ᵈᵉᵍʳᵉᵉ⁻¹⁾ of F(h) = field(θₗ(h))
        # (h·F)⁽ʲ⁾(0) = j·F⁽ʲ⁻¹⁾(0), so θₗ₊₁⁽ʲ⁾ = θₗ⁽ʲ⁾ + j·F⁽ʲ⁻¹⁾.
        derivs = [d + (j + 1) * fd[j] for j, d in enumerate(derivs)]
        out.append([y_l] + [derivs[j - 1] / fact[j] for j in range(1, degree + 1)])
    return jnp.stack([jnp.stack(row) for row in out])


def modified_field_coefficients(loss: Loss, params: PyTree, order: int) -> list[PyTree]:
    """The coefficients ``f₀ = −∇E, f₁, …, f_order`` of GD's modified field ``f̃ = Σᵢ hⁱ·fᵢ`` at ``params``.

    Any ``order ≥ 0``. The defining condition of backward error analysis (Hairer, Lubich & Wanner 2006,
    Sec. IX.1) is that the time-``h`` flow of ``f̃`` equals the Euler step ``θ + h·f(θ)`` as a formal series in
    ``h``. With the Lie operator ``D`` of ``f̃`` (``Dg = g′f̃``) the flow is ``exp(hD)``, so the ``l``-th GD iterate
    from ``θ`` is ``exp(l·hD) id``; taking the logarithm of the shift gives

        h·f̃(θ) = log(1 + Δ) θ₀ = Σ_{j≥1} (−1)^{j+1}/j · Δʲθ₀,

    with ``Δʲθ₀ = Σₗ C(j, l)(−1)^{j−l} θₗ`` the forward differences of the GD iterates ``θ₀ = θ, θ₁, …``
    (Newton's interpolation formula: ``f̃`` is the velocity of the curve through the iterates). Since
    ``Δʲθ₀ = O(hʲ)``, the ``hⁱ⁺¹`` coefficient of the right side, which is ``fᵢ``, needs ``j ≤ i + 1`` only:
    ``fᵢ = Σ_{j=1}^{i+1} (−1)^{j+1}/j · [hⁱ⁺¹] Δʲθ₀``. The ``h``-Taylor coefficients of the iterates come from
    Taylor-mode AD (``jax.experimental.jet``) through ``∇E``: no Hessian or higher tensor is formed. Collecting
    the same condition order by order with Lie derivatives gives HLW's recursion, ``f₁ = −½f′f``,
    ``f₂ = ⅓f′f′f + (1/12)f″(f, f)``, …; the tests check that the two agree. Chapter 2.

    Limits: the alternating differences cancel, so in floating point ``fᵢ`` loses about ``i·log₁₀3`` digits
    (fine in float64 up to order ~10), and the compile time grows quickly with ``order``.
    """
    order = _check_order(order)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    grad = jax.grad(loss)

    def field(x):
        return -jax.flatten_util.ravel_pytree(grad(unravel(x)))[0]

    series = _euler_iterate_series(field, flat, order + 1, order + 1)   # (order+2, order+2, m)
    # fᵢ = Σₗ Wᵢₗ·[hⁱ⁺¹]θₗ with Wᵢₗ = Σ_{j=max(l,1)}^{i+1} (−1)^{j+1}/j · C(j, l)(−1)^{j−l} (exact weights).
    weights = np.zeros((order + 1, order + 2))
    for i in range(order + 1):
        for j in range(1, i + 2):
            for l in range(j + 1):
                weights[i, l] += (-1) ** (j + 1) / j * math.comb(j, l) * (-1) ** (j - l)
    top = series[:, 1:]                                                 # [l, i] = [hⁱ⁺¹]θₗ
    flat_coeffs = jnp.einsum("il,lim->im", jnp.asarray(weights, dtype=flat.dtype), top)
    return [unravel(c) for c in flat_coeffs]


def modified_vector_field(loss: Loss, params: PyTree, lr: Any, order: int = 1) -> PyTree:
    """The right-hand side of GD's modified equation, truncated after the ``lr**order`` term.

    ``f̃ = f₀ + lr·f₁ + … + lr^order·f_order`` with ``f₀ = −∇E`` (:func:`modified_field_coefficients`):

    * ``order=0``: ``−∇E`` (plain gradient flow);
    * ``order=1``: ``−∇E − (lr/2)·H∇E = −∇Ẽ`` with ``Ẽ = E + (lr/4)‖∇E‖²`` (the *first-order modified
      equation*: its time-``lr`` flow matches one GD step up to ``O(lr³)``, its flow stays within ``O(lr²)`` of
      the GD iterates over a fixed time);
    * ``order=2``: adds ``−lr²·(⅓·H²∇E + (1/12)·∇³E[∇E, ∇E])``;
    * any ``order = k ≥ 3``: the terms ``lrⁱ·fᵢ``, ``i ≤ k``, of the general series (local error
      ``O(lr^(k+2))``, global error ``O(lr^(k+1))``).

    Orders 0–2 use Hessian-vector products (``igr.hvp``, ``igr.third_derivative_contraction``); higher
    orders use Taylor-mode AD through ``∇E``. Never a dense Hessian. ``order`` must be a non-negative integer.
    Source: Hairer, Lubich & Wanner (2006), Sec. IX.1 applied to the explicit Euler method; Barrett & Dherin
    (2021), Sec. 3. Chapter 2 derives it.
    """
    order = _check_order(order)
    if order > 2:
        coeffs = modified_field_coefficients(loss, params, order)
        return jax.tree.map(lambda *c: sum(lr**i * ci for i, ci in enumerate(c)), *coeffs)
    g = jax.grad(loss)(params)
    if order == 0:
        return jax.tree.map(jnp.negative, g)
    if order == 1:   # −∇(E + (lr/4)‖∇E‖²): the one penalized gradient of the package
        return jax.tree.map(jnp.negative, penalized_gradient(loss, params, lr / 4))
    hg = hvp(loss, params, g)
    h2g = hvp(loss, params, hg)
    t3 = third_derivative_contraction(loss, params, g)
    return jax.tree.map(
        lambda a, b, c, d: -(a + lr / 2 * b + lr**2 * (c / 3 + d / 12)), g, hg, h2g, t3
    )


def _field(t, y, args):
    loss, lr, order = args
    return modified_vector_field(loss, y, lr, order)


_HOST_FLOW = "a flow (SciPy's adaptive ODE solver runs on the host)"


def _solve_flow(loss, params, times, lr, order, rtol, atol, max_steps) -> PyTree:
    require_concrete(_HOST_FLOW, params, times, lr)
    check_scalar_loss(loss, params)
    return solve_ode(
        _field, params, times, (loss, jnp.asarray(lr, dtype=leaf_dtype(params)), int(order)),
        rtol=rtol, atol=atol, max_steps=max_steps,
        hint=GRADIENT_FLOW_HINT,
    )


def gradient_flow(
    loss: Loss,
    params: PyTree,
    times: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 100_000,
) -> PyTree:
    """The exact gradient flow ``θ' = −∇E(θ)``, ``θ(times[0]) = params``, sampled at ``times``.

    Solved with SciPy's adaptive Runge–Kutta methods (``solve_ivp``: Dormand–Prince 8(5,3), ``DOP853``, in
    float64; Dormand–Prince 5(4), ``RK45``, in float32) on a vector field compiled once per loss and parameter
    shape. Default tolerances: ``rtol=1e-10, atol=1e-12`` in float64 (accurate to better than 1e-6
    relative) and ``rtol=1e-6, atol=1e-8`` in float32. Returns the pytree of ``params`` with a leading
    axis of length ``len(times)``. Raises :class:`~igr_tutorial.errors.FlowError` if the solver cannot reach ``times[-1]`` (a
    blow-up, or more than ``max_steps`` steps). Call it outside ``jit``/``vmap``. Chapter 1.
    Not traceable (SciPy steps on the host): a traced argument raises ``TypeError``.
    """
    return _solve_flow(loss, params, times, 0.0, 0, rtol, atol, max_steps)


def modified_flow(
    loss: Loss,
    params: PyTree,
    lr: float,
    times: Any,
    order: int = 1,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 100_000,
) -> PyTree:
    """The flow of GD's modified equation truncated after its ``lr**order`` term (any ``order ≥ 0``), at ``times``.

    ``order=0`` is the plain gradient flow (the same as :func:`gradient_flow`); ``order=1`` is the gradient flow of ``Ẽ = E + (lr/4)‖∇E‖²``; ``order=2`` adds
    ``−lr²·(⅓·H²∇E + (1/12)·∇³E[∇E, ∇E])``; higher orders add the further terms of
    :func:`modified_vector_field` (their compile time grows quickly with the order: meant for small problems
    and orders up to about 4). GD with step ``lr`` stays
    within ``O(lr^(order+1))`` of this flow at times ``t = n·lr`` over a fixed horizon. Same solver and
    tolerances as :func:`gradient_flow`; the field is compiled once per loss, parameter shape and ``order``, and
    ``lr`` is an argument of it, so a sweep over learning rates compiles once. Chapters 2 and 3.
    Not traceable (SciPy steps on the host): a traced argument raises ``TypeError``.
    """
    require_concrete(_HOST_FLOW, lr)
    check_learning_rate(lr)
    order = _check_order(order)
    return _solve_flow(loss, params, times, lr, order, rtol, atol, max_steps)


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

    ``c = 0`` is the gradient flow of ``E``; ``c = h/4`` is GD's modified flow (:func:`modified_flow` with
    ``order=1``, the very same ODE: both run one compiled field, ``c`` passed as data); ``c`` =
    :func:`~igr_tutorial.momentum.momentum_regularization_strength` is heavy ball's. Same adaptive solver and
    tolerances as :func:`gradient_flow`. Not traceable (SciPy steps on the host). Chapters 3 and 9.
    """
    require_concrete(_HOST_FLOW, strength)
    check_nonnegative(strength, "strength", "the coefficient of ‖∇E‖²", traced=False)
    return _solve_flow(loss, params, times, 4 * jnp.asarray(strength), 1, rtol, atol, max_steps)


check_order = deprecated_alias(_check_order, "igr_tutorial.flows.check_order",
                               "a private validator (the functions that take an order check it themselves)")
