"""A multilayer perceptron in plain JAX: parameters are a list of ``{"W", "b"}`` dicts (a pytree).

The default activation is ``tanh``: backward error analysis needs a smooth loss (chapter 6). ``relu`` is
available for comparison.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ._random import random_normal, random_split

__all__ = [
    "ACTIVATIONS",
    "accuracy",
    "classification_loss",
    "cross_entropy",
    "init_mlp",
    "mlp_apply",
]

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "relu": jax.nn.relu,
}

Params = list  # list[dict[str, jax.Array]]


def init_mlp(key: jax.Array, sizes: Sequence[int], dtype=jnp.float32) -> Params:
    """Weights ``W ~ N(0, 1/fan_in)`` (LeCun normal) and zero biases for layer sizes ``sizes``.

    ``sizes = (d_in, h₁, …, n_classes)``; the parameter count is ``Σ (sizes[i]+1)·sizes[i+1]``.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least an input and an output size, all positive; got {sizes}.")
    keys = random_split(key, len(sizes) - 1)  # jax.random.split and .normal, compiled sooner (see _random)
    return [
        {
            "W": random_normal(k, (m, n), dtype) / jnp.sqrt(jnp.asarray(m, dtype)),
            "b": jnp.zeros((n,), dtype),
        }
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp_apply(params: Params, x: jax.Array, activation: str = "tanh") -> jax.Array:
    """Logits of the MLP for inputs ``x`` of shape ``(batch, d_in)``: affine layers, ``activation`` between."""
    try:
        act = ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.") from None
    h = x
    for layer in params[:-1]:
        h = act(h @ layer["W"] + layer["b"])
    return h @ params[-1]["W"] + params[-1]["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy ``−(1/n)·Σ log softmax(logits)[label]`` over the batch."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose largest logit is the label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def classification_loss(params: Params, x: jax.Array, y: jax.Array, activation: str = "tanh") -> jax.Array:
    """``E(θ)``: the mean cross-entropy of the MLP on ``(x, y)``."""
    return cross_entropy(mlp_apply(params, x, activation), y)
