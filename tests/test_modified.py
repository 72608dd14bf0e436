"""The modified loss, R_IG, λ, and the modified vector field against independent computations."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import igr_tutorial as igr
from igr_tutorial.losses import double_well, quadratic, two_parameter_model

RNG = np.random.default_rng(0)
_S = RNG.standard_normal((4, 4))
A4 = _S @ _S.T / 4 + 0.5 * np.eye(4)
B4 = RNG.standard_normal(4)
LOSS4 = quadratic(A4, B4)


def tree_loss(p):
    """A non-quadratic loss of a dict pytree {"w": (2, 2), "c": (3,)}."""
    w, c = p["w"], p["c"]
    return jnp.sum(jnp.sin(w @ c[:2]) ** 2) + 0.25 * jnp.sum(c**4) + jnp.log1p(jnp.sum(w**2)) + c[2] * jnp.sum(w**3)


def random_tree(seed):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.standard_normal((2, 2))), "c": jnp.asarray(rng.standard_normal(3))}


def central_difference_gradient(f, x, eps=1e-5) -> np.ndarray:
    """∂f/∂xᵢ ≈ (f(x + εeᵢ) − f(x − εeᵢ)) / 2ε for a function of a flat numpy vector."""
    x = np.asarray(x, dtype=float)
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (float(f(x + e)) - float(f(x - e))) / (2 * eps)
    return g


# --------------------------------------------------------------------------------------------------
# modified_loss, r_ig, λ
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0.01, 0.1, 0.7])
def test_modified_loss_on_quadratic_closed_form(lr):
    Et = igr.modified_loss(LOSS4, lr)
    rng = np.random.default_rng(1)
    for _ in range(5):
        theta = rng.standard_normal(4) * 2
        E = 0.5 * theta @ A4 @ theta - B4 @ theta
        expected = E + lr / 4 * np.sum((A4 @ theta - B4) ** 2)
        np.testing.assert_allclose(float(Et(jnp.asarray(theta))), expected, rtol=1e-12)


def test_modified_loss_is_differentiable_and_jittable():
    # ∇Ẽ = g + (h/2)·H g on a quadratic: (I + hA/2)(Aθ − b).
    lr = 0.3
    theta = np.array([0.5, -1.0, 2.0, 0.1])
    Et = igr.modified_loss(LOSS4, lr)
    expected = (np.eye(4) + lr / 2 * A4) @ (A4 @ theta - B4)
    np.testing.assert_allclose(jax.grad(Et)(jnp.asarray(theta)), expected, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(Et)(jnp.asarray(theta)), Et(jnp.asarray(theta)), rtol=1e-14)


@pytest.mark.parametrize("lr", [0.05, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_modified_loss_equals_loss_plus_lambda_r_ig_on_pytree(lr, seed):
    params = random_tree(seed)
    lam = igr.implicit_regularization_strength(lr, params)
    lhs = igr.modified_loss(tree_loss, lr)(params)
    rhs = tree_loss(params) + lam * igr.r_ig(tree_loss, params)
    np.testing.assert_allclose(float(lhs), float(rhs), rtol=1e-12)
    assert lam == pytest.approx(lr * 7 / 4)  # m = 2·2 + 3


@pytest.mark.parametrize(
    "loss, theta",
    [
        (double_well, np.array([0.3, 1.2])),
        (double_well, np.array([-1.4, 0.2])),
        (two_parameter_model(x=1.5, y=2.0), np.array([0.7, -0.4])),
    ],
)
def test_r_ig_matches_finite_difference_gradient(loss, theta):
    g = central_difference_gradient(lambda x: loss(jnp.asarray(x)), theta)
    expected = np.sum(g**2) / theta.size
    assert expected > 1e-3
    np.testing.assert_allclose(float(igr.r_ig(loss, jnp.asarray(theta))), expected, rtol=1e-7)
    np.testing.assert_allclose(float(igr.gradient_norm_squared(loss, jnp.asarray(theta))), np.sum(g**2), rtol=1e-7)


def test_r_ig_on_pytree_matches_finite_difference_gradient():
    params = random_tree(3)
    x0, unravel = ravel_pytree(params)
    g = central_difference_gradient(lambda x: tree_loss(unravel(jnp.asarray(x))), np.asarray(x0))
    np.testing.assert_allclose(float(igr.r_ig(tree_loss, params)), np.sum(g**2) / 7, rtol=1e-7)


def test_r_ig_on_quadratic_closed_form():
    theta = np.array([1.0, -2.0, 0.5, 3.0])
    expected = np.sum((A4 @ theta - B4) ** 2) / 4
    np.testing.assert_allclose(float(igr.r_ig(LOSS4, jnp.asarray(theta))), expected, rtol=1e-12)


@pytest.mark.parametrize("lr, m", [(0.1, 1), (0.1, 10), (0.02, 1000), (1.5, 7)])
def test_implicit_regularization_strength_from_int(lr, m):
    assert igr.implicit_regularization_strength(lr, m) == pytest.approx(lr * m / 4, rel=1e-15)


def test_implicit_regularization_strength_from_pytree():
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3), "s": jnp.array(1.0)}  # m = 6 + 3 + 1
    assert igr.num_parameters(params) == 10
    assert igr.implicit_regularization_strength(0.2, params) == pytest.approx(0.2 * 10 / 4, rel=1e-15)
    assert igr.implicit_regularization_strength(0.2, (jnp.zeros(5), [jnp.zeros((2, 2))])) == pytest.approx(0.2 * 9 / 4)
    assert igr.implicit_regularization_strength(0.2, jnp.zeros(8)) == pytest.approx(0.2 * 8 / 4)


@pytest.mark.parametrize("m", [np.int64(10), np.int32(10)])
def test_implicit_regularization_strength_from_numpy_integer(m):
    # A count computed with numpy (np.prod(shape), np.size(x), arr.shape[0] * k) is a numpy integer, not a
    # Python int. It must be read as m itself, not as a one-leaf pytree (which would give m = 1).
    assert igr.implicit_regularization_strength(0.1, m) == pytest.approx(0.1 * 10 / 4)


# --------------------------------------------------------------------------------------------------
# modified_vector_field
# --------------------------------------------------------------------------------------------------


FIELD_CASES = {
    "double_well-a": (double_well, jnp.array([0.3, 1.2])),
    "double_well-b": (double_well, jnp.array([1.5, -0.5])),
    "two_parameter_model": (two_parameter_model(x=1.0, y=2.0), jnp.array([2.0, 0.3])),
    "dict-pytree": (tree_loss, random_tree(4)),
}


@functools.lru_cache(maxsize=None)
def dense_derivatives(case):
    """Flat gradient, dense Hessian and dense third-derivative tensor of a case (computed once per case)."""
    loss, params = FIELD_CASES[case]
    x, unravel = ravel_pytree(params)
    flat = lambda z: loss(unravel(z))  # noqa: E731
    g, H, T = jax.jit(lambda z: (jax.grad(flat)(z), jax.hessian(flat)(z), jax.jacfwd(jax.hessian(flat))(z)))(x)
    return np.asarray(g), np.asarray(H), np.asarray(T)


def dense_field(case, lr, order):
    """The modified field −(g + (h/2)Hg + h²(H²g/3 + ∇³E[g, g]/12)) truncated at ``order`` (flat)."""
    g, H, T = dense_derivatives(case)
    out = g.copy()
    if order >= 1:
        out = out + lr / 2 * H @ g
    if order == 2:
        out = out + lr**2 * (H @ H @ g / 3 + np.einsum("ijk,j,k->i", T, g, g) / 12)
    return -out


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
@pytest.mark.parametrize("lr", [0.05, 0.4])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_modified_vector_field_matches_dense_computation(case, lr, order):
    loss, params = FIELD_CASES[case]
    out = igr.modified_vector_field(loss, params, lr, order)
    assert jax.tree.structure(out) == jax.tree.structure(params)
    np.testing.assert_allclose(ravel_pytree(out)[0], dense_field(case, lr, order), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
@pytest.mark.parametrize("lr", [0.05, 0.4])
def test_modified_vector_field_order1_is_minus_grad_of_modified_loss(case, lr):
    loss, params = FIELD_CASES[case]
    out = igr.modified_vector_field(loss, params, lr, 1)
    expected = jax.tree.map(jnp.negative, jax.grad(igr.modified_loss(loss, lr))(params))
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_modified_vector_field_orders_differ_by_the_right_powers_of_h():
    # (F₁ − F₀)/h and (F₂ − F₁)/h² do not depend on h: the corrections are exactly linear and quadratic
    # in h.
    theta = jnp.array([0.3, 1.2])
    F = {(o, h): np.asarray(igr.modified_vector_field(double_well, theta, h, o)) for o in (0, 1, 2) for h in (0.1, 0.2)}
    np.testing.assert_allclose((F[1, 0.1] - F[0, 0.1]) / 0.1, (F[1, 0.2] - F[0, 0.2]) / 0.2, rtol=1e-12)
    np.testing.assert_allclose((F[2, 0.1] - F[1, 0.1]) / 0.01, (F[2, 0.2] - F[1, 0.2]) / 0.04, rtol=1e-12)
    assert np.linalg.norm(F[2, 0.1] - F[1, 0.1]) > 1e-4


def test_modified_vector_field_on_quadratic_closed_form():
    lr = 0.3
    theta = np.array([1.0, -2.0, 0.5, 3.0])
    g = A4 @ theta - B4
    M2 = np.eye(4) + lr / 2 * A4 + lr**2 / 3 * A4 @ A4
    np.testing.assert_allclose(igr.modified_vector_field(LOSS4, jnp.asarray(theta), lr, 2), -M2 @ g, rtol=1e-12)


@pytest.mark.parametrize("order", [-1, 1.5, "1", True])
def test_modified_vector_field_rejects_bad_order(order):
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        igr.modified_vector_field(double_well, jnp.array([0.3, 1.2]), 0.1, order)
