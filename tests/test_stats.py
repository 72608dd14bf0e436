"""igr_tutorial.stats against direct computations: the statistics every experimental claim of chapters 6–9 rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from igr_tutorial.stats import format_mean_se, mean_difference, mean_se, seedwise_spearman, spearman


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
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    diff, se, sig = mean_difference(a, b)
    assert diff == -3.0 and se == pytest.approx(math.sqrt(2 / 3)) and sig
    diff, se, sig = mean_difference(a, a + 0.1)
    assert diff == pytest.approx(-0.1) and not sig  # far inside the spread of the seeds
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
    rhos, frac = seedwise_spearman([0, 1, 2, 3], [[0, 1, 2, 3], [0, 2, 1, 3], [3, 2, 1, 0]])
    assert rhos[0] == pytest.approx(1.0) and rhos[2] == pytest.approx(-1.0) and frac == pytest.approx(2 / 3)
