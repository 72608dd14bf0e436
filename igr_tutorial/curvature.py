"""Curvature of a loss without forming its Hessian.

Chapter 2 (the modified equation) and chapter 5 (measuring flatness) use these. Every function works on
parameters given as any JAX pytree.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from .tree import tree_vdot

PyTree = Any
Loss = Callable[[PyTree], jax.Array]


def hvp(loss: Loss, params: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product ``H(θ)·v`` with ``H = ∇²E``, by forward-over-reverse differentiation.

    ``H v = d/dε ∇E(θ + εv)`` at ``ε = 0``: one ``jax.jvp`` of ``jax.grad(loss)``, so the cost is a small
    multiple of one gradient and the Hessian is never formed. ``v`` has the structure of ``params``.
    """
    return jax.jvp(jax.grad(loss), (params,), (v,))[1]


def third_derivative_contraction(loss: Loss, params: PyTree, v: PyTree) -> PyTree:
    """``∇³E(θ)[v, v]``: the vector with entries ``Σⱼₖ ∂³E/∂θᵢ∂θⱼ∂θₖ · vⱼ vₖ``.

    Computed as ``∇_θ (vᵀ H(θ) v)`` with ``v`` held fixed: one gradient of one Hessian-vector product.
    It appears in the second-order term of GD's modified equation (chapter 2).
    """
    return jax.grad(lambda p: tree_vdot(v, hvp(loss, p, v)))(params)
