"""Hessian-vector products and third-derivative contractions against dense derivatives.

The dense references use ``jax.hessian`` and ``jax.jacfwd(jax.hessian(·))`` on the flattened loss (a
different differentiation path from the package's forward-over-reverse products), and closed forms where
the derivatives are known by hand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import igr_tutorial as igr
from igr_tutorial.losses import double_well, quadratic, two_parameter_model


def smooth_loss(theta):
    """A non-quadratic loss of a vector with non-zero, non-diagonal third derivatives."""
    return (
        jnp.sum(jnp.sin(theta) * theta[::-1])
        + 0.25 * jnp.sum(theta**4)
        + jnp.log1p(jnp.sum(theta**2))
        + jnp.prod(theta[:3])
    )


def tree_loss(p):
    """A non-quadratic loss of a dict pytree {"w": (2, 2), "c": (3,)}, coupling the leaves."""
    w, c = p["w"], p["c"]
    return jnp.sum(jnp.sin(w @ c[:2]) ** 2) + 0.25 * jnp.sum(c**4) + jnp.log1p(jnp.sum(w**2)) + c[2] * jnp.sum(w**3)


def tuple_loss(p):
    v, s = p
    return jnp.exp(0.3 * s) * jnp.sum(v**3) + jnp.cos(s * v[0])


def _random_tree(seed):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.standard_normal((2, 2))), "c": jnp.asarray(rng.standard_normal(3))}


def _random_tuple(seed):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal(3)), jnp.asarray(rng.standard_normal()))


def dense_derivatives(loss, params, third=True):
    """(dense Hessian, dense third-derivative tensor or None, unravel) of the flattened ``loss`` at ``params``."""
    x, unravel = ravel_pytree(params)
    flat = lambda z: loss(unravel(z))  # noqa: E731
    if third:
        H, T = jax.jit(lambda z: (jax.hessian(flat)(z), jax.jacfwd(jax.hessian(flat))(z)))(x)
        return np.asarray(H), np.asarray(T), unravel
    return np.asarray(jax.jit(jax.hessian(flat))(x)), None, unravel


VECTOR_CASES = [
    (smooth_loss, 5, 0),
    (smooth_loss, 5, 1),
    (double_well, 2, 2),
    (two_parameter_model(x=1.5, y=-0.5), 2, 3),
]


@pytest.mark.parametrize("loss, n, seed", VECTOR_CASES)
def test_hvp_matches_dense_hessian_on_arrays(loss, n, seed):
    rng = np.random.default_rng(seed)
    theta = jnp.asarray(rng.standard_normal(n))
    v = jnp.asarray(rng.standard_normal(n))
    H, _, _ = dense_derivatives(loss, theta, third=False)
    np.testing.assert_allclose(igr.hvp(loss, theta, v), H @ np.asarray(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss, make", [(tree_loss, _random_tree), (tuple_loss, _random_tuple)])
@pytest.mark.parametrize("seed", [0, 1])
def test_hvp_matches_dense_hessian_on_pytrees(loss, make, seed):
    params, v = make(seed), make(seed + 100)
    H, _, unravel = dense_derivatives(loss, params, third=False)
    out = igr.hvp(loss, params, v)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, params)
    expected = unravel(jnp.asarray(H @ np.asarray(ravel_pytree(v)[0])))
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_hvp_on_quadratic_is_A_v():
    rng = np.random.default_rng(5)
    S = rng.standard_normal((4, 4))
    A = S + S.T
    loss = quadratic(A, rng.standard_normal(4))
    theta, v = rng.standard_normal(4), rng.standard_normal(4)
    np.testing.assert_allclose(igr.hvp(loss, jnp.asarray(theta), jnp.asarray(v)), A @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss, n, seed", VECTOR_CASES)
def test_third_derivative_contraction_matches_dense_tensor_on_arrays(loss, n, seed):
    rng = np.random.default_rng(seed)
    theta = jnp.asarray(rng.standard_normal(n))
    v = rng.standard_normal(n)
    _, T, _ = dense_derivatives(loss, theta)
    expected = np.einsum("ijk,j,k->i", T, v, v)
    assert np.linalg.norm(expected) > 1e-3  # a non-trivial check
    got = igr.third_derivative_contraction(loss, theta, jnp.asarray(v))
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("loss, make", [(tree_loss, _random_tree), (tuple_loss, _random_tuple)])
def test_third_derivative_contraction_matches_dense_tensor_on_pytrees(loss, make):
    params, v = make(7), make(8)
    _, T, unravel = dense_derivatives(loss, params)
    vf = np.asarray(ravel_pytree(v)[0])
    expected = unravel(jnp.asarray(np.einsum("ijk,j,k->i", T, vf, vf)))
    out = igr.third_derivative_contraction(loss, params, v)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_third_derivative_contraction_closed_forms():
    # E = Σ cᵢθᵢ³/6 ⇒ ∂³E/∂θᵢ³ = cᵢ (diagonal tensor) ⇒ ∇³E[v, v]ᵢ = cᵢvᵢ².
    c = np.array([1.0, -2.0, 0.5])
    rng = np.random.default_rng(9)
    theta, v = rng.standard_normal(3), rng.standard_normal(3)
    cubic = lambda t: jnp.sum(jnp.asarray(c) * t**3) / 6  # noqa: E731
    theta, v = jnp.asarray(theta), jnp.asarray(v)
    np.testing.assert_allclose(igr.third_derivative_contraction(cubic, theta, v), c * np.asarray(v) ** 2, rtol=1e-12)
    # E = (aᵀθ)⁴/24 ⇒ ∇³E = (aᵀθ)·a⊗a⊗a ⇒ ∇³E[v, v] = (aᵀθ)(aᵀv)²·a.
    a = rng.standard_normal(3)
    quartic = lambda t: (jnp.asarray(a) @ t) ** 4 / 24  # noqa: E731
    expected = (a @ np.asarray(theta)) * (a @ np.asarray(v)) ** 2 * a
    np.testing.assert_allclose(igr.third_derivative_contraction(quartic, theta, v), expected, rtol=1e-12)
    # A quadratic has no third derivative.
    quad = quadratic(np.diag([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(igr.third_derivative_contraction(quad, theta, v), 0.0, atol=1e-14)
