"""The package's shared machinery (the private modules ``_types``, ``_validate``, ``_scan``, ``_random``, ``_ode`` and the
public ``errors``) and the promise that the package writes each thing once.

The shared pieces are checked against closed forms on a quadratic (not against the package itself), and the
package's sources are read to check that the types, the scan driver and the validation live in one place.
"""

from __future__ import annotations

import ast
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import igr_tutorial as igr
from igr_tutorial import _scan, _types, errors, flows, modified, optimizers as opt, stochastic as st, train as tr
from _repo import ROOT

PACKAGE = ROOT / "igr_tutorial"
# Modules still allowed to define their own PyTree/Loss: none.
PENDING: set[str] = set()

A = jnp.array([[2.0, 0.5], [0.5, 1.0]])
THETA = jnp.array([0.7, -0.4])


def quadratic(theta):
    return 0.5 * theta @ A @ theta


def _modules():
    return sorted(p for p in PACKAGE.glob("*.py") if p.name not in ("_types.py", "_scan.py"))


# --------------------------------------------------------------------------------------------------
# One definition of each type, error and helper
# --------------------------------------------------------------------------------------------------


def _assigned_names(path) -> set[str]:
    """Names bound at module level by an assignment (not by an import)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_loss_and_pytree_are_defined_only_in_types():
    assert {"Loss", "PyTree"} <= _assigned_names(PACKAGE / "_types.py")
    defining = {p.name for p in _modules() if {"Loss", "PyTree"} & _assigned_names(p)}
    assert defining == PENDING, f"define Loss/PyTree only in _types.py and import them: {sorted(defining - PENDING)}"


def test_the_public_modules_hand_out_the_core_objects():
    for module in (flows, modified, opt, st, igr.tree):
        for name in ("Loss", "PyTree"):
            if hasattr(module, name):
                assert getattr(module, name) is getattr(_types, name), f"{module.__name__}.{name}"
    for name in ("DivergenceError", "FlowError", "NotConvergedError"):
        error = getattr(errors, name)
        assert getattr(igr, name) is error  # the old import paths keep working
        assert getattr(flows if name != "NotConvergedError" else igr.curvature, name) is error
        assert error.__module__ == "igr_tutorial.errors"  # where the API page and the tracebacks name it
        assert issubclass(error, ValueError)
    assert igr.first_nonfinite_step is flows.first_nonfinite_step is _scan.first_nonfinite_step


def test_no_module_but_scan_prepends_the_start_to_a_scan_trajectory():
    """"Prepend θ₀ to a lax.scan trajectory" is written once, in _scan.scan_steps."""
    prepend = re.compile(r"concatenate\(\s*\[\s*[\w.()]*\[None\]\s*,")
    assert prepend.search((PACKAGE / "_scan.py").read_text())
    offenders = [p.name for p in _modules() if prepend.search(p.read_text())]
    assert offenders == [], f"use _scan.scan_steps(..., record=...) instead of a concatenate in {offenders}"


def test_no_module_defines_its_own_divergence_check_or_ode_solve():
    defined = {p.name: {n.name for n in ast.parse(p.read_text()).body if isinstance(n, ast.FunctionDef)}
               for p in _modules()}
    home = {"_raise_if_diverged": set(), "_leaf_dtype": set(), "_solve_ode": set(), "_sgd_step": set(),
            "_default_tolerances": {"_ode.py"}}
    for helper, allowed in home.items():
        assert {m for m, names in defined.items() if helper in names} == allowed, helper


def test_nothing_imports_the_old_validation_module():
    """Validation lives in _validate; the old ``_checks`` (a name too close to the students' ``checks``) is gone."""
    assert not (PACKAGE / "_checks.py").exists()
    statement = re.compile(r"^\s*(from\s+(\.|igr_tutorial\.)_checks\s+import|import\s+igr_tutorial\._checks)", re.M)
    importers = {p.relative_to(ROOT).as_posix() for d in ("igr_tutorial", "tests", "tools", "book/_ext")
                 for p in (ROOT / d).rglob("*.py") if statement.search(p.read_text())}
    assert importers == {f"igr_tutorial/{m}" for m in PENDING}


# --------------------------------------------------------------------------------------------------
# The shared pieces against closed forms
# --------------------------------------------------------------------------------------------------


def test_scan_steps_records_the_start_then_every_step():
    final, traj = _scan.scan_steps(lambda c, x: c * 2.0 + x, jnp.array(1.0), jnp.arange(3.0), record=lambda c: c)
    np.testing.assert_array_equal(traj, [1.0, 2.0, 5.0, 12.0])
    assert float(final) == 12.0
    final, none = _scan.scan_steps(lambda c, _: (c[0] + 1.0, c[1] * 3.0), (0.0, 1.0), length=4)
    assert none is None and final == (4.0, 81.0)
    # a carry (θ, state) recorded through θ only, as heavy ball and optax do
    _, traj = _scan.scan_steps(lambda c, _: (c[0] + c[1], c[1]), (jnp.zeros(2), jnp.ones(2)), length=2,
                               record=lambda c: c[0])
    np.testing.assert_array_equal(traj, [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])


def test_sgd_step_is_theta_minus_h_times_the_batch_gradient():
    x, y = jnp.array([[1.0, 2.0], [0.0, -1.0]]), jnp.array([0.5, 1.5])
    batch_loss = lambda p, b: 0.5 * jnp.mean((b[0] @ p - b[1]) ** 2)
    got = _scan.sgd_step(batch_loss, THETA, (x, y), jnp.asarray(0.1))
    expected = THETA - 0.1 * x.T @ (x @ THETA - y) / 2
    np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_rk4_step_is_the_degree_four_taylor_polynomial_of_the_flow_on_a_quadratic():
    h = 0.3
    hA = h * np.asarray(A)
    factor = np.eye(2) - hA + hA @ hA / 2 - hA @ hA @ hA / 6 + hA @ hA @ hA @ hA / 24
    np.testing.assert_allclose(_scan.rk4_step(jax.grad(quadratic), THETA, h), factor @ np.asarray(THETA), rtol=1e-14)


def test_the_penalty_builder_and_its_gradient_match_the_closed_form():
    """E = ½θᵀAθ: E + c‖∇E‖² = ½θᵀAθ + c·θᵀA²θ, with gradient Aθ + 2c·A²θ."""
    c = 0.15
    A2 = A @ A
    np.testing.assert_allclose(modified.penalized_loss(quadratic, c)(THETA),
                               0.5 * THETA @ A @ THETA + c * THETA @ A2 @ THETA, rtol=1e-14)
    expected = A @ THETA + 2 * c * A2 @ THETA
    np.testing.assert_allclose(modified.penalized_gradient(quadratic, THETA, c), expected, rtol=1e-14)
    np.testing.assert_allclose(jax.grad(modified.penalized_loss(quadratic, c))(THETA), expected, rtol=1e-14)


def test_gd_and_momentum_modified_losses_are_the_penalty_with_their_strengths():
    h, beta = 0.2, 0.6
    A2 = A @ A
    gd = 0.5 * THETA @ A @ THETA + h / 4 * THETA @ A2 @ THETA
    np.testing.assert_allclose(igr.modified_loss(quadratic, h)(THETA), gd, rtol=1e-14)
    hb = 0.5 * THETA @ A @ THETA + h * (1 + beta) / (4 * (1 - beta) ** 2) * THETA @ A2 @ THETA
    np.testing.assert_allclose(opt.momentum_modified_loss(quadratic, h, beta)(THETA), hb, rtol=1e-14)


@pytest.mark.parametrize("bad", [-0.1, np.nan, np.inf, "0.1", jnp.ones(2)])
def test_a_bad_penalty_strength_is_refused(bad):
    with pytest.raises(ValueError, match="strength"):
        opt.penalized_gradient_flow(quadratic, THETA, bad, jnp.linspace(0.0, 1.0, 3))


def test_a_traced_penalty_strength_is_refused_with_a_message():
    """The ODE solve needs a concrete strength: under jit the caller is told so, not shown a tracer error."""
    with pytest.raises(TypeError, match="cannot be traced"):
        jax.jit(lambda c: opt.penalized_gradient_flow(quadratic, THETA, c, jnp.linspace(0.0, 1.0, 3)))(0.1)


def test_train_egr_step_descends_the_penalized_loss():
    """train()'s EGR update is θ − h·∇(E + μ‖∇E‖²), the gradient of the penalty builder's loss."""
    from igr_tutorial.nets import classification_loss, init_mlp

    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.integers(0, 3, 20))
    x = jnp.asarray(rng.normal(size=(20, 4))) + y[:, None]
    params = init_mlp(jax.random.PRNGKey(0), [4, 6, 3], dtype=jnp.float64)
    h, mu = jnp.asarray(0.1), jnp.asarray(0.05)
    step = tr._step_fn("egr", "tanh", None, 20)
    got = step(params, 0, h, mu, jax.random.PRNGKey(0), x, y)
    loss = lambda p: classification_loss(p, x, y, "tanh")
    g = jax.grad(modified.penalized_loss(loss, mu))(params)  # reverse over reverse, not the HVP train uses
    for a, p, gi in zip(jax.tree.leaves(got), jax.tree.leaves(params), jax.tree.leaves(g)):
        np.testing.assert_allclose(a, p - h * gi, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------------
# Compiled once per shape
# --------------------------------------------------------------------------------------------------


class _Compilations(logging.Handler):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split(" ")[1])


def _batch_loss(p, batch):
    x, y = batch
    return jnp.mean((x @ p - y) ** 2) + 0.1 * jnp.sum(p**4)


_DATA = (jnp.asarray(np.random.default_rng(1).normal(size=(8, 2))), jnp.asarray(np.random.default_rng(2).normal(size=8)))

TRAJECTORIES = {
    "gradient_descent": lambda lr: igr.gradient_descent(quadratic, THETA, lr, 5),
    "gradient_descent_sweep": lambda lr: igr.gradient_descent_sweep(quadratic, THETA, [lr, 2 * lr], 5),
    "heavy_ball": lambda lr: opt.heavy_ball(quadratic, THETA, lr, 0.5, 5),
    "sam_descent": lambda lr: opt.sam_descent(quadratic, THETA, lr, 0.05, 5),
    "sgd_epoch": lambda lr: st.sgd_epoch(_batch_loss, THETA, st.split_batches(_DATA, 4), lr),
    "sgd_epoch_endpoints": lambda lr: st.sgd_epoch_endpoints(_batch_loss, THETA, _DATA, lr, batch_size=4, permutations=np.stack([np.arange(8)] * 2)),
    "sgd": lambda lr: st.sgd(_batch_loss, THETA, _DATA, lr, batch_size=4, epochs=2, key=jax.random.PRNGKey(0)),
    "gd_with_sgd_regularizer": lambda lr: st.gd_with_sgd_regularizer(_batch_loss, THETA, _DATA, lr, reg_lr=lr, batch_size=4, steps=2),
}


def _compilations(run) -> tuple[list[str], list[str]]:
    """The programs compiled by ``run(0.05)`` and then by ``run(0.07)`` (from JAX's compilation log)."""
    handler = _Compilations()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            run(0.05)
            first = list(handler.names)
            handler.names.clear()
            run(0.07)
    finally:
        logger.removeHandler(handler)
    return first, handler.names


@pytest.mark.parametrize("name", sorted(TRAJECTORIES))
def test_a_trajectory_function_compiles_once_for_new_step_sizes(name):
    first, second = _compilations(TRAJECTORIES[name])
    assert first, "the first call compiled nothing: the log this test reads has changed"
    assert second == [], f"a second step size compiled again: {second}"


def test_the_compilation_count_sees_a_fresh_jit_per_call():
    """The control: a jit of a new closure on every call compiles every time, and the log shows it."""
    _, second = _compilations(lambda lr: jax.jit(lambda p: p * lr)(THETA))
    assert second


def test_split_arrays_splits_a_bound_loss_into_its_data_and_a_hashable_rest():
    """_pytree.split_arrays (equinox's partition/combine): the arrays go to a jit as arguments, the rest
    (functions, ints, strings, pytree nodes) as a static, hashable argument; combine puts them back."""
    from igr_tutorial._pytree import split_arrays
    from igr_tutorial.nets import _BoundLoss

    x, y = jnp.ones((4, 3)), jnp.zeros(4, dtype=jnp.int32)
    tree = (_BoundLoss(x, y, "tanh"), np.float64(0.5), 3, True, jnp.sin, None, {"a": np.arange(2.0), "f": "name"})
    static, arrays = split_arrays(tree)
    assert [type(a) for a in arrays] == [type(x), type(y), np.float64, np.ndarray]
    assert [leaf for leaf in static.leaves if leaf is not None] == [3, True, jnp.sin, "name"]
    hash(static)  # a static argument
    # the same loss on other data of the same layout gives an equal static part: one compiled program serves both
    assert split_arrays(tree[:1])[0] == split_arrays((_BoundLoss(x + 1, y, "tanh"),))[0]
    assert split_arrays(tree[:1])[0] != split_arrays((_BoundLoss(x, y, "relu"),))[0]
    back = static.combine(arrays)
    assert back[0].x is x and back[0].y is y and back[1:6] == tree[1:6]
    assert back[6]["a"] is tree[6]["a"] and back[6]["f"] == "name"
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    with pytest.raises(TypeError, match="must be hashable"):
        split_arrays((np.arange(2), _Unhashable()))


class _Unhashable:
    __hash__ = None
