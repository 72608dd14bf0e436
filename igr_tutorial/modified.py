"""The modified loss of gradient descent and the implicit gradient regularizer ``R_IG``.

Backward error analysis (Barrett & Dherin 2021, Theorem 3.1; chapter 3 of the book) shows that the
*first-order modified equation* of gradient descent with step ``h`` (the modified equation truncated after its
``h¹`` correction; chapter 2) is the gradient flow of

    Ẽ(θ) = E(θ) + (h/4)·‖∇E(θ)‖²  =  E(θ) + λ·R_IG(θ),
    R_IG(θ) = (1/m)·Σᵢ (∂E/∂θᵢ)²,   λ = h·m/4,

where ``m`` is the number of scalar parameters (the paper's Eq. 3 and 4). One GD step matches the time-``h``
flow of this equation up to ``O(h³)`` (local error), and GD stays within ``O(h²)`` of the flow over a fixed
time (global error).
"""

from __future__ import annotations

import numbers

import jax

from ._types import Loss, PyTree
from ._validate import check_learning_rate, check_scalar_loss
from .curvature import hvp
from .tree import num_parameters, tree_sq_norm

__all__ = [
    "gradient_norm_squared",
    "implicit_regularization_strength",
    "modified_loss",
    "penalized_gradient",
    "penalized_loss",
    "r_ig",
]


def gradient_norm_squared(loss: Loss, params: PyTree) -> jax.Array:
    """``‖∇E(θ)‖²``, summed over every scalar parameter."""
    return tree_sq_norm(jax.grad(loss)(params))


def penalized_loss(loss: Loss, strength: float) -> Loss:
    """The function ``θ ↦ E(θ) + c·‖∇E(θ)‖²`` with ``c = strength``: the one builder of a gradient penalty.

    ``c = lr/4`` is GD's modified loss (:func:`modified_loss`), ``c = lr(1+β)/(4(1−β)²)`` heavy ball's
    (:func:`~igr_tutorial.momentum.momentum_modified_loss`), and ``c = μ`` the loss that explicit gradient
    regularization (EGR, ``method="egr"`` of :func:`~igr_tutorial.train.train`) descends (Barrett & Dherin
    2021, Sec. 3 and 5). Its gradient is :func:`penalized_gradient`. Chapters 3, 7 and 9.
    """

    def loss_tilde(params: PyTree) -> jax.Array:
        check_scalar_loss(loss, params)
        value, grads = jax.value_and_grad(loss)(params)
        return value + strength * tree_sq_norm(grads)

    return loss_tilde


def penalized_gradient(loss: Loss, params: PyTree, strength: float) -> PyTree:
    """``∇(E + c·‖∇E‖²) = ∇E + 2c·H∇E`` at ``params`` (``c = strength``): the gradient of :func:`penalized_loss`.

    One gradient and one Hessian-vector product (forward-over-reverse, :func:`~igr_tutorial.curvature.hvp`),
    never the Hessian: the update direction of EGR (Barrett & Dherin 2021, Sec. 5; chapter 7) and, negated,
    the field of heavy ball's modified flow (:func:`~igr_tutorial.flows.penalized_gradient_flow`).
    """
    g = jax.grad(loss)(params)
    hg = hvp(loss, params, g)
    return jax.tree.map(lambda gi, hi: gi + 2 * strength * hi, g, hg)


def modified_loss(loss: Loss, lr: float) -> Loss:
    """The function ``θ ↦ E(θ) + (lr/4)·‖∇E(θ)‖²`` (Barrett & Dherin 2021, Eq. 3).

    Its gradient flow is GD's first-order modified equation, truncated after the ``lr¹`` term: local error
    ``O(lr³)``, global error ``O(lr²)`` (chapters 2 and 3). :func:`penalized_loss` with ``c = lr/4``.
    ``lr`` must be positive and finite.
    """
    check_learning_rate(lr)
    return penalized_loss(loss, lr / 4)


def r_ig(loss: Loss, params: PyTree) -> jax.Array:
    """The implicit gradient regularizer ``R_IG(θ) = (1/m)·Σᵢ (∂E/∂θᵢ)²`` (Barrett & Dherin 2021, Eq. 4).

    ``m`` is the number of scalar parameters in ``params`` (all leaves of the pytree together).
    """
    check_scalar_loss(loss, params)
    return gradient_norm_squared(loss, params) / num_parameters(params)


def implicit_regularization_strength(lr: float, params_or_m: PyTree | int) -> float:
    """The strength ``λ = lr·m/4`` with which GD implicitly adds ``λ·R_IG`` to the loss.

    ``params_or_m`` is either the parameter pytree (``m`` is counted) or ``m`` itself. With it,
    ``modified_loss(E, lr)(θ) == E(θ) + λ·r_ig(E, θ)`` (Barrett & Dherin 2021, Eq. 4; chapter 3).
    """
    check_learning_rate(lr)
    if isinstance(params_or_m, numbers.Integral) and not isinstance(params_or_m, bool):
        m = int(params_or_m)
        if m <= 0:
            raise ValueError(f"the number of parameters m must be positive, got {m}.")
    else:
        m = num_parameters(params_or_m)
    return lr * m / 4
