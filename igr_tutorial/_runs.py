"""A batch of independent runs, dispatched once: a loop over one compiled single-run program, one ``jax.vmap``-ed
program, or the vmapped program split across devices (``jax.shard_map`` over the run axis).

:func:`train.train_sweep <igr_tutorial.train.train_sweep>` and
:func:`sharpness.sharpness_trace <igr_tutorial.sharpness.sharpness_trace>` both run through :func:`run_batch`;
each compiled program is built once per single-run function, static configuration, batching and device set
(:func:`program`), so a second sweep of the same shapes does not compile again.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []


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


@functools.lru_cache(maxsize=None)
def program(run_one: Callable, static_items: tuple, axes: tuple | None = None, devices: tuple | None = None):
    """The jitted program of ``run_one(*args, **dict(static_items))``: one run (``axes=None``), vmapped with
    ``in_axes=axes`` (``0``: one value per run, ``None``: shared), or, with ``devices``, that vmapped program
    under ``jax.shard_map`` with the run axis split over a one-axis mesh of the devices (shared arguments
    replicated, nothing exchanged between devices). Cached: built and compiled once per configuration."""
    fn = functools.partial(run_one, **dict(static_items))
    if axes is None:
        return jax.jit(fn)
    batched = jax.vmap(fn, in_axes=axes)
    if devices is None:
        return jax.jit(batched)
    from jax.sharding import Mesh, PartitionSpec as P

    mesh = Mesh(np.asarray(devices), ("runs",))
    return jax.jit(jax.shard_map(batched, mesh=mesh, in_specs=tuple(P("runs") if a == 0 else P() for a in axes),
                                 out_specs=P("runs"), check_vma=False))


def run_batch(run_one: Callable, static: dict, args: Sequence[Any], axes: Sequence[int | None], *, mode: str,
              devices: Sequence[jax.Device] | None = None) -> Any:
    """``run_one(*args_i, **static)`` for every run ``i``, stacked along a leading run axis.

    ``args[j]`` has one entry per run along its leading axis where ``axes[j] == 0`` and is shared where it is
    ``None``; ``static`` holds the hashable keyword arguments the program is compiled for. ``mode``: ``"loop"``
    (one compiled single-run program called per run) or ``"vmap"`` (one vmapped program). With more than one
    device in ``devices``, the runs are split across them whatever ``mode`` says: the run count is padded to a
    multiple of the device count by repeating the last run (dropped afterwards), so each run computes exactly
    what it computes alone on one device.
    """
    axes = tuple(axes)
    if len(axes) != len(args) or not any(a == 0 for a in axes):
        raise ValueError("run_batch needs one axis (0 or None) per argument, with at least one batched argument.")
    items = tuple(sorted(static.items()))
    k = jax.tree.leaves(args[axes.index(0)])[0].shape[0]
    devices = tuple(devices) if devices is not None else ()
    if len(devices) > 1:
        return _sharded(run_one, items, args, axes, k, devices)
    if mode == "vmap":
        return program(run_one, items, axes)(*args)
    one = program(run_one, items)
    return stack_runs([one(*(jax.tree.map(lambda x: x[i], a) if ax == 0 else a for a, ax in zip(args, axes)))
                       for i in range(k)])


def _sharded(run_one, items, args, axes, k, devices):
    """:func:`run_batch` across ``devices``: pad the runs, run the sharded program, drop the padding."""
    pad = (-k) % len(devices)

    def padded(x):
        return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x

    args = [jax.tree.map(padded, a) if ax == 0 else a for a, ax in zip(args, axes)]
    out = program(run_one, items, axes, devices)(*args)
    return jax.tree.map(lambda x: x[:k], out)
