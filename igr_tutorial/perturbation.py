"""Robustness to parameter noise (Prediction 2.4): the test accuracy of a trained network whose parameters are
perturbed, ``θ + σ·ε`` with ``ε ~ N(0, I)`` (chapters 6 and 7)."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from ._validate import require_concrete
from .data import Dataset
from .nets import accuracy, mlp_apply

__all__ = ["perturbed_accuracies", "perturbed_accuracy"]


def perturbed_accuracy(
    params: Any,
    data: Dataset,
    sigmas: Sequence[float],
    key: jax.Array,
    num_draws: int = 10,
    activation: str = "tanh",
) -> np.ndarray:
    """Mean test accuracy of ``θ + σ·ε``, ``ε ~ N(0, I)``, for each ``σ`` (Prediction 2.4: robustness).

    Returns an array of shape ``(len(sigmas),)``, each entry averaged over ``num_draws`` noise draws; the same
    ``num_draws`` draws of ``ε`` (drawn from ``key``) serve every ``σ``. One run of :func:`perturbed_accuracies`.
    Not traceable (NumPy results): a traced argument raises ``TypeError``.
    """
    stacked = jax.tree.map(lambda x: jnp.asarray(x)[None], params)
    return perturbed_accuracies(stacked, data, sigmas, jnp.asarray(key)[None], num_draws, activation)[0]


def perturbed_accuracies(
    stacked_params: Any,
    data: Dataset,
    sigmas: Sequence[float],
    keys: jax.Array,
    num_draws: int = 10,
    activation: str = "tanh",
) -> np.ndarray:
    """:func:`perturbed_accuracy` of every run of a sweep in one compiled program.

    ``stacked_params``: the runs' parameters stacked along a leading axis; ``keys``: one PRNG key per run;
    ``sigmas``: one list of noise levels for every run, or one row per run (shape ``(runs, k)``, e.g. a noise
    relative to each network's weight scale). Returns an array ``(runs, k)``. Each run's noise is one Gaussian draw of shape
    ``(num_draws, m)`` over its ``m`` flattened parameters: XLA compiles every random draw of a program
    separately, and a draw per layer took most of the compile time (chapters 6 and 7).
    Not traceable (NumPy results): a traced argument raises ``TypeError``.
    """
    require_concrete("perturbed_accuracies (it returns NumPy arrays)", stacked_params, sigmas, keys)
    x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    runs = len(keys)
    sig = np.asarray(sigmas, dtype=float)
    if sig.ndim == 1:
        sig = np.broadcast_to(sig, (runs, sig.size))
    if sig.ndim != 2 or sig.shape[0] != runs:
        raise ValueError(f"sigmas must be one list of noise levels or one row per run ({runs}), got shape {sig.shape}.")
    sig = jnp.asarray(sig, jax.tree.leaves(stacked_params)[0].dtype)
    return np.asarray(_perturbed_accuracies(stacked_params, x, y, sig, keys, num_draws=num_draws,
                                            activation=activation))


@functools.partial(jax.jit, static_argnames=("num_draws", "activation"))
def _perturbed_accuracies(stacked, x, y, sig, keys, *, num_draws, activation):
    def one_run(args):
        params, key, sigmas = args
        flat, unravel = ravel_pytree(params)
        eps = jax.random.normal(key, (num_draws, flat.shape[0]), flat.dtype)

        def noisy(sigma):
            return jnp.mean(lax.map(lambda e: accuracy(mlp_apply(unravel(flat + sigma * e), x, activation), y), eps))

        return lax.map(noisy, sigmas)

    return lax.map(one_run, (stacked, keys, sig))
