"""Grading of ex-ch7-two-param (chapter 7, "Where does EGR land on the two-parameter model?").

Recomputed without the package: EGR (gradient descent on E + μ‖∇E‖² with the gradient of ‖∇E‖² written out for
E = ½(1 − ab)²) in NumPy, and the modified flow of GD (the gradient flow of E + (h/4)‖∇E‖², h = h₀ + 4μ) by
classical Runge–Kutta, both to T = 15.
"""

ANSWER = """Store `egr_sharpness` (a² + b² where EGR with h₀ = 0.002, μ = 0.05 lands after 7500 steps) and
`mf_sharpness` (a² + b² where the modified flow of GD at h = h₀ + 4μ is at T = 15)."""

PROMPT = """egr_sharpness = ...
mf_sharpness = ...
"""

SOLUTION = """egr_sharpness = sharp(path[-1])
mf_sharpness = sharp(mf_ex[-1])"""

# A typical wrong answer: matching EGR to GD at h = h₀ + 2μ (the factor of the penalty's gradient, not 4μ).
MISTAKE = ("h_ex = h0_ex + 4 * mu_ex", "h_ex = h0_ex + 2 * mu_ex")


def public_numbers(egr_sharpness, mf_sharpness):
    import numpy as np

    for name, value in (("egr_sharpness", egr_sharpness), ("mf_sharpness", mf_sharpness)):
        assert value is not None and value is not Ellipsis and np.isfinite(float(value)), f"set {name} to a number."
        assert 2.0 - 1e-9 <= float(value), f"{name} = {float(value):.4f}: no minimum (ab = 1) is flatter than a² + b² = 2."
    assert abs(float(egr_sharpness) - float(mf_sharpness)) < 0.02 * float(egr_sharpness), (
        f"EGR lands at sharpness {float(egr_sharpness):.4f} but your modified flow at {float(mf_sharpness):.4f}: "
        "EGR with step h₀ and weight μ follows the modified flow of GD at h = h₀ + 4μ (E + μ‖∇E‖² = E + (h − h₀)/4·‖∇E‖²).")


def hidden_independent_runs(egr_sharpness, mf_sharpness):
    import numpy as np

    def grad_E(t):
        a, b = t
        return -(1 - a * b) * np.array([b, a])

    def grad_penalty(t):                                # ∇‖∇E‖² with ‖∇E‖² = r²(a² + b²), r = 1 − ab
        a, b = t
        r = 1 - a * b
        return 2 * r * (a * a + b * b) * np.array([-b, -a]) + r * r * np.array([2 * a, 2 * b])

    h0, mu = 0.002, 0.05
    t = np.array([2.8, 3.5])
    for _ in range(7500):
        t = t - h0 * (grad_E(t) + mu * grad_penalty(t))
    want_egr = t @ t
    h = h0 + 4 * mu
    field = lambda t: -(grad_E(t) + h / 4 * grad_penalty(t))
    t, dt = np.array([2.8, 3.5]), 15.0 / 30000
    for _ in range(30000):
        k1 = field(t)
        k2 = field(t + dt / 2 * k1)
        k3 = field(t + dt / 2 * k2)
        k4 = field(t + dt * k3)
        t = t + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    want_mf = t @ t
    assert abs(float(egr_sharpness) - want_egr) < 1e-6 * want_egr, (
        f"egr_sharpness = {float(egr_sharpness):.6f}; an independent EGR run lands at {want_egr:.6f}.")
    assert abs(float(mf_sharpness) - want_mf) < 1e-5 * want_mf, (
        f"mf_sharpness = {float(mf_sharpness):.6f}; the modified flow at h = h₀ + 4μ reaches {want_mf:.6f}.")
