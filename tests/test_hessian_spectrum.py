"""hessian_top_eigenvalue (Lanczos on HVPs) and hessian_trace (Hutchinson) against a dense Hessian.

The dense reference is jax.hessian of the loss on the flattened parameter vector, then numpy's eigvalsh:
an independent route that forms the whole matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import igr_tutorial as igr


def dense_hessian(loss, params) -> np.ndarray:
    x, unravel = ravel_pytree(params)
    return np.asarray(jax.hessian(lambda y: loss(unravel(y)))(x))


def mlp_problem(seed=0, hidden=6):
    """A small tanh network on random data: a pytree of several arrays with an indefinite Hessian."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    params = {
        "W1": jax.random.normal(k[0], (3, hidden)),
        "b1": 0.1 * jax.random.normal(k[1], (hidden,)),
        "w2": jax.random.normal(k[2], (hidden,)),
        "b2": jnp.array(0.2),
    }
    X = jax.random.normal(k[3], (25, 3))
    y = jnp.sin(X[:, 0]) + 0.5 * X[:, 1]

    def loss(p):
        pred = jnp.tanh(X @ p["W1"] + p["b1"]) @ p["w2"] + p["b2"]
        return 0.5 * jnp.mean((pred - y) ** 2)

    return loss, params


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_eigenvalue_matches_dense_on_a_pytree(seed):
    loss, params = mlp_problem(seed)
    ev = np.linalg.eigvalsh(dense_hessian(loss, params))
    res = igr.hessian_top_eigenvalue(loss, params, tol=1e-8)
    assert res.converged
    assert abs(res.eigenvalue - ev[-1]) <= 1e-8 * abs(ev[-1])
    # The eigenvector is a unit pytree with the structure of params, and H v = λ v.
    assert jax.tree.structure(res.eigenvector) == jax.tree.structure(params)
    v, _ = ravel_pytree(res.eigenvector)
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-10)
    Hv = dense_hessian(loss, params) @ np.asarray(v)
    assert np.linalg.norm(Hv - ev[-1] * np.asarray(v)) < 1e-5 * abs(ev[-1])


def test_the_problem_really_is_indefinite():
    loss, params = mlp_problem(0)
    ev = np.linalg.eigvalsh(dense_hessian(loss, params))
    assert ev[0] < 0 < ev[-1]


def test_top_eigenvalue_is_the_algebraic_maximum_when_negative_ones_dominate():
    # Eigenvalues -10, -3, 0.5, 1, 2: power iteration would return -10; the sharpness is 2.
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    A = Q @ np.diag([-10.0, -3.0, 0.5, 1.0, 2.0]) @ Q.T
    from igr_tutorial.losses import quadratic

    res = igr.hessian_top_eigenvalue(quadratic(A), jnp.ones(5))
    np.testing.assert_allclose(res.eigenvalue, 2.0, rtol=1e-10)


def test_top_eigenvalue_of_a_non_quadratic_loss_matches_dense_at_a_non_minimum():
    from igr_tutorial.losses import double_well

    theta = jnp.array([0.3, -0.7])
    ev = np.linalg.eigvalsh(np.asarray(jax.hessian(double_well)(theta)))
    np.testing.assert_allclose(igr.hessian_top_eigenvalue(double_well, theta).eigenvalue, ev[-1], rtol=1e-10)


def test_non_convergence_is_reported():
    loss, params = mlp_problem(0, hidden=12)
    with pytest.raises(igr.NotConvergedError, match="did not converge.*max_iters"):
        igr.hessian_top_eigenvalue(loss, params, tol=1e-12, max_iters=2)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = igr.hessian_top_eigenvalue(loss, params, tol=1e-12, max_iters=2, on_failure="warn")
    assert not res.converged and res.iterations == 2
    res = igr.hessian_top_eigenvalue(loss, params, tol=1e-12, max_iters=2, on_failure="ignore")
    assert not res.converged


@pytest.mark.parametrize(
    "kwargs, match",
    [({"tol": 0.0}, "tol"), ({"max_iters": 0}, "max_iters"), ({"on_failure": "skip"}, "on_failure")],
)
def test_top_eigenvalue_rejects_bad_settings(kwargs, match):
    loss, params = mlp_problem(0)
    with pytest.raises(ValueError, match=match):
        igr.hessian_top_eigenvalue(loss, params, **kwargs)


def test_top_eigenvalue_works_in_float32():
    loss, params = mlp_problem(0)
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    ev = np.linalg.eigvalsh(dense_hessian(loss, params))
    res = igr.hessian_top_eigenvalue(loss, p32, tol=1e-4)
    np.testing.assert_allclose(res.eigenvalue, ev[-1], rtol=1e-3)


def test_hutchinson_trace_is_unbiased_and_matches_dense():
    loss, params = mlp_problem(1)
    H = dense_hessian(loss, params)
    exact = np.trace(H)
    # Standard error of the Rademacher estimator: sqrt(2 Σ_{i≠j} H_ij² / n).
    offdiag = np.sum(H**2) - np.sum(np.diag(H) ** 2)
    n = 4000
    stderr = np.sqrt(2 * offdiag / n)
    est = float(igr.hessian_trace(loss, params, jax.random.PRNGKey(3), num_samples=n))
    assert abs(est - exact) < 4 * stderr


def test_hutchinson_trace_is_exact_for_a_diagonal_hessian():
    # z_i² = 1 for Rademacher entries, so zᵀ D z = tr D for every sample.
    d = jnp.array([3.0, -1.0, 0.25, 7.0])
    loss = lambda t: 0.5 * jnp.sum(d * t**2)  # noqa: E731
    est = igr.hessian_trace(loss, jnp.ones(4), jax.random.PRNGKey(0), num_samples=3)
    np.testing.assert_allclose(est, float(jnp.sum(d)), rtol=1e-12)


def test_hessian_trace_compiles_once_per_loss_and_layout():
    """Chapter 6 estimates tr H for dozens of trained networks: one compiled program serves them all."""
    from igr_tutorial.curvature import _hutchinson

    loss, params = mlp_problem(1)
    before = _hutchinson._cache_size()
    for k in range(3):
        moved = jax.tree.map(lambda x: x * (1 + 0.1 * k), params)
        est = float(igr.hessian_trace(loss, moved, jax.random.PRNGKey(k), num_samples=8))
        assert np.isfinite(est)
    assert _hutchinson._cache_size() - before == 1


def test_hessian_trace_rejects_bad_sample_counts():
    with pytest.raises(ValueError, match="num_samples"):
        igr.hessian_trace(lambda t: jnp.sum(t**2), jnp.ones(2), jax.random.PRNGKey(0), num_samples=0)


def test_residual_is_right_on_a_network_with_tens_of_thousands_of_parameters():
    """Regression: at ~17k parameters the reported residual once lost a layer's block of Hv (an XLA fusion of
    the pads that static slices differentiate into). Check it against an independent pytree HVP."""
    k = jax.random.split(jax.random.PRNGKey(5), 4)
    sizes = [2, 128, 128, 1]
    params = [
        {"W": jax.random.normal(kk, (a, b)) / np.sqrt(a), "b": 0.1 * jnp.ones(b)}
        for kk, a, b in zip(k[:3], sizes[:-1], sizes[1:])
    ]
    X = jax.random.normal(k[3], (256, 2))
    y = jnp.sin(X[:, 0])

    def loss(p):
        h = X
        for layer in p[:-1]:
            h = jnp.tanh(h @ layer["W"] + layer["b"])
        return 0.5 * jnp.mean((h @ p[-1]["W"] + p[-1]["b"] - y[:, None]) ** 2)

    assert igr.num_parameters(params) > 17_000
    res = igr.hessian_top_eigenvalue(loss, params, tol=1e-6)
    hv = igr.hvp(loss, params, res.eigenvector)
    independent = np.sqrt(sum(float(jnp.sum((a - res.eigenvalue * b) ** 2))
                              for a, b in zip(jax.tree.leaves(hv), jax.tree.leaves(res.eigenvector))))
    np.testing.assert_allclose(res.residual, independent, rtol=1e-3, atol=1e-12)
    assert res.converged and independent <= 10 * 1e-6 * abs(res.eigenvalue)


# --- Devices whose eigensolver is only normwise accurate (GPUs), noisy stops, float32 -----------------------


def _normwise_eigh(original):
    """An eigensolver that is backward stable in norm only, as GPU solvers are: it returns the exact eigenpairs
    of ``T + E`` with a symmetric ``‖E‖ ≈ 4ε‖T‖``. LAPACK on a CPU splits a block-diagonal ``T`` and is
    accurate block by block, so it hides what such a solver does to a small block beside a huge one."""

    def eigh(T, *args, **kwargs):
        eps = jnp.finfo(T.dtype).eps
        noise = jax.random.normal(jax.random.PRNGKey(0), T.shape, T.dtype)
        noise = (noise + noise.T) / 2
        E = 4 * eps * jnp.max(jnp.abs(T)) * noise / jnp.max(jnp.abs(noise))
        return original(T + E, *args, **kwargs)

    return eigh


def test_top_eigenvalue_is_right_with_a_normwise_accurate_eigensolver(monkeypatch):
    """Regression (chapter 5 on a GPU stopped after 4 steps with ‖Hv − λv‖ = 4.2 for λ ≈ 15): the Ritz problem
    was padded with −finfo.max/8, so a normwise solver's error (≈ 1e291) swamped the 4×4 block that matters."""
    loss0, params = mlp_problem(2)
    loss = lambda p: loss0(p)  # noqa: E731  (a new function: traced afresh with the patched solver)
    ev = np.linalg.eigvalsh(dense_hessian(loss0, params))
    monkeypatch.setattr(jnp.linalg, "eigh", _normwise_eigh(jnp.linalg.eigh))
    res = igr.hessian_top_eigenvalue(loss, params, tol=1e-8, on_failure="ignore")
    assert res.converged, f"residual {res.residual:.3e} after {res.iterations} steps"
    assert abs(res.eigenvalue - ev[-1]) <= 1e-8 * abs(ev[-1])


def _lying_eigh(original):
    """Exact eigenpairs, except that every eigenvector's entry in the last coupled row is zeroed (and the vector
    renormalized): the Lanczos bound ``β_j·|s_j|`` is then 0 at every step, though the Ritz pair is not converged."""

    def eigh(T, *args, **kwargs):
        w, v = original(T, *args, **kwargs)
        off = jnp.concatenate([jnp.diagonal(T, 1), jnp.zeros(1, T.dtype)])
        v = jnp.where((off == 0)[:, None], 0.0, v)
        return w, v / jnp.linalg.norm(v, axis=0, keepdims=True)

    return eigh


def test_top_eigenvalue_does_not_stop_on_the_residual_bound_alone(monkeypatch):
    """The bound only proposes a stop; the true residual ‖Hy − θy‖ (one more HVP) decides."""
    loss0, params = mlp_problem(0)
    loss = lambda p: loss0(p)  # noqa: E731
    ev = np.linalg.eigvalsh(dense_hessian(loss0, params))
    monkeypatch.setattr(jnp.linalg, "eigh", _lying_eigh(jnp.linalg.eigh))
    res = igr.hessian_top_eigenvalue(loss, params, tol=1e-6, on_failure="ignore")
    assert res.converged and res.iterations > 1, f"residual {res.residual:.3e} after {res.iterations} steps"
    np.testing.assert_allclose(res.eigenvalue, ev[-1], rtol=1e-6)


def test_ritz_padding_has_the_spectrum_scale():
    """The unused rows of the fixed-size Ritz problem sit below T_j's spectrum and within a few ‖T_j‖ of it."""
    from igr_tutorial.curvature import _top_ritz_pair

    alphas = jnp.array([3.0, -1.0, 2.0, 0.0, 0.0, 0.0])
    betas = jnp.array([0.5, 0.25, 7.0, 0.0, 0.0, 0.0])  # betas[2] couples to an unused row: must be ignored
    theta, s = _top_ritz_pair(alphas, betas, 3)
    T3 = np.diag([3.0, -1.0, 2.0]) + np.diag([0.5, 0.25], 1) + np.diag([0.5, 0.25], -1)
    w, v = np.linalg.eigh(T3)
    np.testing.assert_allclose(theta, w[-1], rtol=1e-12)
    np.testing.assert_allclose(np.abs(np.asarray(s)[:3]), np.abs(v[:, -1]), rtol=1e-10)
    assert np.all(np.asarray(s)[3:] == 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_top_eigenvalue_in_float32_with_a_normwise_solver(seed, monkeypatch):
    loss0, params = mlp_problem(seed)
    loss = lambda p: loss0(p)  # noqa: E731
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    ev = np.linalg.eigvalsh(dense_hessian(loss0, params))
    monkeypatch.setattr(jnp.linalg, "eigh", _normwise_eigh(jnp.linalg.eigh))
    res = igr.hessian_top_eigenvalue(loss, p32, tol=1e-4)
    assert res.converged
    np.testing.assert_allclose(res.eigenvalue, ev[-1], rtol=1e-3)


def test_curvature_hvps_run_at_full_float32_matmul_precision():
    """On a GPU the default matmul precision is TF32 (10-bit mantissa); Lanczos and Hutchinson trace their HVPs
    with precision HIGHEST so their residuals and traces do not inherit a 1e-3 error floor."""
    from igr_tutorial.curvature import _FlatLoss, _hutchinson

    W = jnp.ones((4, 3), jnp.float32)
    loss = lambda p: jnp.sum(jnp.tanh(W @ p) ** 2)  # noqa: E731
    x = jnp.ones(3, jnp.float32)
    flat = _FlatLoss(loss, x)
    jaxpr = jax.make_jaxpr(_hutchinson.__wrapped__, static_argnums=0)(flat, flat.arrays, x, jnp.ones((2, 3), jnp.float32))

    def dots(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == "dot_general":
                yield eqn
            for p in eqn.params.values():
                for j in (p if isinstance(p, (list, tuple)) else [p]):
                    inner = getattr(j, "jaxpr", None)
                    if inner is not None and hasattr(inner, "eqns"):
                        yield from dots(inner)
                    elif hasattr(j, "eqns"):
                        yield from dots(j)

    found = list(dots(jaxpr.jaxpr))
    assert found, "no matmul traced"
    assert all("HIGHEST" in str(e.params["precision"]) for e in found), [e.params["precision"] for e in found]
