"""Stochastic gradient descent with random reshuffling, and the modified loss it follows (chapter 8).

Notation (the book's; Smith, Dherin, Barrett & De 2021 write ``ε`` for ``h`` and ``C`` for ``E``): ``N``
training examples are split into ``m = N/B`` disjoint batches of ``B`` examples; ``Êₖ`` is the mean loss on
batch ``k`` and ``E = (1/m)·Σₖ Êₖ`` the full training loss. One *epoch* of SGD takes the ``m`` steps
``θ ← θ − h·∇Êₖ(θ)`` once each, in a random order; *random reshuffling* draws a fresh random permutation of
the examples (hence a fresh partition and order) every epoch.

Smith et al. (2021, Sec. 2, Eq. 5 and 15; chapter 8 of the book) show that the *mean* iterate after one epoch,
averaged over the orders of the batches, follows the gradient flow of

    E_SGD(θ) = E + (h/4m)·Σₖ ‖∇Êₖ‖²  =  E + (h/4)·‖∇E‖² + (h/4m)·Σₖ ‖∇Êₖ − ∇E‖²

for the time ``m·h`` up to ``O(h³)`` (the second equality is exact: the batch gradients average to ``∇E``).
Averaged also over random partitions, the last term becomes ``(h/4)·(N−B)/(B(N−1))·Γ`` with
``Γ = (1/N)·Σᵢ ‖∇ℓᵢ − ∇E‖²`` the per-example gradient variance: it grows like ``h/B``.

A *batch loss* here is a function ``batch_loss(params, batch) -> scalar``: the mean loss over the examples of
``batch``, a pytree of arrays whose leading axis indexes examples (e.g. ``(x, y)``). The training set, the
argument ``examples`` of every function here, is a pytree of the same structure with ``N`` rows, e.g.
``(data.x_train, data.y_train)`` of a :class:`~igr_tutorial.data.Dataset` (``data`` is a ``Dataset`` everywhere in
the package; ``examples`` was called ``data`` in 0.1.0 and the old keyword still works, with a warning). The
arguments after ``lr`` are keyword-only. Every loop is a compiled ``lax.scan``; sweeps over orderings are ``vmap``-ed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ._deprecation import keyword_only, renamed_arguments
from .batches import _WHY, all_permutations, num_batches, num_examples, split_batches  # noqa: F401 (also from here)
from ._ode import solve_ode
from ._scan import descent_step, epoch_permutation, leaf_dtype, raise_if_diverged, scan_steps, sgd_step
from ._types import Loss, PyTree
from ._validate import check_learning_rate, check_scalar_loss, check_steps, is_traced, require_concrete

BatchLoss = Callable[[PyTree, PyTree], jax.Array]


def _check_batch_loss(batch_loss: BatchLoss, params: PyTree, batches: PyTree) -> None:
    if not callable(batch_loss):
        raise ValueError("batch_loss must be a function (params, batch) -> scalar mean loss on the batch.")
    first = jax.tree.map(lambda x: x[0], batches)
    check_scalar_loss(lambda p: batch_loss(p, first), params)


def _per_batch_sq_norms(grads: PyTree) -> jax.Array:
    """``‖gₖ‖²`` for every k of a pytree of stacked gradients (leading axis k)."""
    leaves = jax.tree.leaves(grads)
    return sum(jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=1) for g in leaves)


# --------------------------------------------------------------------------------------------------
# Losses built from batches
# --------------------------------------------------------------------------------------------------


def full_loss(batch_loss: BatchLoss, batches: PyTree) -> Loss:
    """``θ ↦ E(θ) = (1/m)·Σₖ Êₖ(θ)``, the mean of the batch losses (the full training loss for equal batches)."""

    def loss(params: PyTree) -> jax.Array:
        return jnp.mean(jax.vmap(lambda b: batch_loss(params, b))(batches))

    return loss


def batch_gradients(batch_loss: BatchLoss, params: PyTree, batches: PyTree) -> PyTree:
    """The ``m`` batch gradients ``∇Êₖ(θ)`` stacked along a leading axis (a pytree like ``params``)."""
    return jax.vmap(lambda b: jax.grad(batch_loss)(params, b))(batches)


def sgd_modified_loss(batch_loss: BatchLoss, batches: PyTree, lr: float) -> Loss:
    """``θ ↦ E + (h/4m)·Σₖ ‖∇Êₖ‖²``: the modified loss of one SGD epoch over ``batches`` with step ``h = lr``.

    Smith, Dherin, Barrett & De (2021), Eq. 5: the mean SGD iterate after one epoch, averaged over the ``m!``
    orders of these batches, follows the gradient flow of this loss for a time ``m·h`` up to ``O(h³)``.
    With ``m = 1`` (full batch) it is GD's modified loss ``E + (h/4)‖∇E‖²`` (Barrett & Dherin 2021, Eq. 3).
    ``batches`` has leading axes ``(m, B)`` (see :func:`~igr_tutorial.batches.split_batches`). Chapter 8.
    """
    check_learning_rate(lr)
    return _sgd_modified_loss_traced(batch_loss, batches, lr)


def batch_gradient_variance(batch_loss: BatchLoss, batches: PyTree) -> Loss:
    """``θ ↦ (1/m)·Σₖ ‖∇Êₖ(θ) − ∇E(θ)‖²``: the spread of the batch gradients about their mean.

    SGD's implicit regularizer beyond GD's (Smith et al. 2021, Eq. 15):
    ``(h/4m)·Σₖ ‖∇Êₖ‖² = (h/4)·‖∇E‖² + (h/4)·batch_gradient_variance``. Chapter 8.
    """

    def variance(params: PyTree) -> jax.Array:
        grads = batch_gradients(batch_loss, params, batches)
        centred = jax.tree.map(lambda g: g - jnp.mean(g, axis=0, keepdims=True), grads)
        return jnp.mean(_per_batch_sq_norms(centred))

    return variance


@renamed_arguments(_WHY, data="examples")
def expected_batch_gradient_variance(batch_loss: BatchLoss, examples: PyTree, batch_size: int) -> Loss:
    """``θ ↦ (N−B)/(B(N−1)) · Γ(θ)`` with ``Γ = (1/N)·Σᵢ ‖∇ℓᵢ − ∇E‖²``, ``ℓᵢ`` the loss on example ``i``.

    The mean of :func:`batch_gradient_variance` over uniformly random partitions of the ``N`` examples into
    batches of ``B`` (each batch is then a uniform random ``B``-subset, and the gradient of its mean loss has
    the variance of a sample mean drawn without replacement: ``Γ/B`` times the finite-population factor
    ``(N−B)/(N−1)``). Smith et al. (2021), Sec. 2.2. It falls like ``1/B`` for ``B ≪ N`` and is zero at
    ``B = N``. ``batch_loss`` must be a mean over the batch, so that ``ℓᵢ = batch_loss(θ, example i)``.
    """
    n = num_examples(examples)
    num_batches(n, batch_size)
    factor = (n - batch_size) / (batch_size * (n - 1)) if n > 1 else 0.0
    singles = split_batches(examples, 1)

    def variance(params: PyTree) -> jax.Array:
        return factor * batch_gradient_variance(batch_loss, singles)(params)

    return variance


@renamed_arguments(_WHY, data="examples")
def reshuffled_sgd_modified_loss(batch_loss: BatchLoss, examples: PyTree, batch_size: int, lr: float) -> Loss:
    """``θ ↦ E + (h/4)·‖∇E‖² + (h/4)·(N−B)/(B(N−1))·Γ``: SGD's modified loss averaged over random partitions.

    The mean of :func:`sgd_modified_loss` over the partitions drawn by random reshuffling (see
    :func:`expected_batch_gradient_variance`); Smith et al. (2021), Sec. 2.2. Chapter 8.
    """
    check_learning_rate(lr)
    num_batches(num_examples(examples), batch_size)
    return _reshuffled_loss_traced(batch_loss, examples, batch_size, lr)


# --------------------------------------------------------------------------------------------------
# SGD
# --------------------------------------------------------------------------------------------------


def _sgd_steps(batch_loss, params, batches, lr, record=None):
    """One SGD epoch over ``batches`` (leading axis ``m``): ``(final θ, θ₀…θₘ or None)``, see ``scan_steps``."""
    return scan_steps(lambda p, batch: sgd_step(batch_loss, p, batch, lr), params, batches, record=record)


@functools.partial(jax.jit, static_argnums=(0,))
def _sgd_epoch(batch_loss, params, batches, lr):
    return _sgd_steps(batch_loss, params, batches, lr, record=lambda p: p)[1]


def sgd_epoch(
    batch_loss: BatchLoss, params: PyTree, batches: PyTree, lr: float, *, allow_divergence: bool = False
) -> PyTree:
    """One SGD epoch ``θ ← θ − h·∇Êₖ(θ)`` for ``k = 0, …, m−1`` in the order of ``batches``; one ``lax.scan``.

    Returns the ``m + 1`` iterates (``params`` first) with a leading axis. ``batches`` has leading axes
    ``(m, B)``, see :func:`~igr_tutorial.batches.split_batches`. Chapter 8.
    """
    check_learning_rate(lr)
    _check_batch_loss(batch_loss, params, batches)
    traj = _sgd_epoch(batch_loss, params, batches, jnp.asarray(lr, leaf_dtype(params)))
    if not allow_divergence:
        raise_if_diverged(traj, "SGD", lambda: f"lr={float(lr):g}", unit="record")
    return traj


@functools.partial(jax.jit, static_argnums=(0, 4))
def _epoch_endpoints(batch_loss, params, examples, lr, batch_size, permutations):
    def one(perm):
        final, _ = _sgd_steps(batch_loss, params, split_batches(examples, batch_size, perm), lr)
        return final

    return jax.vmap(one)(permutations)


@keyword_only(4, "batch_size", "permutations")
@renamed_arguments(_WHY, data="examples")
def sgd_epoch_endpoints(
    batch_loss: BatchLoss, params: PyTree, examples: PyTree, lr: float, *, batch_size: int, permutations: Any
) -> PyTree:
    """The iterate after one SGD epoch from ``params``, for every row of ``permutations`` (one ``vmap``).

    Row ``j`` of ``permutations`` (shape ``(P, N)``) orders the examples for run ``j``; batch ``k`` is
    ``perm[k·B:(k+1)·B]``. The mean over all rows of :func:`~igr_tutorial.batches.all_permutations` ``(N)`` is the exact expected
    iterate of random reshuffling. Returns a pytree like ``params`` with a leading axis ``P``. Chapter 8.
    """
    check_learning_rate(lr)
    n = num_examples(examples)
    num_batches(n, batch_size)
    perms = jnp.asarray(permutations)
    if perms.ndim != 2 or perms.shape[1] != n:
        raise ValueError(f"permutations must have shape (P, {n}) (one permutation per row), got {perms.shape}.")
    _check_batch_loss(batch_loss, params, split_batches(examples, batch_size))
    return _epoch_endpoints(batch_loss, params, examples, jnp.asarray(lr, leaf_dtype(params)), int(batch_size), perms)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _sgd_run(batch_loss, params, examples, lr, batch_size, epochs, key):
    n = num_examples(examples)

    def epoch(p, e):
        return _sgd_steps(batch_loss, p, split_batches(examples, batch_size, epoch_permutation(key, e, n)), lr)[0]

    return scan_steps(epoch, params, jnp.arange(epochs), record=lambda p: p)[1]


@keyword_only(4, "batch_size", "epochs", "key")
@renamed_arguments(_WHY, data="examples")
def sgd(
    batch_loss: BatchLoss,
    params: PyTree,
    examples: PyTree,
    lr: float,
    *,
    batch_size: int,
    epochs: int,
    key: jax.Array,
    allow_divergence: bool = False,
) -> PyTree:
    """SGD with random reshuffling: every epoch a fresh permutation (from ``key``), then ``m = N/B`` steps.

    Returns the iterates at the end of every epoch, ``epochs + 1`` of them (``params`` first), with a
    leading axis. One compiled ``lax.scan`` over epochs of a ``lax.scan`` over batches; ``lr`` and ``key``
    are traced, so ``jax.vmap`` over keys averages many runs (chapter 8). The same update as
    :func:`igr_tutorial.train.train` with ``method="sgd"``, for any batch loss and pytree of examples.
    """
    check_learning_rate(lr)
    epochs = check_steps(epochs)
    n = num_examples(examples)
    num_batches(n, batch_size)
    if not is_traced(lr):
        _check_batch_loss(batch_loss, params, split_batches(examples, batch_size))
    traj = _sgd_run(batch_loss, params, examples, jnp.asarray(lr, leaf_dtype(params)), int(batch_size), epochs, key)
    if not allow_divergence:
        raise_if_diverged(traj, "SGD", lambda: f"lr={float(lr):g}", unit="record")
    return traj


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _gd_sgd_reg(batch_loss, params, examples, lr, reg_lr, batch_size, steps, key):
    n = num_examples(examples)

    def step(p, i):
        perm = None if key is None else epoch_permutation(key, i, n)
        batches = split_batches(examples, batch_size, perm)
        g = jax.grad(_sgd_modified_loss_traced(batch_loss, batches, reg_lr))(p)  # E + (h_reg/4m)·Σₖ‖∇Êₖ‖²
        return descent_step(p, g, lr)

    return scan_steps(step, params, jnp.arange(steps))[0]


@keyword_only(4, "reg_lr", "batch_size", "steps", "key")
@renamed_arguments(_WHY, data="examples")
def gd_with_sgd_regularizer(
    batch_loss: BatchLoss,
    params: PyTree,
    examples: PyTree,
    lr: float,
    *,
    reg_lr: float,
    batch_size: int,
    steps: int,
    key: jax.Array | None = None,
    fixed_partition: bool = False,
    allow_divergence: bool = False,
) -> PyTree:
    """Full-batch GD with step ``lr`` on ``E + (h_reg/4m)·Σₖ ‖∇Êₖ‖²``, ``h_reg = reg_lr``: SGD's regularizer made explicit.

    Step ``i`` regularizes the batches of ``batch_size`` of a *fresh random partition*, the permutation
    ``jax.random.permutation(jax.random.fold_in(key, i), N)`` (``key`` defaults to ``PRNGKey(0)``). In
    expectation over partitions the penalty is then ``(h_reg/4)·‖∇E‖² + (h_reg/4)·(N−B)/(B(N−1))·Γ``
    (:func:`reshuffled_sgd_modified_loss`): the regularizer that random reshuffling puts on SGD, and not the
    variance of one partition, which a run could lower without lowering the variance of the others (so a
    variance measured afterwards on that partition would flatter it). ``fixed_partition=True`` regularizes the
    partition in the order of the examples at every step instead (no ``key`` then). Each step costs about ``m``
    batch Hessian-vector products on top of the gradient, i.e. a few full-batch gradients. Smith, Dherin,
    Barrett & De (2021), Sec. 4 (their ``λ`` is ``reg_lr``). ``params``, ``lr``, ``reg_lr`` and ``key`` may be
    traced, so ``jax.vmap`` runs many seeds in one program. Returns the final parameters; raises
    :class:`~igr_tutorial.errors.DivergenceError` if they are non-finite (not checked under ``jit``/``vmap``).
    Chapter 8.
    """
    check_learning_rate(lr)
    check_learning_rate(reg_lr, name="reg_lr")
    steps = check_steps(steps)
    n = num_examples(examples)
    num_batches(n, batch_size)
    if fixed_partition and key is not None:
        raise ValueError("fixed_partition=True regularizes the partition in the order of the examples: pass no key.")
    if not fixed_partition and key is None:
        key = jax.random.PRNGKey(0)
    _check_batch_loss(batch_loss, params, split_batches(examples, batch_size))
    dt = leaf_dtype(params)
    final = _gd_sgd_reg(batch_loss, params, examples, jnp.asarray(lr, dt), jnp.asarray(reg_lr, dt), int(batch_size),
                        steps, key)
    if not allow_divergence:
        raise_if_diverged(jax.tree.map(lambda x: x[None], final), "GD with the SGD regularizer",
                          lambda: f"lr={float(lr):g}", unit="record")
    return final


# --------------------------------------------------------------------------------------------------
# The flow of SGD's modified loss
# --------------------------------------------------------------------------------------------------


def _sgd_field(t, y, args):
    batch_loss, examples, batch_size, lr, reshuffled = args
    if reshuffled:
        loss = _reshuffled_loss_traced(batch_loss, examples, batch_size, lr)
    else:
        loss = _sgd_modified_loss_traced(batch_loss, split_batches(examples, batch_size), lr)
    return jax.tree.map(jnp.negative, jax.grad(loss)(y))


def _sgd_modified_loss_traced(batch_loss, batches, lr):
    def loss(params):
        values, grads = jax.vmap(lambda b: jax.value_and_grad(batch_loss)(params, b))(batches)
        return jnp.mean(values) + lr / 4 * jnp.mean(_per_batch_sq_norms(grads))

    return loss


def _reshuffled_loss_traced(batch_loss, examples, batch_size, lr):
    n = num_examples(examples)
    gd_tilde = _sgd_modified_loss_traced(batch_loss, split_batches(examples, n), lr)
    variance = expected_batch_gradient_variance(batch_loss, examples, batch_size)
    return lambda params: gd_tilde(params) + lr / 4 * variance(params)


@keyword_only(4, "batch_size", "times")
@renamed_arguments(_WHY, data="examples")
def sgd_modified_flow(
    batch_loss: BatchLoss,
    params: PyTree,
    examples: PyTree,
    lr: float,
    *,
    batch_size: int,
    times: Any,
    reshuffled: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 100_000,
) -> PyTree:
    """The gradient flow of SGD's modified loss, ``θ' = −∇E_SGD(θ)``, sampled at ``times``.

    ``reshuffled=True``: ``E_SGD`` = :func:`reshuffled_sgd_modified_loss` (averaged over random partitions,
    what random reshuffling follows); ``False``: :func:`sgd_modified_loss` of the fixed partition of the examples
    in its order. One SGD epoch covers the time ``m·h`` (:func:`epoch_time`). Same solver and tolerances as
    :func:`igr_tutorial.flows.gradient_flow` (SciPy's Dormand–Prince 8(5,3) in float64); ``lr`` and the examples are
    arguments of the compiled field, so a sweep over learning rates compiles once. Smith, Dherin, Barrett & De (2021), Eq. 5 and 15. Chapter 8.
    Not traceable (SciPy steps on the host): a traced argument raises ``TypeError``.
    """
    require_concrete("sgd_modified_flow (SciPy's adaptive ODE solver runs on the host)", params, examples, lr)
    check_learning_rate(lr)
    n = num_examples(examples)
    num_batches(n, batch_size)
    _check_batch_loss(batch_loss, params, split_batches(examples, batch_size))
    return solve_ode(
        _sgd_field, params, times,
        (batch_loss, examples, int(batch_size), jnp.asarray(lr, leaf_dtype(params)), bool(reshuffled)),
        rtol=rtol, atol=atol, max_steps=max_steps,
    )


def finite_population_factor(num_examples: int, batch_size: int) -> float:
    """``(N−B)/(B(N−1))``: the variance of a mean of ``B`` draws without replacement from ``N``, per unit variance."""
    num_batches(num_examples, batch_size)
    if num_examples == 1:
        return 0.0
    return (num_examples - batch_size) / (batch_size * (num_examples - 1))


def epoch_time(lr: float, num_examples: int, batch_size: int) -> float:
    """``m·h``: the flow time one SGD epoch covers (``m = N/B`` steps of size ``h``; a traced ``h`` gives a traced
    time)."""
    check_learning_rate(lr)
    return num_batches(num_examples, batch_size) * (lr if is_traced(lr) else float(lr))


__all__ = [
    "batch_gradient_variance",
    "batch_gradients",
    "epoch_time",
    "expected_batch_gradient_variance",
    "finite_population_factor",
    "full_loss",
    "gd_with_sgd_regularizer",
    "reshuffled_sgd_modified_loss",
    "sgd",
    "sgd_epoch",
    "sgd_epoch_endpoints",
    "sgd_modified_flow",
    "sgd_modified_loss",
]

