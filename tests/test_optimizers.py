"""Chapter 9's optimizers against independent computations: NumPy loops, closed forms of linear recurrences on
quadratics, measured convergence orders, Taylor remainders and reverse-over-reverse autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import igr_tutorial as igr
from igr_tutorial import optimizers as opt
from igr_tutorial.losses import double_well, quadratic

jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(3)
_S = RNG.standard_normal((3, 3))
A3 = _S @ _S.T / 3 + 0.3 * np.eye(3)
B3 = RNG.standard_normal(3)
LOSS3 = quadratic(A3, B3)


def tree_loss(p):
    w, c = p["w"], p["c"]
    return jnp.sum(jnp.sin(w @ c) ** 2) + 0.25 * jnp.sum(c**4) + jnp.log1p(jnp.sum(w**2))


TREE0 = {"w": jnp.asarray(RNG.standard_normal((2, 2))), "c": jnp.asarray(RNG.standard_normal(2))}


def numpy_double_well_grad(t):
    u, v = t
    du = (u**2 - 1) * u + (v - u**2 / 2) * (-u) + 0.1 * v
    dv = (v - u**2 / 2) + 0.1 * u
    return np.array([du, dv])


# --------------------------------------------------------------------------------------------------
# Heavy ball
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("v0", [None, (0.05, -0.1)])
def test_heavy_ball_matches_numpy_loop(beta, v0):
    h, steps = 0.05, 60
    theta0 = np.array([0.3, 1.2])
    traj = opt.heavy_ball(double_well, jnp.asarray(theta0), h, beta, steps,
                          initial_velocity=None if v0 is None else jnp.asarray(v0))
    prev = theta0 - (np.zeros(2) if v0 is None else np.asarray(v0))
    cur = theta0.copy()
    expected = [cur.copy()]
    for _ in range(steps):
        nxt = cur - h * numpy_double_well_grad(cur) + beta * (cur - prev)
        prev, cur = cur, nxt
        expected.append(cur.copy())
    np.testing.assert_allclose(np.asarray(traj), np.array(expected), rtol=1e-12, atol=1e-14)


def test_heavy_ball_with_beta_zero_is_gradient_descent_on_a_pytree():
    a = opt.heavy_ball(tree_loss, TREE0, 0.1, 0.0, 30)
    b = igr.gradient_descent(tree_loss, TREE0, 0.1, 30)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-13, atol=1e-15)


def _recurrence_closed_form(lam, h, beta, theta0, theta_m1, n):
    """θₙ = c₊r₊ⁿ + c₋r₋ⁿ, the roots of r² − (1 + β − hλ)r + β = 0 (scalar quadratic ½λθ²)."""
    r = np.roots([1.0, -(1 + beta - h * lam), beta]).astype(complex)
    # θ₀ = c₊ + c₋, θ₋₁ = c₊/r₊ + c₋/r₋
    M = np.array([[1, 1], [1 / r[0], 1 / r[1]]])
    c = np.linalg.solve(M, np.array([theta0, theta_m1], dtype=complex))
    k = np.arange(n + 1)
    return np.real(c[0] * r[0] ** k + c[1] * r[1] ** k)


@pytest.mark.parametrize("lam,h,beta", [(1.0, 0.1, 0.5), (2.0, 0.3, 0.9), (0.7, 0.05, 0.2), (3.0, 0.5, 0.3)])
def test_heavy_ball_on_quadratic_equals_closed_form_of_the_recurrence(lam, h, beta):
    E = quadratic(np.array([[lam]]))
    for v0 in (0.0, -0.4):
        traj = opt.heavy_ball(E, jnp.array([1.5]), h, beta, 50, initial_velocity=jnp.array([v0]))
        expected = _recurrence_closed_form(lam, h, beta, 1.5, 1.5 - v0, 50)
        np.testing.assert_allclose(np.asarray(traj)[:, 0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", [0.3, 0.6])
def test_principal_root_matches_the_momentum_modified_flow_to_third_order(beta):
    """log r₊ = −η·(λ + 2cλ²) + O(h³) with c = momentum_regularization_strength, η = h/(1−β)."""
    lam = 1.0
    hs = np.array([0.01, 0.005, 0.0025, 0.00125])
    err_mod, err_gf = [], []
    for h in hs:
        r = np.max(np.real(np.roots([1.0, -(1 + beta - h * lam), beta])))
        eta = opt.momentum_effective_lr(h, beta)
        c = opt.momentum_regularization_strength(h, beta)
        err_mod.append(abs(np.log(r) + eta * (lam + 2 * c * lam**2)))
        err_gf.append(abs(np.log(r) + eta * lam))
    assert igr.convergence_order(hs, err_mod) == pytest.approx(3.0, abs=0.1)
    assert igr.convergence_order(hs, err_gf) == pytest.approx(2.0, abs=0.1)


def test_momentum_strength_and_modified_loss_formulas():
    for h, beta in [(0.1, 0.0), (0.02, 0.9), (0.3, 0.5)]:
        c = opt.momentum_regularization_strength(h, beta)
        eta = opt.momentum_effective_lr(h, beta)
        assert eta == pytest.approx(h / (1 - beta))
        assert c == pytest.approx(eta / 4 * (1 + beta) / (1 - beta))
        theta = RNG.standard_normal(3)
        expected = 0.5 * theta @ A3 @ theta - B3 @ theta + c * np.sum((A3 @ theta - B3) ** 2)
        assert float(opt.momentum_modified_loss(LOSS3, h, beta)(jnp.asarray(theta))) == pytest.approx(expected, rel=1e-12)
    theta = jnp.asarray(RNG.standard_normal(3))
    assert float(opt.momentum_modified_loss(LOSS3, 0.2, 0.0)(theta)) == pytest.approx(
        float(igr.modified_loss(LOSS3, 0.2)(theta)), rel=1e-13)


def _orders(start, beta=0.5, T=2.0):
    th0 = jnp.array([0.3, 1.2])
    times = jnp.array([0.0, T])
    gf = igr.gradient_flow(double_well, th0, times)[-1]
    hs = T * (1 - beta) / np.array([50, 100, 200, 400])
    e_gf, e_mod = [], []
    for h in hs:
        n = int(round(T / opt.momentum_effective_lr(h, beta)))
        v0 = opt.flow_matched_velocity(double_well, th0, h, beta) if start == "matched" else None
        last = opt.heavy_ball(double_well, th0, h, beta, n, initial_velocity=v0)[-1]
        mf = igr.gradient_flow(opt.momentum_modified_loss(double_well, h, beta), th0, times)[-1]
        e_gf.append(float(jnp.linalg.norm(last - gf)))
        e_mod.append(float(jnp.linalg.norm(last - mf)))
    return igr.convergence_order(hs, e_gf), igr.convergence_order(hs, e_mod)


def test_measured_orders_on_a_non_quadratic_loss():
    p_gf, p_mod = _orders("matched")
    assert p_gf == pytest.approx(1.0, abs=0.15)
    assert p_mod == pytest.approx(2.0, abs=0.15)
    # from rest (θ₋₁ = θ₀) the start-up transient shifts the trajectory by O(h): first order against both
    p_gf0, p_mod0 = _orders("zero")
    assert p_gf0 == pytest.approx(1.0, abs=0.15)
    assert p_mod0 < 1.2


def test_flow_matched_velocity_is_minus_eta_times_gradient():
    v = opt.flow_matched_velocity(tree_loss, TREE0, 0.1, 0.75)
    g = jax.grad(tree_loss)(TREE0)
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(g)):
        np.testing.assert_allclose(np.asarray(a), -0.4 * np.asarray(b), rtol=1e-13)


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5, float("nan"), np.array([0.1, 0.2])])
def test_heavy_ball_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        opt.heavy_ball(double_well, jnp.array([0.3, 1.2]), 0.1, beta, 5)


@pytest.mark.parametrize("lr", [0.0, -0.1, float("inf"), float("nan")])
def test_heavy_ball_rejects_bad_lr(lr):
    with pytest.raises(ValueError, match="lr"):
        opt.heavy_ball(double_well, jnp.array([0.3, 1.2]), lr, 0.5, 5)


def test_heavy_ball_divergence_and_bad_velocity():
    E = quadratic(np.eye(2) * 10.0)
    with pytest.raises(igr.DivergenceError, match="heavy-ball"):
        opt.heavy_ball(E, jnp.array([1.0, 1.0]), 1.0, 0.9, 2000)
    traj = opt.heavy_ball(E, jnp.array([1.0, 1.0]), 1.0, 0.9, 2000, allow_divergence=True)
    assert igr.first_nonfinite_step(traj) is not None
    with pytest.raises(ValueError, match="initial_velocity"):
        opt.heavy_ball(E, jnp.array([1.0, 1.0]), 0.1, 0.5, 3, initial_velocity=jnp.zeros(3))


# --------------------------------------------------------------------------------------------------
# optax
# --------------------------------------------------------------------------------------------------


def test_optax_sgd_is_gradient_descent():
    a = opt.optax_descent(optax.sgd(0.1), tree_loss, TREE0, 25)
    b = igr.gradient_descent(tree_loss, TREE0, 0.1, 25)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-13, atol=1e-15)


def test_optax_adam_matches_a_numpy_adam_loop():
    h, b1, b2, eps, steps = 0.01, 0.9, 0.99, 1e-8, 40
    traj = opt.optax_descent(optax.adam(h, b1, b2, eps), double_well, jnp.array([0.3, 1.2]), steps)
    th, m, v = np.array([0.3, 1.2]), np.zeros(2), np.zeros(2)
    out = [th.copy()]
    for n in range(1, steps + 1):
        g = numpy_double_well_grad(th)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        th = th - h * (m / (1 - b1**n)) / (np.sqrt(v / (1 - b2**n)) + eps)
        out.append(th.copy())
    np.testing.assert_allclose(np.asarray(traj), np.array(out), rtol=1e-10, atol=1e-12)


def test_optax_descent_rejects_non_optimizers_and_reports_divergence():
    with pytest.raises(ValueError, match="optax"):
        opt.optax_descent(lambda g: g, double_well, jnp.array([0.3, 1.2]), 3)
    E = quadratic(np.eye(2) * 10.0)
    with pytest.raises(igr.DivergenceError):
        opt.optax_descent(optax.sgd(1.0), E, jnp.array([1.0, 1.0]), 2000)


# --------------------------------------------------------------------------------------------------
# GD on a quadratic: the exact modified equation and its series
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [0.1, 0.5, 0.9])
def test_exact_rate_reproduces_gd_iterates(z):
    lam, h = 2.0, z / 2.0
    rate = opt.gd_quadratic_exact_rate(h, lam)
    n = np.arange(30)
    np.testing.assert_allclose(np.exp(-rate * n * h), (1 - h * lam) ** n, rtol=1e-12)


def test_series_matches_the_package_modified_vector_field_at_orders_0_1_2():
    lam, h, theta = 1.7, 0.2, jnp.array([0.8])
    E = quadratic(np.array([[lam]]))
    for order in (0, 1, 2):
        field = float(igr.modified_vector_field(E, theta, h, order)[0])
        assert -field / 0.8 == pytest.approx(float(opt.gd_quadratic_modified_rate(h, lam, order)), rel=1e-12)


def test_series_converges_inside_the_radius_and_diverges_outside():
    lam = 1.0
    for z in (0.5, 0.9):
        exact = opt.gd_quadratic_exact_rate(z, lam)
        errs = [abs(float(opt.gd_quadratic_modified_rate(z, lam, k)) - exact) for k in (5, 10, 20, 40)]
        assert all(b < a for a, b in zip(errs, errs[1:])) and errs[-1] < 0.05 * errs[0]
    partial = [float(opt.gd_quadratic_modified_rate(1.5, lam, k)) for k in (5, 10, 20, 40)]
    assert all(b > 2 * a for a, b in zip(partial, partial[1:]))
    with pytest.raises(ValueError, match="no real flow"):
        opt.gd_quadratic_exact_rate(1.5, lam)
    with pytest.raises(ValueError, match="order"):
        opt.gd_quadratic_modified_rate(0.1, lam, -1)
    np.testing.assert_allclose(opt.gd_quadratic_modified_rate(0.1, np.array([1.0, 2.0]), 1), [1.05, 2.2], rtol=1e-13)


# --------------------------------------------------------------------------------------------------
# SAM
# --------------------------------------------------------------------------------------------------


def test_sam_gradient_on_a_quadratic_is_exact():
    theta = RNG.standard_normal(3)
    g = A3 @ theta - B3
    for rho in (0.0, 0.05, 0.7):
        np.testing.assert_allclose(np.asarray(opt.sam_gradient(LOSS3, jnp.asarray(theta), rho)),
                                   A3 @ (theta + rho * g / np.linalg.norm(g)) - B3, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(opt.sam_gradient(LOSS3, jnp.asarray(theta), rho, normalize=False)),
                                   A3 @ (theta + rho * g) - B3, rtol=1e-12)
        # on a quadratic the first-order expansion is exact
        np.testing.assert_allclose(np.asarray(opt.sam_gradient_first_order(LOSS3, jnp.asarray(theta), rho)),
                                   A3 @ (theta + rho * g / np.linalg.norm(g)) - B3, rtol=1e-12)


def _flat(t):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(t)])


@pytest.mark.parametrize("normalize", [True, False])
def test_sam_first_order_remainder_is_second_order(normalize):
    rhos = np.geomspace(1e-4, 1e-2, 5)
    errs = [np.linalg.norm(_flat(opt.sam_gradient(tree_loss, TREE0, r, normalize))
                           - _flat(opt.sam_gradient_first_order(tree_loss, TREE0, r, normalize))) for r in rhos]
    assert igr.convergence_order(rhos, errs) == pytest.approx(2.0, abs=0.1)


def test_unnormalized_first_order_sam_is_the_egr_gradient_with_mu_half_rho():
    rho = 0.3
    mu = rho / 2
    g = jax.grad(tree_loss)(TREE0)
    hg = igr.hvp(tree_loss, TREE0, g)
    egr_hvp = jax.tree.map(lambda a, b: a + 2 * mu * b, g, hg)  # the EGR step direction of train(method="egr")
    egr_autodiff = jax.grad(lambda p: tree_loss(p) + mu * igr.tree_sq_norm(jax.grad(tree_loss)(p)))(TREE0)
    sam1 = opt.sam_gradient_first_order(tree_loss, TREE0, rho, normalize=False)
    np.testing.assert_allclose(_flat(sam1), _flat(egr_hvp), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(_flat(sam1), _flat(egr_autodiff), rtol=1e-11, atol=1e-13)
    # normalized: the gradient of E + ρ‖∇E‖
    norm_pen = jax.grad(lambda p: tree_loss(p) + rho * jnp.sqrt(igr.tree_sq_norm(jax.grad(tree_loss)(p))))(TREE0)
    np.testing.assert_allclose(_flat(opt.sam_gradient_first_order(tree_loss, TREE0, rho)), _flat(norm_pen),
                               rtol=1e-11, atol=1e-13)


def test_sam_descent_matches_numpy_loop_and_reduces_to_gd():
    h, rho, steps = 0.1, 0.05, 20
    traj = opt.sam_descent(double_well, jnp.array([0.3, 1.2]), h, rho, steps)
    th = np.array([0.3, 1.2])
    out = [th.copy()]
    for _ in range(steps):
        g = numpy_double_well_grad(th)
        th = th - h * numpy_double_well_grad(th + rho * g / np.linalg.norm(g))
        out.append(th.copy())
    np.testing.assert_allclose(np.asarray(traj), np.array(out), rtol=1e-12, atol=1e-14)
    a = opt.sam_descent(tree_loss, TREE0, 0.1, 0.0, 10)
    b = igr.gradient_descent(tree_loss, TREE0, 0.1, 10)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-13)


def test_sam_at_a_stationary_point_and_bad_radius():
    E = quadratic(A3)  # minimum at 0, where the gradient is exactly zero
    minimizer = jnp.zeros(3)
    g = opt.sam_gradient(E, minimizer, 0.1)
    assert np.all(np.asarray(g) == 0.0)
    for rho in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rho"):
            opt.sam_gradient(E, minimizer, rho)
