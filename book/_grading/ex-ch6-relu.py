"""Grading of ex-ch6-relu (chapter 6, "ReLU instead of tanh").

Checked against what the equal-loss comparison must give and against the interval's own arithmetic: past GD's
stability limit the step caps the sharpness, so the largest step of the sweep (h = 2) ends much flatter at the common
training loss than the reference step (h = 0.125), for tanh and for ReLU, and a paired interval over four seeds of a
difference that large lies entirely below zero. Each entry is an interval over seeds (`igr_tutorial.stats.effect`):
its estimate lies inside it, and with four seeds its half-width is the Student-t quantile t(0.975, 3) = 3.182 times
the standard error.
"""

ANSWER = """Store `relu_check`, a dict mapping `"tanh"` and `"relu"` to the paired effect of the largest step on the
top Hessian eigenvalue at E*: `effect(λ_max at the largest h, λ_max at the smallest h)`, from the same four seeds
(the largest minus the smallest step; negative means the largest step ends flatter)."""

PROMPT = """relu_check = {"tanh": ..., "relu": ...}
"""

# A typical wrong answer: the difference the wrong way round (smallest minus largest step).
MISTAKE = ('"relu": effect(top[:, 1], top[:, 0])', '"relu": effect(top[:, 0], top[:, 1])')


def public_structure_and_sign(relu_check):
    import math

    assert isinstance(relu_check, dict) and set(relu_check) == {"tanh", "relu"}, (
        'relu_check must be a dict with the keys "tanh" and "relu".')
    for act, eff in relu_check.items():
        for attr in ("estimate", "low", "high", "se", "n"):
            assert hasattr(eff, attr), f"{act}: store the result of effect(...), an interval with .estimate, .low, .high."
        assert all(math.isfinite(float(x)) for x in (eff.estimate, eff.low, eff.high)), (
            f"{act}: the interval must be finite (it needs at least two seeds).")
        assert eff.low <= eff.estimate <= eff.high, f"{act}: the estimate must lie inside its interval."
    assert relu_check["tanh"].estimate < 0, (
        "tanh: the largest step should end flatter (a negative difference, largest minus smallest step). Did you "
        "subtract the other way round?")


def hidden_relu_flatter_with_an_interval(relu_check):
    for act, eff in relu_check.items():
        assert eff.high < 0, (
            f"{act}: the interval {eff.low:.3g} to {eff.high:.3g} should lie below zero: past the stability limit the "
            "largest step ends flatter, largest minus smallest step.")
        assert int(eff.n) == 4, f"{act}: use the sweep's first four seeds ({int(eff.n)} were used)."
        half = (eff.high - eff.low) / 2
        assert abs(half - 3.182 * eff.se) < 1e-3 * abs(half) + 1e-12, (
            f"{act}: a 95 % interval over four seeds is the estimate ± 3.182 standard errors (Student's t, 3 degrees "
            "of freedom); build it with effect(...), paired by seed.")
