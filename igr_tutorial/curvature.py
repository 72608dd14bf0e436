"""Curvature of a loss without forming its Hessian.

Chapter 2 (the modified equation) and chapter 5 (measuring flatness) use these. Every function works on
parameters given as any JAX pytree.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from ._random import random_normal
from ._pytree import Layout, split_arrays
from ._types import Loss, PyTree
from ._validate import check_int, check_scalar_loss, require_concrete
from .errors import NotConvergedError
from .tree import tree_sq_norm, tree_vdot

__all__ = [
    "TopEigenResult",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hvp",
    "power_iteration_step",
    "third_derivative_contraction",
]


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


def power_iteration_step(hvp_fn: Callable[[PyTree], PyTree], u: PyTree) -> tuple[jax.Array, PyTree]:
    """One step of damped power iteration on ``v ↦ Hv`` from the unit vector ``u`` (any pytree).

    Returns ``(uᵀHu, w/‖w‖)`` with ``w = Hu + σu`` and ``σ = ‖Hu‖ − uᵀHu ≥ 0``: plain power iteration once ``u``
    is the top eigenvector (``σ = 0``), and a damping of negative eigenvalues while they dominate ``u`` (as at
    an initialization, where the most negative eigenvalue is often close in magnitude to the top one). The
    Rayleigh quotient ``uᵀHu`` is the sharpness estimate. Needs the top eigenvalue to be the largest in
    magnitude. The warm-started tracker of the sharpness along training (:func:`~igr_tutorial.train.train`'s
    ``sharpness_iters``, :func:`~igr_tutorial.sharpness.sharpness_trace`; chapters 6, 7 and 9).
    """
    w = hvp_fn(u)
    rayleigh = tree_vdot(u, w)
    shift = jnp.sqrt(tree_sq_norm(w)) - rayleigh
    w = jax.tree.map(lambda wi, ui: wi + shift * ui, w, u)
    norm = jnp.sqrt(tree_sq_norm(w))
    return rayleigh, jax.tree.map(lambda wi: wi / norm, w)


# --------------------------------------------------------------------------------------------------
# Top eigenvalue and trace of the Hessian from Hessian-vector products (chapter 5)
# --------------------------------------------------------------------------------------------------




@dataclasses.dataclass(frozen=True)
class TopEigenResult:
    """Result of :func:`hessian_top_eigenvalue`.

    ``eigenvalue``: the largest (algebraic) eigenvalue estimate ``λ_max``; ``eigenvector``: the matching unit
    vector as a pytree like ``params``; ``residual``: ``‖Hv − λv‖``; ``iterations``: Lanczos steps taken;
    ``converged``: whether the residual is within ``10·tol·|λ_max|``, or all ``m`` directions were explored
    (Lanczos proposes a stop when its cheap bound ``β_j·|s_j|`` is below ``tol·|λ|`` and stops only once one more
    HVP confirms the true residual; the factor 10 allows for rounding between the bound and the residual). The eigenvalue's own error is of order ``residual²/gap``, far below the residual.
    """

    eigenvalue: float
    eigenvector: Any
    residual: float
    iterations: int
    converged: bool

    def __float__(self) -> float:
        return float(self.eigenvalue)


def _hvp_full_precision(f: Callable[[jax.Array], jax.Array], x: jax.Array, v: jax.Array) -> jax.Array:
    """``H(x)v`` for a loss ``f`` of a flat vector, traced at matmul precision HIGHEST (no TF32 on GPUs): the
    HVP of the curvature estimators (Lanczos, Hutchinson), whose residuals and traces need full float32."""
    with jax.default_matmul_precision("highest"):
        return jax.jvp(jax.grad(f), (x,), (v,))[1]


def _top_ritz_pair(alphas: jax.Array, betas: jax.Array, j) -> tuple[jax.Array, jax.Array]:
    """Top eigenpair of the Lanczos tridiagonal ``T_j`` (its leading ``j×j`` block), in a fixed frame.

    ``alphas``/``betas`` have the static length ``k`` of the frame; rows ``≥ j`` are unused. They are decoupled
    (zero off-diagonal) and their diagonal is set to ``−2s − tiny`` with ``s = max_i (|α_i| + |β_{i−1}| + |β_i|)``
    over the active rows, a Gershgorin bound on ``‖T_j‖``: below every eigenvalue of ``T_j``, so the top pair is
    ``T_j``'s, and of the spectrum's own scale. A solver with normwise error ``ε·‖T‖`` (every GPU eigensolver)
    then keeps ``T_j``'s top pair to ``ε·‖T_j‖``; padding near the floating-point maximum made that error ~1e291.
    """
    k = alphas.shape[0]
    idx = jnp.arange(k)
    active = idx < j
    off = jnp.where(idx[:-1] < j - 1, betas[:-1], 0.0)
    absoff = jnp.abs(off)
    row_bound = jnp.abs(alphas) + jnp.concatenate([absoff, jnp.zeros(1, alphas.dtype)])
    row_bound = row_bound + jnp.concatenate([jnp.zeros(1, alphas.dtype), absoff])
    scale = jnp.max(jnp.where(active, row_bound, 0.0))
    pad = -2.0 * scale - jnp.finfo(alphas.dtype).tiny
    diag = jnp.where(active, alphas, pad)
    T = jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1)
    evals, evecs = jnp.linalg.eigh(T)
    return evals[-1], jnp.where(active, evecs[:, -1], 0.0)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _lanczos_top(flat_loss, loss_arrays, x, v0, num_iters: int, n: int, tol):
    """Lanczos with full re-orthogonalization on ``v ↦ H(x)v``, stopping when the top Ritz pair converges.

    The cheap bound ``β_j·|s_j|`` only proposes a stop: the Ritz vector's true residual ``‖Hy − θy‖`` is then
    formed with one more HVP, and the loop goes on unless it is within ``10·tol·|θ|`` (the public criterion).
    HVPs are traced at full float32 matmul precision (TF32 would put a ~1e-3 floor under the residual).

    The loop body holds a single HVP, applied either to the next Lanczos vector (phase "expand") or to the
    proposed Ritz vector (phase "verify"): XLA compiles each HVP of a program anew, and the HVPs dominate this
    function's compile time (see the CHANGELOG for the measurement). A stop forced by
    the step cap, an invariant subspace or ``j = n`` also passes through "verify", which forms ``Hy`` for the
    returned residual.
    """
    dtype = x.dtype
    f = flat_loss.bind(loss_arrays)

    def ritz_vector(s, V):
        y = s @ V
        return y / jnp.linalg.norm(y)

    def expand(state, w):
        j, V, alphas, betas, verify, forced, finished, theta, y, hy = state
        v = V[j]
        alpha = jnp.vdot(w, v)
        w = w - V.T @ (V @ w)  # full re-orthogonalization (twice is enough)
        w = w - V.T @ (V @ w)
        beta = jnp.linalg.norm(w)
        alphas = alphas.at[j].set(alpha)
        betas = betas.at[j].set(beta)
        theta, s = _top_ritz_pair(alphas, betas, j + 1)
        estimate_ok = beta * jnp.abs(s[j]) <= tol * jnp.abs(theta)
        invariant = beta <= 10 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(theta), 1.0)
        forced = invariant | (j + 1 >= n) | (j + 1 >= num_iters)
        V = jnp.where(j + 1 < num_iters, V.at[jnp.minimum(j + 1, num_iters - 1)].set(w / jnp.where(beta > 0, beta, 1.0)), V)
        return j + 1, V, alphas, betas, estimate_ok | forced, forced, finished, theta, ritz_vector(s, V), hy

    def check(state, w):
        j, V, alphas, betas, verify, forced, finished, theta, y, hy = state
        verified = jnp.linalg.norm(w - theta * y) <= 10 * tol * jnp.abs(theta)
        return j, V, alphas, betas, jnp.array(False), forced, verified | forced, theta, y, w

    def body(state):
        j, V, verify, y = state[0], state[1], state[4], state[8]
        w = _hvp_full_precision(f, x, jnp.where(verify, y, V[jnp.minimum(j, num_iters - 1)]))
        return lax.cond(verify, check, expand, state, w)

    V0 = jnp.zeros((num_iters, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    false = jnp.array(False)
    zeros_n = jnp.zeros(n, dtype)
    state = (0, V0, jnp.zeros(num_iters, dtype), jnp.zeros(num_iters, dtype), false, false, false,
             jnp.zeros((), dtype), zeros_n, zeros_n)
    j, _, _, _, _, _, _, theta, vec, hv = lax.while_loop(lambda st: ~st[6], body, state)
    return theta, vec, hv, j


def hessian_top_eigenvalue(
    loss: Loss,
    params: PyTree,
    *,
    key: jax.Array | None = None,
    tol: float = 1e-6,
    max_iters: int = 100,
    on_failure: str = "raise",
) -> TopEigenResult:
    """The largest eigenvalue ``λ_max`` of the Hessian ``∇²E(θ)`` (the *sharpness*), from HVPs only.

    Runs the Lanczos iteration with full re-orthogonalization on ``v ↦ H v`` (one :func:`hvp` per step,
    never a dense Hessian) from a random start drawn with ``key`` (default ``PRNGKey(0)``), and stops when
    the top Ritz pair's residual bound falls below ``tol·|λ_max|`` *and* one more HVP confirms the true residual
    ``‖Hv − λv‖ ≤ 10·tol·|λ_max|``, or after ``max_iters`` steps. Lanczos
    finds the algebraically largest eigenvalue also when negative eigenvalues are larger in magnitude
    (where plain power iteration would not). Memory: ``max_iters`` vectors of the parameters' size.

    If the tolerance is not met, ``on_failure="raise"`` raises :class:`~igr_tutorial.errors.NotConvergedError` with the residual
    reached; ``"warn"`` warns and ``"ignore"`` returns the estimate with ``converged=False``. Chapter 5
    (Golub & Van Loan, *Matrix Computations*, Sec. 10.1).
    Not traceable (the convergence check and the residual run on the host): a traced argument raises ``TypeError``; inside ``jit`` use :func:`power_iteration_step`.
    """

    require_concrete("hessian_top_eigenvalue (its convergence check runs on the host)", params, key)
    if on_failure not in ("raise", "warn", "ignore"):
        raise ValueError(f"on_failure must be 'raise', 'warn' or 'ignore', got {on_failure!r}.")
    max_iters = check_int(max_iters, "max_iters", minimum=1, what="the cap on Lanczos steps")
    if not (tol > 0):
        raise ValueError(f"tol must be positive, got {tol!r}.")
    check_scalar_loss(loss, params)
    x, unravel = ravel_pytree(params)
    n = x.shape[0]
    k = min(max_iters, n)
    key = jax.random.PRNGKey(0) if key is None else key
    v0 = random_normal(key, (n,), x.dtype)  # jax.random.normal's draw, compiled sooner
    flat_loss = _FlatLoss(loss, params)
    theta, vec, hv, iters = _lanczos_top(flat_loss, flat_loss.arrays, x, v0, k, n, jnp.asarray(tol, x.dtype))
    theta, iters = float(theta), int(iters)
    # The residual ‖Hv − λv‖ is formed in NumPy, outside the compiled loop.
    residual = float(np.linalg.norm(np.asarray(hv, np.float64) - theta * np.asarray(vec, np.float64)))
    converged = residual <= 10 * tol * max(abs(theta), 1e-30) or iters >= n
    if not converged:
        msg = (
            f"hessian_top_eigenvalue did not converge: after {iters} Lanczos steps the residual ‖Hv − λv‖ is "
            f"{residual:.3e} for λ ≈ {theta:.6g} (asked for ≤ {tol:g}·|λ|). Raise max_iters, loosen tol, or "
            "pass on_failure='ignore' to use the estimate anyway."
        )
        if on_failure == "raise":
            raise NotConvergedError(msg)
        if on_failure == "warn":
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return TopEigenResult(theta, unravel(vec), residual, iters, converged)


class _FlatLoss:
    """``loss`` as a function of the flattened parameter vector (:class:`~igr_tutorial._pytree.Layout`, the order
    of ``ravel_pytree``): hashable by the loss's static part and the layout, so that ``jit`` compiles once per loss
    and parameter layout rather than once per call. A loss that is a pytree holding arrays (such as
    :func:`~igr_tutorial.nets.train_loss_fn`'s, which holds the training data) is split first
    (:func:`~igr_tutorial._pytree.split_arrays`): :meth:`bind` puts its arrays back inside the compiled function,
    where they are arguments, not constants baked into the program."""

    def __init__(self, loss: Loss, params: PyTree):
        self.static, self.arrays = split_arrays(loss, "the loss")
        self.layout = Layout(params)

    def bind(self, loss_arrays):
        full = self.static.combine(loss_arrays)
        return lambda x: full(self.layout.unravel(x))

    def __hash__(self):
        return hash((self.static, self.layout))

    def __eq__(self, other):
        return isinstance(other, _FlatLoss) and (self.static, self.layout) == (other.static, other.layout)


def hessian_trace(loss: Loss, params: PyTree, key: jax.Array, num_samples: int = 100) -> jax.Array:
    """Hutchinson's estimate of ``tr ∇²E(θ)``: the mean of ``zᵀHz`` over Rademacher vectors ``z``.

    ``E[zᵀHz] = tr H`` for ``z`` with independent ±1 entries; the estimate uses ``num_samples`` HVPs and
    its standard error shrinks like ``1/√num_samples`` (Hutchinson 1990). Chapter 5 relates it to the
    expected loss increase under Gaussian parameter noise, ``E[E(θ+σε)] − E(θ) ≈ ½σ²·tr H``.
    """
    num_samples = check_int(num_samples, "num_samples", minimum=1, what="Rademacher probes")
    check_scalar_loss(loss, params)
    x, _ = ravel_pytree(params)
    zs = jax.random.rademacher(key, (num_samples, x.shape[0]), dtype=x.dtype)
    flat_loss = _FlatLoss(loss, params)
    return _hutchinson(flat_loss, flat_loss.arrays, x, zs)


@functools.partial(jax.jit, static_argnums=0)
def _hutchinson(flat_loss, loss_arrays, x, zs):
    """Mean of ``zᵀH(x)z`` over the rows ``z`` of ``zs``; compiled once per loss and parameter layout.

    HVPs at full float32 matmul precision, as in :func:`_lanczos_top`; the mean of the ``zᵀHz`` is a float sum
    of ``num_samples`` terms of their own scale, so float32 costs no more than its ~1e-7 relative rounding.
    """
    f = flat_loss.bind(loss_arrays)

    def quad(z):
        return jnp.vdot(z, _hvp_full_precision(f, x, z), precision=lax.Precision.HIGHEST)

    return jnp.mean(lax.map(quad, zs))
