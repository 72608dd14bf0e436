"""Example losses used across the chapters, as plain functions of a parameter array."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "double_well",
    "quadratic",
    "two_parameter_model",
]


def quadratic(A, b=None) -> Callable[[jax.Array], jax.Array]:
    """``E(θ) = ½·θᵀAθ − bᵀθ`` with ``A`` symmetric. Its gradient is ``Aθ − b`` and its Hessian ``A``.

    GD on it is linear, ``θₙ₊₁ = (I − hA)θₙ + hb``, so every claim has a closed form (chapters 1–2).
    """
    A = jnp.asarray(A)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}.")
    b = jnp.zeros(A.shape[0], A.dtype) if b is None else jnp.asarray(b)
    if b.shape != (A.shape[0],):
        raise ValueError(f"b must have shape ({A.shape[0]},) to match A, got {b.shape}.")

    def loss(theta):
        return 0.5 * theta @ A @ theta - b @ theta

    return loss


def two_parameter_model(x: float = 1.0, y: float = 1.0) -> Callable[[jax.Array], jax.Array]:
    """The paper's first model ``E(a, b) = ½·(y − a·b·x)²`` with ``θ = (a, b)`` (Barrett & Dherin 2021, Sec. 2)."""

    def loss(theta):
        a, b = theta[0], theta[1]
        return 0.5 * (y - a * b * x) ** 2

    return loss


def double_well(theta: jax.Array) -> jax.Array:
    """A smooth non-quadratic loss ``E(u, v) = ¼(u² − 1)² + ½(v − u²/2)² + ⅒·u·v``, used to measure orders."""
    u, v = theta[0], theta[1]
    return 0.25 * (u**2 - 1) ** 2 + 0.5 * (v - 0.5 * u**2) ** 2 + 0.1 * u * v
