"""The students' self-checks pass correct answers and give the right hint for typical wrong ones,
without ever printing the solution.

The correct answers here are written independently of the package (NumPy finite differences, hand-written
formulas), never the package's own function fed to its check: a wrong reference inside a check would then
fail these tests instead of agreeing with itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import igr_tutorial as igr
from igr_tutorial import checks as C
from igr_tutorial.tree import num_parameters, tree_sq_norm


def sq(loss, t):
    return tree_sq_norm(jax.grad(loss)(t))


def fd_grad(loss, t, eps=1e-6):
    """The gradient by central differences in NumPy float64, entry by entry, as a pytree like ``t``."""
    import numpy as np
    from jax.flatten_util import ravel_pytree

    x, unravel = ravel_pytree(t)
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (float(loss(unravel(jnp.asarray(x + e)))) - float(loss(unravel(jnp.asarray(x - e))))) / (2 * eps)
    return g


def independent_modified_loss(E, h):
    """E + (h/4)·‖∇E‖² with the gradient from finite differences: no JAX derivative, no package function."""
    return lambda t: float(E(t)) + h / 4 * float((fd_grad(E, t) ** 2).sum())


def independent_r_ig(E, t):
    g = fd_grad(E, t)
    return float((g**2).sum() / g.size)


def test_the_independent_answers_really_are_independent_and_right():
    """They agree with the package to finite-difference accuracy (so the checks below can trust them) without
    calling it; a wrong package reference would show up as a failed check of a right answer."""
    E = lambda t: jnp.sum(jnp.sin(t["w"]) ** 2) + t["b"] ** 4  # noqa: E731
    t = {"w": jnp.array([0.3, -1.2, 0.7]), "b": jnp.array(0.5)}
    assert abs(independent_modified_loss(E, 0.1)(t) - float(igr.modified_loss(E, 0.1)(t))) < 1e-8
    assert abs(independent_r_ig(E, t) - float(igr.r_ig(E, t))) < 1e-8


def assert_hint(result, *phrases):
    assert not result.passed, f"a wrong answer passed: {result}"
    for phrase in phrases:
        assert phrase in result.message, f"hint {result.message!r} lacks {phrase!r}"
    assert "(h/4)" not in result.message and "lr / 4" not in result.message, "hints must not give the solution"


def test_modified_loss_correct_answers_pass():
    assert C.check_modified_loss(independent_modified_loss)
    assert C.check_modified_loss(lambda E, h: (lambda t: E(t) + h / 4 * sq(E, t)))


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (lambda E, h: (lambda t: E(t) + h / 2 * sq(E, t)), ["twice too large"]),
        (lambda E, h: (lambda t: E(t) + h * sq(E, t)), ["four times too large"]),
        (lambda E, h: (lambda t: E(t) - h / 4 * sq(E, t)), ["wrong sign"]),
        (lambda E, h: (lambda t: E(t) + sq(E, t) / 4), ["learning rate is missing"]),
        (lambda E, h: (lambda t: E(t)), ["missing"]),
        (lambda E, h: (lambda t: h / 4 * sq(E, t)), ["loss E(θ) itself is missing"]),
        (lambda E, h: (lambda t: E(t) + h / 4 * jnp.sqrt(sq(E, t))), ["squared"]),
        (lambda E, h: (lambda t: E(t) + h / 4 * jax.flatten_util.ravel_pytree(jax.grad(E)(t))[0] ** 2), ["scalar"]),
    ],
)
def test_modified_loss_wrong_answers_get_the_right_hint(wrong, phrases):
    import jax.flatten_util  # noqa: F401  (used by one wrong answer)

    assert_hint(C.check_modified_loss(wrong), *phrases)


def test_a_crashing_answer_is_reported_not_raised():
    def broken(E, h):
        raise NotImplementedError("exercise 3.2")

    result = C.check_modified_loss(broken)
    assert_hint(result, "raised NotImplementedError", "exercise 3.2")


def test_r_ig():
    assert C.check_r_ig(independent_r_ig)
    assert_hint(C.check_r_ig(lambda E, t: sq(E, t)), "divide by m")
    assert_hint(C.check_r_ig(lambda E, t: jnp.sqrt(sq(E, t)) / num_parameters(t)), "squared")
    # A common pytree bug: counting leaves instead of scalar entries.
    assert_hint(C.check_r_ig(lambda E, t: sq(E, t) / len(jax.tree.leaves(t))))


def test_gd_step():
    assert C.check_gd_step(lambda E, t, h: jax.tree.map(lambda a, g: a - h * g, t, jax.grad(E)(t)))
    assert_hint(C.check_gd_step(lambda E, t, h: jax.tree.map(lambda a, g: a + h * g, t, jax.grad(E)(t))), "up the gradient")
    assert_hint(C.check_gd_step(lambda E, t, h: jax.tree.map(lambda a, g: a - g, t, jax.grad(E)(t))), "learning rate")
    assert_hint(C.check_gd_step(lambda E, t, h: jax.tree.map(lambda g: -h * g, jax.grad(E)(t))), "update, not the new")
    assert_hint(C.check_gd_step(lambda E, t, h: t), "unchanged")
    assert_hint(C.check_gd_step(lambda E, t, h: [jax.tree.map(lambda a, g: a - h * g, t, jax.grad(E)(t))]), "same structure")


def test_hvp():
    # Independent: central differences of the gradient along v (no forward-over-reverse, no package function).
    fd2 = lambda E, t, v: jax.tree.map(  # noqa: E731
        lambda a, b: (a - b) / 2e-4,
        jax.grad(E)(jax.tree.map(lambda x, y: x + 1e-4 * y, t, v)),
        jax.grad(E)(jax.tree.map(lambda x, y: x - 1e-4 * y, t, v)),
    )
    assert C.check_hvp(fd2)
    # A typical slip: the step of the difference quotient dropped (off by a factor 1/(2ε)).
    assert_hint(C.check_hvp(lambda E, t, v: jax.tree.map(lambda a: a * 2e-4, fd2(E, t, v))))
    assert_hint(C.check_hvp(lambda E, t, v: jax.grad(E)(t)), "gradient")
    assert_hint(C.check_hvp(lambda E, t, v: jax.tree.map(jnp.negative, fd2(E, t, v))), "sign")


def test_implicit_strength():
    assert C.check_implicit_strength(lambda h, m: h * m / 4)
    assert_hint(C.check_implicit_strength(lambda h, m: h * m), "four times")
    assert_hint(C.check_implicit_strength(lambda h, m: h / 4), "number of parameters")


def test_results_print_clearly():
    ok = C.check_implicit_strength(lambda h, m: h * m / 4)
    assert str(ok).startswith("✅") and "passed" in str(ok)
    bad = C.check_implicit_strength(lambda h, m: h * m)
    assert str(bad).startswith("❌") and bool(bad) is False


def test_convergence_order():
    """The order of errors ≈ C·hᵖ: a hand-written least-squares slope passes, the typical mistakes get their hint."""
    import numpy as np

    def slope(hs, errors):  # least squares by the normal equations, no polyfit
        x, y = np.log(hs), np.log(errors)
        return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())

    assert C.check_convergence_order(slope)
    assert_hint(C.check_convergence_order(lambda hs, e: -slope(hs, e)), "sign is flipped")
    assert_hint(C.check_convergence_order(lambda hs, e: np.polyfit(hs, e, 1)[0]), "log-log")
    assert_hint(C.check_convergence_order(lambda hs, e: np.log(e[-1] / e[0]) / np.log(hs[-1] / hs[0])),
                "first and the last point")
    assert_hint(C.check_convergence_order(lambda hs, e: np.polyfit(np.log(e), np.log(hs), 1)[0]), "log h against")
    assert_hint(C.check_convergence_order(lambda hs, e: [1.0, 2.0]), "single number")
    assert_hint(C.check_convergence_order(lambda hs, e: 1.0), "fit a line")


def test_flow_landing():
    """The gradient flow of ½(y − x·ab)² lands on x·ab = y with a² − b² of the start (chapter 4): the closed form
    passes; a point on the wrong curve, one that forgets the conservation law, and the wrong root get their hint."""
    import numpy as np

    def closed_form(a0, b0, x, y):
        c, q = a0**2 - b0**2, y / x
        a = np.sqrt((c + np.sqrt(c**2 + 4 * q**2)) / 2)
        return np.array([a, q / a])

    assert C.check_flow_landing(closed_form)
    assert_hint(C.check_flow_landing(lambda a0, b0, x, y: np.array([1.0, 1.0])), "x·ab")
    assert_hint(C.check_flow_landing(lambda a0, b0, x, y: np.array([np.sqrt(y / x), np.sqrt(y / x)])), "conserved")
    assert_hint(C.check_flow_landing(lambda a0, b0, x, y: -closed_form(a0, b0, x, y)), "sign of the start")
    assert_hint(C.check_flow_landing(lambda a0, b0, x, y: np.array([np.nan, 1.0])), "two finite numbers")
