"""The command line: ``python -m igr_tutorial figure NAME`` and ``python -m igr_tutorial sizes``.

``figure`` runs the experiment behind a figure once (``curves``, ``equal-loss``, ``rig``, ``sharpness``,
``test-accuracy`` and ``robustness`` share chapter 6's step-size sweep, ``egr`` and ``rk4`` chapter 7's runs;
``all`` runs each of the two experiments once), writes
``DIR/NAME.png`` and ``DIR/NAME.json`` (the numbers behind the figure, the experiment size, the JAX backend
and device, the JAX version and the wall time), and reports progress on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

from .experiments import SIZES

__all__ = [
    "FIGURES",
    "build_parser",
    "main",
    "print_sizes",
    "run_figures",
]

# figure name -> (experiment, plot function name in igr_tutorial.figures, run keys kept in its JSON or None)
_SWEEP_COMMON = ("width", "seed", "lr", "m", "lambda", "diverged", "reached_target", "stop_time")
FIGURES: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "curves": ("learning_rate_sweep", "plot_training_curves",
               _SWEEP_COMMON + ("train_loss_curve", "sharpness_curve")),
    "equal-loss": ("learning_rate_sweep", "plot_equal_loss",
                   _SWEEP_COMMON + ("test_accuracy", "r_ig", "sharpness", "trace", "perturbed_accuracy")),
    "rig": ("learning_rate_sweep", "plot_rig_vs_lambda", _SWEEP_COMMON + ("r_ig",)),
    "sharpness": ("learning_rate_sweep", "plot_sharpness_vs_lambda",
                  _SWEEP_COMMON + ("sharpness", "sharpness_converged")),
    "test-accuracy": ("learning_rate_sweep", "plot_test_accuracy_vs_lambda", _SWEEP_COMMON + ("test_accuracy",)),
    "robustness": ("learning_rate_sweep", "plot_robustness", _SWEEP_COMMON + ("test_accuracy", "perturbed_accuracy")),
    "egr": ("egr_sweep", "plot_egr", None),
    "rk4": ("egr_sweep", "plot_rk4_vs_gd", None),
}
DPI = 120

_DESCRIPTION = """\
Reproduce the deep-network figures of the book on Implicit Gradient Regularization
(Barrett & Dherin 2021): `figure NAME` runs the experiment and writes NAME.png and NAME.json.

The experiment size (data set, widths, depth, step sizes, time budget, seeds) is --size; without it the
environment variable IGR_TUTORIAL_SIZE decides, else the JAX backend: 'gpu' (MNIST-1D at 12,000 signals,
generated) on a GPU, 'small' (MNIST-1D, generated locally; sized for a laptop CPU) otherwise. 'paper' (full
MNIST, downloaded; sized for a large GPU) only when named. 'tiny' is for tests.
`sizes` lists them.

`check-gpu` runs every chapter's code at the default size of this machine and writes a JSON report."""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m igr_tutorial",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{figure,sizes,check-gpu}")
    fig = sub.add_parser(
        "figure",
        help="run an experiment and write its figure (PNG) and numbers (JSON)",
        description="Run the experiment behind figure NAME once and write DIR/NAME.png and DIR/NAME.json. "
        "curves, equal-loss, rig, sharpness, test-accuracy and robustness come from one step-size sweep (chapter 6); "
        "egr and rk4 from chapter 7's runs. 'all' runs each experiment once and writes every figure, with the "
        "chapters' own settings.",
    )
    fig.add_argument("name", choices=[*FIGURES, "all"], metavar="NAME",
                     help="one of: " + ", ".join([*FIGURES, "all"]))
    fig.add_argument("--size", choices=sorted(SIZES), default=None,
                     help="experiment size (default: $IGR_TUTORIAL_SIZE, else 'gpu' on a GPU and 'small' otherwise)")
    fig.add_argument("--out", default="figures", type=pathlib.Path, metavar="DIR",
                     help="output folder, created if missing (default: ./figures)")
    fig.add_argument("--seed", default=0, type=int, metavar="N", help="seed of the initializations (default: 0)")
    sub.add_parser("sizes", help="list the experiment sizes and their settings",
                   description="List the experiment sizes and their settings, marking the default here.")
    chk = sub.add_parser(
        "check-gpu", help="run every chapter's code on this machine's accelerator and write a JSON report",
        description="Run every chapter's code (book/NN_*.ipynb as scripts, their assertions included) at the "
        "default size of this machine ('gpu' on a GPU), time one step of the 'paper' sweep with its TFLOP/s, "
        "and write a JSON report: device, precision, time and pass/fail per chapter. Works offline.")
    chk.add_argument("--book", default="book", type=pathlib.Path, metavar="DIR",
                     help="folder of the chapter notebooks (default: ./book)")
    chk.add_argument("--out", default=pathlib.Path("book/gpu_check.json"), type=pathlib.Path, metavar="FILE",
                     help="report file (default: book/gpu_check.json, which the Performance page shows)")
    chk.add_argument("--size", choices=sorted(SIZES), default=None,
                     help="experiment size (default: $IGR_TUTORIAL_SIZE, else 'gpu' on a GPU, 'small' otherwise)")
    chk.add_argument("--chapters", nargs="*", default=[], metavar="NN",
                     help="only the chapters whose file names start with these (e.g. 05 06)")
    chk.add_argument("--jobs", default=1, type=int, metavar="N",
                     help="chapters run at a time, each in its own process on the same accelerator (default 1)")
    chk.add_argument("--timeout", default=900.0, type=float, metavar="S", help="seconds per chapter (default 900)")
    chk.add_argument("--paper-width", default=800, type=int, help=argparse.SUPPRESS)
    chk.add_argument("--paper-train", default=60000, type=int, help=argparse.SUPPRESS)
    chk.add_argument("--paper-steps", default=20, type=int, help=argparse.SUPPRESS)
    return parser


def _json_safe(x: Any) -> Any:
    """Non-finite floats as ``None`` (strict JSON), tuples as lists."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # NumPy scalars
        return _json_safe(x.item())
    return x


def _numbers(name: str, results: dict) -> dict:
    """The part of an experiment's results that figure ``name`` shows."""
    keys = FIGURES[name][2]
    if keys is None:
        return results
    out = {k: v for k, v in results.items() if k != "runs"}
    out["runs"] = [{k: run[k] for k in keys if k in run} for run in results["runs"]]
    return out


def _default_size_reason() -> str:
    import jax

    if os.environ.get("IGR_TUTORIAL_SIZE"):
        return "IGR_TUTORIAL_SIZE"
    return f"JAX backend {jax.default_backend()!r}"


def run_figures(names: Sequence[str], size_name: str | None, out: pathlib.Path, seed: int,
                progress: Callable[[str], None] = _progress) -> list[pathlib.Path]:
    """Run each experiment that ``names`` need once, and write ``out/NAME.png`` and ``out/NAME.json``."""
    from . import experiments, figures

    size = experiments.select_size(size_name)
    info = experiments.device_info()
    progress(f"size {size.name!r} ({'--size' if size_name else _default_size_reason()}) on "
             f"{info['backend']} ({info['device']}), jax {info['jax_version']}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for experiment in dict.fromkeys(FIGURES[n][0] for n in names):  # each experiment once, in order
        progress(f"running {experiment} ...")
        t0 = time.perf_counter()
        results = getattr(experiments, experiment)(size, seed=seed, progress=progress)
        wall = time.perf_counter() - t0
        progress(f"{experiment} done in {wall:.1f} s")
        for name in (n for n in names if FIGURES[n][0] == experiment):
            fig = getattr(figures, FIGURES[name][1])(results)
            png, js = out / f"{name}.png", out / f"{name}.json"
            progress(f"writing {png}")
            fig.savefig(png, dpi=DPI, facecolor="white")
            record = {
                "figure": name,
                "experiment": experiment,
                "seed": seed,
                "size": dataclasses.asdict(size),
                "data": experiments.data_source(size),
                **info,
                "wall_time_s": wall,
                "results": _numbers(name, results),
            }
            progress(f"writing {js}")
            js.write_text(json.dumps(_json_safe(record), indent=1, allow_nan=False) + "\n")
            written += [png, js]
    return written


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def print_sizes(stream=None) -> None:
    """Print every experiment size with its settings, marking the one chosen here by default."""
    from .experiments import select_size

    stream = stream or sys.stdout
    try:
        default = select_size(None).name
        why = _default_size_reason()
    except ValueError as exc:  # a bad IGR_TUTORIAL_SIZE
        default, why = None, str(exc)
    for name, size in SIZES.items():
        mark = f"  (default here: {why})" if name == default else ""
        print(f"{name}{mark}", file=stream)
        for field in dataclasses.fields(size):
            if field.name != "name":
                print(f"    {field.name:<13} {_fmt(getattr(size, field.name))}", file=stream)
    if default is None:
        print(f"note: {why}", file=stream)


def _repository_check_gpu():
    """``tools/check_gpu.check_gpu`` of the repository this runs from (the current folder or ``PYTHONPATH``), or
    ``None`` outside a clone: the command is the repository's, not the wheel's."""
    import importlib

    try:
        module = importlib.import_module("tools.check_gpu")
    except ImportError:
        return None
    return getattr(module, "check_gpu", None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sizes":
        try:
            print_sizes()
            sys.stdout.flush()
        except BrokenPipeError:  # e.g. `python -m igr_tutorial sizes | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if args.command == "check-gpu":
        check_gpu = _repository_check_gpu()
        if check_gpu is None:
            parser.exit(2, f"{parser.prog}: error: check-gpu runs the book's notebooks, which the installed package does "
                           "not contain: run it from a clone of the repository (git clone the book, cd into it, then "
                           "python -m igr_tutorial check-gpu), or put the clone on PYTHONPATH.\n")
        try:
            report = check_gpu(args.book, args.out, size=args.size, chapters=args.chapters, timeout_s=args.timeout,
                               jobs=args.jobs,
                               paper={"width": args.paper_width, "num_train": args.paper_train,
                                      "steps": args.paper_steps})
        except (ValueError, OSError) as exc:
            parser.exit(1, f"{parser.prog}: error: {exc}\n")
        return 0 if report["passed"] else 1
    names = list(FIGURES) if args.name == "all" else [args.name]
    try:
        run_figures(names, args.size, args.out, args.seed)
    except (ValueError, OSError) as exc:  # bad IGR_TUTORIAL_SIZE, no network for MNIST, unwritable DIR, ...
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    return 0
