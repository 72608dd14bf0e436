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


def test_penalized_gradient_flow_is_the_gradient_flow_and_the_modified_flows():
    th0, times = jnp.array([0.3, 1.2]), jnp.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(np.asarray(opt.penalized_gradient_flow(double_well, th0, 0.0, times)),
                               np.asarray(igr.gradient_flow(double_well, th0, times)), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.asarray(opt.penalized_gradient_flow(double_well, th0, 0.05 / 4, times)),
                               np.asarray(igr.modified_flow(double_well, th0, 0.05, times)), rtol=1e-9, atol=1e-11)
    c = opt.momentum_regularization_strength(0.02, 0.5)
    np.testing.assert_allclose(
        np.asarray(opt.penalized_gradient_flow(double_well, th0, c, times)),
        np.asarray(igr.gradient_flow(opt.momentum_modified_loss(double_well, 0.02, 0.5), th0, times)), rtol=1e-8, atol=1e-10)
    for bad in (-0.1, float("nan"), np.array([0.1, 0.2])):
        with pytest.raises(ValueError, match="strength"):
            opt.penalized_gradient_flow(double_well, th0, bad, times)


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
    with pytest.raises(igr.DivergenceError) as err:
        opt.optax_descent(optax.sgd(1.0), E, jnp.array([1.0, 1.0]), 2000)
    assert "GradientTransformation" not in str(err.value) and "optax optimizer diverged" in str(err.value)


def test_optax_descent_compiles_once_per_optimizer_loss_and_shape():
    from igr_tutorial.adam import _optax_scan

    adam = optax.adam(1e-2)
    before = _optax_scan._cache_size()
    for start in ([0.3, 1.2], [0.5, -0.7], [1.0, 0.1]):
        opt.optax_descent(adam, double_well, jnp.array(start), 5)
    assert _optax_scan._cache_size() - before == 1


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


# --------------------------------------------------------------------------------------------------
# Heavy ball's stability limit
# --------------------------------------------------------------------------------------------------


def test_spectral_radius_is_the_largest_root_and_crosses_one_at_the_limit():
    for h, beta, lam in [(0.3, 0.5, 2.0), (1.0, 0.9, 3.9), (0.1, 0.0, 5.0), (2.0, 0.2, 0.1)]:
        roots = np.roots([1.0, -(1 + beta - h * lam), beta])
        assert float(opt.heavy_ball_spectral_radius(h, beta, lam)) == pytest.approx(np.max(np.abs(roots)), rel=1e-12)
    grid = np.linspace(1e-3, 5.0, 5000)
    for beta in (0.0, 0.3, 0.9):
        stable = opt.heavy_ball_spectral_radius(grid, beta, 1.0) < 1
        limit = opt.heavy_ball_stability_limit(1.0, beta)
        assert limit == pytest.approx(2 * (1 + beta))
        away = np.abs(grid - limit) > 1e-9          # at the limit itself the radius is 1 up to rounding
        np.testing.assert_array_equal(stable[away], (grid < limit)[away])
    assert opt.heavy_ball_stability_limit(0.5, 0.5) == pytest.approx(6.0)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_heavy_ball_on_a_quadratic_decays_below_the_limit_and_grows_above(beta):
    E = quadratic(np.array([[1.0]]))
    limit = opt.heavy_ball_stability_limit(1.0, beta)
    below = opt.heavy_ball(E, jnp.array([1.0]), 0.99 * limit, beta, 2000)
    above = opt.heavy_ball(E, jnp.array([1.0]), 1.01 * limit, beta, 2000, allow_divergence=True)
    assert abs(float(below[-1, 0])) < 1e-3 and abs(float(above[-1, 0])) > 1e3


# --------------------------------------------------------------------------------------------------
# Adam's memory correction and adam_sweep
# --------------------------------------------------------------------------------------------------


def test_adam_coefficient_one_norm_and_modified_loss():
    assert opt.adam_memory_coefficient(0.9, 0.999) == pytest.approx(9 - 999)
    assert opt.adam_memory_coefficient(0.0, 0.9) == pytest.approx(-9)
    assert opt.adam_memory_coefficient(0.7, 0.7) == 0
    assert opt.adam_memory_coefficient(0.99, 0.9) > 0
    g = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([[0.0]])}
    eps = 1e-2
    assert float(opt.perturbed_one_norm(g, eps)) == pytest.approx(np.sqrt(9 + eps) + np.sqrt(16 + eps) + np.sqrt(eps))
    theta = jnp.asarray(RNG.standard_normal(3))
    h, b1, b2 = 0.01, 0.5, 0.9
    grad = A3 @ np.asarray(theta) - B3
    expected = float(LOSS3(theta)) + h * (1 - 9) * np.sum(np.sqrt(grad**2 + eps))
    assert float(opt.adam_modified_loss(LOSS3, h, b1, b2, eps)(theta)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="beta"):
        opt.adam_memory_coefficient(0.9, 1.0)


def test_adam_update_first_order_is_the_gradient_of_the_modified_loss_in_the_sign_regime():
    """Where √ε ≪ |∂ᵢE|: P + hM ≈ (∇E + h·c·∇‖∇E‖₁,ε)/s, the preconditioned gradient of adam_modified_loss."""
    theta, h, eps = jnp.array([2.0, 3.0]), 1e-3, 1e-12
    for b1, b2 in [(0.5, 0.9), (0.9, 0.5), (0.0, 0.99)]:
        g = np.asarray(jax.grad(double_well)(theta))
        s = np.sqrt(g**2 + eps)
        expected = np.asarray(jax.grad(opt.adam_modified_loss(double_well, h, b1, b2, eps))(theta)) / s
        got = np.asarray(opt.adam_update_first_order(double_well, theta, h, b1, b2, eps))
        np.testing.assert_allclose(got, expected, rtol=1e-9)


@pytest.mark.parametrize("b1,b2", [(0.5, 0.9), (0.9, 0.5), (0.0, 0.9)])
def test_adams_step_is_second_order_close_to_p_plus_hm(b1, b2):
    """After the transient, (θₙ − θₙ₊₁)/h − (P + hM) = O(h²), while (θₙ − θₙ₊₁)/h − P = O(h)."""
    eps, T = 1e-8, 0.4
    start = jnp.array([2.0, 3.0])
    hs = np.array([1e-3, 5e-4, 2.5e-4, 1.25e-4])
    ns = np.round(T / hs).astype(int)
    ends = np.asarray(opt.adam_sweep(double_well, jnp.tile(start, (2 * len(hs), 1)), np.repeat(hs, 2),
                                     np.column_stack([ns, ns + 1]).ravel(), b1=b1, b2=b2, eps=0.0, eps_root=eps))
    err_p, err_pm = [], []
    for h, (now, nxt) in zip(hs, ends.reshape(len(hs), 2, 2)):
        step = (now - nxt) / h
        g = np.asarray(jax.grad(double_well)(jnp.asarray(now)))
        err_p.append(np.linalg.norm(step - g / np.sqrt(g**2 + eps)))
        err_pm.append(np.linalg.norm(step - np.asarray(opt.adam_update_first_order(double_well, jnp.asarray(now), h, b1, b2, eps))))
    assert igr.convergence_order(hs, err_p) == pytest.approx(1.0, abs=0.2)
    assert igr.convergence_order(hs, err_pm) > 1.7
    assert err_pm[-1] < 0.05 * err_p[-1]


def test_adam_sweep_matches_optax_descent_run_by_run():
    starts = jnp.array([[0.3, 1.2], [1.0, -0.5], [-0.7, 0.4]])
    lrs, steps = [0.01, 0.02, 0.005], [30, 7, 0]
    b1s, b2s = [0.9, 0.0, 0.5], [0.999, 0.9, 0.5]
    for eps, eps_root in [(0.0, 1e-8), (1e-8, 0.0)]:
        ends = opt.adam_sweep(double_well, starts, lrs, steps, b1=b1s, b2=b2s, eps=eps, eps_root=eps_root)
        for i in range(3):
            ref = opt.optax_descent(optax.adam(lrs[i], b1=b1s[i], b2=b2s[i], eps=eps, eps_root=eps_root),
                                    double_well, starts[i], steps[i])[-1]
            np.testing.assert_allclose(np.asarray(ends[i]), np.asarray(ref), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="stacked"):
        opt.adam_sweep(double_well, jnp.float64(1.0), 0.1, 3)
    with pytest.raises(ValueError, match="one per run"):
        opt.adam_sweep(double_well, starts, [0.1, 0.2], 3)
    with pytest.raises(ValueError, match="eps_root"):
        opt.adam_sweep(double_well, starts, 0.1, 3, eps_root=-1.0)


# --------------------------------------------------------------------------------------------------
# sharpness_trace
# --------------------------------------------------------------------------------------------------


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_sharpness_trace_iterates_match_heavy_ball_and_gd(mode):
    starts = [TREE0, jax.tree.map(lambda x: 0.5 * x, TREE0)]
    lrs, betas, steps = [0.05, 0.02], [0.0, 0.7], 40
    tr = opt.sharpness_trace(tree_loss, _stack(starts), lrs, steps, betas=betas, record_every=10, power_iters=3,
                             mode=mode)
    assert tr.sharpness.shape == (2, 5) and tr.loss.shape == (2, steps + 1)
    np.testing.assert_array_equal(tr.step, [0, 10, 20, 30, 40])
    for i in range(2):
        ref = opt.heavy_ball(tree_loss, starts[i], lrs[i], betas[i], steps)
        for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[i], tr.final)), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[-1]), rtol=1e-11, atol=1e-13)
        expected_loss = [float(tree_loss(jax.tree.map(lambda x: x[n], ref))) for n in range(steps + 1)]
        np.testing.assert_allclose(tr.loss[i], expected_loss, rtol=1e-11)


def test_sharpness_trace_rk4_has_the_local_error_of_a_fourth_order_method():
    """n RK4 steps of size h (one compiled program for all h) end O(n·h⁵) from the gradient flow at t = n·h."""
    th0, n = jnp.array([0.3, 1.2]), 20
    hs = np.array([0.05, 0.025, 0.0125])
    flows = np.asarray(igr.gradient_flow(double_well, th0, jnp.asarray(np.concatenate([[0.0], n * hs[::-1]]))))[1:][::-1]
    tr = opt.sharpness_trace(double_well, jnp.tile(th0, (3, 1)), hs, n, method="rk4", record_every=n, power_iters=2)
    errs = np.linalg.norm(np.asarray(tr.final) - flows, axis=1)
    assert 4.5 < igr.convergence_order(hs, errs) < 5.3


def test_sharpness_is_the_top_eigenvalue_on_quadratics_with_negative_eigenvalues():
    # constant Hessians; the most negative eigenvalue is 0.95 times the top one in magnitude
    Q = np.linalg.qr(RNG.standard_normal((4, 4)))[0]
    A = Q @ np.diag([2.0, -1.9, 0.5, -0.3]) @ Q.T
    E = quadratic(A)
    tr = opt.sharpness_trace(E, jnp.zeros((3, 4)) + jnp.arange(3.0)[:, None], 0.1, 20, record_every=10,
                             power_iters=40, seed=1)
    np.testing.assert_allclose(tr.sharpness, 2.0, rtol=1e-6)


def test_sharpness_trace_matches_the_exact_top_eigenvalue_on_an_mlp():
    from jax.flatten_util import ravel_pytree

    from igr_tutorial.nets import classification_loss

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 5)))
    y = jnp.asarray(rng.integers(0, 3, 64))
    E = lambda p: classification_loss(p, x, y)  # noqa: E731
    p0 = [{"W": jnp.asarray(rng.standard_normal((m, n)) / np.sqrt(m)), "b": jnp.zeros(n)} for m, n in ((5, 8), (8, 3))]
    tr = opt.sharpness_trace(E, _stack([p0]), 2.0, 60, record_every=20, power_iters=30)
    flat0, unravel = ravel_pytree(p0)
    hessian = jax.jit(jax.hessian(lambda v: E(unravel(v))))
    for n, params in ((0, p0), (-1, jax.tree.map(lambda a: a[0], tr.final))):
        exact = np.linalg.eigvalsh(np.asarray(hessian(ravel_pytree(params)[0])))
        assert exact[-1] > abs(exact[0])                 # the top eigenvalue dominates, as power iteration needs
        assert tr.sharpness[0, n] == pytest.approx(exact[-1], rel=1e-4)


def test_sharpness_trace_rejects_bad_arguments():
    p = _stack([TREE0])
    with pytest.raises(ValueError, match="record_every"):
        opt.sharpness_trace(tree_loss, p, 0.1, 10, record_every=3)
    with pytest.raises(ValueError, match="method"):
        opt.sharpness_trace(tree_loss, p, 0.1, 10, record_every=5, method="adam")
    with pytest.raises(ValueError, match="mode"):
        opt.sharpness_trace(tree_loss, p, 0.1, 10, record_every=5, mode="pmap")
    with pytest.raises(ValueError, match="one per run"):
        opt.sharpness_trace(tree_loss, p, [0.1, 0.2], 10, record_every=5)
    with pytest.raises(ValueError, match="beta"):
        opt.sharpness_trace(tree_loss, p, 0.1, 10, betas=1.0, record_every=5)
    with pytest.raises(ValueError, match="stacked"):
        opt.sharpness_trace(tree_loss, {"w": jnp.float64(1.0)}, 0.1, 10, record_every=5)
    with pytest.raises(ValueError, match="power_iters"):
        opt.sharpness_trace(tree_loss, p, 0.1, 10, record_every=5, power_iters=0)
