"""Small pytree utilities (the arithmetic the flows and regularizers need)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._types import PyTree

__all__ = [
    "num_parameters",
    "tree_sq_norm",
    "tree_vdot",
]


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """Inner product ``Σᵢ aᵢ bᵢ`` over every scalar entry of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tree_sq_norm(a: PyTree) -> jax.Array:
    """Squared Euclidean norm ``‖a‖²`` of a pytree, summed over every scalar entry."""
    return tree_vdot(a, a)


def num_parameters(params: PyTree) -> int:
    """Number ``m`` of scalar parameters in a pytree (the ``m`` of ``R_IG`` and ``λ = h·m/4``)."""
    return int(sum(jnp.size(leaf) for leaf in jax.tree.leaves(params)))
