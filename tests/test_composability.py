"""Every public name of the package in one table: how it composes with JAX's transformations.

Each name is one of
- an array function (`Traced`): under `jax.jit`, `jax.vmap` (over parameters, a hyperparameter or a PRNG key, as the
  table says) and, where differentiable, `jax.grad` (checked against a central finite difference of the plain call,
  float64), it gives what the plain call gives;
- a host function (`Host`): it cannot be traced (SciPy's ODE solver, an eigensolver's convergence check, NumPy
  records), its docstring says so, and a traced argument gets a `TypeError` that says to call it outside the
  transformations;
- not an array function (`NotArray`): a class, a constant, a loader, a plot, a statistic of recorded results, with
  the reason.

A public name missing from the table fails the suite: a new public function must say how it composes.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import igr_tutorial as igr
from igr_tutorial import (adam, analysis, curvature as cv, flows, losses, modified as md, momentum as mo, nets,
                          perturbation, sam, sharpness as sh, stochastic as st, train as tr, tree)
from igr_tutorial.data import Dataset


@dataclasses.dataclass(frozen=True)
class Traced:
    """``fn(x)`` for one input ``x`` (the first row of ``xs``); ``vmap`` runs it over the rows of ``xs``."""

    fn: Callable[[Any], Any]
    xs: Any
    over: str
    grad: str | None = "reverse"  # "reverse" (jax.grad), "forward" (jax.jacfwd: loops with a traced length), None


@dataclasses.dataclass(frozen=True)
class Host:
    """``call(x)`` with ``x`` traced must raise a TypeError that says the function cannot be traced."""

    call: Callable[[Any], Any]
    x: Any


@dataclasses.dataclass(frozen=True)
class NotArray:
    why: str


E = losses.double_well
THETA = jnp.array([0.3, -0.2])
THETAS = jnp.array([[0.3, -0.2], [0.5, 0.1], [-0.4, 0.6]])
LRS = jnp.array([0.05, 0.1, 0.2])
BETAS = jnp.array([0.3, 0.5, 0.8])
KEYS = jax.random.split(jax.random.PRNGKey(0), 3)
_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.normal(size=(8, 2)))
Y = jnp.asarray(_rng.normal(size=8))
EXAMPLES = (X, Y)
XS = jnp.stack([X, 1.5 * X, -X])
LABELS = jnp.asarray(_rng.integers(0, 3, 8))
LOGITS = jnp.asarray(_rng.normal(size=(3, 8, 3)))
MLP = nets.init_mlp(jax.random.PRNGKey(1), [2, 4, 3], dtype=jnp.float64)
MLPS = jax.vmap(lambda k: nets.init_mlp(k, [2, 4, 3], dtype=jnp.float64))(KEYS)
DATA = Dataset("toy", np.asarray(X), np.asarray(LABELS), np.asarray(X[:4]), np.asarray(LABELS[:4]))
PERMS = np.stack([np.arange(8), np.arange(8)[::-1]])


def batch_loss(p, b):
    return jnp.mean((b[0] @ p - b[1]) ** 2 + 0.1 * (b[0] @ p) ** 4)


def hvp_at(v):
    return cv.hvp(E, THETA, v)


BATCHES = st.split_batches(EXAMPLES, 2)
_P = "params"

TABLE: dict[str, Any] = {
    # flows
    "flows.gradient_descent": [Traced(lambda p: flows.gradient_descent(E, p, 0.1, 5), THETAS, _P),
                               Traced(lambda h: flows.gradient_descent(E, THETA, h, 5), LRS, "lr")],
    "flows.gradient_descent_sweep": [Traced(lambda p: flows.gradient_descent_sweep(E, p, [0.1, 0.2], 4), THETAS, _P),
                                     Traced(lambda h: flows.gradient_descent_sweep(E, THETA, jnp.stack([h, 2 * h]), 4),
                                            LRS, "lr")],
    "flows.modified_field_coefficients": Traced(lambda p: flows.modified_field_coefficients(E, p, 2), THETAS, _P),
    "flows.modified_vector_field": [Traced(lambda p: flows.modified_vector_field(E, p, 0.1, 2), THETAS, _P),
                                    Traced(lambda h: flows.modified_vector_field(E, THETA, h, 2), LRS, "lr")],
    "flows.gradient_flow": Host(lambda p: flows.gradient_flow(E, p, jnp.linspace(0.0, 1.0, 3)), THETA),
    "flows.modified_flow": Host(lambda h: flows.modified_flow(E, THETA, h, jnp.linspace(0.0, 1.0, 3)), 0.1),
    "flows.penalized_gradient_flow": Host(lambda c: flows.penalized_gradient_flow(E, THETA, c, jnp.linspace(0, 1, 3)),
                                          0.1),
    "flows.first_nonfinite_step": Host(lambda p: flows.first_nonfinite_step(p[None]), THETA),
    # the modified loss
    "modified.gradient_norm_squared": Traced(lambda p: md.gradient_norm_squared(E, p), THETAS, _P),
    "modified.implicit_regularization_strength": Traced(lambda h: md.implicit_regularization_strength(h, 2), LRS, "lr"),
    "modified.modified_loss": [Traced(lambda p: md.modified_loss(E, 0.1)(p), THETAS, _P),
                               Traced(lambda h: md.modified_loss(E, h)(THETA), LRS, "lr")],
    "modified.penalized_gradient": [Traced(lambda p: md.penalized_gradient(E, p, 0.05), THETAS, _P),
                                    Traced(lambda c: md.penalized_gradient(E, THETA, c), LRS, "strength")],
    "modified.penalized_loss": Traced(lambda p: md.penalized_loss(E, 0.05)(p), THETAS, _P),
    "modified.r_ig": Traced(lambda p: md.r_ig(E, p), THETAS, _P),
    # curvature
    "curvature.hvp": Traced(lambda p: cv.hvp(E, p, jnp.array([1.0, 0.5])), THETAS, _P),
    "curvature.third_derivative_contraction": Traced(lambda p: cv.third_derivative_contraction(E, p, p), THETAS, _P),
    "curvature.power_iteration_step": Traced(lambda u: cv.power_iteration_step(hvp_at, u), THETAS + 1.0, "vector"),
    "curvature.hessian_trace": [Traced(lambda p: cv.hessian_trace(E, p, KEYS[0], 4), THETAS, _P),
                                Traced(lambda k: cv.hessian_trace(E, THETA, k, 4), KEYS, "key", grad=None)],
    "curvature.hessian_top_eigenvalue": Host(lambda p: cv.hessian_top_eigenvalue(E, p), THETA),
    "curvature.TopEigenResult": NotArray("the named tuple hessian_top_eigenvalue returns"),
    # momentum
    "momentum.heavy_ball": [Traced(lambda p: mo.heavy_ball(E, p, 0.1, 0.5, 4), THETAS, _P),
                            Traced(lambda b: mo.heavy_ball(E, THETA, 0.1, b, 4), BETAS, "beta")],
    "momentum.heavy_ball_update": Traced(lambda p: mo.heavy_ball_update(p, 0.5 * p, jnp.sin(p), 0.1, 0.5), THETAS, _P),
    "momentum.heavy_ball_spectral_radius": Traced(lambda h: mo.heavy_ball_spectral_radius(h, 0.5, 3.0), LRS, "lr"),
    "momentum.heavy_ball_stability_limit": Traced(lambda h: mo.heavy_ball_stability_limit(h, 0.5), LRS, "lr"),
    "momentum.flow_matched_velocity": [Traced(lambda p: mo.flow_matched_velocity(E, p, 0.1, 0.5), THETAS, _P),
                                       Traced(lambda b: mo.flow_matched_velocity(E, THETA, 0.1, b), BETAS, "beta")],
    "momentum.momentum_effective_lr": Traced(lambda b: mo.momentum_effective_lr(0.1, b), BETAS, "beta"),
    "momentum.momentum_modified_loss": Traced(lambda p: mo.momentum_modified_loss(E, 0.1, 0.5)(p), THETAS, _P),
    "momentum.momentum_regularization_strength": Traced(lambda b: mo.momentum_regularization_strength(0.1, b), BETAS,
                                                        "beta"),
    # Adam
    "adam.adam_memory_coefficient": Traced(lambda b: adam.adam_memory_coefficient(b, 0.999), BETAS, "b1"),
    "adam.adam_modified_loss": Traced(lambda p: adam.adam_modified_loss(E, 0.1, 0.9, 0.999, 1e-8)(p), THETAS, _P),
    "adam.adam_update_first_order": Traced(lambda p: adam.adam_update_first_order(E, p, 0.1, 0.9, 0.999, 1e-8),
                                           THETAS, _P),
    "adam.adam_sweep": [Traced(lambda p: adam.adam_sweep(E, jnp.stack([p, -p]), [0.1, 0.2], 4), THETAS, _P,
                               grad="forward"),
                        Traced(lambda h: adam.adam_sweep(E, jnp.stack([THETA, -THETA]), jnp.stack([h, 2 * h]), 4),
                               LRS, "lr", grad="forward")],
    "adam.optax_descent": Traced(lambda p: adam.optax_descent(optax.adam(0.1), E, p, 4), THETAS, _P),
    "adam.perturbed_one_norm": Traced(lambda g: adam.perturbed_one_norm(g, 1e-8), THETAS, "gradient"),
    # SAM
    "sam.sam_descent": [Traced(lambda p: sam.sam_descent(E, p, 0.1, 0.05, 4), THETAS, _P),
                        Traced(lambda r: sam.sam_descent(E, THETA, 0.1, r, 4), LRS, "rho")],
    "sam.sam_gradient": Traced(lambda p: sam.sam_gradient(E, p, 0.05), THETAS, _P),
    "sam.sam_gradient_first_order": Traced(lambda p: sam.sam_gradient_first_order(E, p, 0.05), THETAS, _P),
    # sharpness
    "sharpness.gd_quadratic_exact_rate": Traced(lambda h: sh.gd_quadratic_exact_rate(h, 2.0), LRS, "lr"),
    "sharpness.gd_quadratic_modified_rate": Traced(lambda h: sh.gd_quadratic_modified_rate(h, 2.0, 3), LRS, "lr"),
    "sharpness.sharpness_trace": Host(lambda p: sh.sharpness_trace(E, p[None], 0.1, 4, record_every=2), THETA),
    "sharpness.SharpnessTrace": NotArray("the record sharpness_trace returns (NumPy arrays)"),
    # SGD
    "stochastic.batch_gradients": Traced(lambda p: st.batch_gradients(batch_loss, p, BATCHES), THETAS, _P),
    "stochastic.batch_gradient_variance": Traced(lambda p: st.batch_gradient_variance(batch_loss, BATCHES)(p), THETAS,
                                                 _P),
    "stochastic.expected_batch_gradient_variance": Traced(
        lambda p: st.expected_batch_gradient_variance(batch_loss, EXAMPLES, 2)(p), THETAS, _P),
    "stochastic.full_loss": Traced(lambda p: st.full_loss(batch_loss, BATCHES)(p), THETAS, _P),
    "stochastic.sgd_modified_loss": [Traced(lambda p: st.sgd_modified_loss(batch_loss, BATCHES, 0.1)(p), THETAS, _P),
                                     Traced(lambda h: st.sgd_modified_loss(batch_loss, BATCHES, h)(THETA), LRS, "lr")],
    "stochastic.reshuffled_sgd_modified_loss": Traced(
        lambda h: st.reshuffled_sgd_modified_loss(batch_loss, EXAMPLES, 2, h)(THETA), LRS, "lr"),
    "batches.split_batches": [Traced(lambda x: st.split_batches((x, Y), 2), XS, "examples"),
                                 Traced(lambda k: st.split_batches(EXAMPLES, 2, jax.random.permutation(k, 8)), KEYS,
                                        "key", grad=None)],
    "stochastic.sgd_epoch": Traced(lambda p: st.sgd_epoch(batch_loss, p, BATCHES, 0.1), THETAS, _P),
    "stochastic.sgd_epoch_endpoints": Traced(
        lambda p: st.sgd_epoch_endpoints(batch_loss, p, EXAMPLES, 0.1, batch_size=2, permutations=PERMS), THETAS, _P),
    "stochastic.sgd": [Traced(lambda p: st.sgd(batch_loss, p, EXAMPLES, 0.1, batch_size=2, epochs=2, key=KEYS[0]),
                              THETAS, _P),
                       Traced(lambda h: st.sgd(batch_loss, THETA, EXAMPLES, h, batch_size=2, epochs=2, key=KEYS[0]),
                              LRS, "lr"),
                       Traced(lambda k: st.sgd(batch_loss, THETA, EXAMPLES, 0.1, batch_size=2, epochs=2, key=k),
                              KEYS, "key", grad=None)],
    "stochastic.gd_with_sgd_regularizer": [
        Traced(lambda p: st.gd_with_sgd_regularizer(batch_loss, p, EXAMPLES, 0.1, reg_lr=0.1, batch_size=2, steps=3),
               THETAS, _P),
        Traced(lambda k: st.gd_with_sgd_regularizer(batch_loss, THETA, EXAMPLES, 0.1, reg_lr=0.1, batch_size=2,
                                                    steps=3, key=k), KEYS, "key", grad=None)],
    "stochastic.epoch_time": Traced(lambda h: st.epoch_time(h, 8, 2), LRS, "lr"),
    "stochastic.sgd_modified_flow": Host(lambda p: st.sgd_modified_flow(batch_loss, p, EXAMPLES, 0.1, batch_size=2,
                                                                        times=jnp.linspace(0, 1, 3)), THETA),
    "batches.all_permutations": NotArray("all n! orderings of range(n) as a NumPy table: n is a Python int"),
    "stochastic.finite_population_factor": NotArray("a number of two integer counts (N, B)"),
    "batches.num_batches": NotArray("an integer count from two integer counts (static shapes)"),
    "batches.num_examples": NotArray("an integer count: the examples' leading length (a static shape)"),
    # losses and trees
    "losses.double_well": Traced(losses.double_well, THETAS, _P),
    "losses.quadratic": [Traced(lambda p: losses.quadratic(jnp.array([[2.0, 0.5], [0.5, 1.0]]), p)(THETA), THETAS, "b"),
                         Traced(lambda p: losses.quadratic(jnp.eye(2))(p), THETAS, _P)],
    "losses.two_parameter_model": [Traced(lambda p: losses.two_parameter_model()(p), THETAS, _P),
                                   Traced(lambda x: losses.two_parameter_model(x, 1.0)(THETA), LRS, "x")],
    "tree.tree_sq_norm": Traced(lambda p: tree.tree_sq_norm({"a": p, "b": 2 * p}), THETAS, _P),
    "tree.tree_vdot": Traced(lambda p: tree.tree_vdot({"a": p}, {"a": jnp.sin(p)}), THETAS, _P),
    "tree.num_parameters": NotArray("an integer count of a pytree's leaves' sizes (static shapes)"),
    # networks
    "nets.mlp_apply": [Traced(lambda p: nets.mlp_apply(p, X), MLPS, _P),
                       Traced(lambda x: nets.mlp_apply(MLP, x), XS, "inputs")],
    "nets.classification_loss": Traced(lambda p: nets.classification_loss(p, X, LABELS), MLPS, _P),
    "nets.cross_entropy": Traced(lambda z: nets.cross_entropy(z, LABELS), LOGITS, "logits"),
    "nets.accuracy": Traced(lambda z: nets.accuracy(z, LABELS), LOGITS, "logits", grad=None),
    "nets.init_mlp": Traced(lambda k: nets.init_mlp(k, [2, 4, 3]), KEYS, "key", grad=None),
    "nets.train_loss_fn": Traced(lambda p: nets.train_loss_fn(DATA)(p), MLPS, _P),
    "nets.ACTIVATIONS": NotArray("a dict of activation functions"),
    # training
    "train.stacked_init": Traced(lambda k: tr.stacked_init(nets.init_mlp, k[None], [2, 4, 3]), KEYS, "key", grad=None),
    "train.implicit_strength_for": Traced(lambda h: tr.implicit_strength_for(h, MLP), LRS, "lr"),
    "train.train": Host(lambda p: tr.train(p, DATA, 0.1, 4), MLP),
    "train.train_sweep": Host(lambda p: tr.train_sweep(p, DATA, [0.1], 4), MLP),
    "train.steps_to_target": NotArray("reads a History (NumPy records)"),
    "train.History": NotArray("NumPy records of a training run"),
    "train.METHODS": NotArray("a tuple of method names"),
    "perturbation.perturbed_accuracy": Host(lambda p: perturbation.perturbed_accuracy(p, DATA, [0.1], KEYS[0], 2), MLP),
    "perturbation.perturbed_accuracies": Host(lambda p: perturbation.perturbed_accuracies(p, DATA, [0.1], KEYS[:3], 2),
                                              MLPS),
    # analysis of computed trajectories
    "analysis.trajectory_error": Host(lambda p: analysis.trajectory_error(p[None], 2 * p[None]), THETA),
    "analysis.global_error": Host(lambda p: analysis.global_error(p[None], 2 * p[None]), THETA),
    "analysis.convergence_order": Host(lambda e: analysis.convergence_order(jnp.array([0.1, 0.2]), jnp.stack([e, 4 * e])),
                                       0.01),
}

_NOT_ARRAY_MODULES = {
    "checks": "self-checks: they call a student's function on concrete cases and report in words",
    "cli": "the command line",
    "data": "data sets and their loaders (files, checksums, NumPy)",
    "errors": "exception classes",
    "experiments": "the chapters' experiments: they dispatch sweeps and return JSON-ready records",
    "figures": "Matplotlib figures of recorded results",
    "plotting": "Matplotlib and widget helpers",
    "sizes": "experiment sizes, the data they load and the machine report",
    "stats": "statistics of recorded results over seeds (NumPy and SciPy)",
    "optimizers": "the facade of momentum, adam, sam and sharpness (no names of its own)",
}


def _public_names() -> dict[str, Any]:
    names = {}
    for info in pkgutil.iter_modules(igr.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"igr_tutorial.{info.name}")
        assert hasattr(module, "__all__"), f"igr_tutorial.{info.name} has no __all__"
        for name in module.__all__:
            names[f"{info.name}.{name}"] = getattr(module, name)
    return names


def _cases():
    for name, entry in TABLE.items():
        for i, case in enumerate(entry if isinstance(entry, list) else [entry]):
            yield pytest.param(name, case, id=f"{name}[{getattr(case, 'over', type(case).__name__)}{i or ''}]")


def test_every_public_name_is_in_the_table():
    public = _public_names()
    missing = sorted(n for n in public if n not in TABLE and n.split(".")[0] not in _NOT_ARRAY_MODULES)
    assert not missing, f"public names the composability table does not cover (add a Traced, Host or NotArray row): {missing}"
    stale = sorted(set(TABLE) - set(public))
    assert not stale, f"rows for names that are not public (any more): {stale}"
    by_object = {id(obj) for obj in public.values()}
    top = [n for n in igr.__all__ if id(getattr(igr, n)) not in by_object and not n.startswith("__")]
    assert not top, f"top-level names that no module lists in its __all__: {top}"


def test_the_check_fails_on_a_new_public_name(monkeypatch):
    """A public function added without a row is caught."""
    monkeypatch.setattr(tree, "__all__", [*tree.__all__, "tree_new"], raising=True)
    monkeypatch.setattr(tree, "tree_new", lambda a: a, raising=False)
    with pytest.raises(AssertionError, match=r"tree\.tree_new"):
        test_every_public_name_is_in_the_table()


def _scalar(out) -> jax.Array:
    """A fixed, generic linear functional of an output pytree (no cancellations): what the gradient checks use."""
    leaves = [jnp.asarray(leaf) for leaf in jax.tree.leaves(out)]
    return sum(jnp.vdot(jnp.sin(1.0 + jnp.arange(leaf.size)), jnp.ravel(jnp.real(leaf)).astype(float))
               for leaf in leaves)


def _assert_same(a, b):
    """Equal to rounding: float64 to 1e-9, float32 (the networks' default) to a few ulps (jit fuses differently)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        rtol, atol = (1e-9, 1e-12) if x.dtype != np.float32 else (1e-6, 1e-7)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


TRACED = [p for p in _cases() if isinstance(p.values[1], Traced)]
HOSTS = [p for p in _cases() if isinstance(p.values[1], Host)]


@pytest.mark.parametrize("name, case", TRACED)
def test_jit_and_vmap_give_the_plain_call(name, case):
    xs = jax.tree.map(jnp.asarray, case.xs)
    rows = [jax.tree.map(lambda a: a[i], xs) for i in range(jax.tree.leaves(xs)[0].shape[0])]
    plain = [case.fn(row) for row in rows]
    _assert_same(jax.jit(case.fn)(rows[0]), plain[0])
    _assert_same(jax.vmap(case.fn)(xs), jax.tree.map(lambda *r: jnp.stack(r), *plain))


@pytest.mark.parametrize("name, case", [p for p in TRACED if p.values[1].grad])
def test_the_derivative_is_the_finite_difference_of_the_plain_call(name, case):
    """The directional derivative from jax.grad (or jax.jacfwd) along a fixed direction against a central finite
    difference of the plain call (float64)."""
    x = jax.tree.map(lambda a: jnp.asarray(a[0], dtype=float), case.xs)
    d = jax.tree.map(lambda a: jnp.cos(1.0 + jnp.arange(a.size)).reshape(a.shape), x)
    f = lambda z: _scalar(case.fn(z))  # noqa: E731
    deriv = jax.grad(f)(x) if case.grad == "reverse" else jax.jacfwd(f)(x)
    eps = 1e-6 * max(1.0, max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(x)))
    shifted = [f(jax.tree.map(lambda a, v: a + sign * eps * v, x, d)) for sign in (1, -1)]
    fd = (shifted[0] - shifted[1]) / (2 * eps)
    assert float(tree.tree_vdot(deriv, d)) == pytest.approx(float(fd), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name, case", HOSTS)
def test_host_functions_refuse_a_trace_and_say_so(name, case):
    module, attr = name.split(".")
    fn = getattr(importlib.import_module(f"igr_tutorial.{module}"), attr)
    doc = " ".join(((fn.__doc__ or "") + " " + (inspect.getmodule(fn).__doc__ or "")).split())
    assert re.search(r"[Nn]ot traceable", doc), f"{name}'s docstring does not say it is not traceable"
    x = jax.tree.map(lambda a: jnp.asarray(a, dtype=float), case.x)
    two = jax.tree.map(lambda a: jnp.stack([a, a]), x)
    for traced in (lambda: jax.jit(case.call)(x), lambda: jax.vmap(case.call)(two),
                   lambda: jax.grad(lambda z: _scalar(case.call(z)))(x)):
        with pytest.raises(TypeError, match="cannot be traced"):
            traced()
    case.call(x)  # and the plain call works
