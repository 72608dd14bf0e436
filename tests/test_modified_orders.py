"""GD's modified equation to any order (``igr.flows.modified_vector_field``) against independent computations.

* On a quadratic ``E = ½θᵀAθ`` GD is exactly the time-h flow of the linear field ``(1/h)·log(I − hA)θ``
  (``θₙ = (I − hA)ⁿθ₀ = exp(n·log(I − hA))θ₀``). Per eigenvalue ``λᵢ`` of ``A`` the order-k truncation must be
  the degree-k Taylor polynomial in ``h`` of ``log(1 − hλᵢ)/h``, and the global error of its flow against
  the GD iterates at a fixed time must fall like ``h^(k+1)``.
* On non-quadratic losses the package (Newton's formula ``h·f̃ = log(1 + Δ)θ₀`` through Taylor-mode AD) must
  agree with Hairer, Lubich & Wanner's order-by-order recursion (Sec. IX.1) written with dense Jacobians.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import igr_tutorial as igr
from igr_tutorial._validate import check_order
from igr_tutorial.flows import modified_field_coefficients, modified_vector_field
from igr_tutorial.losses import double_well, quadratic

# A 2 × 2 quadratic with eigenvalues 0.5 and 1.5 in a rotated basis (module level: compilation caches reuse it).
_C, _S = np.cos(0.4), np.sin(0.4)
_Q = np.array([[_C, -_S], [_S, _C]])
EIGS = np.array([0.5, 1.5])
A = _Q @ np.diag(EIGS) @ _Q.T
E_Q = quadratic(A)


def log_series_matrix(h: float, k: int) -> np.ndarray:
    """``−Σ_{i=0}^{k} hⁱ·λ^(i+1)/(i+1)`` per eigenvalue, i.e. the degree-k Taylor polynomial of log(1 − hλ)/h."""
    d = np.array([-sum(h**i * lam ** (i + 1) / (i + 1) for i in range(k + 1)) for lam in EIGS])
    return _Q @ np.diag(d) @ _Q.T


def field_matrix(h: float, k: int) -> np.ndarray:
    """The order-k modified field of the quadratic as a matrix: its columns are the field at the basis vectors."""
    return np.stack([np.asarray(modified_vector_field(E_Q, jnp.asarray(e), h, k)) for e in np.eye(2)], axis=1)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 5])
def test_quadratic_field_is_the_truncated_log_series(k):
    for h in (0.1, 0.4):
        np.testing.assert_allclose(field_matrix(h, k), log_series_matrix(h, k), rtol=1e-13, atol=1e-14)


def test_quadratic_coefficients_match_the_log_series_term_by_term():
    theta = jnp.array([0.7, -1.2])
    coeffs = modified_field_coefficients(E_Q, theta, 6)
    for i, c in enumerate(coeffs):
        expected = -np.linalg.matrix_power(A, i + 1) @ np.asarray(theta) / (i + 1)
        np.testing.assert_allclose(np.asarray(c), expected, rtol=1e-12, atol=1e-14)


def test_quadratic_global_error_has_order_k_plus_one():
    """max over the checkpoints t = T/4, …, T of ‖exp(t·M_k)θ₀ − θₙ‖ has log–log slope k + 1 in h."""
    T, theta0 = 1.0, np.array([1.0, -0.5])
    hs = T / np.array([8, 16, 32, 64])
    for k in range(1, 5):
        errs = []
        for h in hs:
            M = field_matrix(h, k)                                    # θ' = Mθ, M from the package
            n_steps = round(T / h)
            G = np.eye(2) - h * A
            err = 0.0
            for n in range(n_steps // 4, n_steps + 1, n_steps // 4):
                gd = np.linalg.matrix_power(G, n) @ theta0
                err = max(err, np.linalg.norm(scipy.linalg.expm(n * h * M) @ theta0 - gd))
            errs.append(err)
        slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
        assert abs(slope - (k + 1)) < 0.15, (k, slope, errs)


# --------------------------------------------------------------------------------------------------
# Non-quadratic losses: HLW's recursion with dense derivatives
# --------------------------------------------------------------------------------------------------


def hlw_coefficients(loss, theta, k):
    """fᵢ, i = 0..k, from HLW (IX.1): Σ_{j=1}^{n} (1/j!) Σ_{k₁+…+kⱼ=n} D_{k₁}⋯D_{k_{j−1}} F_{kⱼ} = 0 for n ≥ 2.

    ``F₁ = f = −∇E`` and ``F_{i+1} = fᵢ`` (HLW's indexing); ``(D_a u)(y) = u′(y)·F_a(y)`` with the dense Jacobian
    ``jax.jacfwd(u)``.
    """
    F = {1: lambda y: -jax.grad(loss)(y)}

    def lie(u, a):
        return lambda y: jax.jacfwd(u)(y) @ F[a](y)

    def compositions(n, parts):
        if parts == 1:
            yield (n,)
            return
        for first in range(1, n - parts + 2):
            for rest in compositions(n - first, parts - 1):
                yield (first,) + rest

    for n in range(2, k + 2):
        terms = []
        for j in range(2, n + 1):
            for comp in compositions(n, j):
                u = F[comp[-1]]
                for a in reversed(comp[:-1]):
                    u = lie(u, a)
                terms.append((1.0 / math.factorial(j), u))
        F[n] = (lambda terms: lambda y: -sum(c * u(y) for c, u in terms))(terms)
    return [jax.jit(F[i + 1])(theta) for i in range(k + 1)]


def three_param_loss(p):
    return jnp.log(jnp.cosh(p[0] - p[1])) + 0.5 * (p[1] * p[2] - 1.0) ** 2 + 0.1 * p[2] ** 4


@pytest.mark.parametrize("loss, theta, k", [(double_well, jnp.array([0.4, -0.7]), 3),
                                            (three_param_loss, jnp.array([0.3, -0.5, 0.8]), 3)])
def test_general_orders_match_dense_hlw_recursion(loss, theta, k):
    # (the dense recursion's cost grows fast with k: order 3 takes seconds, order 4 on two parameters over a
    # minute; orders up to 4 are checked on quadratics above, by their closed form and measured global orders)
    ours = jax.jit(lambda p: jnp.stack(modified_field_coefficients(loss, p, k)))(theta)
    dense = hlw_coefficients(loss, theta, k)
    for i in range(k + 1):
        np.testing.assert_allclose(np.asarray(ours[i]), np.asarray(dense[i]), rtol=1e-10, atol=1e-12)
    # and the truncated fields: order k is Σ_{i≤k} hⁱfᵢ, identical to today's formulas for k ≤ 2
    h = 0.2
    for order in range(k + 1):
        expected = sum(h**i * dense[i] for i in range(order + 1))
        got = modified_vector_field(loss, theta, h, order)
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-10, atol=1e-12)


def test_low_orders_agree_with_the_hvp_formulas_on_a_pytree():
    params = {"a": jnp.array([0.3, -0.5]), "b": jnp.array(0.8)}

    def loss(p):
        return three_param_loss(jnp.concatenate([p["a"], p["b"][None]]))

    coeffs = modified_field_coefficients(loss, params, 2)
    assert jax.tree.structure(coeffs[0]) == jax.tree.structure(params)
    h = 0.3
    for order in (0, 1, 2):
        got = jax.tree.map(lambda *c: sum(h**i * ci for i, ci in enumerate(c[: order + 1])), *coeffs)
        ref = modified_vector_field(loss, params, h, order)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [-1, 1.0, 2.5, "2", None, True, np.float64(1.0)])
def test_bad_order_raises(bad):
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        modified_vector_field(E_Q, jnp.array([1.0, 0.0]), 0.1, bad)
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        igr.modified_flow(E_Q, jnp.array([1.0, 0.0]), 0.1, np.linspace(0.0, 1.0, 3), order=bad)


def test_numpy_integer_order_is_accepted():
    assert check_order(np.int64(3)) == 3
    a = modified_vector_field(E_Q, jnp.array([1.0, 0.0]), 0.1, np.int64(3))
    np.testing.assert_allclose(np.asarray(a), log_series_matrix(0.1, 3)[:, 0], rtol=1e-13)


def test_modified_flow_accepts_order_three():
    """The order-3 flow of the quadratic is exp(t·M₃)θ₀ with M₃ the truncated log series."""
    h, times, theta0 = 0.2, np.linspace(0.0, 1.0, 5), np.array([1.0, -0.5])
    traj = np.asarray(igr.modified_flow(E_Q, jnp.asarray(theta0), h, times, order=3))
    M = log_series_matrix(h, 3)
    expected = np.stack([scipy.linalg.expm(t * M) @ theta0 for t in times])
    np.testing.assert_allclose(traj, expected, rtol=1e-7, atol=1e-8)   # solver tolerance


def test_the_old_public_validators_still_work_and_say_they_are_private():
    from igr_tutorial import flows, optimizers

    with pytest.warns(DeprecationWarning, match="flows.check_order is a private validator"):
        assert flows.check_order(2) == 2
    with pytest.warns(DeprecationWarning, match="check_momentum"):
        optimizers.check_momentum(0.5)
    with pytest.warns(DeprecationWarning, match="check_radius"):
        optimizers.check_radius(0.05)
