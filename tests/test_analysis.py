"""Error measures, the order fit, and the measured orders of GD against the gradient and modified flows.

Backward error analysis predicts, over a fixed horizon T with n = T/h steps:
``max‖θₙ − θ(nh)‖ = O(h)`` for the gradient flow, ``O(h²)`` for the order-1 modified flow and ``O(h³)`` for
the order-2 one. The orders are *measured* here on non-quadratic losses, so a wrong coefficient in the
modified field (e.g. 1/6 instead of 1/12) would drop the measured order.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import igr_tutorial as igr
from igr_tutorial.losses import double_well, two_parameter_model

# --------------------------------------------------------------------------------------------------
# convergence_order
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0, 4.5])
@pytest.mark.parametrize("C", [1e-4, 1.0, 37.0])
def test_convergence_order_recovers_power_law(p, C):
    h = np.array([0.1, 0.05, 0.025, 0.0125])
    assert igr.convergence_order(h, C * h**p) == pytest.approx(p, abs=1e-10)


def test_convergence_order_is_a_least_squares_fit():
    # Multiplicative noise: the slope equals numpy's least-squares fit in log-log, and stays near p.
    rng = np.random.default_rng(0)
    h = np.geomspace(1e-3, 1e-1, 12)
    e = 2.0 * h**2 * np.exp(0.05 * rng.standard_normal(h.size))
    slope = np.linalg.lstsq(np.stack([np.log(h), np.ones(h.size)], axis=1), np.log(e), rcond=None)[0][0]
    assert igr.convergence_order(h, e) == pytest.approx(slope, rel=1e-10)
    assert abs(igr.convergence_order(h, e) - 2.0) < 0.1


def test_convergence_order_accepts_lists_and_unsorted_points():
    assert igr.convergence_order([0.01, 0.1, 0.001], [3e-4, 3e-2, 3e-6]) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "h, e, phrase",
    [
        ([0.1], [0.01], "at least 2"),
        ([0.1, 0.05], [0.01], "same length"),
        ([[0.1, 0.05]], [[0.01, 0.005]], "1-D"),
        ([0.1, 0.0], [0.01, 0.001], "positive"),
        ([0.1, -0.05], [0.01, 0.001], "positive"),
        ([0.1, 0.05], [0.01, 0.0], "positive"),
        ([0.1, 0.05], [0.01, np.nan], "finite"),
        ([0.1, 0.05], [0.01, np.inf], "finite"),
    ],
)
def test_convergence_order_rejects_bad_input(h, e, phrase):
    with pytest.raises(ValueError, match=phrase):
        igr.convergence_order(h, e)


# --------------------------------------------------------------------------------------------------
# trajectory_error, global_error
# --------------------------------------------------------------------------------------------------


def test_trajectory_and_global_error_on_arrays():
    a = np.zeros((4, 2))
    b = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [-2.0, 0.0]])
    np.testing.assert_allclose(igr.trajectory_error(a, b), [5.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(igr.trajectory_error(b, a), [5.0, 0.0, 1.0, 2.0])
    assert igr.global_error(a, b) == pytest.approx(5.0)
    assert isinstance(igr.global_error(a, b), float)


def test_trajectory_error_sums_over_leaves_and_trailing_axes():
    # ‖aₙ − bₙ‖² is summed over every entry of every leaf at time n.
    a = {"w": np.zeros((3, 2, 2)), "s": np.zeros(3)}
    b = {"w": np.zeros((3, 2, 2)), "s": np.array([0.0, 2.0, 0.0])}
    b["w"][0] = [[1.0, 1.0], [1.0, 1.0]]  # ‖·‖² = 4
    b["w"][1, 1, 0] = 1.5  # with s: 2.25 + 4
    np.testing.assert_allclose(igr.trajectory_error(a, b), [2.0, 2.5, 0.0])
    assert igr.global_error(a, b) == pytest.approx(2.5)


def test_trajectory_error_accepts_jax_arrays_and_tuples():
    a = (jnp.arange(6.0).reshape(3, 2), jnp.ones(3))
    b = (jnp.arange(6.0).reshape(3, 2) + jnp.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]), jnp.ones(3))
    np.testing.assert_allclose(igr.trajectory_error(a, b), [0.0, 5.0, 1.0])


def test_trajectory_error_rejects_mismatches():
    with pytest.raises(ValueError, match="same pytree structure"):
        igr.trajectory_error({"a": np.zeros(3)}, {"b": np.zeros(3)})
    with pytest.raises(ValueError, match="shapes differ"):
        igr.trajectory_error(np.zeros((4, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="shapes differ"):
        igr.global_error(np.zeros((4, 2)), np.zeros((4, 3)))


# --------------------------------------------------------------------------------------------------
# Measured global-error orders of gradient descent
# --------------------------------------------------------------------------------------------------

T_HORIZON = 1.0
STEP_COUNTS = (10, 20, 40, 80)
N_FINE = 80  # every n divides 80: the flows are computed once on this grid and subsampled
TWO_PARAM = two_parameter_model(x=1.0, y=2.0)

ORDER_CASES = {
    "double_well": (double_well, jnp.array([0.3, 1.2])),
    "two_parameter_model": (TWO_PARAM, jnp.array([2.0, 0.3])),
}


@pytest.fixture(scope="module", params=sorted(ORDER_CASES))
def measured_errors(request):
    """Global errors of GD (h = T/n) against the gradient flow and the order-1/2 modified flows."""
    loss, theta0 = ORDER_CASES[request.param]
    grid = np.linspace(0.0, T_HORIZON, N_FINE + 1)
    flows = {0: np.asarray(igr.gradient_flow(loss, theta0, grid))}
    errors = {0: [], 1: [], 2: []}
    hs = []
    for n in STEP_COUNTS:
        h = T_HORIZON / n
        hs.append(h)
        gd = np.asarray(igr.gradient_descent(loss, theta0, h, n))
        assert gd.shape == (n + 1, 2)
        stride = N_FINE // n
        for order in (1, 2):
            flows[order] = np.asarray(igr.modified_flow(loss, theta0, h, grid, order=order))
        for order in (0, 1, 2):
            errors[order].append(igr.global_error(gd, flows[order][::stride]))
    return np.array(hs), {k: np.array(v) for k, v in errors.items()}


@pytest.mark.parametrize("order, expected", [(0, 1.0), (1, 2.0), (2, 3.0)])
def test_measured_order_of_gd_against_flows(measured_errors, order, expected):
    hs, errors = measured_errors
    e = errors[order]
    assert np.all(np.diff(e) < 0), f"errors do not decrease with h: {e}"
    assert igr.convergence_order(hs, e) == pytest.approx(expected, abs=0.15)
    # The same order between consecutive halvings (not only on average).
    local = np.log2(e[:-1] / e[1:])
    assert np.all(np.abs(local - expected) < 0.25), f"local orders {local}"


def test_modified_flows_track_gd_better_than_gradient_flow(measured_errors):
    _, errors = measured_errors
    assert np.all(errors[1] < errors[0])
    assert np.all(errors[2] < errors[1])
