"""The machinery every trajectory of the package shares, written once.

* :func:`scan_steps`, the one scan driver: ``θ₀`` followed by the iterates of a ``lax.scan``;
* the steps: :func:`descent_step` and :func:`sgd_step` (``θ − h·g``), :func:`rk4_step` (RK4 on the gradient
  flow), and :func:`epoch_permutation` (random reshuffling's order of the examples);
* the divergence check :func:`raise_if_diverged`, done on concrete values only (skipped under a trace);
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._types import PyTree, public_in
from ._validate import is_traced, require_concrete
from .errors import DivergenceError

def scan_steps(step: Callable[[Any, Any], Any], init: Any, xs: Any = None, *, length: int | None = None,
               record: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """Iterate ``carry ← step(carry, x)`` over ``xs`` (or ``length`` times) in one ``lax.scan``.

    Returns ``(final carry, records)``. With ``record`` (e.g. ``lambda c: c`` when the carry is ``θ``, or
    ``lambda c: c[0]`` when it is ``(θ, state)``), ``records`` is ``record(init)`` followed by ``record`` of
    the carry after every step, stacked along a new leading axis: the trajectory ``θ₀, θ₁, …, θₙ`` of every
    loop in the package. Without it, ``records`` is ``None`` (only the final carry is wanted).
    """
    if record is None:
        final, _ = lax.scan(lambda c, x: (step(c, x), None), init, xs, length=length)
        return final, None

    def body(carry, x):
        carry = step(carry, x)
        return carry, record(carry)

    final, traj = lax.scan(body, init, xs, length=length)
    return final, jax.tree.map(lambda a, t: jnp.concatenate([jnp.asarray(a)[None], t]), record(init), traj)


def descent_step(params: PyTree, grads: PyTree, lr: Any) -> PyTree:
    """``θ − h·g`` leaf by leaf, ``h = lr`` cast to each leaf's dtype: the update of GD, SGD and their kin."""
    return jax.tree.map(lambda x, g: x - jnp.asarray(lr).astype(x.dtype) * g, params, grads)


def sgd_step(batch_loss: Callable[[PyTree, Any], jax.Array], params: PyTree, batch: Any, lr: Any) -> PyTree:
    """One SGD step ``θ − h·∇Ê(θ)`` with ``Ê = batch_loss(·, batch)``, the mean loss on ``batch`` (full-batch
    GD when ``batch`` is the whole data set). Used by :mod:`igr_tutorial.stochastic` and
    :mod:`igr_tutorial.train`."""
    return descent_step(params, jax.grad(batch_loss)(params, batch), lr)


def rk4_step(grad: Callable[[PyTree], PyTree], params: PyTree, lr: Any, k1: PyTree | None = None) -> PyTree:
    """One classical Runge–Kutta step of size ``h = lr`` for the gradient flow ``θ' = −∇E``:
    ``θ − (h/6)·(k₁ + 2k₂ + 2k₃ + k₄)`` with ``k₁ = ∇E(θ)`` (or the given ``k1``), ``k₂ = ∇E(θ − (h/2)k₁)``,
    ``k₃ = ∇E(θ − (h/2)k₂)``, ``k₄ = ∇E(θ − h·k₃)``. It follows the flow to ``O(h⁴)``, so it removes implicit
    gradient regularization (Barrett & Dherin 2021, Sec. 5): ``method="rk4"`` of training and of the sharpness
    traces (chapters 6 and 9)."""

    def stage(a, k):
        return grad(jax.tree.map(lambda x, ki: x - a * ki, params, k))

    k1 = grad(params) if k1 is None else k1
    k2 = stage(lr / 2, k1)
    k3 = stage(lr / 2, k2)
    k4 = stage(lr, k3)
    return jax.tree.map(lambda x, a, b, c, d: x - lr / 6 * (a + 2 * b + 2 * c + d), params, k1, k2, k3, k4)


def epoch_permutation(key: jax.Array, epoch: Any, n: int) -> jax.Array:
    """The order of the ``n`` examples in epoch ``epoch`` of random reshuffling: a permutation drawn from
    ``fold_in(key, epoch)`` (the same in :func:`~igr_tutorial.stochastic.sgd` and
    :func:`~igr_tutorial.train.train` with ``method="sgd"``)."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def minibatch_indices(key: jax.Array, step: Any, n: int, batch_size: int) -> jax.Array:
    """The examples of SGD step ``step`` under random reshuffling: with ``m = n // batch_size`` steps per epoch,
    batch ``step mod m`` of epoch ``step // m``'s :func:`epoch_permutation` (a trailing ``n mod batch_size``
    examples of each epoch unused). Step ``e·m + k`` takes what :func:`~igr_tutorial.batches.split_batches`
    puts in batch ``k`` of epoch ``e``: the one selector of :func:`~igr_tutorial.train.train`'s ``"sgd"`` and
    :func:`~igr_tutorial.stochastic.sgd`."""
    per_epoch = n // batch_size
    epoch, k = step // per_epoch, step % per_epoch
    return lax.dynamic_slice_in_dim(epoch_permutation(key, epoch, n), k * batch_size, batch_size)


def leaf_dtype(params: PyTree):
    """The common dtype of the leaves of ``params`` (the dtype step sizes and times are cast to)."""
    return jnp.result_type(*jax.tree.leaves(params))


@public_in("igr_tutorial.flows")
def first_nonfinite_step(trajectory: PyTree) -> int | None:
    """Index of the first iterate with a NaN or infinite entry, or ``None`` if all are finite.

    A host function (it returns a Python ``int``): not traceable. Under ``jit``, use
    ``jnp.isfinite(x).all()`` on the leaves instead."""
    require_concrete("first_nonfinite_step", trajectory)
    leaves = jax.tree.leaves(trajectory)
    n = leaves[0].shape[0]
    finite = np.ones(n, dtype=bool)
    for leaf in leaves:
        finite &= np.isfinite(np.asarray(leaf)).reshape(n, -1).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def raise_if_diverged(traj: PyTree, what: str, detail: str | Callable[[], str], *, of: int | None = None,
                      unit: str = "step", hint: str = "") -> None:
    """Raise :class:`DivergenceError` naming the first non-finite ``unit`` of ``traj`` (leading axis).

    The package's one divergence check, done on concrete values only: under ``jax.jit``, ``jax.vmap`` or ``jax.grad``
    (any traced leaf of ``traj``) it is skipped, so that every trajectory function composes with JAX's
    transformations; a diverged run then returns non-finite entries, which the caller can check on the result.
    ``detail`` (or a function that makes it, called only on a divergence) names the settings."""
    if any(is_traced(leaf) for leaf in jax.tree.leaves(traj)):
        return
    bad = first_nonfinite_step(traj)
    if bad is not None:
        total = "" if of is None else f" of {of}"
        detail = detail() if callable(detail) else detail
        raise DivergenceError(
            f"{what} diverged: the parameters became non-finite at {unit} {bad}{total} with {detail}. Use a smaller "
            f"learning rate{hint}, or pass allow_divergence=True to get the diverging trajectory."
        )
