"""The deep-network experiments of chapters 6 and 7, at a size chosen by one switch.

``size`` selects everything that scales: data set, widths, depth, learning-rate grid, steps and seeds.

* ``"small"`` (default on a CPU): MNIST-1D generated locally, narrow MLPs, a short learning-rate grid; each
  figure runs in well under a minute on a 2-core laptop CPU.
* ``"paper"`` (default when JAX sees a GPU): full MNIST (downloaded, checksummed), wider and deeper MLPs,
  a learning-rate grid spanning two decades as in Barrett & Dherin (2021, Sec. 5), longer training.
* ``"tiny"``: the paper's code path on tiny shapes, for tests.

The choice is made by :func:`select_size`: an explicit name, else the environment variable
``IGR_TUTORIAL_SIZE``, else by the JAX backend. Every function returns plain Python data (JSON-ready) so
that the command line (``python -m igr_tutorial``) can save the numbers behind each figure.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .curvature import hessian_top_eigenvalue
from .data import Dataset, load_mnist, load_mnist1d
from .nets import init_mlp
from .train import perturbed_accuracy, train_loss_fn, train_sweep
from .tree import num_parameters


@dataclasses.dataclass(frozen=True)
class ExperimentSize:
    """Everything that scales between a laptop run and a paper-sized run."""

    name: str
    dataset: str  # "mnist1d" | "mnist" | "fashion_mnist"
    num_train: int | None  # None: all
    num_test: int | None
    widths: tuple[int, ...]  # hidden width of each MLP compared
    depth: int  # number of hidden layers
    lrs: tuple[float, ...]  # learning-rate grid of the sweep (chapter 6)
    steps: int  # full-batch steps per run
    seeds: int  # initializations per configuration
    egr_lr: float  # the small learning rate at which EGR is added explicitly (chapter 7)
    mus: tuple[float, ...]  # EGR strengths μ (chapter 7)
    sigmas: tuple[float, ...]  # parameter-noise levels for robustness (Prediction 2.4)
    record_every: int
    noise_draws: int = 10
    activation: str = "tanh"


SIZES: dict[str, ExperimentSize] = {
    "small": ExperimentSize(
        name="small",
        dataset="mnist1d",
        num_train=1000,
        num_test=1000,
        widths=(16, 32),
        depth=2,
        lrs=tuple(float(x) for x in np.geomspace(0.02, 1.0, 6)),
        steps=1500,
        seeds=5,
        egr_lr=0.02,
        mus=(0.0, 0.005, 0.02, 0.05, 0.1, 0.2),
        sigmas=(0.0, 0.02, 0.05, 0.1, 0.2),
        record_every=75,
    ),
    "paper": ExperimentSize(
        name="paper",
        dataset="mnist",
        num_train=None,
        num_test=None,
        widths=(400, 800),
        depth=4,
        lrs=tuple(float(x) for x in np.geomspace(0.005, 0.5, 9)),
        steps=10000,
        seeds=3,
        egr_lr=0.005,
        mus=(0.0, 0.001, 0.005, 0.01, 0.05, 0.1),
        sigmas=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2),
        record_every=500,
    ),
    "tiny": ExperimentSize(
        name="tiny",
        dataset="mnist1d",
        num_train=200,
        num_test=100,
        widths=(8,),
        depth=1,
        lrs=(0.05, 0.2),
        steps=20,
        seeds=2,
        egr_lr=0.05,
        mus=(0.0, 0.05),
        sigmas=(0.0, 0.1),
        record_every=10,
        noise_draws=2,
    ),
}


def select_size(size: str | ExperimentSize | None = None) -> ExperimentSize:
    """The experiment size: ``size`` if given, else ``$IGR_TUTORIAL_SIZE``, else ``"paper"`` on a GPU and
    ``"small"`` otherwise."""
    if isinstance(size, ExperimentSize):
        return size
    name = size or os.environ.get("IGR_TUTORIAL_SIZE") or ("small" if jax.default_backend() == "cpu" else "paper")
    if name not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {name!r} (set IGR_TUTORIAL_SIZE or pass size=).")
    return SIZES[name]


def load_data(size: ExperimentSize) -> Dataset:
    """The data set of ``size`` (MNIST-1D generated locally, or MNIST downloaded and verified).

    Cached per (data set, sizes): the experiments of a chapter share one copy instead of regenerating it.
    """
    return _load_data_cached(size.dataset, size.num_train, size.num_test)


@functools.lru_cache(maxsize=4)
def _load_data_cached(dataset: str, num_train: int | None, num_test: int | None) -> Dataset:
    if dataset == "mnist1d":
        n_train, n_test = num_train or 4000, num_test or 1000
        data = load_mnist1d(num_samples=n_train + n_test, train_split=n_train / (n_train + n_test))
    else:
        data = load_mnist(dataset)
    return data.subset(num_train, num_test)


def layer_sizes(data: Dataset, width: int, depth: int) -> list[int]:
    return [data.x_train.shape[1]] + [width] * depth + [data.num_classes]


def _progress(message: str, stream=None) -> None:
    print(message, file=stream or sys.stderr, flush=True)


def _finite(x) -> list[float | None]:
    """Floats for JSON, with ``None`` where a run diverged."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=float).ravel()]


def learning_rate_sweep(
    size: str | ExperimentSize | None = None,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = _progress,
) -> dict[str, Any]:
    """Chapter 6: train full-batch GD at every learning rate of the grid, for every width and seed.

    Protocol: every run starts from the same initialization for a given (width, seed) and runs
    ``size.steps`` steps; the *final* iterate is measured. Measured per run: ``R_IG = ‖∇E‖²/m`` and
    ``λ = h·m/4`` (Prediction 2.1), the top Hessian eigenvalue of the training loss (2.2), train and test
    accuracy (2.3), and test accuracy under Gaussian parameter noise of each ``σ`` (2.4). Runs whose loss
    became non-finite are reported as diverged (``None``) and left out of the figures.
    """
    size = select_size(size)
    data = load_data(size)
    loss = train_loss_fn(data, size.activation)
    out: dict[str, Any] = {"size": dataclasses.asdict(size), "runs": []}
    total = len(size.widths) * size.seeds
    done = 0
    for width in size.widths:
        for s in range(size.seeds):
            t0 = time.perf_counter()
            key = jax.random.PRNGKey(1000 * seed + s)
            init = init_mlp(key, layer_sizes(data, width, size.depth))
            m = num_parameters(init)
            finals, hist = train_sweep(
                init, data, size.lrs, size.steps, record_every=size.record_every, activation=size.activation
            )
            for i, lr in enumerate(size.lrs):
                p = jax.tree.map(lambda x: x[i], finals)
                diverged = not np.all(np.isfinite(hist.train_loss[i]))
                run = {
                    "width": width,
                    "seed": s,
                    "lr": lr,
                    "m": m,
                    "lambda": lr * m / 4,
                    "diverged": diverged,
                    "step": hist.step.tolist(),
                    "train_loss_curve": _finite(hist.train_loss[i]),
                    "test_accuracy_curve": _finite(hist.test_accuracy[i]),
                    "r_ig_curve": _finite(hist.grad_norm_sq[i] / m),
                }
                if diverged:
                    run.update(r_ig=None, sharpness=None, train_accuracy=None, test_accuracy=None,
                               perturbed_accuracy=[None] * len(size.sigmas))
                else:
                    eig = hessian_top_eigenvalue(loss, p, tol=1e-3, max_iters=60, on_failure="ignore")
                    run.update(
                        r_ig=float(hist.grad_norm_sq[i, -1] / m),
                        sharpness=float(eig.eigenvalue),
                        sharpness_converged=bool(eig.converged),
                        train_accuracy=float(hist.train_accuracy[i, -1]),
                        test_accuracy=float(hist.test_accuracy[i, -1]),
                        perturbed_accuracy=_finite(
                            perturbed_accuracy(p, data, size.sigmas, jax.random.PRNGKey(7 + s),
                                               size.noise_draws, size.activation)
                        ),
                    )
                out["runs"].append(run)
            done += 1
            if progress:
                progress(f"[{done}/{total}] width {width}, seed {s}: {len(size.lrs)} learning rates "
                         f"in {time.perf_counter() - t0:.1f} s")
    return out


def egr_sweep(
    size: str | ExperimentSize | None = None,
    *,
    width: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = _progress,
) -> dict[str, Any]:
    """Chapter 7: explicit gradient regularization ``E + μ‖∇E‖²`` at the small learning rate ``size.egr_lr``.

    For every ``μ`` in ``size.mus``: test accuracy, ``R_IG`` and sharpness of the final iterate; the
    effective strength ``μ + h/4`` (explicit plus implicit) is reported with each run. Uses the first width.
    """
    size = select_size(size)
    data = load_data(size)
    loss = train_loss_fn(data, size.activation)
    width = width or size.widths[0]
    init = init_mlp(jax.random.PRNGKey(1000 * seed), layer_sizes(data, width, size.depth))
    m = num_parameters(init)
    t0 = time.perf_counter()
    lrs = [size.egr_lr] * len(size.mus)
    finals, hist = train_sweep(init, data, lrs, size.steps, mus=size.mus, method="egr",
                               record_every=size.record_every, activation=size.activation)
    runs = []
    for i, mu in enumerate(size.mus):
        p = jax.tree.map(lambda x: x[i], finals)
        ok = bool(np.all(np.isfinite(hist.train_loss[i])))
        eig = hessian_top_eigenvalue(loss, p, tol=1e-3, max_iters=60, on_failure="ignore") if ok else None
        runs.append({
            "mu": float(mu),
            "lr": size.egr_lr,
            "effective_strength": float(mu + size.egr_lr / 4),
            "diverged": not ok,
            "test_accuracy": float(hist.test_accuracy[i, -1]) if ok else None,
            "train_accuracy": float(hist.train_accuracy[i, -1]) if ok else None,
            "r_ig": float(hist.grad_norm_sq[i, -1] / m) if ok else None,
            "sharpness": float(eig.eigenvalue) if ok else None,
        })
    if progress:
        progress(f"EGR: {len(size.mus)} values of mu at lr={size.egr_lr:g} in {time.perf_counter() - t0:.1f} s")
    return {"size": dataclasses.asdict(size), "width": width, "m": m, "runs": runs}


def rk4_versus_gd(
    size: str | ExperimentSize | None = None,
    *,
    lr: float | None = None,
    width: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = _progress,
) -> dict[str, Any]:
    """Chapter 7: GD (IGR present) vs RK4 (IGR removed) at the same step ``lr`` from the same start.

    RK4 follows the gradient flow to ``O(h⁴)``, so the difference between the two runs is what implicit
    gradient regularization does. Default ``lr``: the middle of the learning-rate grid.
    """
    size = select_size(size)
    data = load_data(size)
    width = width or size.widths[0]
    lr = lr or size.lrs[len(size.lrs) // 2]
    init = init_mlp(jax.random.PRNGKey(1000 * seed), layer_sizes(data, width, size.depth))
    m = num_parameters(init)
    out: dict[str, Any] = {"size": dataclasses.asdict(size), "width": width, "m": m, "lr": lr, "methods": {}}
    for method in ("gd", "rk4"):
        t0 = time.perf_counter()
        _, hist = train_sweep(init, data, [lr], size.steps, method=method,
                              record_every=size.record_every, activation=size.activation)
        out["methods"][method] = {
            "step": hist.step.tolist(),
            "train_loss": _finite(hist.train_loss[0]),
            "test_accuracy": _finite(hist.test_accuracy[0]),
            "r_ig": _finite(hist.grad_norm_sq[0] / m),
        }
        if progress:
            progress(f"{method.upper()} at lr={lr:g}: {size.steps} steps in {time.perf_counter() - t0:.1f} s")
    return out
