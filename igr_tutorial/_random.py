"""``jax.random``'s normal draws and key splits, bit for bit, compiled sooner on a CPU (network initializations)."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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
