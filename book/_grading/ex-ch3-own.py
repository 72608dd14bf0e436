"""Grading of ex-ch3-own (chapter 3, "Your own modified loss"): the student's ``my_modified_loss(loss, h)``.

The expected value E(θ) + (h/4)‖∇E(θ)‖² is computed independently of JAX's autodiff and of the package: the
gradient comes from central finite differences in float64 NumPy (public test: a quadratic whose gradient is known
in closed form). Each test function is self-contained (otter runs it on its own): it imports what it uses.
"""

ANSWER = """Define `my_modified_loss(loss, h)`, returning the function θ ↦ E(θ) + (h/4)‖∇E(θ)‖² for parameters
given as a dict of arrays (a pytree). The tests call it on their own losses and parameters."""

PROMPT = """def my_modified_loss(loss, h):
    ...
"""

# A typical wrong answer: the factor h/2 (the modified *vector field's* factor) instead of h/4.
MISTAKE = ("h / 4 * sq_norm", "h / 2 * sq_norm")


def public_quadratic(my_modified_loss):
    import numpy as np
    import jax.numpy as jnp

    assert callable(my_modified_loss), "define a function my_modified_loss(loss, h) (it is missing or not a function)."
    loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2) + 0.5 * p["b"] ** 2    # ∇E = θ, so Ẽ = (1/2 + h/4)‖θ‖²
    params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(3.0)}
    loss_tilde = my_modified_loss(loss, 0.1)
    assert callable(loss_tilde), "my_modified_loss(loss, h) must return a function of the parameters (it returned "  \
        f"{type(loss_tilde).__name__})."
    got = np.asarray(loss_tilde(params), dtype=float)
    assert got.shape == (), f"Ẽ(θ) must be one number (a scalar); yours has shape {got.shape}."
    sq = 1.0 + 4.0 + 0.25 + 9.0
    want = (0.5 + 0.1 / 4) * sq
    ratio = (float(got) - 0.5 * sq) / (0.1 / 4 * sq)
    hints = {2.0: "the regularizer is twice too large: the factor is h/4, not h/2.",
             0.0: "your value equals E(θ): the term (h/4)‖∇E‖² is missing.",
             -1.0: "the regularizer has the wrong sign: gradient descent adds it to the loss."}
    hint = next((m for r, m in hints.items() if abs(ratio - r) < 1e-6), "check each term of E + (h/4)‖∇E‖².")
    assert abs(float(got) - want) < 1e-9 * want, f"on E = ½‖θ‖² with h = 0.1 you return {float(got):.6f}, not {want:.6f}: {hint}"


def hidden_random_pytree(my_modified_loss):
    import numpy as np
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(12, 3)), rng.normal(size=12)
    loss = lambda p: jnp.mean((jnp.tanh(X @ p["w"]) * p["s"] + p["b"] - y) ** 2) + 0.1 * jnp.sum(p["w"] ** 4)

    def loss_np(v):                                   # the same loss on a flat float64 vector, for the differences
        w, s, b = v[:3], v[3], v[4]
        return np.mean((np.tanh(X @ w) * s + b - y) ** 2) + 0.1 * np.sum(w**4)

    for trial in range(3):
        v = rng.normal(size=5)
        params = {"w": jnp.asarray(v[:3]), "s": jnp.asarray(v[3]), "b": jnp.asarray(v[4])}
        eps = 1e-6
        grad = np.array([(loss_np(v + eps * e) - loss_np(v - eps * e)) / (2 * eps) for e in np.eye(5)])
        for h in (0.05, 0.3):
            want = loss_np(v) + h / 4 * grad @ grad
            got = float(np.asarray(my_modified_loss(loss, h)(params), dtype=float))
            ratio = (got - loss_np(v)) / (h / 4 * grad @ grad)
            hint = ("the regularizer is twice too large: the factor is h/4, not h/2." if abs(ratio - 2) < 1e-4 else
                    "the regularizer has the wrong sign." if abs(ratio + 1) < 1e-4 else
                    "every leaf of the pytree counts: sum the squared gradient entries over all of them.")
            assert abs(got - want) < 1e-7 * max(1.0, abs(want)), (
                f"on a random pytree problem (h = {h}) you return {got:.8f}, not {want:.8f}: {hint}")
