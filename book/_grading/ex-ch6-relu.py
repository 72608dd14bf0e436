"""Grading of ex-ch6-relu (chapter 6, "ReLU instead of tanh").

Checked against the closed-form stability bound: gradient descent with step h cannot settle where the top
Hessian eigenvalue exceeds 2/h, so at the middle step the measured sharpness × h/2 sits at about 1 (edge of
stability) for both activations, and the R_IG comparison is a (mean, standard error, significant) triple.
"""

ANSWER = """Store `relu_check`, a dict mapping `"tanh"` and `"relu"` to the pair `(d_rig, edge)`: `d_rig` the
`mean_difference` of R_IG between the largest and the smallest h, and `edge` the mean top eigenvalue at the
middle step times h/2 (1 means the sharpness sits exactly at 2/h)."""

PROMPT = """relu_check = {"tanh": (..., ...), "relu": (..., ...)}
"""

# A typical wrong answer: the sharpness times h instead of h/2 (comparing λ_max with 1/h).
MISTAKE = ("mean_se(top[:, 1])[0] * lrs_ex[1] / 2", "mean_se(top[:, 1])[0] * lrs_ex[1]")


def public_structure_and_edge(relu_check):
    import numpy as np

    assert isinstance(relu_check, dict) and set(relu_check) == {"tanh", "relu"}, (
        'relu_check must be a dict with the keys "tanh" and "relu".')
    for act, (d_rig, edge) in relu_check.items():
        assert len(d_rig) == 3, f"{act}: d_rig is the (mean, standard error, significant) triple of mean_difference."
        edge = float(edge)
        assert np.isfinite(edge) and edge > 0, f"{act}: edge must be a positive number."
        assert edge < 1.4, (
            f"{act}: edge = {edge:.3f}. GD with step h cannot stay where λ_max > 2/h, so λ_max·h/2 should not "
            "exceed about 1: did you multiply by h instead of h/2?")


def hidden_edge_of_stability(relu_check):
    for act, (_, edge) in relu_check.items():
        assert 0.7 < float(edge) < 1.4, (
            f"{act}: λ_max·h/2 = {float(edge):.3f} at the middle step; the sharpness should sit near 2/h (0.7 to 1.4).")
