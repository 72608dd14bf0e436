"""Input validation, one policy for the whole package: a clear error that says what to pass instead of a NaN
plot. Wrong types (a string, a float where an integer is meant, an array where one number is meant) raise
``TypeError``; values of the right type outside their range raise ``ValueError``. Traced values (inside ``jit``,
``vmap`` or ``grad``) cannot be checked and pass, except where a function needs a concrete value
(:func:`require_concrete`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ArgumentTypeError

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
        raise ArgumentTypeError(f"{name} must be {expected}, got {x!r}.")
    return float(arr)


def check_nonnegative(x: Any, name: str, what: str, *, traced: bool = True) -> None:
    """Raise ``ValueError`` unless ``x`` is one finite real number ``≥ 0``; ``what`` says what it is (e.g.
    "the SAM radius, e.g. 0.05"). A traced value passes when ``traced`` (it cannot be checked), else it is refused:
    the caller needs a concrete number."""
    value = real_scalar(x, name, "a single real number >= 0")
    if value is None and not traced:
        raise ArgumentTypeError(f"{name} must be a concrete number ({what}), not a traced value: call this outside jit/vmap.")
    if value is not None and not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0 ({what}), got {x!r}.")


def check_learning_rate(lr: Any, name: str = "lr") -> None:
    """Raise ``ValueError`` unless ``lr`` is a finite, positive scalar (skipped under tracing)."""
    if is_traced(lr):
        return
    try:
        arr = np.asarray(lr)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ArgumentTypeError(f"{name} must be a positive number, got {lr!r}.") from exc
    if arr.ndim != 0:
        raise ArgumentTypeError(
            f"{name} must be a single number, got an array of shape {arr.shape}. "
            "To run several learning rates at once, use jax.vmap over the learning rate "
            "(see gradient_descent_sweep)."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ArgumentTypeError(f"{name} must be a real number, got {lr!r}.")
    value = float(arr)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}. Pass a positive step size such as 0.01.")
    if value <= 0:
        raise ValueError(
            f"{name} must be > 0, got {value}. Gradient descent needs a positive step size (for example 0.01); "
            "a negative one climbs the loss instead of descending it."
        )


def is_integer(x: Any) -> bool:
    """A Python or NumPy integer (not a bool, not a float with an integral value)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def check_int(value: Any, name: str, *, minimum: int = 0, what: str = "") -> int:
    """``value`` as a Python ``int``: the package's one integer check. :class:`~igr_tutorial.errors.ArgumentTypeError`
    (a ``TypeError``) unless it is an integer (a bool or a float is refused, a NumPy integer accepted), ``ValueError``
    below ``minimum``. ``what`` says what it counts, for the message."""
    kind = "a positive integer" if minimum == 1 else "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
    detail = f" ({what})" if what else ""
    if not is_integer(value):
        raise ArgumentTypeError(f"{name} must be {kind}{detail}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be {kind}{detail}: it must be >= {minimum}, got {value}.")
    return int(value)


def check_steps(steps: Any) -> int:
    """Return ``steps`` as an int: a non-negative integer (:func:`check_int`)."""
    return check_int(steps, "steps", what="the number of steps")


def check_lrs(lrs: Any, name: str = "lrs") -> np.ndarray:
    """A non-empty 1-D sequence of learning rates as a float array, every entry checked by
    :func:`check_learning_rate`: the package's one check of a grid of step sizes."""
    if any(is_traced(x) for x in jax.tree.leaves(lrs)):
        return lrs
    raw = np.asarray(lrs)
    if raw.ndim != 1 or raw.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of learning rates, got shape {raw.shape}.")
    for lr in raw:
        check_learning_rate(lr, name=f"every entry of {name}")
    return raw.astype(float)


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
            raise ArgumentTypeError(
                f"params must be floating-point arrays, got a leaf of dtype {dtype}. "
                "Convert with jnp.asarray(x, dtype=float), e.g. jnp.array([1.0, 2.0]) instead of jnp.array([1, 2])."
            )


def check_scalar_loss(loss: Callable[[Any], Any], params: Any) -> None:
    """Raise ``ValueError`` unless ``loss(params)`` returns a real scalar (checked abstractly, no compute)."""
    if not callable(loss):
        raise ArgumentTypeError(f"loss must be a function params -> scalar, got {type(loss).__name__}.")
    check_params(params)
    out = jax.eval_shape(loss, params)
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"loss must return a scalar (shape ()), but it returned shape {shape}. "
            "Reduce over examples, e.g. return jnp.mean(residuals**2) instead of residuals**2."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ArgumentTypeError(f"loss must return a floating-point scalar, got dtype {out.dtype}.")


def require_concrete(name: str, *values: Any) -> None:
    """Raise ``TypeError`` when any leaf of ``values`` is traced: ``name`` works on concrete values only (a host
    computation such as SciPy's ODE solver, or a Python result such as an index), so it cannot run inside
    ``jax.jit``, ``jax.vmap`` or ``jax.grad``."""
    if any(is_traced(leaf) for leaf in jax.tree.leaves(values)):
        raise TypeError(f"{name} works on concrete values and cannot be traced: call it outside jax.jit, jax.vmap "
                        "and jax.grad (on the result of a traced computation once it is computed).")


def check_momentum(beta: Any) -> None:
    """Raise ``ValueError`` unless ``0 ≤ beta < 1`` (skipped under tracing)."""
    value = real_scalar(beta, "beta", "a single real number in [0, 1)")
    if value is not None and not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(
            f"beta must lie in [0, 1), got {value}. beta = 0 is plain gradient descent; beta → 1 gives the "
            "momentum method an infinite memory (typical values: 0.5 to 0.99)."
        )


def check_radius(rho: Any) -> None:
    """Raise ``ValueError`` unless the SAM radius ``rho`` is a finite number ``≥ 0`` (skipped under tracing)."""
    check_nonnegative(rho, "rho", "the SAM radius, e.g. 0.05")


def check_order(order: Any) -> int:
    """``order`` as a Python ``int`` if it is a non-negative integer (bools excluded), else an error: the truncation
    order of GD's modified equation (0 = plain gradient flow)."""
    return check_int(order, "order", what="0 = plain gradient flow, k = the modified equation truncated after its "
                                          "h^k term")
