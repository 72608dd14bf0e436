"""Measuring errors between trajectories and their order of convergence (chapters 1 and 2).

Host functions: they read computed trajectories with NumPy and return NumPy arrays and Python floats, so they are
not traceable (a clear ``TypeError`` inside ``jax.jit``, ``jax.vmap`` or ``jax.grad``); call them on the results."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ._types import PyTree
from ._validate import require_concrete

__all__ = [
    "convergence_order",
    "global_error",
    "trajectory_error",
]


def trajectory_error(a: PyTree, b: PyTree) -> np.ndarray:
    """Euclidean distance ``‖aₙ − bₙ‖`` at every time index of two trajectories (leading time axis)."""
    require_concrete("trajectory_error (NumPy, on computed trajectories)", a, b)
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        raise ValueError("the two trajectories must have the same pytree structure.")
    sq = None
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise ValueError(f"trajectory shapes differ: {x.shape} vs {y.shape}; sample both at the same times.")
        d = ((x - y) ** 2).reshape(x.shape[0], -1).sum(axis=1)
        sq = d if sq is None else sq + d
    return np.sqrt(sq)


def global_error(a: PyTree, b: PyTree) -> float:
    """``maxₙ ‖aₙ − bₙ‖``: the largest distance between two trajectories over their common times."""
    require_concrete("global_error (NumPy, on computed trajectories)", a, b)
    return float(np.max(trajectory_error(a, b)))


def convergence_order(step_sizes: Any, errors: Any) -> float:
    """Slope ``p`` of the least-squares fit ``log(error) ≈ p·log(h) + c``: the measured order of convergence.

    An error that behaves like ``C·hᵖ`` gives ``p``. Raises ``ValueError`` for fewer than two points or for
    non-positive values (which have no logarithm).
    """
    require_concrete("convergence_order (a NumPy least-squares fit)", step_sizes, errors)
    h = np.asarray(step_sizes, dtype=float)
    e = np.asarray(errors, dtype=float)
    if h.shape != e.shape or h.ndim != 1 or h.size < 2:
        raise ValueError("step_sizes and errors must be 1-D arrays of the same length, at least 2.")
    if np.any(h <= 0) or np.any(e <= 0) or not np.all(np.isfinite(e)):
        raise ValueError("step sizes and errors must be positive and finite to fit a slope on a log-log scale.")
    slope, _ = np.polyfit(np.log(h), np.log(e), 1)
    return float(slope)
