"""The MLP, its training loops (GD, SGD, EGR, RK4), the robustness metric and the experiments of chapters 6–7.

Every training rule is checked against an independent computation: hand-written steps with ``jax.grad`` of
the loss (or of the explicit regularized loss for EGR), a hand-written RK4 step, NumPy forward passes, and
the exact gradient flow. Shapes are tiny and, where the comparison is tight, float64 (conftest enables it).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import igr_tutorial as igr
from igr_tutorial import experiments as ex
from igr_tutorial.data import Dataset
from igr_tutorial.nets import accuracy, classification_loss, cross_entropy, init_mlp, mlp_apply
from igr_tutorial.train import (
    History,
    implicit_strength_for,
    perturbed_accuracies,
    perturbed_accuracy,
    stacked_init,
    train,
    train_loss_fn,
    train_sweep,
)
from igr_tutorial.tree import num_parameters, tree_sq_norm

SIZES = [3, 5, 4, 3]  # d_in, two hidden layers, classes
STEPS, EVERY = 4, 1  # most runs share these, so that they share one compiled training loop


def blobs(n_train=24, n_test=12, d=3, classes=3, dtype=np.float64, seed=0, spread=1.0) -> Dataset:
    """Gaussian blobs around ``classes`` random centres; balanced labels ``0, 1, …, classes-1, 0, …``."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(classes, d))

    def draw(n):
        y = np.arange(n) % classes
        return (centres[y] + spread * rng.normal(size=(n, d))).astype(dtype), y.astype(np.int32)

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    return Dataset("blobs", xtr, ytr, xte, yte)


@pytest.fixture(scope="module")
def data():
    return blobs()


@pytest.fixture(scope="module")
def params():
    return init_mlp(jax.random.PRNGKey(1), SIZES, dtype=jnp.float64)


def loss_on(data):
    return lambda p: classification_loss(p, jnp.asarray(data.x_train), jnp.asarray(data.y_train))


def manual_descent(loss, params, lr, steps):
    """``steps`` steps ``θ ← θ − lr·∇loss(θ)``, written out with jax.grad (jitted, to keep tests quick)."""
    step = jax.jit(lambda p: jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p)))
    for _ in range(steps):
        params = step(params)
    return params


def assert_trees_close(a, b, rtol=1e-10, atol=1e-12):
    fa, _ = ravel_pytree(a)
    fb, _ = ravel_pytree(b)
    np.testing.assert_allclose(np.asarray(fa), np.asarray(fb), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------------
# nets
# --------------------------------------------------------------------------------------------------


_BIT_FOR_BIT = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from igr_tutorial._random import random_normal, random_split
from igr_tutorial.nets import init_mlp
from igr_tutorial.train import stacked_init
same = []
W = lambda key, dtype: jax.random.normal(jax.random.split(key, 1)[0], (7, 5), dtype) / jnp.sqrt(jnp.asarray(7, dtype))
for dtype, key in ((jnp.float32, jax.random.PRNGKey(4)), (jnp.float64, jax.random.key(4))):  # raw and typed keys
    got = init_mlp(key, [7, 5], dtype=dtype)[0]["W"]
    same.append(bool(np.array_equal(got, W(key, dtype)) and got.dtype == dtype))
    same.append(bool(np.array_equal(jax.random.key_data(random_split(key, 3)),
                                    jax.random.key_data(jax.random.split(key, 3)))))
    same.append(bool(np.array_equal(random_normal(key, (11,), dtype), jax.random.normal(key, (11,), dtype))))
seeds = jax.random.split(jax.random.PRNGKey(5), 3)  # stacked by vmap
stacked = stacked_init(init_mlp, seeds, [7, 5])[0]["W"]
same += [bool(np.array_equal(stacked[i], W(k, jnp.float32))) for i, k in enumerate(seeds)]
# inside a jit (where JAX refuses the -O0 option of a nested jit) the draws are jax.random's too
key = jax.random.PRNGKey(6)
same.append(bool(np.array_equal(jax.jit(init_mlp, static_argnums=1)(key, (7, 5))[0]["W"],
                                jax.jit(W, static_argnums=1)(key, jnp.float32))))
print(len(same), all(same))
"""


def test_init_mlp_draws_are_jax_randoms_bit_for_bit():
    """init_mlp draws through _random.random_split/random_normal (the threefry hash compiled at -O0): with the book's
    XLA flags (not the suite's TEST_XLA_FLAGS, run in a fresh process), the weights are those of jax.random.split and
    jax.random.normal exactly, alone and stacked by vmap, with raw and typed keys, in float32 and float64; so is
    the Lanczos start vector (random_normal of the parameter count)."""
    import os
    import subprocess
    import sys

    from _repo import ROOT, book_environment

    env = {**book_environment(os.environ), "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _BIT_FOR_BIT], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["10", "True"], proc.stdout


def test_init_mlp_shapes_and_parameter_count():
    sizes = [7, 5, 4, 3]
    p = init_mlp(jax.random.PRNGKey(0), sizes)
    assert [(l["W"].shape, l["b"].shape) for l in p] == [((7, 5), (5,)), ((5, 4), (4,)), ((4, 3), (3,))]
    assert num_parameters(p) == sum((sizes[i] + 1) * sizes[i + 1] for i in range(len(sizes) - 1)) == 79
    assert all(float(jnp.abs(l["b"]).max()) == 0 for l in p)
    assert p[0]["W"].dtype == jnp.float32
    assert init_mlp(jax.random.PRNGKey(0), sizes, dtype=jnp.float64)[0]["W"].dtype == jnp.float64


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
def test_mlp_apply_matches_a_numpy_forward_pass(params, activation):
    x = np.random.default_rng(3).normal(size=(6, SIZES[0]))
    act = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "softplus": lambda z: np.log1p(np.exp(z))}[activation]
    h = x
    layers = [(np.asarray(l["W"]), np.asarray(l["b"])) for l in params]
    for W, b in layers[:-1]:
        h = act(h @ W + b)
    expected = h @ layers[-1][0] + layers[-1][1]
    np.testing.assert_allclose(np.asarray(mlp_apply(params, jnp.asarray(x), activation)), expected, rtol=1e-12)


def test_cross_entropy_matches_numpy_log_softmax():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -np.mean(logp[np.arange(5), labels])
    got = float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels, jnp.int32)))
    assert got == pytest.approx(expected, rel=1e-12)


def test_accuracy_on_hand_made_logits():
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 5.0, 1.0], [0.0, 0.0, 3.0], [9.0, 0.0, 0.0]])
    assert float(accuracy(logits, jnp.array([0, 1, 2, 0]))) == 1.0
    assert float(accuracy(logits, jnp.array([0, 1, 0, 1]))) == 0.5
    assert float(accuracy(logits, jnp.array([1, 0, 0, 1]))) == 0.0


def test_bad_activation_and_sizes_raise(params):
    with pytest.raises(ValueError, match="activation must be one of"):
        mlp_apply(params, jnp.ones((2, SIZES[0])), "sigmoid")
    for sizes in ([3], [3, 0, 2], []):
        with pytest.raises(ValueError, match="sizes must"):
            init_mlp(jax.random.PRNGKey(0), sizes)


# --------------------------------------------------------------------------------------------------
# train: every update rule against an independent computation
# --------------------------------------------------------------------------------------------------


def test_gd_equals_manual_gradient_steps(data, params):
    final, _ = train(params, data, 0.3, STEPS, record_every=EVERY)
    assert_trees_close(final, manual_descent(loss_on(data), params, 0.3, STEPS))


def test_egr_equals_gd_on_the_explicitly_regularized_loss(data, params):
    """EGR (jvp route in train.py) = GD on E + μ‖∇E‖², differentiated directly with jax.grad."""
    lr, mu = 0.2, 0.15
    final, _ = train(params, data, lr, STEPS, method="egr", mu=mu, record_every=EVERY)
    loss = loss_on(data)
    regularized = lambda p: loss(p) + mu * tree_sq_norm(jax.grad(loss)(p))  # noqa: E731
    assert_trees_close(final, manual_descent(regularized, params, lr, STEPS))
    # and μ = 0 is plain GD
    assert_trees_close(train(params, data, lr, STEPS, method="egr", mu=0.0, record_every=EVERY)[0],
                       train(params, data, lr, STEPS, record_every=EVERY)[0])


def test_rk4_one_step_equals_a_hand_written_rk4_step(data, params):
    h = 0.4
    x0, unravel = ravel_pytree(params)
    loss = loss_on(data)
    f = jax.jit(lambda x: -jax.grad(lambda y: loss(unravel(y)))(x))
    k1 = f(x0)
    k2 = f(x0 + h / 2 * k1)
    k3 = f(x0 + h / 2 * k2)
    k4 = f(x0 + h * k3)
    expected = x0 + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    final, _ = train(params, data, h, 1, method="rk4", record_every=1)
    np.testing.assert_allclose(np.asarray(ravel_pytree(final)[0]), np.asarray(expected), rtol=1e-12, atol=1e-14)


def test_rk4_follows_the_gradient_flow_to_fourth_order_and_gd_to_first(data, params):
    """Global error at t = T against the exact flow: ≈ C·h⁴ for RK4, ≈ C·h for GD (float64)."""
    T, hs = 1.6, [0.4, 0.2, 0.1]  # 4, 8, 16 steps
    x0, unravel = ravel_pytree(params)
    loss = loss_on(data)
    exact = igr.gradient_flow(lambda x: loss(unravel(x)), x0, jnp.array([0.0, T]))[-1]
    errors = {"gd": [], "rk4": []}
    for h in hs:
        steps = round(T / h)
        for method in errors:
            final, _ = train(params, data, h, steps, method=method, record_every=EVERY)
            errors[method].append(float(jnp.linalg.norm(ravel_pytree(final)[0] - exact)))
    order_gd = igr.convergence_order(hs, errors["gd"])
    order_rk4 = igr.convergence_order(hs, errors["rk4"])
    assert 0.8 < order_gd < 1.3, errors
    assert 3.5 < order_rk4 < 4.6, errors
    assert all(e_rk4 < 1e-2 * e_gd for e_rk4, e_gd in zip(errors["rk4"], errors["gd"])), errors


def test_sgd_with_the_full_batch_is_gd(data, params):
    n = data.x_train.shape[0]
    sgd, _ = train(params, data, 0.3, STEPS, method="sgd", batch_size=n, key=jax.random.PRNGKey(5),
                   record_every=EVERY)
    gd, _ = train(params, data, 0.3, STEPS, record_every=EVERY)
    assert_trees_close(sgd, gd, rtol=1e-9)


def test_sgd_uses_every_example_exactly_once_per_epoch_and_reshuffles():
    """One-hot inputs: example i moves only row i of W. With a tiny step the move is (uses of i) × (the
    first-order change of one use), so the rows tell how often each example was used."""
    n, batch, classes = 12, 4, 3
    per_epoch = n // batch
    y = (np.arange(n) % classes).astype(np.int32)
    data = Dataset("onehot", np.eye(n), y, np.eye(n)[:3], y[:3])
    p0 = init_mlp(jax.random.PRNGKey(2), [n, classes], dtype=jnp.float64)
    lr, key = 1e-6, jax.random.PRNGKey(11)
    W0, b0 = np.asarray(p0[0]["W"]), np.asarray(p0[0]["b"])
    logits = W0 + b0
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    one_use = -lr / batch * (soft - np.eye(classes)[y])  # change of row i from one use of example i

    def uses(steps):
        final, _ = train(p0, data, lr, steps, method="sgd", batch_size=batch, key=key, record_every=1)
        dW = np.asarray(final[0]["W"]) - W0
        counts = np.sum(dW * one_use, axis=1) / np.sum(one_use * one_use, axis=1)
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
        return np.round(counts).astype(int)

    np.testing.assert_array_equal(uses(per_epoch), np.ones(n))  # each example exactly once in epoch 1
    first_of_epoch1 = set(np.flatnonzero(uses(1)))
    counts = uses(per_epoch + 1)
    assert set(counts) == {1, 2}
    first_of_epoch2 = set(np.flatnonzero(counts == 2))
    assert len(first_of_epoch1) == len(first_of_epoch2) == batch
    assert first_of_epoch1 != first_of_epoch2  # reshuffled every epoch


def test_history_records_and_metrics(data, params):
    final, hist = train(params, data, 0.3, STEPS, record_every=EVERY)
    assert isinstance(hist, History)
    np.testing.assert_array_equal(hist.step, np.arange(STEPS + 1))
    for arr in (hist.train_loss, hist.train_accuracy, hist.test_loss, hist.test_accuracy, hist.grad_norm_sq):
        assert arr.shape == (STEPS + 1,)
    loss = loss_on(data)
    xte, yte = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    assert hist.train_loss[0] == pytest.approx(float(loss(params)), rel=1e-12)
    assert hist.train_loss[-1] == pytest.approx(float(loss(final)), rel=1e-12)
    assert hist.test_loss[-1] == pytest.approx(float(classification_loss(final, xte, yte)), rel=1e-12)
    assert hist.test_accuracy[-1] == float(accuracy(mlp_apply(final, xte), yte))
    # ‖∇E‖² at the final parameters, from the flattened loss
    x, unravel = ravel_pytree(final)
    g = jax.grad(lambda v: loss(unravel(v)))(x)
    assert hist.grad_norm_sq[-1] == pytest.approx(float(jnp.sum(g**2)), rel=1e-10)
    m = num_parameters(params)
    np.testing.assert_allclose(hist.r_ig(m), hist.grad_norm_sq / m)
    # the record at step 2 is the state after 2 steps
    assert hist.train_loss[2] == pytest.approx(float(loss(manual_descent(loss, params, 0.3, 2))), rel=1e-12)
    # every second step: records at 0, 2, 4 with the same values
    _, every2 = train(params, data, 0.3, STEPS, record_every=2)
    np.testing.assert_array_equal(every2.step, [0, 2, 4])
    np.testing.assert_allclose(every2.train_loss, hist.train_loss[::2], rtol=1e-12)


def test_default_record_every_divides_the_steps(data, params):
    _, hist = train(params, data, 0.1, 45)  # 45 // 20 = 2 does not divide 45: the largest divisor ≤ 2 is 1
    np.testing.assert_array_equal(hist.step, np.arange(46))


# --------------------------------------------------------------------------------------------------
# train_sweep and stacked initializations
# --------------------------------------------------------------------------------------------------


def test_train_sweep_vmap_equals_loop_equals_single_runs(data, params):
    lrs = [0.1, 0.3, 0.5]
    f_vmap, h_vmap = train_sweep(params, data, lrs, STEPS, record_every=EVERY, mode="vmap")
    f_loop, h_loop = train_sweep(params, data, lrs, STEPS, record_every=EVERY, mode="loop")
    assert_trees_close(f_vmap, f_loop, rtol=1e-9)
    np.testing.assert_allclose(h_vmap.train_loss, h_loop.train_loss, rtol=1e-9)
    np.testing.assert_allclose(h_vmap.grad_norm_sq, h_loop.grad_norm_sq, rtol=1e-9)
    assert h_vmap.train_loss.shape == (3, STEPS + 1)
    np.testing.assert_array_equal(h_vmap.step, np.arange(STEPS + 1))
    for i, lr in enumerate(lrs):
        single, hist = train(params, data, lr, STEPS, record_every=EVERY)
        assert_trees_close(jax.tree.map(lambda x: x[i], f_vmap), single, rtol=1e-9)
        np.testing.assert_allclose(h_vmap.test_accuracy[i], hist.test_accuracy)


def test_stacked_init_gives_one_initialization_per_seed(data):
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    stacked = stacked_init(init_mlp, keys, SIZES, dtype=jnp.float64)
    assert stacked[0]["W"].shape == (3, SIZES[0], SIZES[1])
    for i in range(3):
        assert_trees_close(jax.tree.map(lambda x: x[i], stacked), init_mlp(keys[i], SIZES, dtype=jnp.float64), rtol=0)
    m = num_parameters(init_mlp(keys[0], SIZES))
    assert implicit_strength_for(0.2, stacked) == implicit_strength_for(0.2, init_mlp(keys[0], SIZES)) == 0.2 * m / 4


def test_train_sweep_per_seed_sgd_and_egr_match_single_runs(data):
    """One initialization and one SGD key per run (stacked), in both sweep modes; and EGR's μ per run."""
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    stacked = stacked_init(init_mlp, keys, SIZES, dtype=jnp.float64)
    lrs, steps, batch = [0.2, 0.4], STEPS, 8
    sgd_keys = jax.random.split(jax.random.PRNGKey(9), 2)
    for mode in ("vmap", "loop"):
        finals, _ = train_sweep(stacked, data, lrs, steps, method="sgd", batch_size=batch, keys=sgd_keys,
                                record_every=EVERY, mode=mode)
        for i in range(2):
            p_i = jax.tree.map(lambda x: x[i], stacked)
            single, _ = train(p_i, data, lrs[i], steps, method="sgd", batch_size=batch, key=sgd_keys[i],
                              record_every=EVERY)
            assert_trees_close(jax.tree.map(lambda x: x[i], finals), single, rtol=1e-9)
    mus = [0.0, 0.3]
    finals, _ = train_sweep(stacked, data, lrs, steps, mus=mus, method="egr", record_every=EVERY, mode="loop")
    single, _ = train(jax.tree.map(lambda x: x[1], stacked), data, lrs[1], steps, method="egr", mu=mus[1],
                      record_every=EVERY)
    assert_trees_close(jax.tree.map(lambda x: x[1], finals), single, rtol=1e-9)


# --------------------------------------------------------------------------------------------------
# Bad inputs and divergence
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(method="adam"), r"method must be one of \('gd', 'sgd', 'egr', 'rk4'\)"),
        (dict(method="sgd"), "SGD needs 1 <= batch_size"),
        (dict(method="sgd", batch_size=0), "SGD needs 1 <= batch_size"),
        (dict(method="sgd", batch_size=10_000), "SGD needs 1 <= batch_size"),
        (dict(batch_size=4), "batch_size is only used by method='sgd'"),
        (dict(record_every=5), "record_every must be a positive divisor of steps=12"),
        (dict(record_every=0), "record_every must be a positive divisor"),
        (dict(method="egr", mu=-0.1), "mu must be a finite number >= 0"),
        (dict(method="egr", mu=float("nan")), "mu must be a finite number >= 0"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(lr=-0.1), "lr must be > 0"),
        (dict(lr=float("inf")), "lr must be a finite number"),
        (dict(steps=0), "steps must be a positive integer"),
    ],
)
def test_bad_inputs_raise_clear_errors(data, params, kwargs, phrase):
    kwargs = {"lr": 0.1, "steps": 12, "record_every": 1, **kwargs}
    lr, steps = kwargs.pop("lr"), kwargs.pop("steps")
    with pytest.raises(ValueError, match=phrase):
        train(params, data, lr, steps, **kwargs)


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(lrs=[]), "lrs must be a non-empty"),
        (dict(lrs=[0.1, -1.0]), "every entry of lrs must be > 0"),
        (dict(method="egr", mus=[0.1, -0.1]), "mu must be a finite number >= 0"),
        (dict(mus=[0.1, 0.2, 0.3]), "mus must be one number or one per learning rate"),
        (dict(mode="pmap"), "mode must be 'auto', 'vmap' or 'loop'"),
        (dict(method="gd", batch_size=4), "batch_size is only used"),
    ],
)
def test_bad_sweep_inputs_raise_clear_errors(data, params, kwargs, phrase):
    kwargs = {"lrs": [0.1, 0.2], **kwargs}
    with pytest.raises(ValueError, match=phrase):
        train_sweep(params, data, kwargs.pop("lrs"), 4, **kwargs)


def test_a_diverging_run_raises_naming_the_step_unless_allowed():
    data = blobs(dtype=np.float32)
    p = init_mlp(jax.random.PRNGKey(0), SIZES)  # float32: cross-entropy gradients are bounded, so it
    with pytest.raises(igr.DivergenceError, match=r"training diverged: .* by step \d+ with lr=1e\+38"):  # takes a huge h
        train(p, data, 1e38, STEPS, record_every=EVERY)
    _, hist = train(p, data, 1e38, STEPS, record_every=EVERY, allow_divergence=True)
    assert not np.all(np.isfinite(hist.train_loss))


# --------------------------------------------------------------------------------------------------
# Robustness metric
# --------------------------------------------------------------------------------------------------


def test_perturbed_accuracy_at_zero_noise_is_test_accuracy_and_at_huge_noise_is_chance():
    data = blobs(n_train=60, n_test=60, spread=0.3, seed=1)
    p0 = init_mlp(jax.random.PRNGKey(0), SIZES, dtype=jnp.float64)
    trained, hist = train(p0, data, 1.0, 100, record_every=100)
    clean = float(accuracy(mlp_apply(trained, jnp.asarray(data.x_test)), jnp.asarray(data.y_test)))
    assert clean > 0.8  # learnable blobs: far above chance, so a drop to chance is visible
    acc = perturbed_accuracy(trained, data, [0.0, 1e4], jax.random.PRNGKey(3), num_draws=40)
    assert acc.shape == (2,)
    assert acc[0] == pytest.approx(clean, abs=1e-6) and acc[0] == pytest.approx(hist.test_accuracy[-1], abs=1e-6)
    assert abs(acc[1] - 1 / 3) < 0.12, acc


def test_sweep_noise_robustness_matches_numpy_forward_passes_with_the_same_noise():
    """The sweeps' batched robustness metric: run j's accuracy under θ + σ·ε, ε drawn flat from PRNGKey(7 + seed),
    equals NumPy forward passes of the same noisy weights; σ = 0 gives the clean test accuracy."""
    data = blobs(n_train=60, n_test=60, spread=0.3, seed=1)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(2)])
    finals = stacked_init(init_mlp, keys, SIZES, dtype=jnp.float64)
    size = dataclasses.replace(ex.SIZES["tiny"], noise_ratios=(0.0, 0.3, 1.0), noise_draws=3)
    got = ex._noisy_accuracies(finals, data, size, seeds=[4, 9])
    assert got.shape == (2, 3)
    for j, seed in enumerate([4, 9]):
        params = jax.tree.map(lambda x: np.asarray(x[j]), finals)
        flat, unravel = ravel_pytree(params)
        rms = np.sqrt(np.mean(np.asarray(flat) ** 2))  # the noise is relative to this network's weight scale
        sigmas = [r * rms for r in size.noise_ratios]
        eps = np.asarray(jax.random.normal(jax.random.PRNGKey(7 + seed), (3, flat.size), jnp.float64))
        for i, sigma in enumerate(sigmas):
            accs = []
            for e in eps:
                h = np.asarray(data.x_test)
                layers = unravel(jnp.asarray(np.asarray(flat) + sigma * e))
                for layer in layers[:-1]:
                    h = np.tanh(h @ np.asarray(layer["W"]) + np.asarray(layer["b"]))
                logits = h @ np.asarray(layers[-1]["W"]) + np.asarray(layers[-1]["b"])
                accs.append(np.mean(np.argmax(logits, axis=1) == np.asarray(data.y_test)))
            assert got[j, i] == pytest.approx(np.mean(accs), abs=1e-6)  # float32 mean; one example is 1/60
        # the public single-run function is the same program on one run
        one = perturbed_accuracy(jax.tree.map(lambda x: x[j], finals), data, sigmas, jax.random.PRNGKey(7 + seed),
                                 num_draws=3)
        np.testing.assert_allclose(one, got[j], atol=1e-12)
    assert got[0, 1] != got[0, 2]  # the noise does something
    with pytest.raises(ValueError, match="one row per run"):
        perturbed_accuracies(finals, data, np.zeros((3, 2)), jnp.stack([jax.random.PRNGKey(0)] * 2))


# --------------------------------------------------------------------------------------------------
# Experiments: size selection and the paper configuration's code path on tiny shapes
# --------------------------------------------------------------------------------------------------


def test_gpu_size_is_between_small_and_paper_and_needs_no_download():
    small, gpu, paper = ex.SIZES["small"], ex.SIZES["gpu"], ex.SIZES["paper"]
    assert gpu.dataset == "mnist1d"  # generated: runs offline
    assert gpu.seeds >= 3 and paper.seeds >= 3 and small.seeds >= 5
    assert small.depth < gpu.depth and max(small.widths) <= min(gpu.widths) and max(gpu.widths) < min(paper.widths)
    assert small.num_train < gpu.num_train >= 10_000 and small.seeds >= 8 and small.egr_seeds >= 5
    for size in (small, gpu, paper, ex.SIZES["tiny"]):  # every sweep's step counts and records are whole numbers
        ex.equal_time_schedule(size.lrs, size.horizon, size.record_time)
        ex.equal_time_schedule((size.egr_lr, *size.egr_partners), size.egr_horizon, size.egr_horizon / 8)
        assert size.egr_mus == tuple((h - size.egr_lr) / 4 for h in size.egr_partners) and min(size.egr_mus) > 0


def test_select_size(monkeypatch):
    monkeypatch.delenv("IGR_TUTORIAL_SIZE", raising=False)
    assert ex.select_size("tiny") is ex.SIZES["tiny"]
    assert ex.select_size("paper") is ex.SIZES["paper"]
    custom = dataclasses.replace(ex.SIZES["tiny"], horizon=10.0)
    assert ex.select_size(custom) is custom
    assert jax.default_backend() == "cpu"
    assert ex.select_size().name == "small"  # default on a CPU
    monkeypatch.setattr(ex.jax, "default_backend", lambda: "gpu")
    assert ex.select_size().name == "gpu"  # default on a GPU; "paper" only by name
    monkeypatch.setattr(ex.jax, "default_backend", lambda: "tpu")
    assert ex.select_size().name == "gpu"
    monkeypatch.undo()
    monkeypatch.delenv("IGR_TUTORIAL_SIZE", raising=False)
    monkeypatch.setenv("IGR_TUTORIAL_SIZE", "tiny")
    assert ex.select_size().name == "tiny"
    assert ex.select_size("small").name == "small"  # an explicit name wins over the environment
    monkeypatch.setenv("IGR_TUTORIAL_SIZE", "huge")
    with pytest.raises(ValueError, match=r"size must be one of \['gpu', 'paper', 'small', 'tiny'\], got 'huge'"):
        ex.select_size()
    with pytest.raises(ValueError, match="got 'nope'"):
        ex.select_size("nope")


def test_load_data_subsets_mnist1d():
    size = dataclasses.replace(ex.SIZES["tiny"], num_train=50, num_test=30)
    d = ex.load_data(size)
    assert d.x_train.shape == (50, 40) and d.x_test.shape == (30, 40) and d.num_classes == 10


@pytest.fixture(scope="module")
def paper_on_tiny_shapes():
    """SIZES["paper"] (MNIST-shaped inputs, depth 4, its μ and σ grids) with tiny widths, steps and data."""
    size = dataclasses.replace(ex.SIZES["paper"], widths=(8,), depth=4, lrs=(0.25, 0.5), horizon=8.0, record_time=2.0,
                               target_loss=2.28, seeds=2, num_train=64, num_test=32, egr_width=8, egr_lr=0.125,
                               egr_partners=(0.25, 0.5), egr_horizon=4.0, egr_seeds=2, trace_samples=4)
    rng = np.random.default_rng(0)
    fake = Dataset("mnist", rng.random((64, 784), dtype=np.float32), (np.arange(64) % 10).astype(np.int32),
                   rng.random((32, 784), dtype=np.float32), (np.arange(32) % 10).astype(np.int32))
    asked = []

    def load_data(s):
        asked.append(s.dataset)
        return fake

    mp = pytest.MonkeyPatch()
    mp.setattr(ex, "load_data", load_data)
    messages = []
    try:
        out = {
            "sweep": ex.learning_rate_sweep(size, progress=messages.append),
            "egr": ex.egr_sweep(size, progress=messages.append),
            "rk4": ex.rk4_versus_gd(size, progress=messages.append),
        }
    finally:
        mp.undo()
    return size, out, asked, messages


def _all_finite(values):
    return all(v is not None and np.isfinite(v) for v in values)


def test_paper_learning_rate_sweep_on_tiny_shapes(paper_on_tiny_shapes):
    size, out, asked, messages = paper_on_tiny_shapes
    assert asked == ["mnist"] * 3
    res = out["sweep"]
    assert res["size"]["name"] == "paper" and res["size"]["depth"] == 4
    assert res["record_time"] == 2.0 and res["target_loss"] == size.target_loss
    m = (784 + 1) * 8 + 3 * (8 + 1) * 8 + (8 + 1) * 10
    assert len(res["runs"]) == len(size.lrs) * len(size.widths) * size.seeds
    assert [(r["seed"], r["lr"]) for r in res["runs"]] == [(s, lr) for s in range(size.seeds) for lr in size.lrs]
    for run in res["runs"]:
        assert {"width", "seed", "lr", "m", "lambda", "diverged", "reached_target", "stop_time", "train_loss_curve",
                "train_accuracy_curve", "test_accuracy_curve", "r_ig_curve", "sharpness_curve", "peak_sharpness",
                "peak_h_sharpness", "r_ig", "train_loss", "sharpness", "sharpness_converged", "trace", "weight_rms",
                "train_accuracy", "test_accuracy", "perturbed_accuracy"} <= set(run)
        assert run["m"] == m and run["lambda"] == pytest.approx(run["lr"] * m / 4) and run["diverged"] is False
        assert len(run["train_loss_curve"]) == 5  # records at t = 0, 2, 4, 6, 8 for every step size
        assert _all_finite([run["r_ig"], run["sharpness"], run["trace"], run["weight_rms"], run["train_accuracy"],
                            run["test_accuracy"], run["peak_sharpness"]])
        k = len(run["train_loss_curve"]) - 1 if run["stop_time"] is None else int(run["stop_time"] / 2.0)
        assert run["r_ig"] == pytest.approx(run["r_ig_curve"][k]) and run["r_ig"] > 0  # measured at the stop
        assert run["train_loss"] == pytest.approx(run["train_loss_curve"][k])
        assert run["reached_target"] == (run["train_loss"] <= size.target_loss)
        if run["reached_target"]:  # the first record at or below E*, and the records repeat it afterwards
            assert all(v > size.target_loss for v in run["train_loss_curve"][:k])
            assert run["train_loss_curve"][k:] == [run["train_loss"]] * (5 - k)
        assert run["peak_sharpness"] == pytest.approx(max(run["sharpness_curve"][: k + 1]))
        assert run["peak_h_sharpness"] == pytest.approx(run["lr"] * run["peak_sharpness"])
        assert len(run["perturbed_accuracy"]) == len(size.noise_ratios) and _all_finite(run["perturbed_accuracy"])
        assert 0 <= run["test_accuracy"] <= 1
    assert any(r["reached_target"] for r in res["runs"]) and not all(r["reached_target"] for r in res["runs"])
    # Seeds differ (their own initializations); the step sizes of one seed share theirs.
    first = [r for r in res["runs"] if r["lr"] == size.lrs[0]]
    assert first[0]["train_loss_curve"][0] != first[1]["train_loss_curve"][0]
    same_seed = [r for r in res["runs"] if r["seed"] == 0]
    assert same_seed[0]["train_loss_curve"][0] == same_seed[1]["train_loss_curve"][0]
    table = ex.seed_table(res, "test_accuracy")
    assert table["values"].shape == (size.seeds, len(size.lrs))
    assert table["mean"] == pytest.approx(table["values"].mean(axis=0))
    assert table["se"] == pytest.approx(table["values"].std(axis=0, ddof=1) / np.sqrt(size.seeds))
    assert ex.seed_table(res, "perturbed_accuracy")["values"].shape == (size.seeds, len(size.lrs), len(size.noise_ratios))
    assert ex.seed_table(res, "sharpness_curve")["values"].shape == (size.seeds, len(size.lrs), 5)
    assert any("width 8: 2 seeds × 2 step sizes" in msg for msg in messages)


def test_paper_egr_and_rk4_on_tiny_shapes(paper_on_tiny_shapes):
    size, out, _, messages = paper_on_tiny_shapes
    egr = out["egr"]
    assert egr["width"] == 8 and egr["lr"] == size.egr_lr and egr["partners"] == [0.25, 0.5]
    assert egr["mus"] == pytest.approx([(0.25 - 0.125) / 4, (0.5 - 0.125) / 4])
    plan = sorted({(r["method"], r["lr"], r["mu"]) for r in egr["runs"]})
    assert plan == sorted([("gd", 0.125, 0.0), ("gd", 0.25, 0.0), ("gd", 0.5, 0.0), ("egr", 0.125, egr["mus"][0]),
                           ("egr", 0.125, egr["mus"][1]), ("rk4", 0.25, 0.0), ("rk4", 0.5, 0.0)])
    assert len(egr["runs"]) == 7 * size.egr_seeds
    for run in egr["runs"]:
        assert run["diverged"] is False and len(run["sharpness_curve"]) == 9  # t = 0, 0.5, ..., 4
        assert _all_finite([run["test_accuracy"], run["train_accuracy"], run["r_ig"], run["peak_h_sharpness"]])
        assert run["peak_h_sharpness"] == pytest.approx(run["lr"] * max(run["sharpness_curve"]))
    for space in ("params", "logits"):
        d = egr["distances"][space]
        assert np.all(np.array(d["travel"]) > 0) and np.all(np.array(d["egr_gd0"]) > 0)
        np.testing.assert_array_equal(d["rk4_rk4"][0], [0.0, 0.0])  # the smallest partner against itself
    rk4 = out["rk4"]
    assert rk4["lrs"] == list(size.egr_partners) and {r["method"] for r in rk4["runs"]} == {"gd", "rk4"}
    assert len(rk4["runs"]) == 2 * size.egr_seeds * len(size.egr_partners)
    # rk4_versus_gd trains the same runs as egr_sweep's GD partners and RK4 twins: the same numbers
    for run in rk4["runs"]:
        twin = next(r for r in egr["runs"] if (r["method"], r["lr"], r["seed"]) == (run["method"], run["lr"], run["seed"]))
        assert run["train_loss_curve"] == twin["train_loss_curve"] and run["test_accuracy"] == twin["test_accuracy"]
    gd0 = [r for r in rk4["runs"] if r["method"] == "gd" and r["seed"] == 0]
    rk0 = [r for r in rk4["runs"] if r["method"] == "rk4" and r["seed"] == 0]
    assert gd0[0]["train_loss_curve"][0] == rk0[0]["train_loss_curve"][0]  # same start
    assert any(msg.startswith("EGR:") for msg in messages) and any(msg.startswith("RK4") for msg in messages)


def test_egr_sweep_distances_are_the_distances_between_the_trained_networks(monkeypatch):
    """egr_sweep's distances against a direct computation: the same runs trained one by one with `train`."""
    data = blobs(n_train=48, n_test=24, spread=0.5, seed=2)
    data = Dataset("blobs", *(a.astype(np.float32) if a.dtype == np.float64 else a
                              for a in (data.x_train, data.y_train, data.x_test, data.y_test)))
    monkeypatch.setattr(ex, "load_data", lambda s: data)
    size = dataclasses.replace(ex.SIZES["tiny"], egr_width=5, depth=1, egr_lr=0.125, egr_partners=(0.25,),
                               egr_horizon=2.0, egr_seeds=2, sharpness_iters=1)
    res = ex.egr_sweep(size, progress=None)
    layers = [data.x_train.shape[1], 5, data.num_classes]
    for s in range(2):
        p0 = init_mlp(jax.random.PRNGKey(s), layers)
        gd0, _ = train(p0, data, 0.125, 16, record_every=2)
        gd, _ = train(p0, data, 0.25, 8, record_every=1)
        eg, _ = train(p0, data, 0.125, 16, record_every=2, method="egr", mu=0.03125)
        rk, _ = train(p0, data, 0.25, 8, record_every=1, method="rk4")
        flat = {k: np.asarray(ravel_pytree(v)[0], float) for k, v in (("gd0", gd0), ("gd", gd), ("egr", eg), ("rk4", rk),
                                                                     ("init", p0))}
        d = res["distances"]["params"]
        assert d["gd_egr"][0][s] == pytest.approx(np.linalg.norm(flat["gd"] - flat["egr"]), rel=1e-5)
        assert d["egr_gd0"][0][s] == pytest.approx(np.linalg.norm(flat["egr"] - flat["gd0"]), rel=1e-5)
        assert d["gd_gd0"][0][s] == pytest.approx(np.linalg.norm(flat["gd"] - flat["gd0"]), rel=1e-5)
        assert d["gd_rk4"][0][s] == pytest.approx(np.linalg.norm(flat["gd"] - flat["rk4"]), rel=1e-5)
        assert d["travel"][s] == pytest.approx(np.linalg.norm(flat["gd0"] - flat["init"]), rel=1e-5)
        logits = {k: np.asarray(mlp_apply(v, data.x_test)) for k, v in (("gd", gd), ("egr", eg))}
        assert res["distances"]["logits"]["gd_egr"][0][s] == pytest.approx(
            np.sqrt(np.mean((logits["gd"] - logits["egr"]) ** 2)), rel=1e-5)


def test_egr_at_zero_strength_is_gd_exactly():
    """egr_sweep trains EGR at μ = 0 once, as GD at h₀: the update g + 2·0·Hg is g to the last bit."""
    d = blobs(seed=5)
    params = init_mlp(jax.random.PRNGKey(2), SIZES, dtype=jnp.float64)
    gd, h_gd = train(params, d, 0.3, 12, record_every=4)
    egr, h_egr = train(params, d, 0.3, 12, record_every=4, method="egr", mu=0.0)
    for a, b in zip(jax.tree.leaves(gd), jax.tree.leaves(egr)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(h_gd.train_loss, h_egr.train_loss)


def test_target_loss_stops_training_at_a_common_loss():
    """train(..., target_loss=E*) stops at the first record at or below E*: the parameters then stay fixed,
    the recorded loss stays at the value reached, and steps_to_target reports the step; without a target
    the run is the plain one."""
    from igr_tutorial.train import steps_to_target

    d = blobs(seed=4)
    params = init_mlp(jax.random.PRNGKey(0), SIZES, dtype=jnp.float64)
    _, free = train(params, d, 0.5, 40, record_every=4)
    assert np.all(np.diff(free.train_loss) < 0)  # a monotone descent: the target is first reached at step 20
    target = float(free.train_loss[5])  # reached at step 20 by the free run
    stopped, hist = train(params, d, 0.5, 40, record_every=4, target_loss=target)
    np.testing.assert_array_equal(hist.train_loss[:6], free.train_loss[:6])
    assert np.all(hist.train_loss[6:] == hist.train_loss[5])
    assert steps_to_target(hist, target) == 20
    at_20, _ = train(params, d, 0.5, 20, record_every=4)
    for a, b in zip(jax.tree.leaves(stopped), jax.tree.leaves(at_20)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    finals, sweep = train_sweep(params, d, [0.5, 0.05], 40, record_every=4, target_loss=target, mode="vmap")
    assert steps_to_target(sweep, target).tolist() == [20, -1]  # the small step never gets there
    with pytest.raises(ValueError, match="target_loss must be a finite positive number"):
        train(params, d, 0.5, 40, target_loss=-1.0)
    with pytest.raises(ValueError, match="not available for method='sgd'"):
        train(params, d, 0.5, 40, method="sgd", batch_size=8, target_loss=1.0)


def test_sharpness_of_the_training_loss_takes_the_data_as_an_argument():
    """hessian_top_eigenvalue(train_loss_fn(data), …) compiles one Lanczos program per data *shape*: the data
    is an argument of the compiled program, not a constant in it (at paper size, 60k MNIST images)."""
    from igr_tutorial.curvature import _lanczos_top

    params = init_mlp(jax.random.PRNGKey(3), SIZES, dtype=jnp.float64)
    x, unravel = ravel_pytree(params)
    before = _lanczos_top._cache_size()
    for seed in (11, 12):  # two data sets of one shape
        d = blobs(seed=seed)
        loss = train_loss_fn(d)
        got = igr.hessian_top_eigenvalue(loss, params, tol=1e-10).eigenvalue
        dense = jax.hessian(lambda v: classification_loss(unravel(v), d.x_train, d.y_train))(x)
        assert got == pytest.approx(np.linalg.eigvalsh(np.asarray(dense))[-1], rel=1e-8)
    assert _lanczos_top._cache_size() - before == 1, "a second data set of the same shape recompiled Lanczos"


def test_tracked_sharpness_follows_the_dense_hessian_along_the_run():
    """sharpness_iters > 0 records λ_max of the full training loss at every record, by power iteration warm-started
    from the previous record: checked against the top eigenvalue of the dense Hessian at the same iterates."""
    d = blobs(seed=6)
    params = init_mlp(jax.random.PRNGKey(4), SIZES, dtype=jnp.float64)
    final, hist = train(params, d, 0.4, 40, record_every=10, sharpness_iters=30)
    assert hist.sharpness.shape == hist.train_loss.shape == (5,)
    _, plain = train(params, d, 0.4, 40, record_every=10)
    assert plain.sharpness is None
    np.testing.assert_array_equal(plain.train_loss, hist.train_loss)  # tracking does not change the run
    x, unravel = ravel_pytree(params)
    loss = lambda v: classification_loss(unravel(v), d.x_train, d.y_train)
    for k in range(5):
        p_k, _ = train(params, d, 0.4, 10 * k, record_every=10) if k else (params, None)
        top = np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(ravel_pytree(p_k)[0])))[-1]
        assert hist.sharpness[k] == pytest.approx(top, rel=1e-3), k
    with pytest.raises(ValueError, match="sharpness_iters must be a non-negative integer"):
        train(params, d, 0.4, 40, sharpness_iters=-1)


def test_an_equal_time_sweep_is_one_program_with_per_run_step_counts():
    """steps and record_every per run (T/h and Δt/h): every run is the run `train` makes alone, the records fall at
    the same flow times, and the whole sweep compiles one program."""
    from igr_tutorial._runs import program
    from igr_tutorial.train import _train, steps_to_target

    d = blobs(seed=7)
    params = init_mlp(jax.random.PRNGKey(5), SIZES, dtype=jnp.float64)
    lrs, steps, every = [0.1, 0.2, 0.4], [56, 28, 14], [8, 4, 2]  # 7 records: a shape no other test compiles
    single = program(_train, tuple(sorted(dict(num_records=7, method="gd", activation="tanh", batch_size=None,
                                               sharpness_iters=0).items())))
    before = single._cache_size()
    finals, hist = train_sweep(params, d, lrs, steps, record_every=every, mode="loop")
    assert single._cache_size() - before == 1
    assert hist.step.tolist() == [list(range(0, 57, 8)), list(range(0, 29, 4)), list(range(0, 15, 2))]
    for i, (h, n, r) in enumerate(zip(lrs, steps, every)):
        alone, h_alone = train(params, d, h, n, record_every=r)
        assert_trees_close(jax.tree.map(lambda x: x[i], finals), alone, rtol=1e-12)
        np.testing.assert_allclose(hist.train_loss[i], h_alone.train_loss, rtol=1e-12)
    assert single._cache_size() - before == 1  # `train` runs the sweep's compiled program
    f_vmap, h_vmap = train_sweep(params, d, lrs, steps, record_every=every, mode="vmap")
    np.testing.assert_allclose(h_vmap.train_loss, hist.train_loss, rtol=1e-10)
    target = float(hist.train_loss[0, 3])
    _, stopped = train_sweep(params, d, lrs, steps, record_every=every, target_loss=target)
    assert steps_to_target(stopped, target)[0] == 24  # per-run steps of the stop, from the 2-D step array
    with pytest.raises(ValueError, match="same number of records"):
        train_sweep(params, d, lrs, steps, record_every=[8, 4, 7])
    with pytest.raises(ValueError, match="one integer or one per run"):
        train_sweep(params, d, lrs, [56, 28], record_every=[8, 4])
    with pytest.raises(ValueError, match="positive divisor of steps=28"):
        train_sweep(params, d, lrs, steps, record_every=[8, 3, 2])


def test_equal_time_schedule_needs_whole_numbers():
    assert ex.equal_time_schedule([0.125, 0.5, 2.0], 64.0, 8.0) == ([512, 128, 32], [64, 16, 4])
    with pytest.raises(ValueError, match="whole numbers"):
        ex.equal_time_schedule([0.3], 64.0, 8.0)


def test_training_with_sgd_takes_the_batches_stochastic_sgd_takes():
    """One minibatch selector: `train(method="sgd")` and `stochastic.sgd` (random reshuffling from the same key)
    visit the same batches, so three epochs end at the same parameters; a different key does not."""
    from igr_tutorial.stochastic import sgd

    d = blobs(n_train=24, seed=3)
    params = init_mlp(jax.random.PRNGKey(2), SIZES, dtype=jnp.float64)
    key, batch, epochs = jax.random.PRNGKey(11), 6, 3
    final, _ = train(params, d, 0.3, epochs * 24 // batch, method="sgd", batch_size=batch, key=key)
    batch_loss = lambda p, b: classification_loss(p, b[0], b[1])  # noqa: E731
    data = (jnp.asarray(d.x_train), jnp.asarray(d.y_train))
    iterates = sgd(batch_loss, params, data, 0.3, batch_size=batch, epochs=epochs, key=key)
    assert_trees_close(final, jax.tree.map(lambda x: x[-1], iterates), rtol=1e-12)
    other = sgd(batch_loss, params, data, 0.3, batch_size=batch, epochs=epochs, key=jax.random.PRNGKey(12))
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(other)))
    assert gap > 1e-6
