"""Grading of ex-ch1-order (chapter 1, "The order for another loss, and for the loss values").

The student reports the two measured orders. The hidden test recomputes them without the package: gradient
descent in NumPy with the closed-form gradient of E(a, b) = ½(1 − ab)², and the gradient flow by classical
Runge–Kutta with steps 16 times smaller than the finest h, on the chapter's grid (T = 3, N = 30 … 960).
"""

ANSWER = """Store the two measured orders as numbers: `order_params` (the order of
max_n ‖θ_n − θ(nh)‖) and `order_loss` (the order of max_n |E(θ_n) − E(θ(nh))|), each fitted over the chapter's
step sizes `hs_global` (h = T/N for the `Ns` above)."""

PROMPT = """order_params = ...
order_loss = ...
"""

SOLUTION = """order_params = igr.convergence_order(hs_global, param_errs)
order_loss = igr.convergence_order(hs_global, loss_errs)"""

# A typical wrong answer: comparing θ_n with the flow at the wrong times (the first N+1 samples of the fine grid
# instead of every (Ns[-1] // N)-th, i.e. not at t = nh).
MISTAKE = ("fl = flow_grid[:: Ns[-1] // N]", "fl = flow_grid[: N + 1]")


def public_orders_are_numbers(order_params, order_loss):
    import numpy as np

    for name, value in (("order_params", order_params), ("order_loss", order_loss)):
        assert value is not None and value is not Ellipsis, f"set {name} to the order you measured."
        assert np.ndim(value) == 0 and np.isfinite(float(value)), f"{name} must be one finite number."
    assert abs(float(order_params) - 1) < 0.2, (
        f"order_params = {float(order_params):.3f}, but gradient descent is a first-order method: "
        + ("an order near 2 is the *local* (one-step) error's; the global error is the max over all n."
           if abs(float(order_params) - 2) < 0.3 else
           "compare θ_n with the flow at the same time t = nh: with the flow sampled on the finest grid, take "
           "every (Ns[-1] // N)-th sample, not the first N + 1.")
    )


def hidden_orders_match_independent_run(order_params, order_loss):
    import numpy as np

    T, Ns = 3.0, np.array([30, 60, 120, 240, 480, 960])
    E = lambda th: 0.5 * (1 - th[0] * th[1]) ** 2
    grad = lambda th: -(1 - th[0] * th[1]) * np.array([th[1], th[0]])
    th0, sub = np.array([2.0, 0.2]), 16
    dt = T / (Ns[-1] * sub)
    flow, th = [th0], th0.copy()
    for n in range(Ns[-1] * sub):                       # RK4 on θ' = −∇E(θ)
        k1 = -grad(th)
        k2 = -grad(th + dt / 2 * k1)
        k3 = -grad(th + dt / 2 * k2)
        k4 = -grad(th + dt * k3)
        th = th + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if (n + 1) % sub == 0:
            flow.append(th)
    flow = np.array(flow)
    p_err, l_err = [], []
    for N in Ns:
        gd = [th0]
        for _ in range(N):
            gd.append(gd[-1] - T / N * grad(gd[-1]))
        gd, fl = np.array(gd), flow[:: Ns[-1] // N]
        p_err.append(np.max(np.linalg.norm(gd - fl, axis=1)))
        l_err.append(np.max(np.abs([E(a) - E(b) for a, b in zip(gd, fl)])))
    want_p = np.polyfit(np.log(T / Ns), np.log(p_err), 1)[0]
    want_l = np.polyfit(np.log(T / Ns), np.log(l_err), 1)[0]
    assert abs(float(order_params) - want_p) < 0.02, (
        f"order_params = {float(order_params):.3f}; an independent run measures {want_p:.3f}. Fit the maximum over n "
        "of ‖θ_n − θ(nh)‖ against h = T/N, with the flow taken at the same times as the iterates.")
    assert abs(float(order_loss) - want_l) < 0.02, (
        f"order_loss = {float(order_loss):.3f}; an independent run measures {want_l:.3f}. Fit the maximum over n "
        "of |E(θ_n) − E(θ(nh))| (absolute values) against h.")
