"""The package's private engine room: the machinery every trajectory function shares, written once.

* the types :data:`PyTree` and :data:`Loss` (defined here only; the public modules import them);
* the error classes :class:`DivergenceError` and :class:`FlowError` (public as ``igr_tutorial.flows.*`` and
  ``igr_tutorial.*``);
* input validation: clear ``ValueError`` messages instead of NaN plots (``check_*``);
* :func:`scan_steps`, the one scan driver: ``θ₀`` followed by the iterates of a ``lax.scan``;
* the steps: :func:`descent_step` and :func:`sgd_step` (``θ − h·g``), :func:`rk4_step` (RK4 on the gradient
  flow), and :func:`epoch_permutation` (random reshuffling's order of the examples);
* batches of runs: :func:`run_mode` (vmap or a loop) and :func:`stack_runs`;
* :func:`raise_if_diverged`, the divergence check, and :func:`solve_ode`, the adaptive ODE solve behind every
  flow (SciPy's Dormand–Prince on a once-compiled vector field);
* :func:`random_normal` and :func:`random_split`: ``jax.random``'s draws, bit for bit, compiled sooner on a CPU;
* :func:`partition_arrays` / :func:`combine_arrays`: a pytree split into its array leaves (arguments of a
  compiled function) and the rest (static), and put back together.

Nothing here is part of the public API; the chapters import the public modules (``flows``, ``stochastic``,
``optimizers``, ``train``), which call these.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PyTree = Any
"""Any JAX pytree of arrays (an array, or a dict/list/tuple of arrays): the parameters ``θ``."""

Loss = Callable[[PyTree], jax.Array]
"""A scalar loss ``E(θ)`` of a parameter pytree."""


def _public_in(module: str):
    """Give a public object defined here the module readers import it from (so the API page lists it there)."""

    def mark(obj):
        obj.__module__ = module
        return obj

    return mark


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@_public_in("igr_tutorial.flows")
class DivergenceError(ValueError):
    """Gradient descent produced non-finite parameters (the step size is past the stability limit)."""


@_public_in("igr_tutorial.flows")
class FlowError(ValueError):
    """The ODE solver could not integrate a flow over the requested times."""


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


def is_traced(x: Any) -> bool:
    """True when ``x`` is an abstract value inside ``jit``/``vmap`` (no concrete value to check)."""
    return isinstance(x, jax.core.Tracer)


def real_scalar(x: Any, name: str, expected: str) -> float | None:
    """``x`` as a float, or ``None`` under tracing; ``ValueError`` ("{name} must be {expected}") unless it is one
    real number."""
    if is_traced(x):
        return None
    arr = np.asarray(x)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be {expected}, got {x!r}.")
    return float(arr)


def check_nonnegative(x: Any, name: str, what: str, *, traced: bool = True) -> None:
    """Raise ``ValueError`` unless ``x`` is one finite real number ``≥ 0``; ``what`` says what it is (e.g.
    "the SAM radius, e.g. 0.05"). A traced value passes when ``traced`` (it cannot be checked), else it is refused:
    the caller needs a concrete number."""
    value = real_scalar(x, name, "a single real number >= 0")
    if value is None and not traced:
        raise ValueError(f"{name} must be a concrete number ({what}), not a traced value: call this outside jit/vmap.")
    if value is not None and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0 ({what}), got {x!r}.")


def check_learning_rate(lr: Any, name: str = "lr") -> None:
    """Raise ``ValueError`` unless ``lr`` is a finite, positive scalar (skipped under tracing)."""
    if is_traced(lr):
        return
    try:
        arr = np.asarray(lr)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be a positive number, got {lr!r}.") from exc
    if arr.ndim != 0:
        raise ValueError(
            f"{name} must be a single number, got an array of shape {arr.shape}. "
            "To run several learning rates at once, use jax.vmap over the learning rate "
            "(see gradient_descent_sweep)."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real number, got {lr!r}.")
    value = float(arr)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}. Pass a positive step size such as 0.01.")
    if value <= 0:
        raise ValueError(
            f"{name} must be > 0, got {value}. Gradient descent needs a positive step size (for example 0.01); "
            "a negative one climbs the loss instead of descending it."
        )


def check_steps(steps: Any) -> int:
    """Return ``steps`` as an int, or raise ``ValueError`` if it is not a non-negative integer."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    return int(steps)


def check_times(times: Any) -> jax.Array:
    """Return ``times`` as a 1-D array, or raise ``ValueError`` if it is not finite and strictly increasing."""
    arr = np.asarray(times)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"times must be a non-empty 1-D array starting at the initial time, got shape {arr.shape}. "
            "For example jnp.linspace(0.0, 5.0, 51)."
        )
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError("times must contain only finite numbers.")
    if arr.size > 1 and not np.all(np.diff(arr) > 0):
        bad = int(np.argmax(np.diff(arr) <= 0))
        raise ValueError(
            f"times must be strictly increasing, but times[{bad + 1}] = {arr[bad + 1]} does not exceed "
            f"times[{bad}] = {arr[bad]}. Sort the times and remove duplicates (e.g. jnp.unique(times))."
        )
    return jnp.asarray(arr)


def check_params(params: Any) -> None:
    """Raise ``ValueError`` unless ``params`` is a pytree with at least one floating-point leaf."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params must contain at least one array (an array, or a dict/list/tuple of arrays).")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"params must be floating-point arrays, got a leaf of dtype {dtype}. "
                "Convert with jnp.asarray(x, dtype=float), e.g. jnp.array([1.0, 2.0]) instead of jnp.array([1, 2])."
            )


def check_scalar_loss(loss: Callable[[Any], Any], params: Any) -> None:
    """Raise ``ValueError`` unless ``loss(params)`` returns a real scalar (checked abstractly, no compute)."""
    if not callable(loss):
        raise ValueError(f"loss must be a function params -> scalar, got {type(loss).__name__}.")
    check_params(params)
    out = jax.eval_shape(loss, params)
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"loss must return a scalar (shape ()), but it returned shape {shape}. "
            "Reduce over examples, e.g. return jnp.mean(residuals**2) instead of residuals**2."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"loss must return a floating-point scalar, got dtype {out.dtype}.")


# --------------------------------------------------------------------------------------------------
# The scan driver and the descent step
# --------------------------------------------------------------------------------------------------


def scan_steps(step: Callable[[Any, Any], Any], init: Any, xs: Any = None, *, length: int | None = None,
               record: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """Iterate ``carry ← step(carry, x)`` over ``xs`` (or ``length`` times) in one ``lax.scan``.

    Returns ``(final carry, records)``. With ``record`` (e.g. ``lambda c: c`` when the carry is ``θ``, or
    ``lambda c: c[0]`` when it is ``(θ, state)``), ``records`` is ``record(init)`` followed by ``record`` of
    the carry after every step, stacked along a new leading axis: the trajectory ``θ₀, θ₁, …, θₙ`` of every
    loop in the package. Without it, ``records`` is ``None`` (only the final carry is wanted).
    """
    if record is None:
        final, _ = lax.scan(lambda c, x: (step(c, x), None), init, xs, length=length)
        return final, None

    def body(carry, x):
        carry = step(carry, x)
        return carry, record(carry)

    final, traj = lax.scan(body, init, xs, length=length)
    return final, jax.tree.map(lambda a, t: jnp.concatenate([jnp.asarray(a)[None], t]), record(init), traj)


def descent_step(params: PyTree, grads: PyTree, lr: Any) -> PyTree:
    """``θ − h·g`` leaf by leaf, ``h = lr`` cast to each leaf's dtype: the update of GD, SGD and their kin."""
    return jax.tree.map(lambda x, g: x - jnp.asarray(lr).astype(x.dtype) * g, params, grads)


def sgd_step(batch_loss: Callable[[PyTree, Any], jax.Array], params: PyTree, batch: Any, lr: Any) -> PyTree:
    """One SGD step ``θ − h·∇Ê(θ)`` with ``Ê = batch_loss(·, batch)``, the mean loss on ``batch`` (full-batch
    GD when ``batch`` is the whole data set). Used by :mod:`igr_tutorial.stochastic` and
    :mod:`igr_tutorial.train`."""
    return descent_step(params, jax.grad(batch_loss)(params, batch), lr)


def rk4_step(grad: Callable[[PyTree], PyTree], params: PyTree, lr: Any, k1: PyTree | None = None) -> PyTree:
    """One classical Runge–Kutta step of size ``h = lr`` for the gradient flow ``θ' = −∇E``:
    ``θ − (h/6)·(k₁ + 2k₂ + 2k₃ + k₄)`` with ``k₁ = ∇E(θ)`` (or the given ``k1``), ``k₂ = ∇E(θ − (h/2)k₁)``,
    ``k₃ = ∇E(θ − (h/2)k₂)``, ``k₄ = ∇E(θ − h·k₃)``. It follows the flow to ``O(h⁴)``, so it removes implicit
    gradient regularization (Barrett & Dherin 2021, Sec. 5): ``method="rk4"`` of training and of the sharpness
    traces (chapters 6 and 9)."""

    def stage(a, k):
        return grad(jax.tree.map(lambda x, ki: x - a * ki, params, k))

    k1 = grad(params) if k1 is None else k1
    k2 = stage(lr / 2, k1)
    k3 = stage(lr / 2, k2)
    k4 = stage(lr, k3)
    return jax.tree.map(lambda x, a, b, c, d: x - lr / 6 * (a + 2 * b + 2 * c + d), params, k1, k2, k3, k4)


def epoch_permutation(key: jax.Array, epoch: Any, n: int) -> jax.Array:
    """The order of the ``n`` examples in epoch ``epoch`` of random reshuffling: a permutation drawn from
    ``fold_in(key, epoch)`` (the same in :func:`~igr_tutorial.stochastic.sgd` and
    :func:`~igr_tutorial.train.train` with ``method="sgd"``)."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def run_mode(mode: str) -> str:
    """``"vmap"`` or ``"loop"`` for a batch of runs: ``mode`` itself, or for ``"auto"`` a loop over one compiled
    single-run program on a CPU (as fast for these models, and it compiles several times faster) and one vmapped
    program on an accelerator. ``ValueError`` for anything else."""
    if mode not in ("auto", "vmap", "loop"):
        raise ValueError(f"mode must be 'auto', 'vmap' or 'loop', got {mode!r}.")
    if mode == "auto":
        return "loop" if jax.default_backend() == "cpu" else "vmap"
    return mode


def stack_runs(outs: list) -> Any:
    """The outputs of a loop over runs (each a pytree, e.g. ``(final, records)``) stacked along a new leading
    run axis, leaf by leaf: what the vmapped program of the same runs returns."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


# --------------------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------------------


def leaf_dtype(params: PyTree):
    """The common dtype of the leaves of ``params`` (the dtype step sizes and times are cast to)."""
    return jnp.result_type(*jax.tree.leaves(params))


@_public_in("igr_tutorial.flows")
def first_nonfinite_step(trajectory: PyTree) -> int | None:
    """Index of the first iterate with a NaN or infinite entry, or ``None`` if all are finite."""
    leaves = jax.tree.leaves(trajectory)
    n = leaves[0].shape[0]
    finite = np.ones(n, dtype=bool)
    for leaf in leaves:
        finite &= np.isfinite(np.asarray(leaf)).reshape(n, -1).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def raise_if_diverged(traj: PyTree, what: str, detail: str, *, of: int | None = None, unit: str = "step",
                      hint: str = "") -> None:
    """Raise :class:`DivergenceError` naming the first non-finite ``unit`` of ``traj`` (leading axis)."""
    bad = first_nonfinite_step(traj)
    if bad is not None:
        total = "" if of is None else f" of {of}"
        raise DivergenceError(
            f"{what} diverged: the parameters became non-finite at {unit} {bad}{total} with {detail}. Use a smaller "
            f"learning rate{hint}, or pass allow_divergence=True to get the diverging trajectory."
        )


# --------------------------------------------------------------------------------------------------
# Random draws
# --------------------------------------------------------------------------------------------------

# jax.random compiles its threefry hash with all of LLVM's optimizations, which takes 1 to 5 s per shape on a
# laptop CPU: most of the time of initializing a network, and about 20 s in each of chapters 6 and 7. The hash
# is integer arithmetic, so compiled at -O0 it gives the same bits, four to ten times sooner. The float transform
# that follows (bits → uniform on (−1, 1) → √2·erfinv) is jax.random.normal's (jax/_src/random), compiled as
# usual. On a CPU the draws are jax.random.normal's and jax.random.split's bit for bit (tests/test_train.py);
# inside a jit, and on other backends, these functions call jax.random itself.
_FAST_BITS = {np.dtype(np.float32): jnp.uint32, np.dtype(np.float64): jnp.uint64}
# An older jax.jit has no compiler_options: there the hash compiles as usual (same bits, no time saved).
_O0 = ({"compiler_options": {"xla_backend_optimization_level": 0}}
       if "compiler_options" in inspect.signature(jax.jit).parameters else {})


@functools.partial(jax.jit, static_argnames=("shape", "dtype"), **_O0)
def _random_bits(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    return jax.random.bits(key, shape, dtype)


@functools.partial(jax.jit, static_argnames=("num",), **_O0)
def _split_keys(key: jax.Array, num: int) -> jax.Array:
    return jax.random.split(key, num)


@functools.partial(jax.jit, static_argnames=("dtype",))
def _normal_from_bits(bits: jax.Array, dtype) -> jax.Array:
    finfo = jnp.finfo(dtype)
    floats = lax.bitwise_or(lax.shift_right_logical(bits, jnp.array(finfo.bits - finfo.nmant, bits.dtype)),
                            jnp.asarray(np.array(1.0, dtype).view(bits.dtype), dtype=bits.dtype))
    floats = lax.bitcast_convert_type(floats, dtype) - jnp.array(1.0, dtype)  # uniform on [0, 1)
    lo = jnp.asarray(np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype), dtype)
    hi = jnp.asarray(np.array(1.0, dtype), dtype)
    u = lax.max(lo, floats * (hi - lo) + lo)
    return lax.mul(np.array(np.sqrt(2), dtype), lax.erf_inv(u))


def _fast_random() -> bool:
    return jax.default_backend() == "cpu"


def random_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, compiled in a fraction of the time on a CPU."""
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    if _fast_random() and dtype in _FAST_BITS:
        try:
            return _normal_from_bits(_random_bits(key, tuple(int(s) for s in shape), _FAST_BITS[dtype]), dtype)
        except ValueError:  # inside a jit, whose compiler options apply (JAX refuses a nested jit's own)
            pass
    return jax.random.normal(key, shape, dtype)


def random_split(key: jax.Array, num: int = 2) -> jax.Array:
    """``jax.random.split(key, num)``, compiled in a fraction of the time on a CPU."""
    if _fast_random():
        try:
            return _split_keys(key, int(num))
        except ValueError:  # inside a jit, as above
            pass
    return jax.random.split(key, num)


# --------------------------------------------------------------------------------------------------
# Pytrees that hold arrays and functions: split into jit arguments and static parts
# --------------------------------------------------------------------------------------------------


def is_array(x: Any) -> bool:
    """True for a JAX or NumPy array or NumPy scalar: the leaves a compiled function takes as arguments."""
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def partition_arrays(tree: PyTree) -> tuple[PyTree, PyTree]:
    """``(arrays, rest)``: two copies of ``tree``, the first keeping only its array leaves (:func:`is_array`),
    the second everything else (functions, ints, strings…), each with ``None`` in place of the other's leaves.

    ``arrays`` can be passed to a ``jit`` as an argument and ``rest`` as a static argument (when its leaves and
    pytree nodes are hashable, as a loss bound to its data by :func:`~igr_tutorial.train.train_loss_fn` is);
    :func:`combine_arrays` puts them back together. (Equinox's ``partition(tree, is_array)``, written on
    ``jax.tree``.)
    """
    arrays = jax.tree.map(lambda leaf: leaf if is_array(leaf) else None, tree)
    rest = jax.tree.map(lambda leaf: None if is_array(leaf) else leaf, tree)
    return arrays, rest


def combine_arrays(arrays: PyTree, rest: PyTree) -> PyTree:
    """The tree :func:`partition_arrays` split: each leaf taken from ``arrays`` where it is not ``None``,
    else from ``rest``."""
    return jax.tree.map(lambda a, r: r if a is None else a, arrays, rest, is_leaf=lambda x: x is None)


# --------------------------------------------------------------------------------------------------
# The adaptive ODE solve behind every flow
# --------------------------------------------------------------------------------------------------


def _default_tolerances(params: PyTree) -> tuple[float, float]:
    if leaf_dtype(params) == jnp.float64:
        return 1e-10, 1e-12
    return 1e-6, 1e-8


GRADIENT_FLOW_HINT = ("the flow may blow up (a loss unbounded below), or be very stiff; shorten the time span, raise "
                      "max_steps, or loosen rtol/atol")
"""What :func:`solve_ode` tells a reader whose gradient flow (of any modified loss) did not reach the end."""


class _Layout:
    """The structure, shapes and dtypes of a parameter pytree: how a flat vector (``ravel_pytree``'s order) maps
    to it and back. Hashable, so that it can be a static argument of a compiled function."""

    def __init__(self, params: PyTree):
        leaves, self.treedef = jax.tree.flatten(params)
        self.shapes = tuple(tuple(np.shape(leaf)) for leaf in leaves)
        self.dtypes = tuple(jnp.result_type(leaf).name for leaf in leaves)
        self.dtype = jnp.result_type(*leaves).name
        self.sizes = tuple(math.prod(shape) for shape in self.shapes)

    def _key(self):
        return self.treedef, self.shapes, self.dtypes

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _Layout) and self._key() == other._key()

    def ravel(self, tree: PyTree) -> jax.Array:
        """The leaves of ``tree`` (this layout) flattened and concatenated, in the common dtype."""
        return jnp.concatenate([jnp.ravel(leaf).astype(self.dtype) for leaf in jax.tree.leaves(tree)])

    def unravel(self, x: jax.Array) -> PyTree:
        """The pytree of one flat vector ``x``, each leaf in its own dtype (``jnp.split``, as ``ravel_pytree``)."""
        pieces = jnp.split(x, np.cumsum(self.sizes)[:-1]) if len(self.sizes) > 1 else [x]
        return jax.tree.unflatten(self.treedef, [p.reshape(s).astype(d)
                                                 for p, s, d in zip(pieces, self.shapes, self.dtypes)])

    def unravel_rows(self, rows: np.ndarray) -> PyTree:
        """The pytree of the rows of ``rows`` (shape ``(T, n)``, on the host), each leaf with a leading axis ``T``."""
        bounds = np.cumsum((0,) + self.sizes)
        return jax.tree.unflatten(self.treedef, [
            jnp.asarray(rows[:, a:b].reshape((rows.shape[0],) + s).astype(d))
            for a, b, s, d in zip(bounds[:-1], bounds[1:], self.shapes, self.dtypes)
        ])


class _StaticArgs:
    """The part of a field's ``args`` that is not an array (functions, ints, bools, the pytree structure of a loss
    bound to its data), hashable by the structure and those leaves: a static argument of :func:`_rk_stages`."""

    def __init__(self, treedef, leaves: tuple):
        self.treedef, self.leaves = treedef, leaves

    def __hash__(self):
        return hash((self.treedef, self.leaves))

    def __eq__(self, other):
        return isinstance(other, _StaticArgs) and (self.treedef, self.leaves) == (other.treedef, other.leaves)


def _split_args(args: Any) -> tuple[_StaticArgs, list]:
    """``args`` as (static part, list of its array leaves): the arrays become arguments of the compiled field, so
    new values of the same shapes (a learning rate, a strength, the data) reuse it."""
    leaves, treedef = jax.tree.flatten(args)
    static = _StaticArgs(treedef, tuple(None if is_array(leaf) else leaf for leaf in leaves))
    try:
        hash(static)
    except TypeError as exc:
        raise TypeError(
            "solve_ode: every non-array part of the field's args (functions, ints, bools, pytree nodes) must be "
            f"hashable, so that the compiled field can be reused: {exc}. Pass numbers as arrays (jnp.asarray)."
        ) from exc
    return static, [leaf for leaf in leaves if is_array(leaf)]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _rk_stages(field, static: _StaticArgs, layout: _Layout, t, y, h, K, table, c, b, lo, hi, arrays):
    """Rows ``lo+1 … hi`` of the Runge–Kutta stages ``K`` of one step, on the device, in one call:
    ``K[r+1] = f(t + c[r]·h, y + h·Σⱼ table[r, j]·K[j])`` for ``r = lo … hi−1``, with ``f = field(·, ·, args)``
    evaluated in the parameters' dtypes on the flat vector of ``θ`` (``layout``). Returns ``(K, y + h·Kᵀb)``.

    One compiled program per field, static part of ``args`` and layout: ``t``, ``y``, ``h``, the tableau and the
    array leaves of ``args`` are arguments, so a new learning rate, strength, data set or starting point of the
    same shapes reuses it. A whole step (all stages and the derivative at its end) costs one call instead of
    one per stage; ``h = 0``, ``lo = 0``, ``hi = 1`` evaluates ``f(t, y)`` alone. The stages are combined in
    float64 when JAX's float64 is on (else float32).
    """
    it = iter(arrays)
    args = jax.tree.unflatten(static.treedef, [next(it) if leaf is None else leaf for leaf in static.leaves])

    def f(tt, x):
        return layout.ravel(field(tt.astype(layout.dtype), layout.unravel(x.astype(layout.dtype)), args)).astype(y.dtype)

    def stage(r, K):
        return K.at[r + 1].set(f(t + c[r] * h, y + h * (K.T @ table[r])))

    K = lax.fori_loop(lo, hi, stage, K)
    return K, y + h * (K.T @ b)


# SciPy's step-size control constants for its Runge–Kutta pairs (scipy/integrate/_ivp/rk.py).
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


class _CompiledStagesMixin:
    """SciPy's Runge–Kutta solver (``DOP853`` or ``RK45``) whose stages come from one compiled call per step.

    ``_step_impl`` is SciPy's own (``RungeKutta._step_impl``: same tableau, error estimate and step-size control,
    so the same steps up to rounding), with ``rk_step``'s loop over stages replaced by :func:`_rk_stages`: one
    device call per step instead of one per stage, which is what makes long flows (thousands of steps) cheap.
    Also stops after ``max_steps`` accepted steps. ``fun(t, y)`` (SciPy's first derivative, its initial step
    guess and DOP853's dense output) evaluates the same compiled program for one stage.
    """

    def __init__(self, fun, t0, y0, t_bound, *, compiled, max_steps, state, **options):
        self._compiled, self._max_steps, self._steps, self._state = compiled, max_steps, 0, state
        super().__init__(fun, t0, y0, t_bound, **options)
        self._table, self._c, self._b = _tableau(type(self))
        self._K = np.zeros((self._table.shape[1], self.n))

    def _stages(self, t, y, h):
        self._K[0] = self.f
        K, y_new = self._compiled(t, y, h, self._K, self._table, self._c, self._b, 0, self.n_stages)
        K = np.asarray(K, dtype=np.float64)
        self.K[:] = K[: self.n_stages + 1]
        return np.asarray(y_new, dtype=np.float64), K[self.n_stages]

    def _dense_output_impl(self):
        try:  # DOP853's interpolant (a private class of SciPy's): without it, SciPy's own dense output (3 calls)
            from scipy.integrate._ivp.rk import Dop853DenseOutput
        except ImportError:  # pragma: no cover - another SciPy layout
            Dop853DenseOutput = None
        if not hasattr(self, "K_extended") or Dop853DenseOutput is None:
            return super()._dense_output_impl()
        # DOP853's own dense output (SciPy's DOP853._dense_output_impl), its three extra stages in one call.
        h = self.h_previous
        known = self.K_extended.copy()
        # The rows still to be computed hold whatever SciPy's np.empty left there; every stage reads all rows
        # (times zero weights for the unknown ones), and 0·NaN is NaN, so they must be zeros.
        known[self.n_stages + 1:] = 0.0
        K, _ = self._compiled(self.t_old, self.y_old, h, known, self._table, self._c, self._b,
                              self.n_stages, self._table.shape[0])
        K = np.asarray(K, dtype=np.float64)
        self.K_extended[self.n_stages + 1:] = K[self.n_stages + 1:]
        F = np.empty((3 + self.D.shape[0], self.n), dtype=self.y_old.dtype)
        f_old = K[0]
        delta_y = self.y - self.y_old
        F[0] = delta_y
        F[1] = h * f_old - delta_y
        F[2] = 2 * delta_y - h * (self.f + f_old)
        F[3:] = h * np.dot(self.D, self.K_extended)
        return Dop853DenseOutput(self.t_old, self.t, self.y_old, F)

    def _step_impl(self):
        if self._steps >= self._max_steps:
            return False, f"it needed more than max_steps = {self._max_steps} steps"
        t, y = self.t, self.y
        min_step = 10 * np.abs(np.nextafter(t, self.direction * np.inf) - t)
        h_abs = min(max(self.h_abs, min_step), self.max_step)
        step_accepted = step_rejected = False
        while not step_accepted:
            if h_abs < min_step:
                return False, self.TOO_SMALL_STEP
            h = h_abs * self.direction
            t_new = t + h
            if self.direction * (t_new - self.t_bound) > 0:
                t_new = self.t_bound
            h = t_new - t
            h_abs = np.abs(h)
            y_new, f_new = self._stages(t, y, h)
            scale = self.atol + np.maximum(np.abs(y), np.abs(y_new)) * self.rtol
            error_norm = self._estimate_error_norm(self.K, h, scale)
            if error_norm < 1:
                factor = _MAX_FACTOR if error_norm == 0 else min(_MAX_FACTOR, _SAFETY * error_norm ** self.error_exponent)
                if step_rejected:
                    factor = min(1, factor)
                h_abs *= factor
                step_accepted = True
            else:
                h_abs *= max(_MIN_FACTOR, _SAFETY * error_norm ** self.error_exponent)
                step_rejected = True
        if not np.all(np.isfinite(y_new)):
            return False, "the flow became non-finite"
        self._steps += 1
        self._state.update(t=t_new, steps=self._steps)
        self.h_previous, self.y_old = h, y
        self.t, self.y, self.h_abs, self.f = t_new, y_new, h_abs, f_new
        return True, None


@functools.lru_cache(maxsize=None)
def _tableau(method) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(table, c, b)`` of a SciPy Runge–Kutta class for :func:`_rk_stages`: row ``r`` of ``table`` and ``c[r]``
    give stage ``r + 1``. Rows ``0 … s−1`` are a step's stages, the last of them (``b``) the derivative at its end;
    DOP853's three further rows are the extra stages of its dense output. Width: the rows of ``K`` (DOP853's 16
    extended stages, RK45's 7). Built once per class: solve_ode and its solver both ask for it (read only)."""
    s = method.n_stages
    A = np.asarray(method.A)
    extra = np.asarray(getattr(method, "A_EXTRA", np.zeros((0, s + 1))))
    width = max(s + 1, extra.shape[1])
    table = np.zeros((s + extra.shape[0], width))
    table[: s - 1, : A.shape[1]] = A[1:s]
    table[s - 1, :s] = method.B
    table[s:, : extra.shape[1]] = extra
    b = np.zeros(width)
    b[:s] = method.B
    c = np.concatenate([np.asarray(method.C)[1:s], [1.0], np.asarray(getattr(method, "C_EXTRA", []))])
    for shared in (table, c, b):  # cached: every solve gets these very arrays
        shared.flags.writeable = False
    return table, c, b


@functools.lru_cache(maxsize=None)
def _compiled_solver(float64: bool) -> type:
    """SciPy's DOP853 (Dormand–Prince 8(5,3)) for float64, or RK45 (Dormand–Prince 5(4)) for float32, with its
    stages computed by :func:`_rk_stages` (:class:`_CompiledStagesMixin`). Defined on first use, once: importing
    ``scipy.integrate`` takes about half a second, which a program that never runs a flow does not pay."""
    import scipy.integrate

    base = scipy.integrate.DOP853 if float64 else scipy.integrate.RK45
    return type(f"_Compiled{base.__name__}", (_CompiledStagesMixin, base),
                {"__module__": __name__, "__doc__": f"SciPy's {base.__name__} with its stages from one compiled call."})


def _check_finite_start(params: PyTree) -> None:
    if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(params)):
        raise ValueError(
            "params must be finite to start a flow, but they hold NaN or inf. Start from finite parameters "
            "(for a diverged gradient descent run, the last finite iterate; see first_nonfinite_step)."
        )


def solve_ode(field, params: PyTree, times: Any, args: Any, *, rtol=None, atol=None, max_steps: int = 100_000,
              hint: str = "shorten the time span, raise max_steps, or loosen rtol/atol") -> PyTree:
    """Integrate ``θ' = field(t, θ, args)`` from ``θ(times[0]) = params`` and sample it at ``times``.

    The one adaptive solver behind every flow of the package: SciPy's ``solve_ivp`` (Hairer, Nørsett & Wanner,
    *Solving Ordinary Differential Equations I*, Sec. II.5 and II.10) with ``DOP853``, Dormand–Prince 8(5,3),
    for float64 parameters and ``RK45``, Dormand–Prince 5(4), for float32, at tolerances 1e-10/1e-12 in float64
    (1e-6/1e-8 in float32) unless given. SciPy keeps the state and controls the step size in float64 on the
    host; the Runge–Kutta stages of each step come from one call of one compiled function (:func:`_rk_stages`),
    which evaluates the field in the parameters' dtype; the samples come back in that dtype with a leading time
    axis. ``field`` must be a module-level function and ``args`` may hold arrays (passed to the compiled function
    as arguments), functions, ints and bools (static), so that repeated calls with new arrays of the same shapes
    compile nothing. Each step costs a round trip to Python (about 0.1–0.3 ms on a CPU), so a flow of thousands
    of steps takes tenths of a second. Not traceable: call it outside ``jit``/``vmap``.

    Raises ``ValueError`` for non-finite ``params`` and :class:`FlowError` (with ``hint``) if the solver stops
    early: a step size below float64's resolution (a blow-up or a very stiff flow), more than ``max_steps``
    accepted steps, or a non-finite state.
    """
    times = check_times(times)
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer (the most steps the solver may take), got {max_steps!r}.")
    if any(is_traced(leaf) for leaf in jax.tree.leaves((params, args))):
        raise ValueError("the flows run SciPy's ODE solver on concrete values: call them outside jit/vmap.")
    _check_finite_start(params)
    layout = _Layout(params)
    dtype = np.dtype(layout.dtype)
    t_eval = np.asarray(times.astype(dtype), dtype=np.float64)
    d_rtol, d_atol = _default_tolerances(params)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    if t_eval.shape[0] == 1:
        return jax.tree.map(lambda p: jnp.asarray(p)[None], params)
    static, arrays = _split_args(args)
    y0 = np.concatenate([np.ravel(np.asarray(leaf)).astype(np.float64) for leaf in jax.tree.leaves(params)])
    work = jax.dtypes.canonicalize_dtype(np.float64)  # float64 when JAX's float64 is on, else float32

    def compiled(t, y, h, K, table, c, b, lo, hi):
        return _rk_stages(field, static, layout, np.asarray(t, work), np.asarray(y, work), np.asarray(h, work),
                          np.asarray(K, work), np.asarray(table, work), np.asarray(c, work), np.asarray(b, work),
                          lo, hi, arrays)

    method = _compiled_solver(bool(dtype == np.float64))
    table, c, b = _tableau(method)
    zeros_k = np.zeros((table.shape[1], y0.size))

    def rhs(t, y):  # f(t, y) alone: the first stage with h = 0, through the same compiled program (same shapes)
        K, _ = compiled(t, y, 0.0, zeros_k, table, c, b, 0, 1)
        return np.asarray(K[1], dtype=np.float64)

    state = {"t": float(t_eval[0]), "steps": 0}
    t_end = float(times[-1])
    from scipy.integrate import solve_ivp

    with np.errstate(all="ignore"):  # a blow-up overflows inside SciPy's error estimate before it stops
        sol = solve_ivp(rhs, (t_eval[0], t_eval[-1]), y0, method=method, t_eval=t_eval,
                        rtol=rtol, atol=atol, compiled=compiled, max_steps=max_steps, state=state)
    ys = sol.y.T
    reached = f" (at t = {state['t']:.6g}, after {state['steps']} steps)"
    if sol.status != 0:
        why = sol.message.rstrip(".")
        raise FlowError(f"the ODE solver stopped before t = {t_end:g}: {why[:1].lower()}{why[1:]}{reached}. "
                        f"{hint[0].upper()}{hint[1:]}.")
    if ys.shape[0] != t_eval.shape[0] or not np.all(np.isfinite(ys)):
        raise FlowError(f"the ODE solver stopped before t = {t_end:g}: the flow became non-finite{reached}. "
                        f"{hint[0].upper()}{hint[1:]}.")
    ys[0] = y0  # the start exactly, not a round trip through the interpolant
    return layout.unravel_rows(ys.astype(dtype))
