"""Grading of ex-ch5-power (chapter 5, "Power iteration against Lanczos"): the student's ``my_hvp`` and
``power_iteration``.

``my_hvp`` is tested on losses whose Hessian is known in closed form: a quadratic E(x) = ½xᵀAx + bᵀx (Hessian A) on
a plain array, and a quartic on a pytree of two leaves, whose Hessian is written out by hand. ``power_iteration`` is
tested on quadratics E(x) = ½xᵀAx, whose Hessian-vector product is A·v: the expected Rayleigh quotients are v_kᵀAv_k
with v_k = Aᵏv₀/‖Aᵏv₀‖, computed with NumPy's matrix powers. Each test function is self-contained (otter runs it on
its own): it imports what it uses.
"""

ANSWER = """Define `my_hvp(loss, params, v)`, returning the Hessian-vector product ∇²E(θ)·v with the structure of `params`
(any pytree), and `power_iteration(loss_flat, x, v0, num_steps)` built on it, returning the `num_steps` Rayleigh
quotients v_kᵀHv_k (k = 0, 1, …), where v₀ is the normalized start vector and v_{k+1} = Hv_k/‖Hv_k‖, H the Hessian
of `loss_flat` at `x`."""

PROMPT = """def my_hvp(loss, params, v):
    ...


def power_iteration(loss_flat, x, v0, num_steps):
    ...
"""

# A typical wrong answer: the vector is not normalized after each product.
MISTAKE = ("return hv / jnp.linalg.norm(hv), rayleigh", "return hv, rayleigh")


def public_hvp_quadratic(my_hvp):
    import numpy as np
    import jax.numpy as jnp

    assert callable(my_hvp), "define my_hvp(loss, params, v) (it is missing or not a function)."
    A = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 4.0]])
    b = np.array([1.0, -2.0, 0.5])
    loss = lambda x: 0.5 * x @ jnp.asarray(A) @ x + jnp.asarray(b) @ x      # Hessian A, gradient Ax + b
    x = jnp.array([0.3, -1.0, 2.0])
    v = jnp.array([1.0, 0.5, -2.0])
    got = np.asarray(my_hvp(loss, x, v), dtype=float)
    want = A @ np.asarray(v)
    assert got.shape == (3,), f"H·v has the shape of the parameters, (3,) here; yours has shape {got.shape}."
    gradient = A @ np.asarray(x) + b
    hint = ("you returned the gradient ∇E(θ); H·v is the derivative of the gradient in the direction v."
            if np.allclose(got, gradient) else "the sign is flipped." if np.allclose(got, -want) else
            "differentiate the gradient (jax.grad(loss)) along v with jax.jvp.")
    assert np.allclose(got, want, rtol=1e-10, atol=1e-12), (
        f"on E(x) = ½xᵀAx + bᵀx, H·v = A·v = {np.round(want, 6).tolist()}; yours is {np.round(got, 6).tolist()}: {hint}")


def hidden_hvp_pytree(my_hvp):
    import numpy as np
    import jax.numpy as jnp

    # E(w, s) = ¼Σw⁴ + ½s²Σw²: ∂²E/∂wᵢ∂wⱼ = (3wᵢ² + s²)δᵢⱼ, ∂²E/∂wᵢ∂s = 2swᵢ, ∂²E/∂s² = Σw².
    loss = lambda p: 0.25 * jnp.sum(p["w"] ** 4) + 0.5 * p["s"] ** 2 * jnp.sum(p["w"] ** 2)
    rng = np.random.default_rng(5)
    for trial in range(3):
        w, s = rng.normal(size=4), float(rng.normal())
        vw, vs = rng.normal(size=4), float(rng.normal())
        want_w = (3 * w**2 + s**2) * vw + 2 * s * w * vs
        want_s = 2 * s * w @ vw + (w @ w) * vs
        got = my_hvp(loss, {"w": jnp.asarray(w), "s": jnp.asarray(s)}, {"w": jnp.asarray(vw), "s": jnp.asarray(vs)})
        assert isinstance(got, dict) and set(got) == {"w", "s"}, (
            "H·v has the structure of the parameters: a dict with the keys 'w' and 's' here.")
        got_w, got_s = np.asarray(got["w"], dtype=float), float(np.asarray(got["s"], dtype=float))
        assert np.allclose(got_w, want_w, rtol=1e-9) and np.isclose(got_s, want_s, rtol=1e-9), (
            f"on a pytree {{'w', 's'}} your H·v is w: {np.round(got_w, 6).tolist()}, s: {got_s:.6f}; the Hessian "
            f"gives w: {np.round(want_w, 6).tolist()}, s: {want_s:.6f}. Every leaf of v counts, also the mixed terms.")


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
