"""SGD with random reshuffling and its modified loss (chapter 8) against independent computations.

Independent references: closed-form gradients of least squares written in NumPy, brute-force averages over
*every* permutation of a small data set (an exact expectation over random reshuffling), brute-force variances
over every subset, and measured convergence orders of the one-epoch error.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import igr_tutorial as igr
from igr_tutorial import stochastic as st

RNG = np.random.default_rng(3)
N = 6
X = RNG.standard_normal((N, 3))
Y = RNG.standard_normal(N)
LSQ_DATA = (jnp.asarray(X), jnp.asarray(Y))


def lsq_batch_loss(theta, batch):
    """Least squares: the mean of ½(xᵢᵀθ − yᵢ)² over the batch."""
    x, y = batch
    return 0.5 * jnp.mean((x @ theta - y) ** 2)


def lsq_grad_np(theta, idx):
    """∇ of the mean least-squares loss over the examples ``idx``, in closed form: Xᵀ(Xθ − y)/B."""
    x, y = X[idx], Y[idx]
    return x.T @ (x @ theta - y) / len(idx)


# A nonlinear model in the spirit of chapter 4: ℓᵢ(a, b) = ½(yᵢ − a·b·xᵢ)² (plus a tanh to make it less special).
X2 = np.array([0.6, 0.8, 1.0, 1.2, 1.4, 1.6])
Y2 = X2 * np.array([1.8, 0.3, 1.5, 0.6, 1.4, 0.4])
FACT_DATA = (jnp.asarray(X2), jnp.asarray(Y2))


def fact_batch_loss(theta, batch):
    x, y = batch
    return 0.5 * jnp.mean((y - theta[0] * theta[1] * x - 0.1 * jnp.tanh(theta[0] * x)) ** 2)


THETA_F = jnp.array([2.0, 1.5])
THETA_L = jnp.asarray(RNG.standard_normal(3))


def batches_of(perm, B):
    perm = np.asarray(perm)
    return [perm[k * B:(k + 1) * B] for k in range(len(perm) // B)]


# ------------------------------------------------------------------------------------------------
# Batches and permutations
# ------------------------------------------------------------------------------------------------


def test_split_batches_shapes_and_order():
    perm = np.array([5, 0, 3, 1, 4, 2])
    bx, by = st.split_batches(LSQ_DATA, 2, perm)
    assert bx.shape == (3, 2, 3) and by.shape == (3, 2)
    for k, idx in enumerate(batches_of(perm, 2)):
        np.testing.assert_array_equal(np.asarray(bx[k]), X[idx])
        np.testing.assert_array_equal(np.asarray(by[k]), Y[idx])


def test_all_permutations_are_all_distinct_permutations():
    p = st.all_permutations(4)
    assert p.shape == (24, 4)
    assert len({tuple(r) for r in p}) == 24
    assert all(sorted(r) == [0, 1, 2, 3] for r in p.tolist())
    with pytest.raises(ValueError, match="1 to 8"):
        st.all_permutations(9)


@pytest.mark.parametrize("bad", [4, 0, -2, 2.0, True])
def test_batch_size_must_divide_the_data(bad):
    with pytest.raises(ValueError, match="batch_size"):
        st.split_batches(LSQ_DATA, bad)


def test_mismatched_example_axes_are_rejected():
    with pytest.raises(ValueError, match="leading"):
        st.num_examples((jnp.zeros((6, 2)), jnp.zeros(5)))


def test_full_loss_is_the_loss_on_all_data():
    E = st.full_loss(lsq_batch_loss, st.split_batches(LSQ_DATA, 2))
    direct = 0.5 * np.mean((X @ np.asarray(THETA_L) - Y) ** 2)
    assert float(E(THETA_L)) == pytest.approx(direct, rel=1e-14)


# ------------------------------------------------------------------------------------------------
# The modified loss and the variance term
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 2, 3, 6])
def test_sgd_modified_loss_matches_closed_form_least_squares(B):
    h = 0.37
    perm = np.array([2, 4, 0, 1, 5, 3])
    batches = st.split_batches(LSQ_DATA, B, perm)
    theta = np.asarray(THETA_L)
    E = 0.5 * np.mean((X @ theta - Y) ** 2)
    sq = [np.sum(lsq_grad_np(theta, idx) ** 2) for idx in batches_of(perm, B)]
    expected = E + h / 4 * np.mean(sq)
    got = float(st.sgd_modified_loss(lsq_batch_loss, batches, h)(THETA_L))
    assert got == pytest.approx(expected, rel=1e-13)


def test_sgd_modified_loss_with_one_batch_is_gd_modified_loss():
    h = 0.21
    whole = st.split_batches(FACT_DATA, N)
    E = st.full_loss(fact_batch_loss, whole)
    a = float(st.sgd_modified_loss(fact_batch_loss, whole, h)(THETA_F))
    b = float(igr.modified_loss(E, h)(THETA_F))
    assert a == pytest.approx(b, rel=1e-14)


def test_gradient_of_sgd_modified_loss_by_finite_differences():
    """∇E_SGD = ∇E + (h/2m)·Σₖ Hₖ∇Êₖ: autodiff of the loss against central differences of its value."""
    h = 0.3
    batches = st.split_batches(FACT_DATA, 2, np.array([1, 5, 0, 2, 4, 3]))
    L = st.sgd_modified_loss(fact_batch_loss, batches, h)
    g = np.asarray(jax.grad(L)(THETA_F))
    eps = 1e-6
    fd = np.array([(float(L(THETA_F + eps * e)) - float(L(THETA_F - eps * e))) / (2 * eps) for e in np.eye(2)])
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-8)
    # and the same gradient from per-batch Hessians formed densely
    hess = [np.asarray(jax.hessian(fact_batch_loss)(THETA_F, jax.tree.map(lambda x: x[k], batches))) for k in range(3)]
    grads = np.asarray(st.batch_gradients(fact_batch_loss, THETA_F, batches))
    dense = grads.mean(0) + h / (2 * 3) * sum(Hk @ gk for Hk, gk in zip(hess, grads))
    np.testing.assert_allclose(g, dense, rtol=1e-12)


@pytest.mark.parametrize("loss,data,theta", [(lsq_batch_loss, LSQ_DATA, THETA_L), (fact_batch_loss, FACT_DATA, THETA_F)])
@pytest.mark.parametrize("B", [1, 2, 3])
def test_variance_identity_is_exact(loss, data, theta, B):
    """(1/m)Σ‖∇Êₖ‖² = ‖∇E‖² + (1/m)Σ‖∇Êₖ − ∇E‖², because the batch gradients average to ∇E."""
    batches = st.split_batches(data, B, np.array([3, 1, 4, 0, 5, 2]))
    grads = np.asarray(st.batch_gradients(loss, theta, batches)).reshape(N // B, -1)
    mean_sq = np.mean(np.sum(grads**2, axis=1))
    E = st.full_loss(loss, batches)
    full = float(igr.tree_sq_norm(jax.grad(E)(theta)))
    var = float(st.batch_gradient_variance(loss, batches)(theta))
    assert mean_sq == pytest.approx(full + var, rel=1e-13)
    # the variance computed directly in NumPy
    assert var == pytest.approx(np.mean(np.sum((grads - grads.mean(0)) ** 2, axis=1)), rel=1e-12)
    # and the two forms of the modified loss agree
    h = 0.1
    a = float(st.sgd_modified_loss(loss, batches, h)(theta))
    b = float(igr.modified_loss(E, h)(theta)) + h / 4 * var
    assert a == pytest.approx(b, rel=1e-13)


def test_finite_population_factor_by_brute_force_over_subsets():
    """Var of the mean of B values drawn without replacement = (N−B)/(B(N−1)) · population variance."""
    v = RNG.standard_normal(7)
    for n, B in [(7, 1), (7, 7), (6, 2), (6, 3), (8, 4)]:
        w = v[:n] if n <= 7 else np.append(v, 0.3)
        pop = np.mean((w - w.mean()) ** 2)
        means = [np.mean(w[list(c)]) for c in itertools.combinations(range(n), B)]
        brute = np.mean((np.array(means) - w.mean()) ** 2)
        assert brute == pytest.approx(st.finite_population_factor(n, B) * pop, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("B", [1, 2, 3, 6])
def test_expected_variance_is_the_mean_over_all_partitions(B):
    perms = st.all_permutations(N)
    var = st.batch_gradient_variance
    brute = np.mean(
        jax.vmap(lambda p: var(fact_batch_loss, st.split_batches(FACT_DATA, B, p))(THETA_F))(jnp.asarray(perms))
    )
    closed = float(st.expected_batch_gradient_variance(fact_batch_loss, FACT_DATA, B)(THETA_F))
    assert closed == pytest.approx(float(brute), rel=1e-12, abs=1e-14)
    if B == N:
        assert closed == 0.0


def test_expected_variance_falls_like_one_over_B_times_the_factor():
    singles = float(st.batch_gradient_variance(fact_batch_loss, st.split_batches(FACT_DATA, 1))(THETA_F))
    for B in (1, 2, 3, 6):
        v = float(st.expected_batch_gradient_variance(fact_batch_loss, FACT_DATA, B)(THETA_F))
        assert v == pytest.approx(singles * (N - B) / (B * (N - 1)), rel=1e-13, abs=1e-15)


def test_reshuffled_modified_loss_is_the_mean_over_all_permutations():
    h, B = 0.13, 2
    perms = jnp.asarray(st.all_permutations(N))
    per = jax.vmap(lambda p: st.sgd_modified_loss(fact_batch_loss, st.split_batches(FACT_DATA, B, p), h)(THETA_F))(perms)
    closed = float(st.reshuffled_sgd_modified_loss(fact_batch_loss, FACT_DATA, B, h)(THETA_F))
    assert closed == pytest.approx(float(np.mean(per)), rel=1e-13)


# ------------------------------------------------------------------------------------------------
# SGD itself
# ------------------------------------------------------------------------------------------------


def test_sgd_epoch_matches_a_numpy_loop():
    h, B = 0.05, 2
    perm = np.array([4, 2, 0, 5, 1, 3])
    traj = st.sgd_epoch(lsq_batch_loss, THETA_L, st.split_batches(LSQ_DATA, B, perm), h)
    theta = np.asarray(THETA_L).copy()
    expected = [theta.copy()]
    for idx in batches_of(perm, B):
        theta = theta - h * lsq_grad_np(theta, idx)
        expected.append(theta.copy())
    np.testing.assert_allclose(np.asarray(traj), np.array(expected), rtol=1e-13)


def test_epoch_endpoints_are_the_epochs_of_each_permutation():
    h, B = 0.07, 3
    perms = st.all_permutations(N)[::97]
    ends = st.sgd_epoch_endpoints(fact_batch_loss, THETA_F, FACT_DATA, h, batch_size=B, permutations=perms)
    for j, p in enumerate(perms):
        one = st.sgd_epoch(fact_batch_loss, THETA_F, st.split_batches(FACT_DATA, B, p), h)[-1]
        np.testing.assert_allclose(np.asarray(ends[j]), np.asarray(one), rtol=1e-13)


def test_sgd_reshuffles_every_epoch_and_is_full_batch_gd_at_B_equal_N():
    h, key = 0.05, jax.random.PRNGKey(4)
    run = st.sgd(fact_batch_loss, THETA_F, FACT_DATA, h, batch_size=2, epochs=3, key=key)
    theta = THETA_F
    for e in range(3):
        perm = jax.random.permutation(jax.random.fold_in(key, e), N)
        theta = st.sgd_epoch(fact_batch_loss, theta, st.split_batches(FACT_DATA, 2, perm), h)[-1]
        np.testing.assert_allclose(np.asarray(run[e + 1]), np.asarray(theta), rtol=1e-13)
    full = st.sgd(fact_batch_loss, THETA_F, FACT_DATA, h, batch_size=N, epochs=5, key=key)
    E = st.full_loss(fact_batch_loss, st.split_batches(FACT_DATA, N))
    np.testing.assert_allclose(np.asarray(full), np.asarray(igr.gradient_descent(E, THETA_F, h, 5)), rtol=1e-12)


def _one_epoch_errors(hs, B, reshuffled):
    """Distance after one epoch between the exact mean SGD iterate and three flows, for each step h."""
    m = N // B
    E = st.full_loss(fact_batch_loss, st.split_batches(FACT_DATA, N))
    if reshuffled:
        perms = st.all_permutations(N)  # all 720 orderings of the examples: random reshuffling exactly
    else:  # the fixed partition {0,1}, {2,3}, {4,5} in all m! orders
        perms = np.array([np.concatenate([np.arange(k * B, (k + 1) * B) for k in order]) for order in st.all_permutations(m)])
    out = []
    for h in hs:
        mean = np.asarray(st.sgd_epoch_endpoints(fact_batch_loss, THETA_F, FACT_DATA, h, batch_size=B, permutations=perms)).mean(0)
        ts = jnp.array([0.0, st.epoch_time(h, N, B)])
        f_sgd = st.sgd_modified_flow(fact_batch_loss, THETA_F, FACT_DATA, h, batch_size=B, times=ts, reshuffled=reshuffled)[-1]
        f_gd = igr.modified_flow(E, THETA_F, h, ts)[-1]
        f_0 = igr.gradient_flow(E, THETA_F, ts)[-1]
        out.append([np.linalg.norm(mean - np.asarray(f)) for f in (f_sgd, f_gd, f_0)])
    return np.array(out)


@pytest.mark.parametrize("reshuffled", [True, False])
def test_mean_sgd_epoch_follows_the_sgd_modified_flow_to_third_order(reshuffled):
    """Smith et al. (2021): E[θ after one epoch] = flow of E_SGD at time m·h + O(h³); GD's modified flow is O(h²) off."""
    hs = 0.01 / 2.0 ** np.arange(4)
    err = _one_epoch_errors(hs, 2, reshuffled)
    p_sgd = igr.convergence_order(hs, err[:, 0])
    p_gd = igr.convergence_order(hs, err[:, 1])
    p_gf = igr.convergence_order(hs, err[:, 2])
    assert 2.8 < p_sgd < 3.3, p_sgd
    assert 1.8 < p_gd < 2.2, p_gd
    assert 1.8 < p_gf < 2.2, p_gf
    assert np.all(err[:, 0] < err[:, 1])


def test_sgd_modified_flow_with_one_batch_is_gd_modified_flow():
    h = 0.05
    ts = jnp.linspace(0.0, 1.0, 5)
    E = st.full_loss(fact_batch_loss, st.split_batches(FACT_DATA, N))
    a = st.sgd_modified_flow(fact_batch_loss, THETA_F, FACT_DATA, h, batch_size=N, times=ts)
    b = igr.modified_flow(E, THETA_F, h, ts)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-10)


def test_gd_with_sgd_regularizer_is_gd_on_the_modified_loss():
    lr, reg_lr, B, steps = 0.02, 0.3, 2, 25
    fixed = st.gd_with_sgd_regularizer(fact_batch_loss, THETA_F, FACT_DATA, lr, reg_lr=reg_lr, batch_size=B, steps=steps, fixed_partition=True)
    L = st.sgd_modified_loss(fact_batch_loss, st.split_batches(FACT_DATA, B), reg_lr)
    np.testing.assert_allclose(np.asarray(fixed), np.asarray(igr.gradient_descent(L, THETA_F, lr, steps)[-1]), rtol=1e-12)
    # with a fresh partition per step: the first step is GD on that step's partition
    key = jax.random.PRNGKey(9)
    one = st.gd_with_sgd_regularizer(fact_batch_loss, THETA_F, FACT_DATA, lr, reg_lr=reg_lr, batch_size=B, steps=1, key=key)
    perm = jax.random.permutation(jax.random.fold_in(key, 0), N)
    L0 = st.sgd_modified_loss(fact_batch_loss, st.split_batches(FACT_DATA, B, perm), reg_lr)
    np.testing.assert_allclose(np.asarray(one), np.asarray(THETA_F - lr * jax.grad(L0)(THETA_F)), rtol=1e-13)


def _gd_on_fresh_partitions_numpy(lr, reg_lr, B, steps, key):
    """GD on E + (h_reg/4m)·Σₖ‖∇Êₖ‖² with step i on the partition of permutation(fold_in(key, i)), step by step."""
    theta = THETA_F
    for i in range(steps):
        perm = jax.random.permutation(jax.random.fold_in(key, i), N)
        L = st.sgd_modified_loss(fact_batch_loss, st.split_batches(FACT_DATA, B, perm), reg_lr)
        theta = theta - lr * jax.grad(L)(theta)
    return np.asarray(theta)


def test_gd_with_sgd_regularizer_draws_fresh_partitions_by_default():
    """Without a key every step regularizes a fresh random partition (key PRNGKey(0)), not the data's order.

    The old default regularized one fixed partition, and chapter 8 then measured the batch-gradient variance on
    that same partition: the run had minimized exactly the quantity its bar showed. Fails on that code.
    """
    lr, reg_lr, B, steps = 0.02, 0.3, 2, 6
    default = np.asarray(st.gd_with_sgd_regularizer(fact_batch_loss, THETA_F, FACT_DATA, lr, reg_lr=reg_lr, batch_size=B, steps=steps))
    expected = _gd_on_fresh_partitions_numpy(lr, reg_lr, B, steps, jax.random.PRNGKey(0))
    np.testing.assert_allclose(default, expected, rtol=1e-12)
    fixed = np.asarray(st.gd_with_sgd_regularizer(fact_batch_loss, THETA_F, FACT_DATA, lr, reg_lr=reg_lr, batch_size=B, steps=steps,
                                                  fixed_partition=True))
    assert np.linalg.norm(default - fixed) > 1e-6, "the default must not be the fixed partition"
    with pytest.raises(ValueError, match="fixed_partition"):
        st.gd_with_sgd_regularizer(fact_batch_loss, THETA_F, FACT_DATA, lr, reg_lr=reg_lr, batch_size=B, steps=1, key=jax.random.PRNGKey(1),
                                   fixed_partition=True)


def test_gd_with_sgd_regularizer_vmaps_over_seeds():
    """Initializations and keys may be traced: one vmap runs several seeds, each equal to its own call."""
    lr, reg_lr, B, steps = 0.02, 0.3, 3, 5
    inits = jnp.stack([THETA_F, THETA_F + 0.1, THETA_F - 0.2])
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    run = jax.vmap(lambda p, k: st.gd_with_sgd_regularizer(fact_batch_loss, p, FACT_DATA, lr, reg_lr=reg_lr, batch_size=B, steps=steps, key=k))
    out = np.asarray(run(inits, keys))
    for j in range(3):
        one = st.gd_with_sgd_regularizer(fact_batch_loss, inits[j], FACT_DATA, lr, reg_lr=reg_lr, batch_size=B, steps=steps, key=keys[j])
        np.testing.assert_allclose(out[j], np.asarray(one), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rates_are_rejected(lr):
    with pytest.raises(ValueError, match="lr"):
        st.sgd(fact_batch_loss, THETA_F, FACT_DATA, lr, batch_size=2, epochs=1, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="lr"):
        st.sgd_modified_loss(fact_batch_loss, st.split_batches(FACT_DATA, 2), lr)


def test_divergence_is_reported():
    with pytest.raises(igr.DivergenceError, match="smaller learning rate"):
        st.sgd(lsq_batch_loss, THETA_L * 1e3, LSQ_DATA, 1e3, batch_size=2, epochs=200, key=jax.random.PRNGKey(0))
    with pytest.raises(igr.DivergenceError):
        st.gd_with_sgd_regularizer(lsq_batch_loss, THETA_L * 1e3, LSQ_DATA, 1e3, reg_lr=0.1, batch_size=2, steps=400)


def test_bad_permutations_and_losses_are_rejected():
    with pytest.raises(ValueError, match="permutations"):
        st.sgd_epoch_endpoints(fact_batch_loss, THETA_F, FACT_DATA, 0.1, batch_size=2, permutations=np.zeros((3, 5), int))
    with pytest.raises(ValueError, match="scalar"):
        st.sgd_epoch(lambda p, b: b[0] * p[0], THETA_F, st.split_batches(FACT_DATA, 2), 0.1)


def test_epoch_time():
    assert st.epoch_time(0.1, 6, 2) == pytest.approx(0.3)
    assert math.isclose(st.finite_population_factor(6, 6), 0.0)


def test_old_spellings_of_the_sgd_functions_still_work_with_a_warning():
    """0.1.0's calls (everything by position, the examples as data=) give the new calls' results, each with a
    DeprecationWarning that names the keywords; a clash or one positional argument too many is a TypeError."""
    key, h, B = jax.random.PRNGKey(3), 0.1, 2
    new = st.sgd(fact_batch_loss, THETA_F, FACT_DATA, h, batch_size=B, epochs=2, key=key)
    with pytest.warns(DeprecationWarning, match="pass batch_size=, epochs=, key= by keyword"):
        old = st.sgd(fact_batch_loss, THETA_F, FACT_DATA, h, B, 2, key)
    np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    with pytest.warns(DeprecationWarning, match="data= is now called examples="):
        renamed = st.sgd(fact_batch_loss, THETA_F, data=FACT_DATA, lr=h, batch_size=B, epochs=2, key=key)
    np.testing.assert_array_equal(np.asarray(renamed), np.asarray(new))
    with pytest.warns(DeprecationWarning, match="pass reg_lr=, batch_size=, steps= by keyword"):
        st.gd_with_sgd_regularizer(fact_batch_loss, THETA_F, FACT_DATA, h, 0.05, B, 1)
    with pytest.raises(TypeError, match="both by position and as batch_size="):
        st.sgd(fact_batch_loss, THETA_F, FACT_DATA, h, B, batch_size=B, epochs=2, key=key)
    with pytest.raises(TypeError, match="takes 4 positional arguments"):
        st.sgd_modified_flow(fact_batch_loss, THETA_F, FACT_DATA, h, B, np.linspace(0, 1, 3), True)
    with pytest.raises(TypeError, match="both data= and its new name examples="):
        st.split_batches(data=FACT_DATA, examples=FACT_DATA, batch_size=B)
