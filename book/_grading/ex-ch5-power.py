"""Grading of ex-ch5-power (chapter 5, "Power iteration against Lanczos"): the student's ``power_iteration``.

Tested on quadratics E(x) = ½xᵀAx, whose Hessian-vector product is A·v: the expected Rayleigh quotients are
v_kᵀAv_k with v_k = Aᵏv₀/‖Aᵏv₀‖, computed with NumPy's matrix powers.
"""

ANSWER = """Define `power_iteration(loss_flat, x, v0, num_steps)`, returning the `num_steps` Rayleigh quotients
v_kᵀHv_k (k = 0, 1, …), where v₀ is the normalized start vector and v_{k+1} = Hv_k/‖Hv_k‖, H the Hessian of
`loss_flat` at `x`."""

PROMPT = """def power_iteration(loss_flat, x, v0, num_steps):
    ...
"""

# A typical wrong answer: the vector is not normalized after each product.
MISTAKE = ("return hv / jnp.linalg.norm(hv), rayleigh", "return hv, rayleigh")


def public_diagonal(power_iteration):
    import numpy as np
    import jax.numpy as jnp

    assert callable(power_iteration), "define power_iteration(loss_flat, x, v0, num_steps)."
    A = np.diag([3.0, 1.0])
    got = np.asarray(power_iteration(lambda x: 0.5 * x @ jnp.asarray(A) @ x, jnp.zeros(2), jnp.array([1.0, 1.0]), 5))
    want = [(3 * 9.0**k + 1) / (9.0**k + 1) for k in range(5)]         # v_k ∝ (3ᵏ, 1)
    assert got.shape == (5,), f"return one Rayleigh quotient per step: shape (5,), yours {got.shape}."
    assert np.allclose(got, want, rtol=1e-10), (
        f"on A = diag(3, 1) from v₀ = (1, 1) the quotients are {np.round(want, 6).tolist()}, yours "
        f"{np.round(got, 6).tolist()}: normalize v before each product and use vᵀHv for a unit v.")


def hidden_random_symmetric(power_iteration):
    import numpy as np
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    M = rng.normal(size=(6, 6))
    A = M @ M.T + np.eye(6)
    v0 = rng.normal(size=6)
    x = rng.normal(size=6)                       # a quadratic's Hessian does not depend on the point
    rayleigh = []
    for k in range(12):
        v = np.linalg.matrix_power(A, k) @ v0
        v = v / np.linalg.norm(v)
        rayleigh.append(v @ A @ v)
    got = np.asarray(power_iteration(lambda t: 0.5 * t @ jnp.asarray(A) @ t, jnp.asarray(x), jnp.asarray(v0), 12))
    assert np.allclose(got, rayleigh, rtol=1e-9), "your Rayleigh quotients differ from vₖᵀAvₖ with vₖ = Aᵏv₀/‖Aᵏv₀‖."
