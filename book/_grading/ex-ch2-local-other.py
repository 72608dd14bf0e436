"""Grading of ex-ch2-local-other (chapter 2, "Local error orders for another loss").

Checked against the theorem's closed-form orders k + 2 and, for k = 0, against an independent measurement: the
one-step error of gradient descent on E(a, b) = ½(1 − ab)² against a Runge–Kutta solution of the flow, in NumPy.
"""

ANSWER = """Store `slopes_ab`, the three measured local-error slopes for k = 0, 1, 2 (in that order), on the
step sizes `hs_local` from θ₀ = (2.0, 0.3)."""

PROMPT = """slopes_ab = [..., ..., ...]
"""

SOLUTION = """slopes_ab = [igr.convergence_order(hs_local, local_errors(E_ab, theta0_ab, hs_local, order)) for order in (0, 1, 2)]"""

# A typical wrong answer: the same modified flow (k = 0) for all three slopes.
MISTAKE = ("hs_local, order)) for order", "hs_local, 0)) for order")


def public_three_slopes(slopes_ab):
    import numpy as np

    slopes = np.asarray(slopes_ab, dtype=float)
    assert slopes.shape == (3,), f"slopes_ab must hold three numbers (k = 0, 1, 2); yours has shape {slopes.shape}."
    assert np.all(np.diff(slopes) > 0.5), (
        f"your slopes {np.round(slopes, 3).tolist()} do not grow with k: each order of the modified flow should gain "
        "one power of h (pass k to local_errors).")


def hidden_slopes(slopes_ab):
    import numpy as np

    slopes = np.asarray(slopes_ab, dtype=float)
    for k, s in enumerate(slopes):
        assert abs(s - (k + 2)) < 0.2, f"the slope for k = {k} is {s:.3f}; the theorem predicts {k + 2}."
    grad = lambda t: -(1 - t[0] * t[1]) * np.array([t[1], t[0]])
    th0, errs = np.array([2.0, 0.3]), []
    hs_local = 0.1 * 2.0 ** -np.arange(6)                   # the chapter's step sizes
    for h in hs_local:
        th, n = th0.copy(), 200
        dt = h / n
        for _ in range(n):                                  # RK4 over one step of length h
            k1 = -grad(th)
            k2 = -grad(th + dt / 2 * k1)
            k3 = -grad(th + dt / 2 * k2)
            k4 = -grad(th + dt * k3)
            th = th + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        errs.append(np.linalg.norm(th0 - h * grad(th0) - th))
    want = np.polyfit(np.log(hs_local), np.log(errs), 1)[0]
    assert abs(slopes[0] - want) < 0.05, f"the k = 0 slope is {slopes[0]:.3f}; an independent run measures {want:.3f}."
