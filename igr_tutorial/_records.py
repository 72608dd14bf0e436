"""The records of an experiment (one dict per run, as :mod:`igr_tutorial.experiments` returns them) as arrays over
seeds: the one reader that :func:`~igr_tutorial.experiments.seed_table` and the figures share (NumPy only, so the
figures do not import JAX)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__: list[str] = []


def seed_grid(runs: Sequence[dict], key: str, by: str = "lr") -> tuple[np.ndarray, np.ndarray, list]:
    """``run[key]`` as an array ``(seeds, grid)`` over the sorted values of ``run[by]``, NaN where a run diverged
    or did not measure ``key`` (``None``); a list-valued ``key`` (noise levels, curves) gives ``(seeds, grid, len)``.
    Returns the grid, the values and the grid values at which some seed diverged."""
    grid = sorted({r[by] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    first = next((r[key] for r in runs if not r.get("diverged") and r.get(key) is not None), None)
    values = np.full((len(seeds), len(grid)) + ((len(first),) if isinstance(first, list) else ()), np.nan)
    diverged = set()
    for r in runs:
        if r.get("diverged"):
            diverged.add(r[by])
        elif r.get(key) is not None:
            v = r[key]
            values[seeds.index(r["seed"]), grid.index(r[by])] = np.array(v, dtype=float) if isinstance(v, list) else v
    return np.array(grid), values, sorted(diverged)
