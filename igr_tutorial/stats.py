"""Statistics over seeds: the one rule behind every experimental claim of chapters 6–9.

A training run of a deep network is one draw from a distribution (over initializations, minibatch orders and
the last bits of floating-point reductions, which differ between machines and thread counts). A claim is
therefore made about the *mean over seeds*, and checked by one rule:

* an **effect** (``A − B``, paired by seed where both arms start from the same seeds) is estimated with its
  95 % confidence interval from Student's t with ``n − 1`` degrees of freedom (Welch's for two independent
  samples): :func:`effect`. A claimed effect must have an interval that **excludes zero**, with the claimed sign;
* a **null** ("no effect") is claimed only against an equivalence margin ``δ`` stated *before* the run, and passes
  only if the whole interval lies inside ``(−δ, δ)`` (two one-sided tests); otherwise it is **inconclusive**
  (or, if the interval excludes zero, a difference): :func:`equivalence`;
* a **trend** over a grid is the rank correlation of every seed (:func:`spearman`), summarized by the interval of
  its mean over seeds; it is claimed only when that interval excludes zero *and* the sign holds in *every*
  seed (:func:`trend`): the sign rule never stands alone;
* every chapter keeps a :class:`Claims` ledger: it asserts each claim by this rule and states how many claims
  the chapter tests.

Display helpers: :func:`mean_se` and :func:`format_mean_se` (``"0.59 ± 0.01"``, only the digits the standard
error supports), and :meth:`Effect.text` (``"+0.012 [+0.004, +0.020]"``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

__all__ = [
    "Claims",
    "Effect",
    "Trend",
    "effect",
    "equivalence",
    "format_mean_se",
    "mean_difference",
    "mean_se",
    "seedwise_spearman",
    "sign_consistent",
    "spearman",
    "t_quantile",
    "trend",
]

CONFIDENCE = 0.95


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


def _rounded(x: float, decimals: int, sign: bool = False) -> str:
    plus = "+" if sign else ""
    return f"{x:{plus}.{decimals}f}" if decimals >= 0 else f"{round(x, decimals):{plus}.0f}"


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


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile ``t(1 − α/2, df)`` for a ``confidence`` interval (2.776 for 4 degrees of
    freedom, 2.262 for 9, 1.960 as ``df → ∞``)."""
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}.")
    if not df > 0:
        raise ValueError(f"df must be positive (at least two seeds), got {df!r}.")
    return float(stats.t.ppf(0.5 + confidence / 2, df))


@dataclasses.dataclass(frozen=True)
class Effect:
    """A mean over seeds (or a mean difference) with its Student-t confidence interval ``[low, high]``.

    ``n``: the number of seeds (pairs) used; ``df``: the degrees of freedom of the interval (``n − 1``, or
    Welch's for two independent samples). With fewer than two seeds the interval is infinite.
    """

    estimate: float
    se: float
    n: int
    df: float
    low: float
    high: float
    confidence: float = CONFIDENCE

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely on one side of zero, as a claimed effect's must."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def sign(self) -> int:
        """The sign that can be claimed, +1 or −1, when the interval excludes zero on that side; else 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def relative_to(self, reference: float) -> "Effect":
        """The same effect divided by ``|reference|`` (e.g. by the reference arm's mean: a relative change)."""
        r = abs(float(reference))
        return dataclasses.replace(self, estimate=self.estimate / r, se=self.se / r, low=self.low / r,
                                   high=self.high / r)

    def text(self, *, digits: int = 2, scientific: bool | None = None) -> str:
        """``"+0.012 [+0.004, +0.020]"``: the estimate and its interval, rounded to ``digits`` significant digits
        of the interval's half-width (in one power of ten when the numbers are tiny or huge)."""
        lo, hi, est = self.low, self.high, self.estimate
        if not all(map(math.isfinite, (lo, hi, est))):
            return f"{est:+.2g} [n/a]" if math.isfinite(est) else "n/a"
        half = (hi - lo) / 2
        big = max(abs(lo), abs(hi), abs(est))
        if scientific is None:
            scientific = big != 0 and not 1e-3 <= big < 1e4
        if scientific:
            exp = math.floor(math.log10(big))
            s = 10.0**exp
            inner = dataclasses.replace(self, estimate=est / s, low=lo / s, high=hi / s, se=self.se / s)
            return f"({inner.text(digits=digits, scientific=False)})e{exp:+03d}"
        d = max(0, _decimals(half, digits)) if half > 0 else 3
        return f"{_rounded(est, d, True)} [{_rounded(lo, d, True)}, {_rounded(hi, d, True)}]"

    def __str__(self) -> str:
        return self.text()


def _finite(v: np.ndarray) -> np.ndarray:
    return v[np.isfinite(v)]


def _interval(estimate: float, se: float, n: int, df: float, confidence: float) -> Effect:
    if n < 2 or not math.isfinite(se) or not df > 0:
        return Effect(estimate, float("nan"), n, float("nan"), -math.inf, math.inf, confidence)
    half = t_quantile(df, confidence) * se
    return Effect(estimate, se, n, df, estimate - half, estimate + half, confidence)


def effect(a: Any, b: Any = None, *, paired: bool | None = None, confidence: float = CONFIDENCE) -> Effect:
    """The mean of ``a − b`` over seeds with its Student-t ``confidence`` interval (the book's one rule).

    * ``b=None``: the mean of ``a`` (e.g. per-seed differences already formed, or per-seed correlations);
    * ``b`` a number: ``mean(a) − b``;
    * ``b`` an array: ``paired`` (default when ``a`` and ``b`` have the same shape) forms the per-seed
      differences ``aᵢ − bᵢ`` and their one-sample interval with ``n − 1`` degrees of freedom, which removes the
      spread that both arms share through their seed; ``paired=False`` treats them as independent samples
      (Welch's interval, with the Welch–Satterthwaite degrees of freedom).

    Non-finite entries (diverged runs) are left out, pairwise when paired.
    """
    a = np.ravel(np.asarray(a, dtype=float))
    if b is None or np.ndim(b) == 0:
        shift = 0.0 if b is None else float(b)
        v = _finite(a)
        n = v.size
        est = float(v.mean() - shift) if n else float("nan")
        se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        return _interval(est, se, n, n - 1, confidence)
    b = np.ravel(np.asarray(b, dtype=float))
    if paired is None:
        paired = a.shape == b.shape
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired samples need the same number of seeds, got {a.size} and {b.size}.")
        return effect(a - b, confidence=confidence)
    va, vb = _finite(a), _finite(b)
    na, nb = va.size, vb.size
    if na < 2 or nb < 2:
        est = float(va.mean() - vb.mean()) if na and nb else float("nan")
        return _interval(est, float("nan"), min(na, nb), float("nan"), confidence)
    sa2, sb2 = va.var(ddof=1) / na, vb.var(ddof=1) / nb
    se = math.sqrt(sa2 + sb2)
    df = (sa2 + sb2) ** 2 / (sa2**2 / (na - 1) + sb2**2 / (nb - 1)) if se > 0 else na + nb - 2
    return _interval(float(va.mean() - vb.mean()), se, min(na, nb), df, confidence)


def equivalence(eff: Effect, margin: float) -> str:
    """The verdict on a null claim with equivalence margin ``margin > 0`` (stated before the run):

    * ``"equivalent"``: the whole interval lies inside ``(−margin, margin)`` (two one-sided tests at the
      interval's level): any effect is smaller than the margin;
    * ``"different"``: otherwise, if the interval excludes zero: there is an effect, possibly larger than the margin;
    * ``"inconclusive"``: otherwise: the data cannot tell "no effect" from "an effect larger than the margin".
    """
    if not (isinstance(margin, (int, float, np.floating)) and margin > 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be a positive finite number, got {margin!r}.")
    if -margin < eff.low and eff.high < margin:
        return "equivalent"
    return "different" if eff.excludes_zero else "inconclusive"


def sign_consistent(values: Any, sign: int | None = None) -> bool:
    """Whether *every* finite value has the same strict sign (``sign`` if given): the per-seed sign rule. It
    never makes a claim alone; :func:`trend` pairs it with an interval."""
    v = _finite(np.ravel(np.asarray(values, dtype=float)))
    if v.size == 0:
        return False
    signs = np.sign(v)
    s = signs[0] if sign is None else sign
    return bool(s != 0 and np.all(signs == s))


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


@dataclasses.dataclass(frozen=True)
class Trend:
    """A monotone trend of a quantity over a grid: every seed's Spearman ρ, the interval of their mean, and
    whether the sign holds in every seed. ``sign`` is the claimed direction (+1, −1) or 0 when the rule fails."""

    rhos: np.ndarray
    mean: Effect
    all_seeds: bool

    @property
    def sign(self) -> int:
        return self.mean.sign if self.all_seeds and sign_consistent(self.rhos, self.mean.sign) else 0

    def text(self) -> str:
        return f"ρ {self.mean.text()} (per seed: {', '.join(f'{r:+.2f}' for r in self.rhos)})"


def trend(x: Any, y_by_seed: Any, *, confidence: float = CONFIDENCE) -> Trend:
    """Spearman's ρ of ``x`` with each row of ``y_by_seed`` (shape ``(seeds, len(x))``), and the Student-t interval
    of the mean ρ over seeds. The trend is claimed (``Trend.sign != 0``) only when the interval excludes zero and
    every seed has that sign."""
    y = np.atleast_2d(np.asarray(y_by_seed, dtype=float))
    rhos = np.array([spearman(x, row) for row in y])
    eff = effect(rhos, confidence=confidence)
    return Trend(rhos, eff, sign_consistent(rhos))


class Claims:
    """The ledger of a chapter's claims: each is checked by the book's rule, asserted, and counted.

    ``claims = Claims("Chapter 6")``, then per claim one of

    * :meth:`Claims.effect`: an :class:`Effect`'s interval must exclude zero with the claimed ``sign``;
    * :meth:`Claims.null`: the verdict of :func:`equivalence` for a margin stated before the run; only an ``expect``-ed
      verdict is asserted (without one, the text reports the verdict, "inconclusive" included);
    * :meth:`Claims.trend`: a :class:`Trend` must have the claimed sign (interval and every seed);
    * :meth:`Claims.check`: any other statement (a bound, a count), for the tally.

    A claim that fails raises ``AssertionError`` naming it. With ``enforce=False`` (a size at which the claims
    were not checked) nothing is raised: the outcome is recorded, and :meth:`Claims.summary` reports the failures.
    :meth:`Claims.summary` says how many claims the chapter tested and how they came out.
    """

    def __init__(self, chapter: str, *, enforce: bool = True):
        self.chapter = chapter
        self.enforce = bool(enforce)
        self.records: list[tuple[str, str, str]] = []  # (kind, name, outcome)

    def _add(self, kind: str, name: str, ok: bool, message: str, outcome: str = "holds") -> None:
        if not ok and self.enforce:
            raise AssertionError(message)
        self.records.append((kind, name, outcome if ok else "fails"))

    def effect(self, name: str, eff: Effect, sign: int) -> bool:
        """Claim ``name``: the effect ``eff`` has the sign ``sign`` (+1 or −1), its interval excluding zero."""
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign!r}.")
        ok = eff.sign == sign
        self._add("effect", name, ok, f"{self.chapter}: claim '{name}' fails: {eff.text()} does not exclude zero on "
                  f"the {'positive' if sign > 0 else 'negative'} side")
        return ok

    def null(self, name: str, eff: Effect, margin: float, *, expect: str | None = None) -> str:
        """Claim ``name`` about "no effect": returns the verdict of :func:`equivalence` at ``margin`` (fixed before
        the run), and asserts it only when ``expect`` names the verdict the text states."""
        verdict = equivalence(eff, margin)
        ok = expect is None or verdict == expect
        self._add("null", name, ok, f"{self.chapter}: null claim '{name}' (margin ±{margin:g}) is {verdict}, not "
                  f"{expect}: {eff.text()}", outcome=verdict)
        return verdict

    def trend(self, name: str, tr: Trend, sign: int) -> bool:
        """Claim ``name``: the trend ``tr`` has the sign ``sign`` (its interval excludes zero, every seed agrees)."""
        ok = tr.sign == sign
        self._add("trend", name, ok, f"{self.chapter}: trend '{name}' fails the rule: {tr.text()}")
        return ok

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Claim ``name``: any other asserted statement (a bound, a count), ``detail`` saying what was measured."""
        self._add("check", name, bool(ok), f"{self.chapter}: claim '{name}' fails" + (f": {detail}" if detail else ""))
        return bool(ok)

    def counts(self) -> dict[str, int]:
        """How many claims of each kind were made, nulls by verdict, and how many failed (not enforced)."""
        out: dict[str, int] = {}
        for kind, _, outcome in self.records:
            key = "failed" if outcome == "fails" else kind if kind != "null" else f"null ({outcome})"
            out[key] = out.get(key, 0) + 1
        return out

    def summary(self) -> str:
        """One sentence: how many claims were tested, by kind, and how the nulls came out."""
        c = self.counts()
        parts = []
        names = {"effect": "effects (interval excludes zero)", "trend": "trends (interval and every seed)",
                 "check": "other checks (bounds, counts)"}
        for key in ("effect", "trend", "check"):
            if c.get(key):
                parts.append(f"{c[key]} {names[key]}")
        for verdict in ("equivalent", "inconclusive", "different"):
            k = c.get(f"null ({verdict})", 0)
            if k:
                parts.append(f"{k} null claim{'s' if k > 1 else ''} {verdict}")
        if c.get("failed"):
            parts.append(f"{c['failed']} FAILED (not asserted at this size)")
        total = len(self.records)
        return (f"{self.chapter} tests {total} claim{'s' if total != 1 else ''} by the book's rule (95 % Student-t "
                f"intervals over seeds): " + ", ".join(parts) + ".")


# --------------------------------------------------------------------------------------------------
# Superseded (kept so that readers' code keeps working)
# --------------------------------------------------------------------------------------------------


def mean_difference(a: Any, b: Any, *, z: float = 2.0) -> tuple[float, float, bool]:
    """Deprecated: use :func:`effect` (Student-t interval). ``(mean(a) − mean(b), its standard error,
    |difference| > z·se)`` for two independent samples; ``b = 0`` for per-seed differences."""
    warnings.warn("igr_tutorial.stats.mean_difference is superseded by igr_tutorial.stats.effect (a Student-t "
                  "interval); it will be removed in a later release.", DeprecationWarning, stacklevel=2)
    ma, sa = mean_se(np.ravel(a))
    mb, sb = mean_se(np.ravel(b)) if np.ndim(b) else (np.asarray(float(b)), np.asarray(0.0))
    diff = float(ma - mb)
    se = float(np.sqrt(sa**2 + sb**2))
    return diff, se, bool(abs(diff) > z * se)


def seedwise_spearman(x: Any, y_by_seed: Any) -> tuple[np.ndarray, float]:
    """Deprecated: use :func:`trend`. Spearman's ρ of ``x`` with each row of ``y_by_seed`` and the fraction of seeds
    whose ρ has the sign of the median ρ."""
    warnings.warn("igr_tutorial.stats.seedwise_spearman is superseded by igr_tutorial.stats.trend (an interval "
                  "and every seed); it will be removed in a later release.", DeprecationWarning, stacklevel=2)
    y = np.atleast_2d(np.asarray(y_by_seed, dtype=float))
    rhos = np.array([spearman(x, row) for row in y])
    finite = rhos[np.isfinite(rhos)]
    if finite.size == 0:
        return rhos, float("nan")
    sign = np.sign(np.median(finite))
    return rhos, float(np.mean(np.sign(finite) == sign)) if sign != 0 else 0.0
