"""Statistics over seeds: the evidence behind every experimental claim of chapters 6–9.

A training run of a deep network is one draw from a distribution (over initializations, minibatch orders and
the last bits of floating-point reductions, which differ between machines and thread counts). A claim is
therefore made about the *mean over seeds*, with its standard error, and checked with a margin:

* :func:`mean_se`: mean and standard error ``s/√n`` along the seed axis;
* :func:`format_mean_se`: ``"0.59 ± 0.01"``, the mean printed only to the digit its standard error supports;
* :func:`mean_difference`: the difference of two means, its standard error, and whether it is larger than
  ``z`` standard errors (``z = 2`` by default): the test every "A is larger than B" sentence rests on;
* :func:`spearman` and :func:`seedwise_spearman`: rank correlation over a grid (+1 when a quantity grows
  monotonically along the grid), and the fraction of seeds in which its sign holds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def mean_se(values: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error ``s/√n`` (``s`` with ``n − 1`` degrees of freedom) along ``axis``.

    Non-finite entries (diverged runs) are left out; ``n`` counts the finite ones. A mean over no finite
    value is NaN, and so is the standard error of fewer than two.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    n = ok.sum(axis=axis)
    filled = np.where(ok, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=axis) / n
        dev = np.where(ok, v - np.expand_dims(mean, axis), 0.0)
        var = (dev**2).sum(axis=axis) / (n - 1)
        se = np.sqrt(var / n)
    mean = np.where(n > 0, mean, np.nan)
    se = np.where(n > 1, se, np.nan)
    return mean, se


def _decimals(x: float, digits: int) -> int:
    """Decimal places that keep ``digits`` significant digits of ``x`` (negative: round to tens, hundreds, …)."""
    return digits - 1 - math.floor(math.log10(x))


def _rounded(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}" if decimals >= 0 else f"{round(x, decimals):.0f}"


def format_mean_se(mean: float, se: float, *, digits: int = 1, scientific: bool | None = None) -> str:
    """``"mean ± se"`` with the standard error rounded to ``digits`` significant digits and the mean to the
    same decimal place: no digit is printed that the spread over seeds does not support.

    ``scientific`` (default: when ``|mean|`` is below 1e-3 or at least 1e4) prints both in one power of ten,
    ``"(3.6 ± 0.4)e-07"``. A NaN standard error (one seed) prints the mean to 2 significant digits and
    ``"± ?"``.
    """
    mean, se = float(mean), float(se)
    if not math.isfinite(mean):
        return "n/a"
    if scientific is None:
        scientific = mean != 0 and not 1e-3 <= abs(mean) < 1e4
    if scientific:
        exp = math.floor(math.log10(abs(mean))) if mean != 0 else 0
        scale = 10.0**exp
        return f"({format_mean_se(mean / scale, se / scale, digits=digits, scientific=False)})e{exp:+03d}"
    if not math.isfinite(se) or se <= 0:
        d = max(0, _decimals(abs(mean), 2)) if mean != 0 else 2
        return f"{mean:.{d}f} ± " + ("?" if not math.isfinite(se) else "0")
    d = _decimals(se, digits)
    return f"{_rounded(mean, d)} ± {_rounded(se, d)}"


def mean_difference(a: Any, b: Any, *, z: float = 2.0) -> tuple[float, float, bool]:
    """``(mean(a) − mean(b), its standard error, |difference| > z·se)`` for two independent samples.

    The standard error of the difference is ``√(se_a² + se_b²)``. For paired samples (the same seeds in
    both arms) pass ``a − b`` and ``0``: the paired difference has the smaller spread.
    """
    ma, sa = mean_se(np.ravel(a))
    mb, sb = mean_se(np.ravel(b)) if np.ndim(b) else (np.asarray(float(b)), np.asarray(0.0))
    diff = float(ma - mb)
    se = float(np.sqrt(sa**2 + sb**2))
    return diff, se, bool(abs(diff) > z * se)


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of two sequences: +1 when ``y`` grows monotonically with ``x``, −1 when it
    falls, near 0 without a monotone relation. Pairs with a non-finite entry are left out; NaN for fewer than
    three pairs or a constant sequence."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D sequences of the same length, got shapes {x.shape} and {y.shape}.")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n−1, ties given their average rank."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(v.size)
    ranks[order] = np.arange(v.size)
    for value in np.unique(v):
        tie = v == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def seedwise_spearman(x: Any, y_by_seed: Any) -> tuple[np.ndarray, float]:
    """Spearman's ρ of ``x`` with each row of ``y_by_seed`` (shape ``(seeds, len(x))``), and the fraction of
    seeds whose ρ has the sign of the median ρ: "ρ > 0 in 5 of 5 seeds" is a claim about the trend that no
    single run decides."""
    y = np.atleast_2d(np.asarray(y_by_seed, dtype=float))
    rhos = np.array([spearman(x, row) for row in y])
    finite = rhos[np.isfinite(rhos)]
    if finite.size == 0:
        return rhos, float("nan")
    sign = np.sign(np.median(finite))
    return rhos, float(np.mean(np.sign(finite) == sign)) if sign != 0 else 0.0
