"""igr_tutorial.stats against direct computations: the statistics every experimental claim of chapters 6–9 rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from igr_tutorial.stats import (Claims, Effect, effect, equivalence, format_mean_se, mean_difference, mean_se,
                                seedwise_spearman, sign_consistent, spearman, t_quantile, trend)


def test_mean_se_matches_the_textbook_formula_and_skips_diverged_runs():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 4))
    mean, se = mean_se(v)
    np.testing.assert_allclose(mean, v.mean(axis=0))
    np.testing.assert_allclose(se, v.std(axis=0, ddof=1) / math.sqrt(5))
    v[1, 2] = np.nan  # a diverged run: left out, n = 4 in that column
    mean, se = mean_se(v)
    col = np.delete(v[:, 2], 1)
    assert mean[2] == pytest.approx(col.mean()) and se[2] == pytest.approx(col.std(ddof=1) / 2)
    mean, se = mean_se([[np.nan, 1.0], [np.nan, np.nan]])
    assert np.isnan(mean[0]) and np.isnan(se[0]) and mean[1] == 1.0 and np.isnan(se[1])  # one value: no s.e.
    m2, s2 = mean_se(v.T, axis=1)
    np.testing.assert_allclose(m2, mean_se(v)[0])


@pytest.mark.parametrize(
    ("mean", "se", "text"),
    [
        (0.5873, 0.0123, "0.59 ± 0.01"),
        (6.99, 0.26, "7.0 ± 0.3"),
        (123.4, 17.0, "120 ± 20"),
        (3.62e-7, 0.41e-7, "(3.6 ± 0.4)e-07"),
        (0.5, float("nan"), "0.50 ± ?"),
        (12.0, 0.0, "12 ± 0"),
        (float("nan"), 0.1, "n/a"),
    ],
)
def test_format_mean_se_prints_only_supported_digits(mean, se, text):
    assert format_mean_se(mean, se) == text


def test_format_mean_se_two_digits_of_the_error():
    assert format_mean_se(0.5873, 0.0123, digits=2) == "0.587 ± 0.012"


def test_mean_difference_independent_and_paired():
    """The superseded 2-s.e. rule keeps working for readers' code, with a DeprecationWarning naming its successor."""
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    with pytest.warns(DeprecationWarning, match="stats.effect"):
        diff, se, sig = mean_difference(a, b)
    assert diff == -3.0 and se == pytest.approx(math.sqrt(2 / 3)) and sig
    with pytest.warns(DeprecationWarning):
        diff, se, sig = mean_difference(a, a + 0.1)
    assert diff == pytest.approx(-0.1) and not sig  # far inside the spread of the seeds
    with pytest.warns(DeprecationWarning):
        d, s, sig = mean_difference(b - a, 0.0)  # paired: the same seeds in both arms, no spread at all
    assert d == 3.0 and s == 0.0 and sig


def test_spearman_against_pearson_of_ranks_and_ties():
    x = np.arange(6.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    y = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])
    assert spearman(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])  # y is a permutation: ranks = values − 1
    # Ties get their average rank: ranks of [1, 2, 2, 3] are [0, 1.5, 1.5, 3].
    assert spearman([0, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(np.corrcoef([0, 1, 2, 3], [0, 1.5, 1.5, 3])[0, 1])
    assert spearman([0, 1, np.nan, 3, 4], [0, 1, 5, 3, 4]) == pytest.approx(1.0)  # the non-finite pair is left out
    assert math.isnan(spearman([0, 1], [1, 0])) and math.isnan(spearman([0, 1, 2], [1, 1, 1]))
    with pytest.raises(ValueError, match="same length"):
        spearman([0, 1, 2], [0, 1])


def test_seedwise_spearman_counts_the_seeds_that_agree():
    with pytest.warns(DeprecationWarning, match="stats.trend"):
        rhos, frac = seedwise_spearman([0, 1, 2, 3], [[0, 1, 2, 3], [0, 2, 1, 3], [3, 2, 1, 0]])
    assert rhos[0] == pytest.approx(1.0) and rhos[2] == pytest.approx(-1.0) and frac == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------------------
# The book's rule: Student-t intervals, equivalence margins, trends that hold in every seed
# --------------------------------------------------------------------------------------------------


def test_t_quantile_against_tabulated_values():
    assert t_quantile(4) == pytest.approx(2.7764, abs=1e-4)  # 5 seeds
    assert t_quantile(7) == pytest.approx(2.3646, abs=1e-4)  # 8 seeds
    assert t_quantile(1e9) == pytest.approx(1.95996, abs=1e-4)
    assert t_quantile(9, confidence=0.99) == pytest.approx(3.2498, abs=1e-4)
    with pytest.raises(ValueError, match="confidence"):
        t_quantile(4, confidence=1.5)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0)


def test_paired_effect_is_the_one_sample_interval_of_the_differences():
    rng = np.random.default_rng(1)
    base = rng.normal(size=8) * 5  # a large spread that both arms share through the seed
    a, b = base + 0.3 + 0.05 * rng.normal(size=8), base
    d = a - b
    eff = effect(a, b)
    half = t_quantile(7) * d.std(ddof=1) / math.sqrt(8)
    assert eff.n == 8 and eff.df == 7 and eff.estimate == pytest.approx(d.mean())
    assert (eff.low, eff.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert eff.excludes_zero and eff.sign == 1
    # Unpaired, the shared spread swamps the same difference: the interval includes zero.
    loose = effect(a, b, paired=False)
    assert not loose.excludes_zero and loose.sign == 0 and loose.high - loose.low > 10 * (eff.high - eff.low)


def test_welch_interval_matches_scipy():
    from scipy import stats

    a, b = np.array([1.0, 2.5, 3.1, 4.2]), np.array([2.0, 2.2, 2.9, 3.3, 3.0, 2.4])
    eff = effect(a, b, paired=False)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert (eff.low, eff.high) == pytest.approx((ci.low, ci.high))


def test_effect_against_a_number_leaves_out_diverged_runs_and_needs_two_seeds():
    eff = effect([1.0, np.nan, 3.0, 2.0], 1.0)
    assert eff.n == 3 and eff.estimate == pytest.approx(1.0)
    one = effect([1.0, np.nan], 0.0)
    assert one.n == 1 and math.isinf(one.low) and math.isinf(one.high) and not one.excludes_zero
    with pytest.raises(ValueError, match="same number of seeds"):
        effect([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)


@pytest.mark.parametrize(
    ("values", "margin", "verdict"),
    [
        ([0.001, -0.002, 0.0015, 0.0, -0.001], 0.01, "equivalent"),   # tight around zero
        ([0.05, 0.06, 0.055, 0.052, 0.058], 0.01, "different"),       # a clear effect
        ([0.03, -0.02, 0.01, -0.03, 0.025], 0.01, "inconclusive"),    # noise wider than the margin
        ([0.003, 0.004, 0.0035, 0.0032, 0.0038], 0.01, "equivalent"), # non-zero but inside the margin
    ],
)
def test_equivalence_verdicts(values, margin, verdict):
    assert equivalence(effect(values), margin) == verdict


def test_a_noisy_null_is_never_called_equivalent():
    """The old rule called "not > 2 s.e." a null; the equivalence test calls it inconclusive."""
    noisy = np.array([0.02, -0.015, 0.01, -0.02, 0.0])  # mean 0, spread about ±0.02
    assert equivalence(effect(noisy), 0.01) == "inconclusive"
    with pytest.raises(ValueError, match="margin"):
        equivalence(effect(noisy), 0.0)


def test_sign_rule_needs_every_seed_and_never_stands_alone():
    assert sign_consistent([1.0, 0.5, 2.0]) and not sign_consistent([1.0, -0.5, 2.0])
    assert sign_consistent([-1.0, -2.0], -1) and not sign_consistent([-1.0, -2.0], 1)
    assert not sign_consistent([0.0, 1.0]) and not sign_consistent([np.nan])
    x = [0, 1, 2, 3]
    up = trend(x, [[0, 1, 2, 3], [0, 1, 3, 2], [0, 2, 1, 3], [1, 0, 2, 3]])
    assert up.all_seeds and up.sign == 1 and up.mean.excludes_zero
    mixed = trend(x, [[0, 1, 2, 3], [0, 1, 3, 2], [3, 2, 1, 0], [1, 0, 2, 3]])  # one seed against
    assert mixed.sign == 0
    # Every seed agrees, but with only two seeds and scattered ρ the interval includes zero: no claim.
    weak = trend(x, [[0, 1, 2, 3], [1, 0, 3, 2]])
    assert weak.all_seeds and not weak.mean.excludes_zero and weak.sign == 0


def test_effect_text_prints_the_interval():
    eff = Effect(0.0123, 0.004, 5, 4, 0.0012, 0.0234)
    assert eff.text() == "+0.012 [+0.001, +0.023]"
    tiny = Effect(2.0e-9, 1e-10, 5, 4, 1.7e-9, 2.3e-9)
    assert tiny.text() == "(+2.00 [+1.70, +2.30])e-09"
    assert str(eff) == eff.text()
    rel = eff.relative_to(-0.5)
    assert rel.estimate == pytest.approx(0.0246) and rel.low == pytest.approx(0.0024)


def test_claims_ledger_asserts_and_counts():
    claims = Claims("Chapter X")
    claims.effect("gain", effect([0.1, 0.12, 0.11, 0.09]), +1)
    with pytest.raises(AssertionError, match="does not exclude zero on the negative side"):
        claims.effect("loss", effect([0.1, 0.12, 0.11, 0.09]), -1)
    with pytest.raises(AssertionError, match="does not exclude zero"):
        claims.effect("noise", effect([0.1, -0.12, 0.11, -0.09]), +1)
    assert claims.null("same", effect([0.001, -0.001, 0.0005, 0.0]), 0.01) == "equivalent"
    assert claims.null("noisy", effect([0.05, -0.04, 0.03, -0.05]), 0.01) == "inconclusive"
    with pytest.raises(AssertionError, match="inconclusive, not equivalent"):
        claims.null("noisy", effect([0.05, -0.04, 0.03, -0.05]), 0.01, expect="equivalent")
    claims.trend("up", trend([0, 1, 2], [[0, 1, 2], [0, 1, 2], [0, 2, 3]]), +1)
    with pytest.raises(AssertionError, match="fails the rule"):
        claims.trend("down", trend([0, 1, 2], [[0, 1, 2], [0, 1, 2], [0, 2, 3]]), -1)
    claims.check("bound", True)
    with pytest.raises(AssertionError, match="'bound2' fails: why"):
        claims.check("bound2", False, "why")
    assert claims.counts() == {"effect": 1, "null (equivalent)": 1, "null (inconclusive)": 1, "trend": 1, "check": 1}
    assert claims.summary() == (
        "Chapter X tests 5 claims by the book's rule (95 % Student-t intervals over seeds): 1 effects (interval "
        "excludes zero), 1 trends (interval and every seed), 1 other checks (bounds, counts), 1 null claim "
        "equivalent, 1 null claim inconclusive.")


def test_claims_not_enforced_record_failures_instead_of_raising():
    claims = Claims("Chapter Y", enforce=False)
    assert not claims.effect("loss", effect([0.1, 0.12, 0.11, 0.09]), -1)
    assert claims.effect("gain", effect([0.1, 0.12, 0.11, 0.09]), +1)
    assert claims.null("noisy", effect([0.05, -0.04, 0.03, -0.05]), 0.01, expect="equivalent") == "inconclusive"
    assert claims.counts() == {"failed": 2, "effect": 1}
    assert claims.summary().endswith("1 effects (interval excludes zero), 2 FAILED (not asserted at this size).")
