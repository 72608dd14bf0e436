"""The package's type aliases, defined once and imported by every module."""

from __future__ import annotations

from typing import Any, Callable

import jax

PyTree = Any
"""Any JAX pytree of arrays (an array, or a dict/list/tuple of arrays): the parameters ``θ``."""

Loss = Callable[[PyTree], jax.Array]
"""A scalar loss ``E(θ)`` of a parameter pytree."""


def public_in(module: str):
    """Give a public object defined in a private module the module readers import it from (so the API page lists
    it there)."""

    def mark(obj):
        obj.__module__ = module
        return obj

    return mark
