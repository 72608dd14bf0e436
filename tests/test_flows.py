"""Gradient descent, gradient flow and modified flows against closed forms computed independently.

On a quadratic ``E = ½θᵀAθ − bᵀθ`` (gradient ``A(θ − θ*)``, ``θ* = A⁻¹b``):

* GD is linear: ``θₙ = (I − hA)ⁿ(θ₀ − θ*) + θ*`` (numpy ``matrix_power``);
* the gradient flow is ``θ(t) = expm(−tA)(θ₀ − θ*) + θ*`` (``scipy.linalg.expm``);
* the modified flows are ``expm(−tM)`` with the truncated series ``M = A + hA²/2 (+ h²A³/3)``.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import igr_tutorial as igr
from igr_tutorial import optimizers, stochastic
from igr_tutorial.losses import quadratic

# --------------------------------------------------------------------------------------------------
# Test problems (module level, so that JAX's compilation caches keyed on the loss are reused)
# --------------------------------------------------------------------------------------------------


def _spd(n: int, eigs, seed: int) -> np.ndarray:
    """A symmetric positive-definite matrix with the given eigenvalues and a random eigenbasis."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.asarray(eigs, dtype=float)) @ q.T


A3 = _spd(3, [0.4, 1.3, 3.0], seed=0)
B3 = np.array([1.0, -0.5, 0.25])
THETA_STAR3 = np.linalg.solve(A3, B3)
THETA0_3 = np.array([1.5, -2.0, 0.7])
LOSS3 = quadratic(A3, B3)

# A 9-parameter quadratic read through a dict pytree {"w": (2, 3), "b": (3,)}: x = [w.ravel(), b].
A9 = _spd(9, np.linspace(0.3, 2.5, 9), seed=1)
B9 = np.random.default_rng(2).standard_normal(9)
THETA_STAR9 = np.linalg.solve(A9, B9)
P0_DICT = {
    "w": jnp.asarray(np.random.default_rng(3).standard_normal((2, 3))),
    "b": jnp.asarray(np.random.default_rng(4).standard_normal(3)),
}


def dict_loss(p):
    x = jnp.concatenate([p["w"].ravel(), p["b"]])
    return 0.5 * x @ jnp.asarray(A9) @ x - jnp.asarray(B9) @ x


def dict_to_flat(p) -> np.ndarray:
    """Flatten a trajectory of dicts (leading time axis) into rows x = [w.ravel(), b]."""
    w, b = np.asarray(p["w"]), np.asarray(p["b"])
    if w.ndim == 2:  # a single point
        return np.concatenate([w.ravel(), b])
    return np.concatenate([w.reshape(w.shape[0], -1), b], axis=1)


# A 3-parameter quadratic read through a tuple pytree (vector of 2, scalar): x = [v, s].
P0_TUPLE = (jnp.array([0.8, -1.1]), jnp.array(2.0))


def tuple_loss(p):
    x = jnp.concatenate([p[0], p[1][None]])
    return 0.5 * x @ jnp.asarray(A3) @ x - jnp.asarray(B3) @ x


def gd_closed_form(A, b, theta0, h, steps) -> np.ndarray:
    """θₙ = (I − hA)ⁿ(θ₀ − θ*) + θ*, n = 0..steps, as rows."""
    star = np.linalg.solve(A, b)
    G = np.eye(len(b)) - h * A
    return np.stack([np.linalg.matrix_power(G, n) @ (theta0 - star) + star for n in range(steps + 1)])


def flow_closed_form(M, A, b, theta0, times, t0=None) -> np.ndarray:
    """θ(t) = expm(−(t − t₀)M)(θ₀ − θ*) + θ*, θ* = A⁻¹b (the fixed point of every modified field)."""
    star = np.linalg.solve(A, b)
    t0 = times[0] if t0 is None else t0
    return np.stack([scipy.linalg.expm(-(t - t0) * M) @ (theta0 - star) + star for t in times])


def rel_err(x, y) -> np.ndarray:
    """Row-wise ‖x − y‖ / ‖y‖."""
    x, y = np.asarray(x), np.asarray(y)
    return np.linalg.norm(x - y, axis=-1) / np.linalg.norm(y, axis=-1)


# --------------------------------------------------------------------------------------------------
# gradient_descent
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0.05, 0.3, 0.6])
def test_gradient_descent_matches_closed_form_on_quadratic(lr):
    steps = 30
    traj = np.asarray(igr.gradient_descent(LOSS3, jnp.asarray(THETA0_3), lr, steps))
    expected = gd_closed_form(A3, B3, THETA0_3, lr, steps)
    assert traj.shape == (steps + 1, 3)
    np.testing.assert_array_equal(traj[0], THETA0_3)
    np.testing.assert_allclose(traj, expected, rtol=1e-12, atol=1e-12)


def test_gradient_descent_on_unstable_quadratic_still_follows_closed_form():
    # 2/λ_max = 2/3 < lr: the iterates oscillate and grow, exactly as (I − hA)ⁿ says (no overflow yet).
    lr, steps = 0.8, 40
    traj = np.asarray(igr.gradient_descent(LOSS3, jnp.asarray(THETA0_3), lr, steps))
    expected = gd_closed_form(A3, B3, THETA0_3, lr, steps)
    assert np.linalg.norm(expected[-1] - THETA_STAR3) > 1e3 * np.linalg.norm(THETA0_3 - THETA_STAR3)
    np.testing.assert_allclose(traj, expected, rtol=1e-10)


def test_gradient_descent_on_dict_pytree():
    lr, steps = 0.2, 25
    traj = igr.gradient_descent(dict_loss, P0_DICT, lr, steps)
    assert isinstance(traj, dict) and set(traj) == {"w", "b"}
    assert traj["w"].shape == (steps + 1, 2, 3)
    assert traj["b"].shape == (steps + 1, 3)
    np.testing.assert_array_equal(traj["w"][0], P0_DICT["w"])
    np.testing.assert_array_equal(traj["b"][0], P0_DICT["b"])
    expected = gd_closed_form(A9, B9, dict_to_flat(P0_DICT), lr, steps)
    np.testing.assert_allclose(dict_to_flat(traj), expected, rtol=1e-12, atol=1e-12)


def test_gradient_descent_on_tuple_pytree_with_scalar_leaf():
    lr, steps = 0.3, 20
    traj = igr.gradient_descent(tuple_loss, P0_TUPLE, lr, steps)
    assert isinstance(traj, tuple) and len(traj) == 2
    assert traj[0].shape == (steps + 1, 2)
    assert traj[1].shape == (steps + 1,)
    x0 = np.array([0.8, -1.1, 2.0])
    expected = gd_closed_form(A3, B3, x0, lr, steps)
    got = np.concatenate([np.asarray(traj[0]), np.asarray(traj[1])[:, None]], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_gradient_descent_float32_stays_float32():
    lr, steps = 0.3, 20
    traj = igr.gradient_descent(LOSS3, jnp.asarray(THETA0_3, dtype=jnp.float32), lr, steps)
    assert traj.dtype == jnp.float32
    np.testing.assert_allclose(traj, gd_closed_form(A3, B3, THETA0_3, lr, steps), rtol=2e-5, atol=2e-6)

    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), P0_DICT)
    traj = igr.gradient_descent(dict_loss, p32, lr, steps)
    assert traj["w"].dtype == jnp.float32 and traj["b"].dtype == jnp.float32
    expected = gd_closed_form(A9, B9, dict_to_flat(p32).astype(float), lr, steps)
    np.testing.assert_allclose(dict_to_flat(traj), expected, rtol=2e-5, atol=2e-5)


def test_gradient_descent_zero_steps_returns_params_with_time_axis():
    traj = igr.gradient_descent(LOSS3, jnp.asarray(THETA0_3), 0.1, 0)
    assert traj.shape == (1, 3)
    np.testing.assert_array_equal(traj[0], THETA0_3)

    traj = igr.gradient_descent(dict_loss, P0_DICT, 0.1, 0)
    assert traj["w"].shape == (1, 2, 3) and traj["b"].shape == (1, 3)
    np.testing.assert_array_equal(traj["w"][0], P0_DICT["w"])
    np.testing.assert_array_equal(traj["b"][0], P0_DICT["b"])


def test_gradient_descent_accepts_numpy_integer_steps():
    traj = igr.gradient_descent(LOSS3, jnp.asarray(THETA0_3), 0.1, np.int64(4))
    np.testing.assert_allclose(traj, gd_closed_form(A3, B3, THETA0_3, 0.1, 4), rtol=1e-12)


def test_gradient_descent_sweep_matches_a_loop_of_single_runs():
    lrs = np.array([0.05, 0.2, 0.45, 0.6])
    steps = 15
    sweep = np.asarray(igr.gradient_descent_sweep(LOSS3, jnp.asarray(THETA0_3), lrs, steps))
    assert sweep.shape == (len(lrs), steps + 1, 3)
    for i, lr in enumerate(lrs):
        single = np.asarray(igr.gradient_descent(LOSS3, jnp.asarray(THETA0_3), float(lr), steps))
        np.testing.assert_allclose(sweep[i], single, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(sweep[i], gd_closed_form(A3, B3, THETA0_3, lr, steps), rtol=1e-12, atol=1e-12)


def test_gradient_descent_sweep_on_pytree():
    lrs = [0.1, 0.3]
    steps = 10
    sweep = igr.gradient_descent_sweep(dict_loss, P0_DICT, lrs, steps)
    assert sweep["w"].shape == (2, steps + 1, 2, 3) and sweep["b"].shape == (2, steps + 1, 3)
    for i, lr in enumerate(lrs):
        got = dict_to_flat(jax.tree.map(lambda x: x[i], sweep))
        expected = gd_closed_form(A9, B9, dict_to_flat(P0_DICT), lr, steps)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_gradient_descent_sweep_keeps_diverging_runs():
    # lr = 1.5 > 2/λ_max = 2/3: |1 − 1.5·3|ⁿ = 3.5ⁿ overflows after about 570 steps. The sweep keeps the run
    # (no error) and agrees with a single diverging run, non-finite entries included.
    lrs = [0.1, 1.5]
    steps = 800
    sweep = np.asarray(igr.gradient_descent_sweep(LOSS3, jnp.asarray(THETA0_3), lrs, steps))
    assert igr.first_nonfinite_step(sweep[0]) is None
    single = np.asarray(igr.gradient_descent(LOSS3, jnp.asarray(THETA0_3), 1.5, steps, allow_divergence=True))
    bad = igr.first_nonfinite_step(single)
    assert bad is not None and 500 < bad < steps
    assert igr.first_nonfinite_step(sweep[1]) == bad
    np.testing.assert_allclose(sweep[1][:bad], single[:bad], rtol=1e-12)


def test_gradient_descent_can_be_jitted_and_vmapped_over_lr():
    steps = 12
    theta0 = jnp.asarray(THETA0_3)
    run = lambda h: igr.gradient_descent(LOSS3, theta0, h, steps)  # noqa: E731
    np.testing.assert_allclose(jax.jit(run)(0.25), gd_closed_form(A3, B3, THETA0_3, 0.25, steps), rtol=1e-12)
    lrs = jnp.array([0.1, 0.25, 0.5])
    batched = np.asarray(jax.vmap(run)(lrs))
    assert batched.shape == (3, steps + 1, 3)
    for i, lr in enumerate(np.asarray(lrs)):
        np.testing.assert_allclose(batched[i], gd_closed_form(A3, B3, THETA0_3, lr, steps), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------------------

# On E = ½θᵀdiag(1, 0.1)θ with lr = 3 the first coordinate is multiplied by exactly −2 each step:
# θₙ = (−2)ⁿθ₀ while finite. Writing |θ₀| = m·2ᵉ (m ∈ [½, 1)), θₙ first overflows at the first n
# with e + n > maxexp. The starting points have m < ⅔, so the intermediate 3·|θₙ| of an unfused update
# θₙ − 3θₙ overflows at that same n: the answer does not depend on whether XLA fuses the update (FMA).
A_DIV = np.diag([1.0, 0.1])
LOSS_DIV = quadratic(A_DIV)


def _first_overflow_closed_form(theta0_first: float, dtype) -> int:
    m, e = np.frexp(dtype(abs(theta0_first)))
    assert m < 2 / 3, "choose a starting point whose overflow step does not depend on FMA fusion"
    return np.finfo(dtype).maxexp - int(e) + 1


def _first_nonfinite_simulated(theta0, lr, steps, dtype) -> int:
    """Run θ ← θ − lr·Aθ in numpy at the given precision; the index of the first non-finite iterate."""
    theta = np.asarray(theta0, dtype=dtype)
    A = A_DIV.astype(dtype)
    lr = dtype(lr)
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(1, steps + 1):
            theta = theta - lr * (A @ theta)
            if not np.all(np.isfinite(theta)):
                return n
    raise AssertionError("the simulation did not diverge")


@pytest.mark.parametrize(
    "dtype, theta_first, steps",
    [(np.float64, 1.0, 1100), (np.float64, 0.6, 1100), (np.float64, 5.0, 1100), (np.float64, 1e-3, 1100),
     (np.float32, 1.0, 200), (np.float32, 5.0, 200)],
)
def test_divergence_error_names_the_first_nonfinite_step(dtype, theta_first, steps):
    lr = 3.0  # > 2/λ_max = 2
    theta0 = np.array([theta_first, 1.0], dtype=dtype)
    expected = _first_overflow_closed_form(theta_first, dtype)
    assert expected == _first_nonfinite_simulated(theta0, lr, steps, dtype)
    assert expected <= steps

    with pytest.raises(igr.DivergenceError, match=rf"non-finite at step {expected} of {steps}\b") as info:
        igr.gradient_descent(LOSS_DIV, jnp.asarray(theta0), lr, steps)
    assert isinstance(info.value, ValueError)
    assert "smaller learning rate" in str(info.value)
    assert "allow_divergence=True" in str(info.value)

    traj = igr.gradient_descent(LOSS_DIV, jnp.asarray(theta0), lr, steps, allow_divergence=True)
    traj = np.asarray(traj)
    assert traj.shape == (steps + 1, 2)
    assert np.all(np.isfinite(traj[:expected]))
    assert not np.all(np.isfinite(traj[expected]))
    assert not np.all(np.isfinite(traj[-1]))
    assert igr.first_nonfinite_step(traj) == expected
    # Just before the overflow the iterates are still (−2)ⁿθ₀ in the first coordinate (exactly with a fused
    # update, to rounding without).
    n = np.arange(expected - 5, expected)
    np.testing.assert_allclose(traj[n, 0], (-1.0) ** n * np.ldexp(dtype(theta_first), n), rtol=1e-5)


def test_no_divergence_error_below_overflow():
    # Unstable (lr > 2/λ_max) but only 100 steps: finite, so no error, and the closed form holds.
    traj = igr.gradient_descent(LOSS_DIV, jnp.array([1.0, 1.0]), 3.0, 100)
    np.testing.assert_array_equal(np.asarray(traj)[:, 0], (-2.0) ** np.arange(101))


def test_first_nonfinite_step_on_hand_made_arrays():
    finite = np.zeros((5, 2))
    assert igr.first_nonfinite_step(finite) is None

    a = np.zeros((5, 2))
    a[3, 1] = np.nan
    a[4, 0] = np.inf
    assert igr.first_nonfinite_step(a) == 3

    b = np.zeros((4, 3))
    b[0, 2] = -np.inf
    assert igr.first_nonfinite_step(b) == 0

    # A pytree: the first bad index over all leaves, with leaves of different ranks.
    tree = {"x": np.zeros((6, 2, 2)), "y": np.zeros(6)}
    tree["x"][4, 1, 0] = np.nan
    tree["y"][2] = np.inf
    assert igr.first_nonfinite_step(tree) == 2
    tree["y"][2] = 0.0
    assert igr.first_nonfinite_step(tree) == 4


# --------------------------------------------------------------------------------------------------
# gradient_flow
# --------------------------------------------------------------------------------------------------

TIMES = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0])


def test_gradient_flow_matches_expm_on_quadratic():
    traj = np.asarray(igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3), TIMES))
    assert traj.shape == (len(TIMES), 3)
    np.testing.assert_array_equal(traj[0], THETA0_3)
    expected = flow_closed_form(A3, A3, B3, THETA0_3, TIMES)
    assert np.all(rel_err(traj, expected) < 1e-6)


def test_gradient_flow_with_nonzero_start_time():
    times = TIMES + 1.5  # θ(1.5) = θ₀: the flow is autonomous, so θ(t) = expm(−(t − 1.5)A)…
    traj = np.asarray(igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3), times))
    np.testing.assert_array_equal(traj[0], THETA0_3)
    expected = flow_closed_form(A3, A3, B3, THETA0_3, times)
    assert np.all(rel_err(traj, expected) < 1e-6)


def test_gradient_flow_on_dict_pytree():
    traj = igr.gradient_flow(dict_loss, P0_DICT, TIMES)
    assert traj["w"].shape == (len(TIMES), 2, 3) and traj["b"].shape == (len(TIMES), 3)
    expected = flow_closed_form(A9, A9, B9, dict_to_flat(P0_DICT), TIMES)
    assert np.all(rel_err(dict_to_flat(traj), expected) < 1e-6)


def test_gradient_flow_looser_tolerance_gives_larger_but_small_error():
    theta0 = jnp.asarray(THETA0_3)
    expected = flow_closed_form(A3, A3, B3, THETA0_3, TIMES)
    tight = rel_err(igr.gradient_flow(LOSS3, theta0, TIMES), expected).max()
    loose = rel_err(igr.gradient_flow(LOSS3, theta0, TIMES, rtol=1e-4, atol=1e-6), expected).max()
    assert tight < 1e-6
    assert loose > 10 * tight
    assert loose < 1e-2


def test_gradient_flow_float32():
    traj = igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3, dtype=jnp.float32), TIMES)
    assert traj.dtype == jnp.float32
    expected = flow_closed_form(A3, A3, B3, THETA0_3, TIMES)
    assert np.all(rel_err(np.asarray(traj, dtype=float), expected) < 1e-4)


def test_gradient_flow_single_time_returns_params():
    traj = igr.gradient_flow(dict_loss, P0_DICT, [0.3])
    assert traj["w"].shape == (1, 2, 3)
    np.testing.assert_array_equal(traj["w"][0], P0_DICT["w"])
    np.testing.assert_array_equal(traj["b"][0], P0_DICT["b"])


def quartic_down(theta):
    return -jnp.sum(theta**4)


def test_gradient_flow_nonlinear_closed_form_before_blow_up():
    # E = −θ⁴: θ' = 4θ³, θ(0) = 1 ⇒ θ(t) = 1/√(1 − 8t), which blows up at t = 1/8.
    times = np.array([0.0, 0.02, 0.05, 0.08, 0.1])
    traj = np.asarray(igr.gradient_flow(quartic_down, jnp.array([1.0]), times))[:, 0]
    np.testing.assert_allclose(traj, 1.0 / np.sqrt(1.0 - 8.0 * times), rtol=1e-6)


def test_gradient_flow_blowing_up_raises_flow_error():
    with pytest.raises(igr.FlowError, match=r"stopped before t = 1\b.*blow up") as info:
        igr.gradient_flow(quartic_down, jnp.array([1.0]), np.linspace(0.0, 1.0, 5))
    assert isinstance(info.value, ValueError)


def test_modified_flow_blowing_up_raises_flow_error():
    # For E = −θ⁴ the order-2 field is 4θ³(1 − 6hθ² + 56h²θ⁴) > 0 for every θ ≠ 0 (negative
    # discriminant), growing like θ⁷: it blows up in finite time. (The order-1 field 4θ³(1 − 6hθ²)
    # would stop at θ² = 1/6h.)
    with pytest.raises(igr.FlowError, match=r"stopped before t = 1\b"):
        igr.modified_flow(quartic_down, jnp.array([1.0]), 0.01, np.linspace(0.0, 1.0, 5), order=2)


# --------------------------------------------------------------------------------------------------
# modified_flow on a quadratic: expm of the truncated series
# --------------------------------------------------------------------------------------------------


def test_modified_flow_order0_is_the_gradient_flow():
    traj = np.asarray(igr.modified_flow(LOSS3, jnp.asarray(THETA0_3), 0.3, TIMES, order=0))
    assert np.all(rel_err(traj, flow_closed_form(A3, A3, B3, THETA0_3, TIMES)) < 1e-6)


@pytest.mark.parametrize("lr", [0.1, 0.4])
@pytest.mark.parametrize("order", [1, 2])
def test_modified_flow_matches_expm_of_truncated_series(order, lr):
    M = A3 + lr / 2 * A3 @ A3
    if order == 2:
        M = M + lr**2 / 3 * A3 @ A3 @ A3
    traj = np.asarray(igr.modified_flow(LOSS3, jnp.asarray(THETA0_3), lr, TIMES, order=order))
    expected = flow_closed_form(M, A3, B3, THETA0_3, TIMES)
    assert np.all(rel_err(traj, expected) < 1e-6)
    # The orders really differ (so the test above can tell them apart).
    other = A3 + lr / 2 * A3 @ A3 + (lr**2 / 3 * A3 @ A3 @ A3 if order == 1 else 0)
    assert rel_err(traj, flow_closed_form(other, A3, B3, THETA0_3, TIMES)).max() > 1e-4


# --------------------------------------------------------------------------------------------------
# The adaptive solve itself (_ode.solve_ode: SciPy's Dormand–Prince on a once-compiled field)
# --------------------------------------------------------------------------------------------------


def logistic_loss(theta):
    # −∇E = θ(1 − θ): the logistic equation, θ(t) = 1 / (1 + (1/θ₀ − 1)·e^(−(t − t₀))).
    return jnp.sum(theta**3 / 3 - theta**2 / 2)


def logistic_closed_form(theta0, times) -> np.ndarray:
    t = np.asarray(times, dtype=float) - times[0]
    return 1.0 / (1.0 + (1.0 / np.asarray(theta0, dtype=float) - 1.0) * np.exp(-t)[:, None])


# The tolerance each dtype's defaults promise (the docstring of gradient_flow): 1e-6 relative in float64, and
# float32's rtol of 1e-6 plus float32 rounding of the field.
TOLERANCE = {jnp.float64: 1e-6, jnp.float32: 1e-4}


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
def test_solve_matches_the_quadratic_expm_in_both_dtypes(dtype):
    traj = igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3, dtype=dtype), TIMES)
    assert traj.dtype == dtype and traj.shape == (len(TIMES), 3)
    err = rel_err(np.asarray(traj, dtype=float), flow_closed_form(A3, A3, B3, THETA0_3, TIMES))
    assert err.max() < TOLERANCE[dtype], err.max()
    if dtype == jnp.float64:
        assert err.max() < 1e-8  # DOP853 at rtol 1e-10 is far inside the promise


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
def test_where_scipys_internals_may_differ_stock_solve_ivp_keeps_the_promise(dtype, monkeypatch):
    """The compiled Runge–Kutta stepper copies SciPy's private step; where it may not fit (a SciPy newer than the
    tested one, other internals), solve_ode runs stock solve_ivp. That path keeps the same tolerance promise, the
    step cap and the error messages."""
    from igr_tutorial import _ode

    assert _ode._compiled_solver(dtype == jnp.float64) is not None  # the pinned SciPy gets the fork
    monkeypatch.setattr(_ode, "_compiled_solver", lambda float64: None)
    traj = igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3, dtype=dtype), TIMES)
    err = rel_err(np.asarray(traj, dtype=float), flow_closed_form(A3, A3, B3, THETA0_3, TIMES))
    assert traj.dtype == dtype and err.max() < TOLERANCE[dtype], err.max()
    with pytest.raises(igr.FlowError, match=r"it needed more than max_steps = 3 steps \(at t = "):
        igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3, dtype=dtype), TIMES, max_steps=3)


def test_a_newer_scipy_is_fenced_off_the_fork(monkeypatch):
    """A SciPy minor version past the newest tested one, or other step-size constants, gets stock solve_ivp."""
    import scipy
    from scipy.integrate._ivp import rk

    from igr_tutorial import _ode

    _ode._compiled_solver.cache_clear()
    try:
        monkeypatch.setattr(scipy, "__version__", "1.99.0")
        assert _ode._compiled_solver(True) is None
        monkeypatch.setattr(scipy, "__version__", ".".join(map(str, _ode.NEWEST_TESTED_SCIPY)) + ".0")
        _ode._compiled_solver.cache_clear()
        assert _ode._compiled_solver(True) is not None
        monkeypatch.setattr(rk, "SAFETY", 0.8)
        _ode._compiled_solver.cache_clear()
        assert _ode._compiled_solver(True) is None
    finally:
        monkeypatch.undo()
        _ode._compiled_solver.cache_clear()


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
def test_solve_matches_the_logistic_closed_form_from_a_later_start(dtype):
    times = np.linspace(0.5, 8.5, 41)  # t₀ ≠ 0: the closed form counts time from the first sample
    theta0 = np.array([0.05, 0.5, 1.7])
    traj = igr.gradient_flow(logistic_loss, jnp.asarray(theta0, dtype=dtype), times)
    assert traj.dtype == dtype
    np.testing.assert_array_equal(np.asarray(traj[0]), np.asarray(theta0, dtype=dtype))  # the start, exactly
    expected = logistic_closed_form(theta0, times)
    np.testing.assert_allclose(np.asarray(traj, dtype=float), expected, rtol=TOLERANCE[dtype])
    # the solve is not trivially exact: a loose tolerance shows its error
    loose = igr.gradient_flow(logistic_loss, jnp.asarray(theta0, dtype=dtype), times, rtol=1e-3, atol=1e-3)
    assert np.abs(np.asarray(loose, dtype=float) - expected).max() > 10 * np.abs(
        np.asarray(traj, dtype=float) - expected).max()


def test_solve_exponential_decay_of_a_modified_flow_on_a_scalar():
    # E = (k/2)θ²: the order-1 modified field is −kθ − (h/2)k²θ, so θ(t) = θ₀·exp(−(k + hk²/2)t).
    k, h = 1.7, 0.3
    times = np.linspace(0.0, 3.0, 13)
    traj = np.asarray(igr.modified_flow(lambda th: k / 2 * jnp.sum(th**2), jnp.array([2.0]), h, times))[:, 0]
    np.testing.assert_allclose(traj, 2.0 * np.exp(-(k + h * k**2 / 2) * times), rtol=1e-8)


class _Compilations(logging.Handler):
    """Collects the names of the programs JAX compiles while ``jax.log_compiles`` is on."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1])


def _compiled_by(*calls) -> list[list[str]]:
    """The programs each call compiles, in order (JAX's compilation log)."""
    handler, logger, out = _Compilations(), logging.getLogger("jax"), []
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            for call in calls:
                handler.names.clear()
                call()
                out.append(list(handler.names))
    finally:
        logger.removeHandler(handler)
    return out


def _sgd_batch_loss(p, batch):
    x, y = batch
    return jnp.mean((x @ p - y) ** 2) + 0.1 * jnp.sum(p**4)


_SGD_DATA = (jnp.asarray(np.random.default_rng(5).normal(size=(8, 3))), jnp.asarray(np.random.default_rng(6).normal(size=8)))
_OTHER_DATA = (jnp.asarray(np.random.default_rng(7).normal(size=(8, 3))), jnp.asarray(np.random.default_rng(8).normal(size=8)))


def _quartic_bowl(p):  # a loss of its own, so that its first flow really compiles here
    return jnp.sum(p**4) / 4 + jnp.sum(p**2) / 2


def _sextic_bowl(p):  # another: penalized_gradient_flow shares modified_flow's field (next test)
    return jnp.sum(p**6) / 6 + jnp.sum(p**2) / 2


def _octic_bowl(p):
    return jnp.sum(p**8) / 8 + jnp.sum(p**2) / 2


# Two calls of each flow: the inputs are made here, so that the calls below compile nothing but the flow's own.
_STARTS = {k: (jnp.asarray(THETA0_3) * (1 + k), jnp.asarray(THETA0_3) - k) for k in (0.0, 0.1)}
FLOWS = {
    "gradient_flow": lambda k: igr.gradient_flow(_quartic_bowl, _STARTS[k][0], TIMES),
    "modified_flow": lambda k: igr.modified_flow(_quartic_bowl, _STARTS[k][0], 0.1 + k, TIMES),
    "penalized_gradient_flow": lambda k: optimizers.penalized_gradient_flow(_sextic_bowl, _STARTS[k][1], 0.05 + k, TIMES),
    "sgd_modified_flow": lambda k: stochastic.sgd_modified_flow(
        _sgd_batch_loss, _STARTS[k][0], _OTHER_DATA if k else _SGD_DATA, 0.1 + k, batch_size=4, times=TIMES[:5]),
}


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_a_flow_compiles_its_field_once_for_new_rates_starts_and_data(name):
    """A second call with another lr/strength, another starting point (and for SGD other data) of the same shapes
    compiles nothing: those are arguments of the compiled field, not constants in it."""
    from igr_tutorial._ode import _rk_stages

    before = _rk_stages._cache_size()
    first, second = _compiled_by(lambda: FLOWS[name](0.0), lambda: FLOWS[name](0.1))
    assert any("_rk_stages" in n for n in first), f"the first call compiled no field: {first}"
    assert second == [], f"a second call with new numbers compiled again: {second}"
    assert _rk_stages._cache_size() - before == 1


def test_the_penalized_flow_and_the_first_order_modified_flow_are_one_compiled_ode():
    """E + c‖∇E‖² with c = h/4 is GD's first-order modified loss: penalized_gradient_flow and modified_flow(order=1)
    integrate the same field, compiled once for both, and agree to the solver's tolerance."""
    from igr_tutorial._ode import _rk_stages

    before = _rk_stages._cache_size()
    mf = igr.modified_flow(_octic_bowl, jnp.asarray(THETA0_3), 0.2, TIMES, order=1)
    pf = optimizers.penalized_gradient_flow(_octic_bowl, jnp.asarray(THETA0_3), 0.05, TIMES)
    assert _rk_stages._cache_size() - before == 1
    np.testing.assert_allclose(np.asarray(pf), np.asarray(mf), rtol=1e-12, atol=1e-14)


def test_the_compilation_count_sees_a_new_loss():
    """The control: a flow of a new loss function compiles a new field, and both counts show it."""
    from igr_tutorial._ode import _rk_stages

    before = _rk_stages._cache_size()
    first, second = _compiled_by(lambda: igr.gradient_flow(lambda p: jnp.sum(p**2), jnp.ones(3), TIMES),
                                 lambda: igr.gradient_flow(lambda p: jnp.sum(p**2), jnp.ones(3), TIMES))
    assert any("_rk_stages" in n for n in first) and any("_rk_stages" in n for n in second)
    assert _rk_stages._cache_size() - before == 2


def test_blow_up_over_a_long_span_raises_flow_error_with_the_hint():
    # E = −θ⁴ from θ = 1: θ(t) = 1/√(1 − 8t) leaves every bound at t = 1/8, long before t = 10.
    with pytest.raises(igr.FlowError, match=r"stopped before t = 10\b") as info:
        igr.gradient_flow(quartic_down, jnp.array([1.0]), np.linspace(0.0, 10.0, 11))
    message = str(info.value)
    assert "at t = 0.125" in message  # where it stopped: the blow-up time
    assert "may blow up" in message and "shorten the time span" in message


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
def test_max_steps_exhaustion_raises_flow_error_with_the_hint(dtype):
    with pytest.raises(igr.FlowError, match=r"stopped before t = 5: it needed more than max_steps = 3 steps \(at t = ") as info:
        igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3, dtype=dtype), TIMES, max_steps=3)
    assert "raise max_steps" in str(info.value)
    # enough steps: the same call succeeds (the limit, not the problem, stopped it)
    igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3, dtype=dtype), TIMES, max_steps=200)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_initial_params_are_refused_clearly(bad):
    theta0 = THETA0_3.copy()
    theta0[1] = bad
    with pytest.raises(ValueError, match=r"params must be finite to start a flow.*Start from finite parameters"):
        igr.gradient_flow(LOSS3, jnp.asarray(theta0), TIMES)
    with pytest.raises(ValueError, match=r"params must be finite"):
        igr.modified_flow(dict_loss, {**P0_DICT, "b": P0_DICT["b"].at[0].set(bad)}, 0.1, TIMES)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_max_steps_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3), TIMES, max_steps=bad)


def test_a_flow_under_jit_says_to_call_it_outside():
    with pytest.raises(TypeError, match="cannot be traced"):
        jax.jit(lambda p: igr.gradient_flow(LOSS3, p, TIMES))(jnp.asarray(THETA0_3))


def test_float32_flow_without_jax_float64_matches_the_closed_form():
    """With JAX's float64 off (a reader's default), the stages are combined in float32 on the device: the flow
    still meets float32's tolerance."""
    times = np.linspace(0.5, 8.5, 41)
    theta0 = np.array([0.05, 0.5, 1.7])
    with jax.enable_x64(False):
        traj = igr.gradient_flow(logistic_loss, jnp.asarray(theta0, dtype=jnp.float32), times)
    assert traj.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(traj, dtype=float), logistic_closed_form(theta0, times),
                               rtol=TOLERANCE[jnp.float32])


def test_the_flow_never_reads_uninitialized_stage_rows(monkeypatch):
    """SciPy allocates DOP853's extended stages with np.empty; the dense output's extra stages must not read those
    rows' leftover bits (weighted by zero, a NaN there still made the whole interpolant NaN, now and then). Here
    every np.empty of SciPy's Runge–Kutta module is NaN-filled, so reading one would fail every time."""
    import scipy.integrate._ivp.rk as rk

    class NaNEmpty:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def empty(shape, dtype=float, **kwargs):
            return np.full(shape, np.nan, dtype=dtype)

    monkeypatch.setattr(rk, "np", NaNEmpty())
    traj = np.asarray(igr.gradient_flow(LOSS3, jnp.asarray(THETA0_3), TIMES))
    assert np.all(np.isfinite(traj))
