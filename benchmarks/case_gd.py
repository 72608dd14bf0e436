"""Case 1: a 10,000-step GD trajectory on the two-parameter model (chapter 4's ``E(a, b) = ½(y − abx)²``).

:func:`igr_tutorial.gradient_descent` (one compiled ``lax.scan``) against a Python loop of per-step jitted updates
(the baseline) and the plain-NumPy loop with a hand-written gradient. Goal: at least 50× faster than the
per-step loop. Float64 inside this case only (``jax.enable_x64`` as a context manager).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.harness import Variant, block, condition, goal, time_variants

GOAL_SPEEDUP = 50.0


def run(s: Any) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from igr_tutorial import gradient_descent
    from igr_tutorial.losses import two_parameter_model

    x_data, y_data = 1.0, 1.0
    loss = two_parameter_model(x_data, y_data)
    theta0 = np.array([2.0, 0.1])
    lr, steps = s.gd_lr, s.gd_steps
    grad = jax.grad(loss)

    @jax.jit
    def step(theta):
        return theta - lr * grad(theta)

    def package():
        return np.asarray(block(gradient_descent(loss, jnp.asarray(theta0), lr, steps)))

    def jit_loop():
        theta = jnp.asarray(theta0)
        traj = [theta]
        for _ in range(steps):
            theta = step(theta)
            traj.append(theta)
        return np.stack(jax.device_get(traj))  # on the host: no XLA concatenation of steps + 1 operands to compile

    def numpy_loop():
        theta = theta0.copy()
        traj = np.empty((steps + 1, 2))
        traj[0] = theta
        for n in range(steps):
            a, b = theta
            r = y_data - a * b * x_data
            theta = theta - lr * np.array([-r * b * x_data, -r * a * x_data])  # ∂E/∂a, ∂E/∂b by hand
            traj[n + 1] = theta
        return traj

    with jax.enable_x64(True):
        variants, results = time_variants({
            "package_scan": Variant("igr.gradient_descent (one compiled lax.scan)", package, s.gd_repeats),
            "jit_step_loop": Variant("Python loop of per-step jitted updates", jit_loop, s.gd_loop_repeats),
            "numpy_loop": Variant("plain-NumPy loop, hand-written gradient", numpy_loop, s.gd_loop_repeats),
        })
    diff = max(float(np.max(np.abs(results[k] - results["package_scan"]))) for k in ("jit_step_loop", "numpy_loop"))
    for v in variants.values():
        v["per_step_us"] = v["median_s"] / steps * 1e6
    speedup = variants["jit_step_loop"]["median_s"] / variants["package_scan"]["median_s"]
    return {
        "description": f"{steps:,} steps of GD (h = {lr:g}) on E(a, b) = ½(1 − ab)² from (a, b) = (2, 0.1) in "
                       "float64; each variant returns the whole trajectory of steps + 1 iterates.",
        "settings": {"steps": steps, "lr": lr, "theta0": theta0.tolist(), "dtype": "float64"},
        "variants": variants, "baseline": "jit_step_loop",
        "goal": goal(f"igr.gradient_descent at least {GOAL_SPEEDUP:g}× faster than the per-step jitted loop "
                     f"({steps:,} steps)",
                     [condition("speed-up over the per-step jitted loop", "t(jit_step_loop) / t(package_scan)",
                                ">=", GOAL_SPEEDUP, speedup, "×")]),
        "notes": [f"the three trajectories agree to {diff:.1e} (largest absolute difference)",
                  "per step: " + ", ".join(f"{k} {v['per_step_us']:.3g} µs" for k, v in variants.items())],
    }
