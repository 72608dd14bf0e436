"""Grading of ex-ch4-sweep-x2 (chapter 4, "The sweep for x = 2").

The gradient flow's landing point comes from the conservation of a² − b² (closed form: a positive root of a
quadratic in a²), h₁ = 1/(x|r₀|) from the residual r₀ = y − a₀b₀x, and the largest finite step from an
independent NumPy run of gradient descent on E = ½(y − abx)² over the chapter's grid.
"""

ANSWER = """Store `kappa_gf2` (the gradient flow's landing sharpness x²(a² + b²)), `h1_2` (h₁ = 1/(x|r₀|)) and
`largest_finite_h` (the largest h of the grid `np.linspace(0.0005, 0.06, 120)` whose 8000 steps stay finite)."""

PROMPT = """kappa_gf2 = ...
h1_2 = ...
largest_finite_h = ...
"""

SOLUTION = """largest_finite_h = float(hs2[fin2].max())"""

# A typical wrong answer: a factor 2 in h₁ (confusing it with the stability limit 2/λ).
MISTAKE = ("h1_2 = 1 / (x2 * abs(r0_2))", "h1_2 = 2 / (x2 * abs(r0_2))")


def public_predictions(kappa_gf2, h1_2):
    import numpy as np

    x, y, a0, b0 = 2.0, 1.0, 2.8, 3.5
    D0 = a0**2 - b0**2
    a2 = max(np.roots([1.0, -D0, -(y / x) ** 2]).real)          # a² − b² = D0 and ab = y/x at the landing point
    want_kappa = x**2 * (a2 + (y / x) ** 2 / a2)
    want_h1 = 1 / (x * abs(y - a0 * b0 * x))
    assert abs(float(kappa_gf2) - want_kappa) < 1e-8 * want_kappa, (
        f"kappa_gf2 = {float(kappa_gf2):.6f}, expected {want_kappa:.6f}: a² − b² is conserved along the flow and the "
        "flow lands where abx = y; the sharpness there is x²(a² + b²).")
    ratio = float(h1_2) / want_h1
    hint = "a factor 2 too large: h₁ = 1/(x|r₀|), not 2/(x|r₀|)." if abs(ratio - 2) < 1e-6 else "h₁ = 1/(x|r₀|) with r₀ = y − a₀b₀x."
    assert abs(ratio - 1) < 1e-10, f"h1_2 = {float(h1_2):.6f}, expected {want_h1:.6f}: {hint}"


def hidden_largest_finite_step(largest_finite_h, kappa_gf2, h1_2):
    import numpy as np

    x, y = 2.0, 1.0
    hs = np.linspace(0.0005, 0.06, 120)
    a, b = np.full(hs.shape, 2.8), np.full(hs.shape, 3.5)
    with np.errstate(all="ignore"):
        for _ in range(8000):
            r = y - a * b * x
            a, b = a + hs * r * b * x, b + hs * r * a * x
    finite = np.isfinite(a) & np.isfinite(b)
    want = hs[finite].max()
    assert abs(float(largest_finite_h) - want) <= (hs[1] - hs[0]) * 1.01, (
        f"largest_finite_h = {float(largest_finite_h):.5f}; an independent sweep finds {want:.5f}.")
    assert float(h1_2) < float(largest_finite_h), "h₁ should lie below the largest finite step."
