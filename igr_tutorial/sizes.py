"""The sizes of the deep-network experiments (chapters 6–8), chosen by one switch.

``size`` selects everything that scales: data set, widths, depth, the grid of step sizes, the gradient-flow
time budget, the common training loss at which runs are compared, and seeds.

* ``"small"`` (default on a CPU): MNIST-1D generated locally (1,000 training signals), MLPs of widths 64 and 128
  that fit it.
* ``"gpu"`` (default when JAX sees a GPU or TPU): MNIST-1D generated locally at 12,000 signals (no download, so
  it runs on machines without network), deeper and wider MLPs (depth 4, widths 128 and 256); not yet checked
  on a GPU at this protocol.
* ``"paper"`` (opt-in): full MNIST (downloaded, checksummed), widths 400 and 800 at depth 4 as in Barrett &
  Dherin (2021, Sec. 5); the equal-time protocol takes up to 16,384 steps per run.
* ``"tiny"``: the code path on tiny shapes, for tests.

The choice is made by :func:`select_size`: an explicit name, else the environment variable
``IGR_TUTORIAL_SIZE``, else by the JAX backend. :func:`load_data` loads a size's data set (cached).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax

from .data import Dataset, load_mnist, load_mnist1d

__all__ = ["SIZES", "ExperimentSize", "data_source", "device_info", "load_data", "select_size"]


@dataclasses.dataclass(frozen=True)
class ExperimentSize:
    """Everything that scales between a laptop run and a paper-sized run.

    Chapter 6 trains every width at every step size ``h`` of ``lrs`` for the same *gradient-flow time*: run
    ``h`` takes at most ``horizon/h`` steps and records every ``record_time/h`` steps (so record ``r`` of every run
    is at ``t = r·record_time``), and stops at the first record whose training loss is at or below
    ``target_loss`` (every run then fits its training data). Chapter 7 trains its network (``egr_width``) for
    the time ``egr_horizon``: GD at ``egr_lr`` and at each step of ``egr_partners``, EGR at ``egr_lr`` with the
    strength ``μ = (h − egr_lr)/4`` of each partner ``h``, and RK4 at each partner ``h``.
    """

    name: str
    dataset: str  # "mnist1d" | "mnist"
    num_train: int | None  # None: all
    num_test: int | None
    widths: tuple[int, ...]  # hidden width of each MLP compared (chapter 6)
    depth: int  # number of hidden layers
    lrs: tuple[float, ...]  # the step sizes h of the sweep (chapter 6)
    horizon: float  # T: the gradient-flow time budget of every run of the sweep (at most T/h steps)
    record_time: float  # Δt: the flow time between records (every Δt/h steps)
    target_loss: float  # E*: the common training loss at which every run of the sweep stops (equal loss)
    seeds: int  # initializations per configuration
    noise_ratios: tuple[float, ...]  # parameter noise σ = r·(RMS weight) for each r (Prediction 2.4)
    egr_width: int  # chapter 7's network
    egr_lr: float  # h₀: the small step of EGR (chapter 7)
    egr_partners: tuple[float, ...]  # GD steps h whose EGR partner (μ = (h − h₀)/4) and RK4 twin are trained
    egr_horizon: float  # the gradient-flow time of every chapter-7 run (equal time)
    egr_seeds: int  # initializations of chapter 7's network runs
    sharpness_iters: int = 4  # power iterations per record that track λ_max along every run
    noise_draws: int = 10
    activation: str = "tanh"
    trace_samples: int = 20  # Rademacher probes of the Hutchinson trace

    @property
    def egr_mus(self) -> tuple[float, ...]:
        """The EGR strengths ``μ = (h − h₀)/4`` of the partners ``h`` (chapter 7's proposition)."""
        return tuple((h - self.egr_lr) / 4 for h in self.egr_partners)


SIZES: dict[str, ExperimentSize] = {
    "small": ExperimentSize(
        name="small",
        dataset="mnist1d",
        num_train=1000,
        num_test=1000,
        widths=(64, 128),
        depth=2,
        lrs=(0.125, 0.25, 0.5, 1.0, 2.0),
        horizon=512.0,
        record_time=8.0,
        target_loss=0.03,
        seeds=8,
        noise_ratios=(0.1, 0.2, 0.3),
        egr_width=64,
        egr_lr=0.0625,
        egr_partners=(0.125, 0.25),
        egr_horizon=160.0,
        egr_seeds=5,
    ),
    "gpu": ExperimentSize(
        name="gpu",
        dataset="mnist1d",
        num_train=10000,
        num_test=2000,
        widths=(128, 256),
        depth=4,
        lrs=(0.0625, 0.125, 0.25, 0.5, 1.0),
        horizon=512.0,
        record_time=8.0,
        target_loss=0.03,
        seeds=5,
        noise_ratios=(0.1, 0.2, 0.3),
        egr_width=128,
        egr_lr=0.03125,
        egr_partners=(0.0625, 0.125),
        egr_horizon=128.0,
        egr_seeds=3,
    ),
    "paper": ExperimentSize(
        name="paper",
        dataset="mnist",
        num_train=None,
        num_test=None,
        widths=(400, 800),
        depth=4,
        lrs=(0.03125, 0.0625, 0.125, 0.25, 0.5),
        horizon=512.0,
        record_time=8.0,
        target_loss=0.01,
        seeds=3,
        noise_ratios=(0.05, 0.1, 0.2),
        egr_width=400,
        egr_lr=0.015625,
        egr_partners=(0.03125, 0.0625),
        egr_horizon=64.0,
        egr_seeds=3,
    ),
    "tiny": ExperimentSize(
        name="tiny",
        dataset="mnist1d",
        num_train=200,
        num_test=100,
        widths=(8,),
        depth=1,
        lrs=(0.25, 0.5),
        horizon=8.0,
        record_time=2.0,
        target_loss=2.2,
        seeds=2,
        noise_ratios=(0.1, 0.3),
        egr_width=8,
        egr_lr=0.125,
        egr_partners=(0.25,),
        egr_horizon=4.0,
        egr_seeds=2,
        sharpness_iters=2,
        noise_draws=2,
        trace_samples=4,
    ),
}


def select_size(size: str | ExperimentSize | None = None) -> ExperimentSize:
    """The experiment size: ``size`` if given, else ``$IGR_TUTORIAL_SIZE``, else ``"gpu"`` on an accelerator
    and ``"small"`` on a CPU. ``"paper"`` is only ever chosen by name."""
    if isinstance(size, ExperimentSize):
        return size
    name = size or os.environ.get("IGR_TUTORIAL_SIZE") or ("small" if jax.default_backend() == "cpu" else "gpu")
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


def data_source(size: ExperimentSize) -> str:
    """Where the data of ``size`` come from, in words, for the reports of every run."""
    if size.dataset == "mnist1d":
        return "MNIST-1D, generated locally (mnist1d package, seed 42)"
    return f"{size.dataset}, downloaded from its original files and SHA-256 verified"


def device_info() -> dict[str, Any]:
    """Where a result is computed: JAX's backend, its first device (``str`` and kind), the device count and the
    versions of JAX and Python.

    The one machine report of the package: the figure records of ``python -m igr_tutorial figure``, the report of
    ``check-gpu`` and the repository's benchmarks (``python -m benchmarks``) all include it.
    """
    import platform

    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": str(dev),
        "device_kind": getattr(dev, "device_kind", "unknown"),
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "python": platform.python_version(),
    }
