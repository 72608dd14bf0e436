"""Pytrees for compiled functions, written once: a pytree split into its arrays (arguments of a ``jit``) and a
hashable static part (:func:`split_arrays`, as Equinox's ``partition(tree, is_array)`` / ``filter_jit``), and the
flat-vector layout of a parameter pytree (:class:`Layout`, as ``jax.flatten_util.ravel_pytree`` but hashable)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._types import PyTree

__all__: list[str] = []


def is_array(x: Any) -> bool:
    """True for a JAX or NumPy array or NumPy scalar: the leaves a compiled function takes as arguments."""
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


class Static:
    """The part of a pytree that is not an array (functions, ints, strings, bools, the structure of a loss bound
    to its data): its tree structure and non-array leaves, hashable, so a static argument of a ``jit``.
    :meth:`combine` puts the arrays back."""

    def __init__(self, treedef, leaves: tuple):
        self.treedef, self.leaves = treedef, leaves

    def combine(self, arrays) -> PyTree:
        """The tree again, its array leaves taken in order from ``arrays``."""
        it = iter(arrays)
        return jax.tree.unflatten(self.treedef, [next(it) if leaf is None else leaf for leaf in self.leaves])

    def __hash__(self):
        return hash((self.treedef, self.leaves))

    def __eq__(self, other):
        return isinstance(other, Static) and (self.treedef, self.leaves) == (other.treedef, other.leaves)


def split_arrays(tree: PyTree, what: str = "the argument") -> tuple[Static, list]:
    """``tree`` as ``(static part, list of its array leaves)`` (:func:`is_array`): the arrays become arguments of
    the compiled function, so new values of the same shapes (a learning rate, a strength, the data of a loss)
    reuse it. ``TypeError`` naming ``what`` if a non-array part is not hashable."""
    leaves, treedef = jax.tree.flatten(tree)
    static = Static(treedef, tuple(None if is_array(leaf) else leaf for leaf in leaves))
    try:
        hash(static)
    except TypeError as exc:
        raise TypeError(
            f"every non-array part of {what} (functions, ints, bools, pytree nodes) must be hashable, so that the "
            f"compiled function can be reused: {exc}. Pass numbers as arrays (jnp.asarray)."
        ) from exc
    return static, [leaf for leaf in leaves if is_array(leaf)]


class Layout:
    """The structure, shapes and dtypes of a parameter pytree: how a flat vector (``ravel_pytree``'s order) maps
    to it and back. Hashable, so a static argument of a compiled function."""

    def __init__(self, params: PyTree):
        leaves, self.treedef = jax.tree.flatten(params)
        self.shapes = tuple(tuple(np.shape(leaf)) for leaf in leaves)
        self.dtypes = tuple(jnp.result_type(leaf).name for leaf in leaves)
        self.dtype = jnp.result_type(*leaves).name
        self.sizes = tuple(math.prod(shape) for shape in self.shapes)

    def _key(self):
        return self.treedef, self.shapes, self.dtypes

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, Layout) and self._key() == other._key()

    def ravel(self, tree: PyTree) -> jax.Array:
        """The leaves of ``tree`` (this layout) flattened and concatenated, in the common dtype."""
        return jnp.concatenate([jnp.ravel(leaf).astype(self.dtype) for leaf in jax.tree.leaves(tree)])

    def unravel(self, x: jax.Array) -> PyTree:
        """The pytree of one flat vector ``x``, each leaf in its own dtype.

        ``jnp.split``, as ``ravel_pytree``, not static slices: the derivative of a slice is a pad, which jaxlib
        0.10.2's CPU backend fused wrongly into a later reduction (a layer's block of ``Hv`` went missing from
        ``‖Hv − λv‖`` at ~17k parameters); the derivative of a split is a concatenate."""
        pieces = jnp.split(x, np.cumsum(self.sizes)[:-1]) if len(self.sizes) > 1 else [x]
        return jax.tree.unflatten(self.treedef, [p.reshape(s).astype(d)
                                                 for p, s, d in zip(pieces, self.shapes, self.dtypes)])

    def unravel_rows(self, rows: np.ndarray) -> PyTree:
        """The pytree of the rows of ``rows`` (shape ``(T, n)``, on the host), each leaf with a leading axis ``T``."""
        bounds = np.cumsum((0,) + self.sizes)
        return jax.tree.unflatten(self.treedef, [
            jnp.asarray(rows[:, a:b].reshape((rows.shape[0],) + s).astype(d))
            for a, b, s, d in zip(bounds[:-1], bounds[1:], self.shapes, self.dtypes)
        ])
