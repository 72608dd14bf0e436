"""Grading of ex-ch8-fixed-partition (chapter 8, "A fixed partition versus reshuffling").

Checked against the theorem's closed-form orders: averaged over the orders of a fixed partition, one epoch of SGD
matches the flow of that partition's modified loss with a local error O(h³), and differs from the reshuffled
flow at O(h²), because the two regularizers differ by a term of order h.
"""

ANSWER = """Store `order_fixed` and `order_reshuffled`, the measured orders of the error of the averaged epoch
against this partition's modified flow and against the reshuffled one (step sizes 0.01, 0.005, 0.0025)."""

PROMPT = """order_fixed = ...
order_reshuffled = ...
"""

SOLUTION = """order_fixed = igr.convergence_order(hs_fix, err_fixed)
order_reshuffled = igr.convergence_order(hs_fix, err_resh)"""

# A typical wrong answer: the reshuffled flow used for both comparisons.
MISTAKE = ("reshuffled=False))[-1]", "reshuffled=True))[-1]")


def public_orders(order_fixed, order_reshuffled):
    import numpy as np

    for name, value in (("order_fixed", order_fixed), ("order_reshuffled", order_reshuffled)):
        assert value is not None and value is not Ellipsis and np.isfinite(float(value)), f"set {name} to a number."
    assert float(order_fixed) > float(order_reshuffled) + 0.5, (
        f"order_fixed = {float(order_fixed):.2f} is not above order_reshuffled = {float(order_reshuffled):.2f}: compare "
        "the averaged epoch with st.sgd_modified_flow(..., reshuffled=False) for this partition's flow.")


def hidden_orders_match_theory(order_fixed, order_reshuffled):
    assert abs(float(order_fixed) - 3) < 0.4, f"order_fixed = {float(order_fixed):.2f}; the theorem's local error is O(h³)."
    assert abs(float(order_reshuffled) - 2) < 0.4, (
        f"order_reshuffled = {float(order_reshuffled):.2f}; against the wrong modified loss the error is O(h²).")
