"""Batches of a training set (chapter 8): its examples, split into ``m = N/B`` equal batches in a given order, and
every order of a few examples (an exact expectation over random reshuffling).

The training set is a pytree of arrays whose leading axis indexes examples, e.g. ``(x, y)`` or
``(data.x_train, data.y_train)`` of a :class:`~igr_tutorial.data.Dataset`. These functions are importable from
:mod:`igr_tutorial.stochastic` too, where chapter 8 calls them.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._deprecation import renamed_arguments
from ._types import PyTree
from ._validate import check_int

__all__ = ["all_permutations", "num_batches", "num_examples", "split_batches"]

_WHY = "`data` is a Dataset elsewhere in the package; here it is a pytree of examples"


@renamed_arguments(_WHY, data="examples")
def num_examples(examples: PyTree) -> int:
    """The number ``N`` of examples in ``examples`` (the common length of the leading axis of its arrays)."""
    leaves = jax.tree.leaves(examples)
    if not leaves:
        raise ValueError("examples must contain at least one array, e.g. a tuple (x, y) with one row per example.")
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"every array in examples must have the same leading (example) axis; got leading sizes {sorted(sizes)}."
        )
    return sizes.pop()


def num_batches(num_examples: int, batch_size: int) -> int:
    """``m = N/B``, checking that ``B`` is a positive divisor of ``N`` (all batches the same size)."""
    batch_size = check_int(batch_size, "batch_size", minimum=1, what="examples per batch")
    if num_examples % batch_size:
        divisors = [d for d in range(1, num_examples + 1) if num_examples % d == 0]
        raise ValueError(
            f"batch_size={batch_size} does not divide the {num_examples} examples; the formulas of chapter 8 "
            f"need m = N/B equal batches. Use a divisor of N (e.g. one of {divisors[:12]}) or drop examples."
        )
    return num_examples // int(batch_size)


@renamed_arguments(_WHY, data="examples")
def split_batches(examples: PyTree, batch_size: int, permutation: Any = None) -> PyTree:
    """The ``m = N/B`` batches of ``examples`` as a pytree with leading axes ``(m, B)``.

    With ``permutation`` (a permutation of ``range(N)``), the examples are reordered first: batch ``k`` holds
    examples ``permutation[k·B : (k+1)·B]``. Works inside ``jit``/``vmap`` for a traced permutation.
    """
    n = num_examples(examples)
    m = num_batches(n, batch_size)
    if permutation is not None:
        if np.shape(permutation) != (n,):
            raise ValueError(f"permutation must have shape ({n},) (one index per example), got {np.shape(permutation)}.")
        examples = jax.tree.map(lambda x: jnp.asarray(x)[permutation], examples)
    return jax.tree.map(lambda x: jnp.reshape(x, (m, batch_size) + tuple(np.shape(x)[1:])), examples)


def all_permutations(n: int) -> np.ndarray:
    """All ``n!`` permutations of ``range(n)`` as an integer array of shape ``(n!, n)`` (``n ≤ 8``).

    Averaging SGD over all of them is an *exact* expectation over random reshuffling (chapter 8).
    """
    n = check_int(n, "n", minimum=1, what="at most 8: 8! = 40320 orderings")
    if n > 8:
        raise ValueError(f"n must be an integer from 1 to 8 (8! = 40320 orderings), got {n!r}.")
    return np.array(list(itertools.permutations(range(n))), dtype=np.int32)
