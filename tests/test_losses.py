"""The example losses and the pytree utilities against formulas written out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import igr_tutorial as igr
from igr_tutorial.losses import double_well, quadratic, two_parameter_model


@pytest.mark.parametrize(
    "A, b, phrase",
    [
        (np.ones((2, 3)), None, "square"),
        (np.ones(3), None, "square"),
        (np.ones((2, 2, 2)), None, "square"),
        (np.eye(3), np.ones(2), r"b must have shape \(3,\)"),
        (np.eye(3), np.ones((3, 1)), r"b must have shape \(3,\)"),
        (np.eye(2), np.ones(()), r"b must have shape \(2,\)"),
    ],
)
def test_quadratic_rejects_bad_shapes(A, b, phrase):
    with pytest.raises(ValueError, match=phrase):
        quadratic(A, b)


def test_quadratic_value_gradient_hessian():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((3, 3))
    A, b, theta = S + S.T, rng.standard_normal(3), rng.standard_normal(3)
    loss = quadratic(A, b)
    assert float(loss(jnp.asarray(theta))) == pytest.approx(0.5 * theta @ A @ theta - b @ theta, rel=1e-12)
    np.testing.assert_allclose(jax.grad(loss)(jnp.asarray(theta)), A @ theta - b, rtol=1e-12)
    np.testing.assert_allclose(jax.hessian(loss)(jnp.asarray(theta)), A, rtol=1e-12)
    # b defaults to zero.
    assert float(quadratic(A)(jnp.asarray(theta))) == pytest.approx(0.5 * theta @ A @ theta, rel=1e-12)


def test_two_parameter_model_formula():
    loss = two_parameter_model(x=2.0, y=3.0)
    a, b = 0.7, -1.3
    assert float(loss(jnp.array([a, b]))) == pytest.approx(0.5 * (3.0 - a * b * 2.0) ** 2, rel=1e-14)
    # Gradient: r = y − abx, ∂E/∂a = −r·b·x, ∂E/∂b = −r·a·x.
    r = 3.0 - a * b * 2.0
    np.testing.assert_allclose(jax.grad(loss)(jnp.array([a, b])), [-r * b * 2.0, -r * a * 2.0], rtol=1e-14)
    # Defaults x = y = 1: zero loss on the hyperbola ab = 1.
    assert float(two_parameter_model()(jnp.array([2.0, 0.5]))) == 0.0


def test_double_well_formula_and_gradient():
    u, v = 0.8, -0.4
    expected = 0.25 * (u**2 - 1) ** 2 + 0.5 * (v - 0.5 * u**2) ** 2 + 0.1 * u * v
    assert float(double_well(jnp.array([u, v]))) == pytest.approx(expected, rel=1e-14)
    du = u * (u**2 - 1) - u * (v - 0.5 * u**2) + 0.1 * v
    dv = (v - 0.5 * u**2) + 0.1 * u
    np.testing.assert_allclose(jax.grad(double_well)(jnp.array([u, v])), [du, dv], rtol=1e-13)


def test_tree_utilities():
    a = {"x": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "y": jnp.array(-2.0)}
    b = {"x": jnp.array([[0.5, -1.0], [2.0, 0.0]]), "y": jnp.array(3.0)}
    assert float(igr.tree_vdot(a, b)) == pytest.approx(0.5 - 2.0 + 6.0 + 0.0 - 6.0)
    assert float(igr.tree_sq_norm(a)) == pytest.approx(1 + 4 + 9 + 16 + 4)
    assert igr.num_parameters(a) == 5
    assert isinstance(igr.num_parameters(a), int)
    assert igr.num_parameters((jnp.zeros((3, 4)), [jnp.zeros(2)])) == 14
