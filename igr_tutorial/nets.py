"""A multilayer perceptron in plain JAX: parameters are a list of ``{"W", "b"}`` dicts (a pytree).

The default activation is ``tanh``: backward error analysis needs a smooth loss (chapter 6). ``relu`` is
available for comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import jax
import jax.numpy as jnp

from ._random import random_normal, random_split

if TYPE_CHECKING:  # pragma: no cover
    from .data import Dataset

__all__ = [
    "ACTIVATIONS",
    "accuracy",
    "classification_loss",
    "cross_entropy",
    "init_mlp",
    "mlp_apply",
    "train_loss_fn",
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


def train_loss_fn(data: Dataset, activation: str = "tanh") -> Callable[[Params], jax.Array]:
    """``θ ↦ E(θ)`` on the full training set (for :func:`~igr_tutorial.modified.r_ig` or the curvature functions).

    Make it once and reuse it: compiled functions such as :func:`~igr_tutorial.curvature.hessian_top_eigenvalue` are
    cached per loss object, so a new one per call would recompile every time.
    """
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    return _BoundLoss(x, y, activation)


@jax.tree_util.register_pytree_node_class
class _BoundLoss:
    """A training loss bound to its data; equal (and hash-equal) for the same data and activation.

    A pytree whose leaves are the data, so that functions that compile the loss (such as
    :func:`~igr_tutorial.curvature.hessian_top_eigenvalue`) can pass the data as an argument instead of
    embedding it in the compiled program as a constant.
    """

    def tree_flatten(self):
        return (self.x, self.y), self.activation

    @classmethod
    def tree_unflatten(cls, activation, children):
        return cls(*children, activation)

    def __init__(self, x, y, activation):
        self.x, self.y, self.activation = x, y, activation

    def __call__(self, params):
        return classification_loss(params, self.x, self.y, self.activation)

    def __hash__(self):
        return hash((id(self.x), id(self.y), self.activation))

    def __eq__(self, other):
        return isinstance(other, _BoundLoss) and (self.x is other.x, self.y is other.y, self.activation == other.activation) == (True, True, True)
