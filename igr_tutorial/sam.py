"""Sharpness-aware minimization (SAM; Foret et al. 2021, ICLR, Eq. 2–3) and its first-order form (chapters 7, 9).

SAM evaluates the gradient at ``θ + ρ·∇E/‖∇E‖``; unnormalized, at ``θ + ρ·∇E``, which to first order in ``ρ`` is the
gradient of ``E + (ρ/2)·‖∇E‖²``: explicit gradient regularization with ``μ = ρ/2``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._scan import descent_step, leaf_dtype, raise_if_diverged, scan_steps
from ._types import Loss, PyTree
from ._validate import check_learning_rate, check_radius, check_scalar_loss, check_steps
from .curvature import hvp
from .modified import penalized_gradient
from .tree import tree_sq_norm

__all__ = ["sam_descent", "sam_gradient", "sam_gradient_first_order"]


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
    if not normalize:   # ∇(E + (ρ/2)‖∇E‖²): the one penalized gradient of the package
        return penalized_gradient(loss, params, rho / 2)
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
