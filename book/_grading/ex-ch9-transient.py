"""Grading of ex-ch9-transient (chapter 9, "The start from rest is a delay").

Checked against the closed form of the delay, β/(1 − β) steps (the sum of the geometric series Σ βᵏ, k ≥ 1, of
the velocity a run from rest lacks), and against the claim that the delay explains the gap: the shifted
distance is a small fraction of the unshifted one. The longer transient (β = 0.8) is further from its limit.
"""

ANSWER = """Store `delay_fit`, a dict mapping β (0.5 and 0.8) to the pair `(d, ratio)`: the fitted delay d in
steps, and the distance at that delay divided by the distance without delay."""

PROMPT = """delay_fit = {0.5: (..., ...), 0.8: (..., ...)}
"""

# A typical wrong answer: searching the delay on too short a range (up to β steps instead of a few β/(1 − β)).
MISTAKE = ("np.linspace(0.0, 3 * b_ex / (1 - b_ex), 301)", "np.linspace(0.0, b_ex, 301)")


def public_delays_near_closed_form(delay_fit):
    import numpy as np

    assert isinstance(delay_fit, dict) and set(delay_fit) == {0.5, 0.8}, (
        "delay_fit must be a dict with the keys 0.5 and 0.8 (the two β).")
    for beta, pair in delay_fit.items():
        d, ratio = (float(x) for x in pair)
        assert np.isfinite(d) and np.isfinite(ratio), f"β = {beta}: both numbers must be finite."
        assert abs(d / (beta / (1 - beta)) - 1) < 0.25, (
            f"β = {beta}: your delay {d:.3f} is far from β/(1 − β) = {beta / (1 - beta):.3f} steps. Search the delay "
            "over a range that contains it (a few times β/(1 − β)), at fractional steps.")


def hidden_delays_and_gaps(delay_fit):
    rel = {}
    for beta, (d, ratio) in delay_fit.items():
        rel[beta] = abs(float(d) / (beta / (1 - beta)) - 1)
        assert rel[beta] < 0.1, f"β = {beta}: the delay {float(d):.3f} is not within 10 % of β/(1 − β)."
        assert 0 <= float(ratio) < 0.05, (
            f"β = {beta}: at the best delay the distance should be under 5 % of the distance without delay "
            f"(yours: {float(ratio):.3f}); compare the last iterate from rest with the matched run at step n − d.")
    assert rel[0.8] > rel[0.5], "the longer transient (β = 0.8) should be further from β/(1 − β) than β = 0.5."
