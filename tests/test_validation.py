"""Bad inputs raise ``ValueError`` with a message that says what is wrong (never NaNs or a JAX traceback)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import igr_tutorial as igr


def good_loss(theta):
    return 0.5 * jnp.sum(theta**2)


def vector_loss(theta):  # forgot to reduce: shape (3,)
    return theta**2


def tree_loss(p):
    return jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2)


THETA = jnp.array([1.0, -0.5, 2.0])
TIMES = jnp.linspace(0.0, 1.0, 5)

# Every entry point that takes a learning rate, as lr -> call.
LR_CALLS = {
    "gradient_descent": lambda lr: igr.gradient_descent(good_loss, THETA, lr, 3),
    "modified_flow": lambda lr: igr.modified_flow(good_loss, THETA, lr, TIMES),
    "modified_loss": lambda lr: igr.modified_loss(good_loss, lr),
    "implicit_regularization_strength": lambda lr: igr.implicit_regularization_strength(lr, 10),
    "gradient_descent_sweep": lambda lr: igr.gradient_descent_sweep(good_loss, THETA, [0.1, lr], 3),
}

BAD_LRS = [
    pytest.param(0.0, "must be > 0", id="zero"),
    pytest.param(-0.1, "must be > 0", id="negative"),
    pytest.param(-1, "must be > 0", id="negative-int"),
    pytest.param(np.nan, "finite", id="nan"),
    pytest.param(np.inf, "finite", id="+inf"),
    pytest.param(-np.inf, "finite", id="-inf"),
    pytest.param(jnp.array([0.1, 0.2]), "single number.*vmap", id="array"),
    pytest.param(np.array([[0.1]]), "single number", id="2d-array"),
    pytest.param(1 + 2j, "real number", id="complex"),
    pytest.param("0.1", "real number", id="string"),
    pytest.param(True, "real number", id="bool"),
]


def _lr_cases():
    for name in sorted(LR_CALLS):
        for case in BAD_LRS:
            lr, phrase = case.values
            # Inside lrs an array entry is a different input (test_bad_sweep_lrs), and True in [0.1, True]
            # is converted to 1.0 by numpy before any check can see it.
            if name == "gradient_descent_sweep" and (np.ndim(lr) > 0 or isinstance(lr, bool)):
                continue
            yield pytest.param(name, lr, phrase, id=f"{name}-{case.id}")


@pytest.mark.parametrize("name, lr, phrase", list(_lr_cases()))
def test_bad_learning_rate(name, lr, phrase):
    with pytest.raises(ValueError, match=phrase):
        LR_CALLS[name](lr)


@pytest.mark.parametrize("lr", [0.1, 1, np.float32(0.5), jnp.array(0.25), np.array(0.3)])
def test_good_learning_rates_are_accepted(lr):
    traj = igr.gradient_descent(good_loss, THETA, lr, 2)
    np.testing.assert_allclose(traj[2], (1 - float(lr)) ** 2 * np.asarray(THETA), rtol=1e-6)


@pytest.mark.parametrize(
    "lrs, phrase",
    [
        ([], "non-empty 1-D"),
        (0.1, "non-empty 1-D"),
        ([[0.1, 0.2]], "non-empty 1-D"),
        ([0.1, -0.2], "must be > 0"),
        ([0.1, np.nan], "finite"),
    ],
)
def test_bad_sweep_lrs(lrs, phrase):
    with pytest.raises(ValueError, match=phrase):
        igr.gradient_descent_sweep(good_loss, THETA, lrs, 3)


# Every entry point that takes times, as times -> call.
TIME_CALLS = {
    "gradient_flow": lambda t: igr.gradient_flow(good_loss, THETA, t),
    "modified_flow": lambda t: igr.modified_flow(good_loss, THETA, 0.1, t),
}


@pytest.mark.parametrize(
    "times, phrase",
    [
        pytest.param([0.0, 1.0, 0.5], r"strictly increasing.*times\[2\] = 0.5", id="decreasing"),
        pytest.param([1.0, 0.0], r"strictly increasing", id="reversed"),
        pytest.param([0.0, 0.5, 0.5, 1.0], r"strictly increasing.*times\[2\]", id="repeated"),
        pytest.param(np.zeros((2, 3)), "1-D", id="2-D"),
        pytest.param(np.array([[0.0, 1.0]]), "1-D", id="row-vector"),
        pytest.param([], "non-empty", id="empty"),
        pytest.param(0.5, "1-D", id="scalar"),
        pytest.param([0.0, np.nan, 1.0], "finite", id="nan"),
        pytest.param([0.0, np.inf], "finite", id="inf"),
    ],
)
@pytest.mark.parametrize("name", sorted(TIME_CALLS))
def test_bad_times(name, times, phrase):
    with pytest.raises(ValueError, match=phrase):
        TIME_CALLS[name](times)


# Every entry point that takes a loss and parameters, as (loss, params) -> call.
LOSS_CALLS = {
    "gradient_descent": lambda f, p: igr.gradient_descent(f, p, 0.1, 3),
    "gradient_descent_sweep": lambda f, p: igr.gradient_descent_sweep(f, p, [0.1, 0.2], 3),
    "gradient_flow": lambda f, p: igr.gradient_flow(f, p, TIMES),
    "modified_flow": lambda f, p: igr.modified_flow(f, p, 0.1, TIMES),
    "r_ig": lambda f, p: igr.r_ig(f, p),
    "modified_loss": lambda f, p: igr.modified_loss(f, 0.1)(p),
}


@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_non_scalar_loss(name):
    with pytest.raises(ValueError, match=r"loss must return a scalar.*shape \(3,\)"):
        LOSS_CALLS[name](vector_loss, THETA)


@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_integer_params(name):
    with pytest.raises(ValueError, match="floating-point.*int"):
        LOSS_CALLS[name](good_loss, jnp.array([1, 2, 3]))


@pytest.mark.parametrize("name", sorted(LOSS_CALLS))
def test_integer_leaf_in_pytree(name):
    with pytest.raises(ValueError, match="floating-point"):
        LOSS_CALLS[name](tree_loss, {"a": jnp.array([1.0, 2.0]), "b": jnp.array([1, 2])})


@pytest.mark.parametrize("name", ["gradient_descent", "gradient_flow", "modified_flow", "r_ig"])
def test_empty_params(name):
    with pytest.raises(ValueError, match="at least one array"):
        LOSS_CALLS[name](lambda p: jnp.zeros(()), {})


@pytest.mark.parametrize("name", ["gradient_descent", "gradient_flow", "modified_flow", "r_ig"])
def test_loss_not_callable(name):
    with pytest.raises(ValueError, match="loss must be a function"):
        LOSS_CALLS[name](3.0, THETA)


@pytest.mark.parametrize("name", ["gradient_descent", "gradient_flow", "r_ig"])
def test_integer_valued_loss(name):
    with pytest.raises(ValueError, match="floating-point scalar"):
        LOSS_CALLS[name](lambda t: jnp.sum(t > 0).astype(jnp.int32), THETA)


@pytest.mark.parametrize("order", [-1, 1.5, "2", True])
def test_modified_flow_bad_order(order):
    with pytest.raises(ValueError, match=rf"order must be a non-negative integer.*got {order!r}"):
        igr.modified_flow(good_loss, THETA, 0.1, TIMES, order=order)


@pytest.mark.parametrize(
    "steps, phrase",
    [
        (-1, "must be >= 0"),
        (-100, "must be >= 0"),
        (3.0, "non-negative integer"),
        (2.5, "non-negative integer"),
        ("3", "non-negative integer"),
        (None, "non-negative integer"),
        (True, "non-negative integer"),
        (np.float64(3), "non-negative integer"),
    ],
)
@pytest.mark.parametrize("sweep", [False, True], ids=["gradient_descent", "gradient_descent_sweep"])
def test_bad_steps(steps, phrase, sweep):
    with pytest.raises(ValueError, match=phrase):
        if sweep:
            igr.gradient_descent_sweep(good_loss, THETA, [0.1], steps)
        else:
            igr.gradient_descent(good_loss, THETA, 0.1, steps)


@pytest.mark.parametrize("m", [0, -3])
def test_implicit_regularization_strength_rejects_non_positive_m(m):
    with pytest.raises(ValueError, match="m must be positive"):
        igr.implicit_regularization_strength(0.1, m)


def test_error_classes_are_value_errors():
    assert issubclass(igr.DivergenceError, ValueError)
    assert issubclass(igr.FlowError, ValueError)
