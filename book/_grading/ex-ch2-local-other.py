"""Grading of ex-ch2-local-other (chapter 2, "Local error orders for another loss").

The student writes ``my_order(hs, errors)`` (checked against NumPy's least-squares line through (log h, log error))
and stores the three slopes it measures. These are checked against the theorem's closed-form orders k + 2 and, for
k = 0, against an independent measurement: the one-step error of gradient descent on E(a, b) = ½(1 − ab)² against a
Runge–Kutta solution of the flow, in NumPy.
"""

ANSWER = """Define `my_order(hs, errors)`, the least-squares slope of log(error) against log(h), and store
`slopes_ab`, the three local-error slopes it measures for k = 0, 1, 2 (in that order) on the step sizes `hs_local`
from θ₀ = (2.0, 0.3)."""

PROMPT = """def my_order(hs, errors):
    ...


slopes_ab = [..., ..., ...]
"""

# A typical wrong answer: the same modified flow (k = 0) for all three slopes.
MISTAKE = ("hs_local, k)) for k in (0, 1, 2)]", "hs_local, 0)) for k in (0, 1, 2)]")


def public_my_order(my_order):
    import numpy as np

    assert callable(my_order), "define a function my_order(hs, errors) (it is missing or not a function)."
    hs = 0.1 * 2.0 ** -np.arange(5)
    errors = 3.0 * hs**2 * np.exp(np.array([0.05, -0.03, 0.0, 0.04, -0.06]))     # order 2, a little scatter
    want = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    value = my_order(hs.copy(), errors.copy())
    assert value is not None and np.ndim(value) == 0, "my_order must return one number: the fitted slope."
    got = float(value)
    hints = {
        -want: "the sign is flipped: the error falls as h falls, so the order is positive.",
        np.log(errors[-1] / errors[0]) / np.log(hs[-1] / hs[0]): "you used only the first and the last point; fit a "
        "line through all of them (least squares).",
        np.polyfit(np.log(errors), np.log(hs), 1)[0]: "you fitted log h against log error; the order is the slope of "
        "log(error) against log(h).",
        np.polyfit(hs, errors, 1)[0]: "you fitted the error against h on linear axes; the order is the slope on "
        "log-log axes.",
    }
    hint = next((m for v, m in hints.items() if abs(got - v) < 1e-6 * max(1.0, abs(v))),
                "fit a line through (log h, log error) by least squares and return its slope.")
    assert abs(got - want) < 1e-9, f"for errors ≈ 3·h² with a little scatter your order is {got:.4f}, not {want:.4f}: {hint}"


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
