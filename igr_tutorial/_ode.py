"""The adaptive ODE solve behind every flow of the package (gradient flow, modified flows, SGD's and momentum's):
SciPy's Dormand–Prince pairs with the Runge–Kutta stages of each step compiled once per field (:func:`solve_ode`).
Not traceable: SciPy steps on the host."""

from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._pytree import Layout, Static, split_arrays
from ._scan import leaf_dtype
from ._types import PyTree
from ._validate import check_int, check_times, require_concrete
from .errors import FlowError

def _default_tolerances(params: PyTree) -> tuple[float, float]:
    if leaf_dtype(params) == jnp.float64:
        return 1e-10, 1e-12
    return 1e-6, 1e-8


GRADIENT_FLOW_HINT = ("the flow may blow up (a loss unbounded below), or be very stiff; shorten the time span, raise "
                      "max_steps, or loosen rtol/atol")
"""What :func:`solve_ode` tells a reader whose gradient flow (of any modified loss) did not reach the end."""


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _rk_stages(field, static: Static, layout: Layout, t, y, h, K, table, c, b, lo, hi, arrays):
    """Rows ``lo+1 … hi`` of the Runge–Kutta stages ``K`` of one step, on the device, in one call:
    ``K[r+1] = f(t + c[r]·h, y + h·Σⱼ table[r, j]·K[j])`` for ``r = lo … hi−1``, with ``f = field(·, ·, args)``
    evaluated in the parameters' dtypes on the flat vector of ``θ`` (``layout``). Returns ``(K, y + h·Kᵀb)``.

    One compiled program per field, static part of ``args`` and layout: ``t``, ``y``, ``h``, the tableau and the
    array leaves of ``args`` are arguments, so a new learning rate, strength, data set or starting point of the
    same shapes reuses it. A whole step (all stages and the derivative at its end) costs one call instead of
    one per stage; ``h = 0``, ``lo = 0``, ``hi = 1`` evaluates ``f(t, y)`` alone. The stages are combined in
    float64 when JAX's float64 is on (else float32).
    """
    args = static.combine(arrays)

    def f(tt, x):
        return layout.ravel(field(tt.astype(layout.dtype), layout.unravel(x.astype(layout.dtype)), args)).astype(y.dtype)

    def stage(r, K):
        return K.at[r + 1].set(f(t + c[r] * h, y + h * (K.T @ table[r])))

    K = lax.fori_loop(lo, hi, stage, K)
    return K, y + h * (K.T @ b)


# SciPy's step-size control constants for its Runge–Kutta pairs (scipy/integrate/_ivp/rk.py).
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


class _CompiledStagesMixin:
    """SciPy's Runge–Kutta solver (``DOP853`` or ``RK45``) whose stages come from one compiled call per step.

    ``_step_impl`` is SciPy's own (``RungeKutta._step_impl``: same tableau, error estimate and step-size control,
    so the same steps up to rounding), with ``rk_step``'s loop over stages replaced by :func:`_rk_stages`: one
    device call per step instead of one per stage, which is what makes long flows (thousands of steps) cheap.
    Also stops after ``max_steps`` accepted steps. ``fun(t, y)`` (SciPy's first derivative, its initial step
    guess and DOP853's dense output) evaluates the same compiled program for one stage.
    """

    def __init__(self, fun, t0, y0, t_bound, *, compiled, max_steps, state, **options):
        self._compiled, self._max_steps, self._steps, self._state = compiled, max_steps, 0, state
        super().__init__(fun, t0, y0, t_bound, **options)
        self._table, self._c, self._b = _tableau(type(self))
        self._K = np.zeros((self._table.shape[1], self.n))

    def _stages(self, t, y, h):
        self._K[0] = self.f
        K, y_new = self._compiled(t, y, h, self._K, self._table, self._c, self._b, 0, self.n_stages)
        K = np.asarray(K, dtype=np.float64)
        self.K[:] = K[: self.n_stages + 1]
        return np.asarray(y_new, dtype=np.float64), K[self.n_stages]

    def _dense_output_impl(self):
        try:  # DOP853's interpolant (a private class of SciPy's): without it, SciPy's own dense output (3 calls)
            from scipy.integrate._ivp.rk import Dop853DenseOutput
        except ImportError:  # pragma: no cover - another SciPy layout
            Dop853DenseOutput = None
        if not hasattr(self, "K_extended") or Dop853DenseOutput is None:
            return super()._dense_output_impl()
        # DOP853's own dense output (SciPy's DOP853._dense_output_impl), its three extra stages in one call.
        h = self.h_previous
        known = self.K_extended.copy()
        # The rows still to be computed hold whatever SciPy's np.empty left there; every stage reads all rows
        # (times zero weights for the unknown ones), and 0·NaN is NaN, so they must be zeros.
        known[self.n_stages + 1:] = 0.0
        K, _ = self._compiled(self.t_old, self.y_old, h, known, self._table, self._c, self._b,
                              self.n_stages, self._table.shape[0])
        K = np.asarray(K, dtype=np.float64)
        self.K_extended[self.n_stages + 1:] = K[self.n_stages + 1:]
        F = np.empty((3 + self.D.shape[0], self.n), dtype=self.y_old.dtype)
        f_old = K[0]
        delta_y = self.y - self.y_old
        F[0] = delta_y
        F[1] = h * f_old - delta_y
        F[2] = 2 * delta_y - h * (self.f + f_old)
        F[3:] = h * np.dot(self.D, self.K_extended)
        return Dop853DenseOutput(self.t_old, self.t, self.y_old, F)

    def _step_impl(self):
        if self._steps >= self._max_steps:
            return False, f"it needed more than max_steps = {self._max_steps} steps"
        t, y = self.t, self.y
        min_step = 10 * np.abs(np.nextafter(t, self.direction * np.inf) - t)
        h_abs = min(max(self.h_abs, min_step), self.max_step)
        step_accepted = step_rejected = False
        while not step_accepted:
            if h_abs < min_step:
                return False, self.TOO_SMALL_STEP
            h = h_abs * self.direction
            t_new = t + h
            if self.direction * (t_new - self.t_bound) > 0:
                t_new = self.t_bound
            h = t_new - t
            h_abs = np.abs(h)
            y_new, f_new = self._stages(t, y, h)
            scale = self.atol + np.maximum(np.abs(y), np.abs(y_new)) * self.rtol
            error_norm = self._estimate_error_norm(self.K, h, scale)
            if error_norm < 1:
                factor = _MAX_FACTOR if error_norm == 0 else min(_MAX_FACTOR, _SAFETY * error_norm ** self.error_exponent)
                if step_rejected:
                    factor = min(1, factor)
                h_abs *= factor
                step_accepted = True
            else:
                h_abs *= max(_MIN_FACTOR, _SAFETY * error_norm ** self.error_exponent)
                step_rejected = True
        if not np.all(np.isfinite(y_new)):
            return False, "the flow became non-finite"
        self._steps += 1
        self._state.update(t=t_new, steps=self._steps)
        self.h_previous, self.y_old = h, y
        self.t, self.y, self.h_abs, self.f = t_new, y_new, h_abs, f_new
        return True, None


@functools.lru_cache(maxsize=None)
def _tableau(method) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(table, c, b)`` of a SciPy Runge–Kutta class for :func:`_rk_stages`: row ``r`` of ``table`` and ``c[r]``
    give stage ``r + 1``. Rows ``0 … s−1`` are a step's stages, the last of them (``b``) the derivative at its end;
    DOP853's three further rows are the extra stages of its dense output. Width: the rows of ``K`` (DOP853's 16
    extended stages, RK45's 7). Built once per class: solve_ode and its solver both ask for it (read only)."""
    s = method.n_stages
    A = np.asarray(method.A)
    extra = np.asarray(getattr(method, "A_EXTRA", np.zeros((0, s + 1))))
    width = max(s + 1, extra.shape[1])
    table = np.zeros((s + extra.shape[0], width))
    table[: s - 1, : A.shape[1]] = A[1:s]
    table[s - 1, :s] = method.B
    table[s:, : extra.shape[1]] = extra
    b = np.zeros(width)
    b[:s] = method.B
    c = np.concatenate([np.asarray(method.C)[1:s], [1.0], np.asarray(getattr(method, "C_EXTRA", []))])
    for shared in (table, c, b):  # cached: every solve gets these very arrays
        shared.flags.writeable = False
    return table, c, b


NEWEST_TESTED_SCIPY = (1, 17)
"""The newest SciPy minor version whose Runge–Kutta internals the compiled solver was checked against (the pinned
version; the wheel's floor is checked by the lowest-versions test). A newer SciPy gets stock ``solve_ivp``."""

_SCIPY_INTERNALS = ("n_stages", "A", "B", "C", "E", "_estimate_error_norm", "_step_impl", "_dense_output_impl")


@functools.lru_cache(maxsize=None)
def _compiled_solver(float64: bool) -> type | None:
    """SciPy's DOP853 (Dormand–Prince 8(5,3)) for float64, or RK45 (Dormand–Prince 5(4)) for float32, with its
    stages computed by :func:`_rk_stages` (:class:`_CompiledStagesMixin`); ``None`` where SciPy's internals may
    differ from the ones this fork copies (a SciPy newer than :data:`NEWEST_TESTED_SCIPY`, a missing attribute, other
    step-size constants): :func:`solve_ode` then runs stock ``solve_ivp``, one compiled call per stage. Defined on
    first use, once: importing ``scipy.integrate`` takes a noticeable moment, which a program that never runs a flow
    does not pay."""
    import scipy
    import scipy.integrate
    from scipy.integrate._ivp import rk

    base = scipy.integrate.DOP853 if float64 else scipy.integrate.RK45
    version = tuple(int(part) for part in re.findall(r"\d+", scipy.__version__)[:2])
    same_control = (getattr(rk, "SAFETY", None), getattr(rk, "MIN_FACTOR", None),
                    getattr(rk, "MAX_FACTOR", None)) == (_SAFETY, _MIN_FACTOR, _MAX_FACTOR)
    if version > NEWEST_TESTED_SCIPY or not same_control or not all(hasattr(base, a) for a in _SCIPY_INTERNALS):
        return None
    return type(f"_Compiled{base.__name__}", (_CompiledStagesMixin, base),
                {"__module__": __name__, "__doc__": f"SciPy's {base.__name__} with its stages from one compiled call."})


class _TooManySteps(Exception):
    """Stock ``solve_ivp`` has no step cap: raised from its right-hand side once the cap's evaluations are spent."""


def _check_finite_start(params: PyTree) -> None:
    if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(params)):
        raise ValueError(
            "params must be finite to start a flow, but they hold NaN or inf. Start from finite parameters "
            "(for a diverged gradient descent run, the last finite iterate; see first_nonfinite_step)."
        )


def solve_ode(field, params: PyTree, times: Any, args: Any, *, rtol=None, atol=None, max_steps: int = 100_000,
              hint: str = "shorten the time span, raise max_steps, or loosen rtol/atol") -> PyTree:
    """Integrate ``θ' = field(t, θ, args)`` from ``θ(times[0]) = params`` and sample it at ``times``.

    The one adaptive solver behind every flow of the package: SciPy's ``solve_ivp`` (Hairer, Nørsett & Wanner,
    *Solving Ordinary Differential Equations I*, Sec. II.5 and II.10) with ``DOP853``, Dormand–Prince 8(5,3),
    for float64 parameters and ``RK45``, Dormand–Prince 5(4), for float32, at tolerances 1e-10/1e-12 in float64
    (1e-6/1e-8 in float32) unless given. SciPy keeps the state and controls the step size in float64 on the
    host; the Runge–Kutta stages of each step come from one call of one compiled function (:func:`_rk_stages`),
    which evaluates the field in the parameters' dtype; the samples come back in that dtype with a leading time
    axis. ``field`` must be a module-level function and ``args`` may hold arrays (passed to the compiled function
    as arguments), functions, ints and bools (static), so that repeated calls with new arrays of the same shapes
    compile nothing. Each step costs a round trip to Python (timed by the benchmarks, ``python -m benchmarks``).
    Not traceable: call it outside ``jit``/``vmap``.

    Raises ``ValueError`` for non-finite ``params`` and :class:`FlowError` (with ``hint``) if the solver stops
    early: a step size below float64's resolution (a blow-up or a very stiff flow), more than ``max_steps``
    accepted steps, or a non-finite state.
    """
    require_concrete("a flow (SciPy's adaptive ODE solver runs on the host)", params, times, args)
    times = check_times(times)
    max_steps = check_int(max_steps, "max_steps", minimum=1, what="the most steps the solver may take")
    _check_finite_start(params)
    layout = Layout(params)
    dtype = np.dtype(layout.dtype)
    t_eval = np.asarray(times.astype(dtype), dtype=np.float64)
    d_rtol, d_atol = _default_tolerances(params)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    if t_eval.shape[0] == 1:
        return jax.tree.map(lambda p: jnp.asarray(p)[None], params)
    static, arrays = split_arrays(args, "the field's args (solve_ode)")
    y0 = np.concatenate([np.ravel(np.asarray(leaf)).astype(np.float64) for leaf in jax.tree.leaves(params)])
    work = jax.dtypes.canonicalize_dtype(np.float64)  # float64 when JAX's float64 is on, else float32

    def compiled(t, y, h, K, table, c, b, lo, hi):
        return _rk_stages(field, static, layout, np.asarray(t, work), np.asarray(y, work), np.asarray(h, work),
                          np.asarray(K, work), np.asarray(table, work), np.asarray(c, work), np.asarray(b, work),
                          lo, hi, arrays)

    float64 = bool(dtype == np.float64)
    method = _compiled_solver(float64)
    # The fork steps with the whole tableau; stock solve_ivp (method None) only ever asks for f(t, y).
    table, c, b = _tableau(method) if method is not None else (np.zeros((1, 2)), np.zeros(1), np.zeros(2))
    zeros_k = np.zeros((table.shape[1], y0.size))
    state = {"t": float(t_eval[0]), "steps": 0, "calls": 0}
    stages = 12 if float64 else 6  # evaluations per stock step (DOP853, RK45), for the step cap

    def rhs(t, y):  # f(t, y) alone: the first stage with h = 0, through the same compiled program (same shapes)
        if method is None:
            state["calls"] += 1
            state["t"], state["steps"] = float(t), state["calls"] // stages
            if state["calls"] > stages * max_steps + 2:
                raise _TooManySteps
        K, _ = compiled(t, y, 0.0, zeros_k, table, c, b, 0, 1)
        return np.asarray(K[1], dtype=np.float64)

    t_end = float(times[-1])
    from scipy.integrate import solve_ivp

    options = dict(compiled=compiled, max_steps=max_steps, state=state) if method is not None else {}
    with np.errstate(all="ignore"):  # a blow-up overflows inside SciPy's error estimate before it stops
        try:
            sol = solve_ivp(rhs, (t_eval[0], t_eval[-1]), y0, method=method or ("DOP853" if float64 else "RK45"),
                            t_eval=t_eval, rtol=rtol, atol=atol, **options)
        except _TooManySteps:
            raise FlowError(f"the ODE solver stopped before t = {t_end:g}: it needed more than max_steps = {max_steps} "
                            f"steps (at t = {state['t']:.6g}). {hint[0].upper()}{hint[1:]}.") from None
    ys = sol.y.T
    reached = f" (at t = {state['t']:.6g}, after {state['steps']} steps)"
    if sol.status != 0:
        why = sol.message.rstrip(".")
        raise FlowError(f"the ODE solver stopped before t = {t_end:g}: {why[:1].lower()}{why[1:]}{reached}. "
                        f"{hint[0].upper()}{hint[1:]}.")
    if ys.shape[0] != t_eval.shape[0] or not np.all(np.isfinite(ys)):
        raise FlowError(f"the ODE solver stopped before t = {t_end:g}: the flow became non-finite{reached}. "
                        f"{hint[0].upper()}{hint[1:]}.")
    ys[0] = y0  # the start exactly, not a round trip through the interpolant
    return layout.unravel_rows(ys.astype(dtype))
