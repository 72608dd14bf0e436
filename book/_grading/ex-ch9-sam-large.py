"""Grading of ex-ch9-sam-large (chapter 9, "SAM at the edge of its expansion").

The student reports the table of the chapter's solution. The hidden test recomputes it without the package: GD on
the double well E(u, v) = ¼(u² − 1)² + ½(v − u²/2)² + u·v/10 with its gradient and Hessian written out by hand,
SAM's gradient ∇E(θ + ρd) and its first-order expansion ∇E + ρHd with d = ∇E/‖∇E‖ (normalized) or d = ∇E.
"""

ANSWER = """Store your measurements as `sam_rem`: a list with one tuple `(‖∇E‖, normalized remainder,
unnormalized remainder)` per iterate n = 0, 25, 50, 100, 200, 400 of gradient descent with h = 0.1 from `point`,
for ρ = 0.01 (a remainder is the norm of SAM's gradient minus its first-order expansion)."""

PROMPT = """sam_rem = ...
"""

# A typical wrong answer: the two expansions swapped (normalize=False where True is meant, and back).
MISTAKE = ("for nz in (True, False)]", "for nz in (False, True)]")


def public_table_shape(sam_rem):
    import numpy as np

    assert sam_rem is not None and sam_rem is not Ellipsis, "set sam_rem to your table (a list of 6 tuples)."
    table = np.asarray(sam_rem, dtype=float)
    assert table.shape == (6, 3), f"sam_rem must hold 6 rows (n = 0, 25, 50, 100, 200, 400) of 3 numbers; yours has shape {table.shape}."
    assert np.all(np.isfinite(table)) and np.all(table >= 0), "norms and remainders are finite and non-negative."
    g, normalized, unnormalized = table.T
    assert g[-1] < 1e-3 * g[0], "‖∇E‖ must shrink along the run (GD with h = 0.1 converges from `point`)."
    assert normalized[-1] > 0.1 * normalized[0] and unnormalized[-1] < 1e-3 * unnormalized[0], (
        "as ‖∇E‖ → 0 the *normalized* expansion's remainder does not vanish (d = ∇E/‖∇E‖ keeps length 1, so the "
        "O(ρ²) term stays), while the *unnormalized* one shrinks with ‖∇E‖: check which column is which "
        "(normalize=True is the normalized one).")


def hidden_table_matches_independent_run(sam_rem):
    import numpy as np

    def grad(t):
        u, v = t
        return np.array([(u**2 - 1) * u - u * (v - 0.5 * u**2) + 0.1 * v, (v - 0.5 * u**2) + 0.1 * u])

    def hess(t):
        u, v = t
        return np.array([[4.5 * u**2 - 1 - v, -u + 0.1], [-u + 0.1, 1.0]])

    rho, path = 0.01, [np.array([0.3, 1.2])]
    for _ in range(400):
        path.append(path[-1] - 0.1 * grad(path[-1]))
    want = []
    for n in (0, 25, 50, 100, 200, 400):
        t = path[n]
        g = grad(t)
        row = [np.linalg.norm(g)]
        for d in (g / np.linalg.norm(g), g):
            row.append(np.linalg.norm(grad(t + rho * d) - (g + rho * hess(t) @ d)))
        want.append(row)
    want, got = np.array(want), np.asarray(sam_rem, dtype=float)
    assert got.shape == want.shape, f"sam_rem must have shape {want.shape}."
    close = np.isclose(got, want, rtol=1e-3, atol=1e-13)   # near the minimum, d = ∇E/‖∇E‖ amplifies rounding
    names = ["‖∇E‖", "normalized remainder", "unnormalized remainder"]
    bad = [(r, c) for r, c in zip(*np.nonzero(~close))]
    assert not bad, (
        f"row {bad[0][0]} ({names[bad[0][1]]}): yours {got[bad[0]]:.3e}, an independent computation gives "
        f"{want[bad[0]]:.3e}. Evaluate at the iterates n = 0, 25, 50, 100, 200, 400 of GD with h = 0.1 from "
        "`point`, with ρ = 0.01, and keep the columns in the order (‖∇E‖, normalized, unnormalized).")
