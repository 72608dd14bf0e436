"""Grading of ex-ch2-f2-quadratic (chapter 2, "The second-order term on a one-dimensional quadratic").

The expected f₂ is the h² coefficient of the exact field (1/h)·log(1 − hλ₁)·θ, extracted numerically by a
polynomial fit of that function at small h (not from the package's modified vector field); the expected order of
the truncation error is fitted to |order-2 series − exact field| computed in NumPy.
"""

ANSWER = """Define `my_f2(lam, theta)`, your formula for f₂ on E = ½λ₁θ² (λ₁ = `lam`), and store
`f2_num` (the package's difference quotient at λ₁ = 2, θ = 1, h = 0.05) and `truncation_order` (the measured
order of the error of the order-2 truncation on the step sizes `hs_ex` = 0.01, 0.02, 0.04, 0.08)."""

PROMPT = """def my_f2(lam, theta):
    ...


f2_num = ...
truncation_order = ...
"""

SOLUTION = """def my_f2(lam, theta):
    return -lam**3 * theta / 3


truncation_order = igr.convergence_order(hs_ex, errs_ex)"""

# A typical wrong answer: the factor 1/2 of f₁ reused for f₂ (the series has 1/3 there).
MISTAKE = ("-lam**3 * theta / 3", "-lam**3 * theta / 2")


def public_f2_formula(my_f2):
    import numpy as np

    assert callable(my_f2), "define a function my_f2(lam, theta)."
    lam, theta = 2.0, 1.0
    h = np.linspace(1e-3, 2e-2, 40)
    want = np.polyfit(h, np.log(1 - h * lam) / h * theta, 6)[-3]      # the h² coefficient of the exact field
    got = float(np.ravel(np.asarray(my_f2(lam, theta), dtype=float))[0])
    ratio = got / want
    hint = ("your coefficient is 3/2 of the right one: 1/2 is f₁'s factor; f₂ = (1/3)·f′f′f here."
            if abs(ratio - 1.5) < 1e-3 else "your sign is flipped." if abs(ratio + 1) < 1e-3 else
            "compare your f₂ with the h² term of −(λ₁ + hλ₁²/2 + h²λ₁³/3 + …)θ.")
    assert abs(got - want) < 1e-6 * abs(want), f"my_f2(2, 1) = {got:.6f}, but the h² term of the exact field is {want:.6f}: {hint}"


def hidden_f2_values_and_order(my_f2, f2_num, truncation_order):
    import numpy as np

    h = np.linspace(1e-3, 2e-2, 40)
    for lam, theta in ((0.5, -1.3), (3.0, 0.7), (2.0, 1.0)):
        want = np.polyfit(h, np.log(1 - h * lam) / h * theta, 6)[-3]
        got = float(np.ravel(np.asarray(my_f2(lam, theta), dtype=float))[0])
        assert abs(got - want) < 1e-5 * abs(want), f"my_f2({lam}, {theta}) = {got:.6f}, expected {want:.6f}."
    f2 = float(np.ravel(np.asarray(f2_num, dtype=float))[0])
    assert abs(f2 + 8 / 3) < 1e-8, f"f2_num = {f2:.10f}: the difference quotient at λ₁ = 2, θ = 1 should be −8/3."
    hs = np.array([0.01, 0.02, 0.04, 0.08])
    errs = np.abs(-(2 + hs * 4 / 2 + hs**2 * 8 / 3) - np.log(1 - 2 * hs) / hs)
    want_order = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(float(truncation_order) - want_order) < 0.02, (
        f"truncation_order = {float(truncation_order):.3f}; an independent computation gives {want_order:.3f}.")
