"""Self-checks for students: call one on your own answer to an exercise.

Each ``check_*`` function compares a student's function with the package's reference on random inputs and
returns a :class:`CheckResult`: a pass, or a hint that says *what kind* of mistake the answer makes (a wrong
factor, a wrong sign, a missing term, not a scalar, the wrong shape) without giving the solution away.

    >>> from igr_tutorial.checks import check_modified_loss
    >>> check_modified_loss(my_modified_loss)          # doctest: +SKIP
    ✅ check_modified_loss: passed on 12 random cases.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .curvature import hvp as _hvp
from .modified import modified_loss as _modified_loss
from .modified import r_ig as _r_ig
from .tree import num_parameters, tree_sq_norm

__all__ = [
    "CheckResult",
    "check_convergence_order",
    "check_flow_landing",
    "check_gd_step",
    "check_hvp",
    "check_implicit_strength",
    "check_modified_loss",
    "check_r_ig",
]


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Outcome of a self-check: ``passed`` and a message (the hint when it failed)."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"

    __repr__ = __str__


# --------------------------------------------------------------------------------------------------
# Random test problems. Comparisons allow for float32 rounding when float64 (jax_enable_x64) is off.
# --------------------------------------------------------------------------------------------------


def _problems(seed: int):
    """Losses with their parameters: a quadratic, a non-quadratic loss, and one on a pytree."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(3, 3))
    A = jnp.asarray(M @ M.T + np.eye(3))
    b = jnp.asarray(rng.normal(size=3))
    quad = lambda t: 0.5 * t @ A @ t - b @ t  # noqa: E731
    wave = lambda t: jnp.sum(jnp.sin(t) ** 2) + 0.25 * jnp.sum(t**4) + t[0] * t[1]  # noqa: E731
    X = jnp.asarray(rng.normal(size=(6, 2)))
    y = jnp.asarray(rng.normal(size=6))
    tree_loss = lambda p: jnp.mean((jnp.tanh(X @ p["w"]) * p["s"] - y) ** 2)  # noqa: E731
    out = []
    for _ in range(2):
        out.append((quad, jnp.asarray(rng.normal(size=3))))
        out.append((wave, jnp.asarray(rng.normal(size=2))))
        out.append((tree_loss, {"w": jnp.asarray(rng.normal(size=2)), "s": jnp.asarray(rng.normal())}))
    return out


def _rtol() -> float:
    return 1e-7 if jax.config.jax_enable_x64 else 1e-4


def _as_float(value: Any) -> float | None:
    """A Python float if ``value`` is a real scalar, else ``None``."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return float(arr) if arr.shape == () else None


def _flat(tree: Any) -> np.ndarray:
    """Every entry of a pytree of arrays, in one flat NumPy array (leaf order)."""
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _ratio_hint(ratio: float, hints: dict[float, str]) -> str | None:
    for r, hint in hints.items():
        if np.isclose(ratio, r, rtol=_rtol(), atol=1e-9):
            return hint
    return None


def _run(name: str, fn: Callable[[], CheckResult | None], cases: int) -> CheckResult:
    try:
        result = fn()
    except Exception as exc:  # the student's code raised: say so, with the error's own words
        return CheckResult(name, False, f"your function raised {type(exc).__name__}: {exc}")
    return result if result is not None else CheckResult(name, True, f"passed on {cases} random cases.")


# --------------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------------


def check_modified_loss(student_modified_loss: Callable, seed: int = 0) -> CheckResult:
    """Check ``student_modified_loss(loss, lr)``, which must return ``θ ↦ E(θ) + (lr/4)‖∇E(θ)‖²``."""
    name = "check_modified_loss"
    lrs = (0.1, 0.03)

    def run():
        for loss, theta in _problems(seed):
            for lr in lrs:
                got = _as_float(student_modified_loss(loss, lr)(theta))
                if got is None:
                    return CheckResult(name, False, "the function you return must give a single number (a scalar) "
                                       "for one parameter vector; sum the squared gradient entries.")
                E = float(loss(theta))
                g2 = float(tree_sq_norm(jax.grad(loss)(theta)))
                want = float(_modified_loss(loss, lr)(theta))
                if np.isclose(got, want, rtol=_rtol(), atol=1e-10):
                    continue
                if np.isclose(got, E, rtol=_rtol(), atol=1e-12):
                    return CheckResult(name, False, "your value equals E(θ): the regularizing term is missing.")
                if np.isclose(got, want - E, rtol=_rtol(), atol=1e-10):
                    return CheckResult(name, False, "your value is only the regularizer: the loss E(θ) itself is missing.")
                g1 = float(np.sqrt(g2))
                if np.isclose(got, E + lr / 4 * g1, rtol=_rtol(), atol=1e-10):
                    return CheckResult(name, False, "you used the gradient's norm; the term uses its *squared* norm.")
                if g2 > 1e-12:
                    hint = _ratio_hint((got - E) / (lr / 4 * g2), {
                        2.0: "the regularizer is twice too large: check the factor in front of ‖∇E‖².",
                        4.0: "the regularizer is four times too large: check the factor in front of ‖∇E‖².",
                        0.5: "the regularizer is half as large as it should be: check its factor.",
                        -1.0: "the regularizer has the wrong sign: gradient descent *adds* it to the loss.",
                        1.0 / lr: "the learning rate is missing from the regularizer.",
                    })
                    if hint:
                        return CheckResult(name, False, hint)
                return CheckResult(name, False, f"for lr={lr} your value differs from the expected one by "
                                   f"{abs(got - want):.3e}; re-read the formula for Ẽ term by term.")
        return None

    return _run(name, run, 2 * len(_problems(seed)))


def check_r_ig(student_r_ig: Callable, seed: int = 0) -> CheckResult:
    """Check ``student_r_ig(loss, params)``, which must return ``(1/m)·Σᵢ (∂E/∂θᵢ)²`` over all ``m`` entries."""
    name = "check_r_ig"

    def run():
        for loss, theta in _problems(seed):
            got = _as_float(student_r_ig(loss, theta))
            if got is None:
                return CheckResult(name, False, "R_IG must be a single number (a scalar), averaged over all parameters.")
            want = float(_r_ig(loss, theta))
            if np.isclose(got, want, rtol=_rtol(), atol=1e-12):
                continue
            m = num_parameters(theta)
            grads = jax.tree.leaves(jax.grad(loss)(theta))
            abs_mean = float(sum(jnp.sum(jnp.abs(g)) for g in grads)) / m
            if np.isclose(got, abs_mean, rtol=_rtol()):
                return CheckResult(name, False, "square each partial derivative before averaging.")
            if want > 0 and np.isclose(got, np.sqrt(want * m) / m, rtol=_rtol()):
                return CheckResult(name, False, "you used the gradient's norm; R_IG averages the *squared* entries.")
            hint = _ratio_hint(got / want if want else np.inf, {
                float(m): "you summed over the parameters; R_IG is their mean (divide by m).",
            })
            if hint:
                return CheckResult(name, False, hint)
            if isinstance(theta, dict):
                return CheckResult(name, False, "your value is wrong when the parameters are a dict of arrays: count "
                                   "every scalar entry of every leaf (m is the total), and sum over all leaves.")
            return CheckResult(name, False, f"your value differs from the expected one by {abs(got - want):.3e}.")
        return None

    return _run(name, run, len(_problems(seed)))


def check_gd_step(student_gd_step: Callable, seed: int = 0) -> CheckResult:
    """Check ``student_gd_step(loss, params, lr)``, which must return ``θ − lr·∇E(θ)`` (same structure)."""
    name = "check_gd_step"

    def run():
        for loss, theta in _problems(seed):
            lr = 0.07
            got = student_gd_step(loss, theta, lr)
            if jax.tree.structure(got) != jax.tree.structure(theta):
                return CheckResult(name, False, "return the parameters in the same structure you received them "
                                   "(an array for an array, a dict with the same keys for a dict).")
            g = jax.grad(loss)(theta)
            got_f, th, gf = _flat(got), _flat(theta), _flat(g)
            if got_f.shape != th.shape:
                return CheckResult(name, False, "the new parameters must have the same shape as the old ones.")
            if np.allclose(got_f, th - lr * gf, rtol=_rtol(), atol=1e-12):
                continue
            if np.allclose(got_f, th, rtol=_rtol(), atol=1e-12):
                return CheckResult(name, False, "your step returns the parameters unchanged.")
            if np.allclose(got_f, th + lr * gf, rtol=_rtol(), atol=1e-12):
                return CheckResult(name, False, "you moved up the gradient: descent subtracts it.")
            if np.allclose(got_f, th - gf, rtol=_rtol(), atol=1e-12):
                return CheckResult(name, False, "the step ignores the learning rate.")
            if np.allclose(got_f, -lr * gf, rtol=_rtol(), atol=1e-12):
                return CheckResult(name, False, "you returned the update, not the new parameters.")
            return CheckResult(name, False, "the new parameters are not θ moved against the gradient by the step size.")
        return None

    return _run(name, run, len(_problems(seed)))


def check_hvp(student_hvp: Callable, seed: int = 0) -> CheckResult:
    """Check ``student_hvp(loss, params, v)``, which must return the Hessian-vector product ``∇²E(θ)·v``."""
    name = "check_hvp"

    def run():
        rng = np.random.default_rng(seed + 1)
        for loss, theta in _problems(seed):
            v = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=np.shape(x))), theta)
            got = student_hvp(loss, theta, v)
            if jax.tree.structure(got) != jax.tree.structure(theta):
                return CheckResult(name, False, "H·v has the structure of the parameters (and of v).")
            want = _hvp(loss, theta, v)
            got_f, want_f = _flat(got), _flat(want)
            if got_f.shape != want_f.shape:
                return CheckResult(name, False, "H·v must have the shape of the parameters.")
            if np.allclose(got_f, want_f, rtol=_rtol(), atol=1e-10):
                continue
            if np.allclose(got_f, _flat(jax.grad(loss)(theta)), rtol=_rtol(), atol=1e-10):
                return CheckResult(name, False, "you returned the gradient ∇E(θ); H·v is the derivative of the "
                                   "gradient in the direction v.")
            if np.allclose(got_f, -want_f, rtol=_rtol(), atol=1e-10):
                return CheckResult(name, False, "the sign is flipped.")
            return CheckResult(name, False, "your H·v differs from the reference; check it against a finite "
                               "difference (∇E(θ + εv) − ∇E(θ − εv)) / (2ε).")
        return None

    return _run(name, run, len(_problems(seed)))


def check_implicit_strength(student_strength: Callable, seed: int = 0) -> CheckResult:
    """Check ``student_strength(lr, m)``, which must return ``λ`` with ``Ẽ = E + λ·R_IG``."""
    name = "check_implicit_strength"

    def run():
        rng = np.random.default_rng(seed)
        for _ in range(6):
            lr, m = float(rng.uniform(0.001, 0.5)), int(rng.integers(1, 10_000))
            got = _as_float(student_strength(lr, m))
            if got is None:
                return CheckResult(name, False, "λ is a single number.")
            want = lr * m / 4
            if np.isclose(got, want, rtol=_rtol()):
                continue
            hint = _ratio_hint(got / want, {
                4.0: "your λ is four times too large: check the factor 1/4.",
                2.0: "your λ is twice too large: check the factor.",
                1.0 / m: "λ grows with the number of parameters m: R_IG is a mean, ‖∇E‖² a sum.",
            })
            return CheckResult(name, False, hint or "compare Ẽ = E + (h/4)‖∇E‖² with E + λ·R_IG, R_IG = ‖∇E‖²/m.")
        return None

    return _run(name, run, 6)


def check_convergence_order(student_order: Callable, seed: int = 0) -> CheckResult:
    """Check ``student_order(hs, errors)``, which must return the order ``p`` of ``errors ≈ C·hᵖ``: the slope of the
    least-squares line through ``(log h, log error)`` (chapters 1 and 2: the measured order of a method)."""
    name = "check_convergence_order"

    def run():
        rng = np.random.default_rng(seed)
        for _ in range(6):
            p, c = float(rng.choice([1.0, 2.0, 3.0, 4.0])), float(rng.uniform(0.1, 10.0))
            hs = np.sort(rng.uniform(0.005, 0.2, size=int(rng.integers(4, 8))))[::-1]
            errors = c * hs**p * np.exp(rng.normal(scale=0.02, size=hs.size))  # a little noise
            want = float(np.polyfit(np.log(hs), np.log(errors), 1)[0])
            got = _as_float(student_order(hs.copy(), errors.copy()))
            if got is None:
                return CheckResult(name, False, "the order is a single number: the slope of log(error) against log(h).")
            if np.isclose(got, want, rtol=1e-6, atol=1e-9):
                continue
            if np.isclose(got, -want, rtol=1e-6, atol=1e-9):
                return CheckResult(name, False, "the sign is flipped: the error falls as h falls, so the order is "
                                   "positive; did you fit against 1/h or the number of steps?")
            if np.isclose(got, float(np.polyfit(hs, errors, 1)[0]), rtol=1e-6):
                return CheckResult(name, False, "you fitted the error against h on linear axes; the order is the "
                                   "slope on log-log axes.")
            ends = np.log(errors[-1] / errors[0]) / np.log(hs[-1] / hs[0])
            if np.isclose(got, ends, rtol=1e-6):
                return CheckResult(name, False, "you used only the first and the last point; fit a line through all "
                                   "of them (least squares), so that one noisy point weighs less.")
            if np.isclose(got, float(np.polyfit(np.log(errors), np.log(hs), 1)[0]), rtol=1e-6):
                return CheckResult(name, False, "you fitted log h against log error: the order is the slope of "
                                   "log(error) against log(h).")
            return CheckResult(name, False, f"for errors ≈ C·h^{p:g} your order is {got:.3g}; fit a line through "
                               "(log h, log error) and return its slope.")
        return None

    return _run(name, run, 6)


def _landing_by_flow(a0: float, b0: float, x: float, y: float) -> np.ndarray:
    """Where the gradient flow of E = ½(y − x·ab)² from (a0, b0) ends, by integrating it (chapter 4's model)."""
    from scipy.integrate import solve_ivp

    def field(_, t):
        r = y - x * t[0] * t[1]
        return [x * r * t[1], x * r * t[0]]

    sol = solve_ivp(field, (0.0, 200.0), [a0, b0], rtol=1e-10, atol=1e-12, method="DOP853")
    return sol.y[:, -1]


def check_flow_landing(student_landing: Callable, seed: int = 0) -> CheckResult:
    """Check ``student_landing(a0, b0, x, y)``, which must return the point ``(a, b)`` where the gradient flow of
    ``E = ½(y − x·ab)²`` from ``(a0, b0)`` lands: on the curve ``x·ab = y``, with ``a² − b²`` conserved along the flow
    (chapter 4's conservation law). The reference integrates the flow numerically."""
    name = "check_flow_landing"

    def run():
        rng = np.random.default_rng(seed)
        for _ in range(5):
            a0, b0 = float(rng.uniform(0.5, 3.5)), float(rng.uniform(0.2, 3.5))
            x, y = float(rng.choice([0.5, 1.0, 2.0])), float(rng.choice([1.0, 2.0]))
            got = np.asarray(student_landing(a0, b0, x, y), dtype=float)
            if got.shape != (2,) or not np.all(np.isfinite(got)):
                return CheckResult(name, False, "return the landing point as two finite numbers (a, b).")
            want = _landing_by_flow(a0, b0, x, y)
            if np.allclose(got, want, rtol=1e-5, atol=1e-7):
                continue
            if not np.isclose(x * got[0] * got[1], y, rtol=1e-5):
                return CheckResult(name, False, f"your point has x·ab = {x * got[0] * got[1]:.4g}, not y = {y:g}: the "
                                   "flow ends at a minimum, on the curve x·ab = y.")
            if not np.isclose(got[0] ** 2 - got[1] ** 2, a0**2 - b0**2, rtol=1e-5, atol=1e-7):
                return CheckResult(name, False, "your point does not keep a² − b² of the start: that quantity is "
                                   "conserved along the gradient flow of this loss.")
            return CheckResult(name, False, "your point is a minimum with the start's a² − b², but not the one the "
                               "flow reaches: pick the root with the sign of the start.")
        return None

    return _run(name, run, 5)
