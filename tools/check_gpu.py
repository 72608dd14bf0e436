"""``python -m igr_tutorial check-gpu``: run every chapter's code on this machine's accelerator and report.

For each chapter notebook ``book/NN_*.ipynb`` the code cells are joined into one script and run in a fresh
Python process with ``IGR_TUTORIAL_SIZE`` set (default: the size :func:`~igr_tutorial.sizes.select_size`
picks here, ``gpu`` on an accelerator). The chapters' own assertions are the checks: a chapter passes when its
script exits cleanly. The report also times one step of the ``paper`` learning-rate sweep (9 learning rates,
width 800, depth 4, MNIST's shape) and converts it to TFLOP/s.

Works offline: the ``gpu`` size generates its data, and the ``paper`` timing uses MNIST only when it is already
in the cache (:func:`~igr_tutorial.data.cache_directory`), else random data of MNIST's shape; the report says
which. The suite tests the command on a CPU; the Performance page shows the last report stored in the book.

It lives beside the repository's tools, not in the wheel: it runs the book's notebooks, which the wheel does not
contain. ``python -m igr_tutorial check-gpu`` finds it when run from a clone of the repository (or with the clone
on ``PYTHONPATH``).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

# Dense (no sparsity) TF32 tensor-core peaks from the vendors' datasheets, FLOP/s; FP32 for cards without TF32.
PEAK_FLOPS = {
    "H100": 494.7e12,  # SXM; PCIe 378e12
    "H200": 494.7e12,
    "A100": 156e12,
    "L4": 60e12,
    "T4": 8.1e12,  # Turing has no TF32: FP32 peak
}


def chapter_script(notebook: pathlib.Path) -> str:
    """The code cells of ``notebook`` as one Python script (IPython magics and shell lines commented out)."""
    nb = json.loads(pathlib.Path(notebook).read_text())
    parts = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        lines = [("# " + l) if l.lstrip().startswith(("%", "!")) else l for l in src.splitlines()]
        parts.append(f"# --- cell {i}\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


def run_chapter(notebook: pathlib.Path, size: str, timeout_s: float) -> dict[str, Any]:
    """Run one chapter's script in a fresh process at ``size``; its time, pass/fail and the error's tail."""
    notebook = pathlib.Path(notebook)
    script = notebook.with_name(f".check_gpu_{notebook.stem}.py")
    script.write_text(chapter_script(notebook))
    # Without this, each JAX process takes 75% of the GPU's memory when it starts, and a chapter started while
    # the report's own process (or another chapter) holds it fails to allocate.
    env = {**os.environ, "IGR_TUTORIAL_SIZE": size, "MPLBACKEND": "Agg", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, script.name], cwd=notebook.parent, env=env, capture_output=True,
                              text=True, timeout=timeout_s)
        passed, tail = proc.returncode == 0, (proc.stderr or proc.stdout)[-2000:]
    except subprocess.TimeoutExpired:
        passed, tail = False, f"timed out after {timeout_s:g} s"
    finally:
        script.unlink(missing_ok=True)
    wall = time.perf_counter() - t0
    return {"chapter": notebook.stem, "passed": passed, "wall_s": round(wall, 1), "error": None if passed else tail}


def _mnist_shaped_data(num_train: int) -> tuple[Any, str]:
    """MNIST from the cache when it is there (no download), else random data of its shape."""
    import numpy as np

    from igr_tutorial.data import Dataset, cache_directory, load_mnist

    if (cache_directory() / "train-images-idx3-ubyte.gz").exists():
        try:
            return load_mnist("mnist").subset(num_train, 1000), "mnist (cached download)"
        except (OSError, ValueError):
            pass
    rng = np.random.default_rng(0)
    x = rng.random((num_train, 784), dtype=np.float32)
    y = rng.integers(0, 10, num_train).astype(np.int32)
    return Dataset("mnist-shaped", x, y, x[:1000], y[:1000]), "synthetic of MNIST's shape (random pixels)"


def paper_step_cost(width: int = 800, depth: int = 4, num_train: int = 60000, steps: int = 20,
                    num_lrs: int = 9) -> dict[str, Any]:
    """Seconds per step of the ``paper`` sweep (``num_lrs`` runs in one vmapped program) and its TFLOP/s.

    A full-batch step of an MLP costs about ``6·N·Σ fan_in·fan_out`` FLOPs (forward 2, backward 4); the sweep
    takes that ``num_lrs`` times. The step time is the second of two timed calls (the first compiles).
    """
    import jax
    import numpy as np

    from igr_tutorial.nets import init_mlp
    from igr_tutorial.train import stacked_init, train_sweep

    data, source = _mnist_shaped_data(num_train)
    sizes = [784] + [width] * depth + [10]
    inits = stacked_init(init_mlp, jax.random.split(jax.random.PRNGKey(0), num_lrs), sizes)
    lrs = list(np.geomspace(0.005, 0.5, num_lrs))
    walls = []
    for _ in range(2):
        t0 = time.perf_counter()
        final, _ = train_sweep(inits, data, lrs, steps, record_every=steps, mode="vmap", devices=jax.devices()[:1])
        jax.block_until_ready(final)
        walls.append(time.perf_counter() - t0)
    per_step = walls[1] / steps
    flops = num_lrs * 6 * data.x_train.shape[0] * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return {"width": width, "depth": depth, "num_train": int(data.x_train.shape[0]), "learning_rates": num_lrs,
            "data": source, "step_s": per_step, "tflops": flops / per_step / 1e12,
            "sweep_estimate_s": per_step * 10000 * 3}  # the paper protocol at this width: 10,000 steps × 3 seeds


def _peak(device_kind: str) -> float | None:
    return next((v for k, v in PEAK_FLOPS.items() if k in device_kind), None)


def check_gpu(book: pathlib.Path, out: pathlib.Path, *, size: str | None = None, chapters: Sequence[str] = (),
              timeout_s: float = 900.0, paper: dict[str, Any] | None = None, jobs: int = 1,
              progress: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Run the chapters in ``book`` (all ``NN_*.ipynb``, or those whose names start with ``chapters``) at
    ``size``, ``jobs`` at a time (each in its own process, sharing the accelerator), and time the ``paper`` step
    (``paper``: keyword arguments of :func:`paper_step_cost`); write the report as JSON to ``out`` and return it."""
    if jobs < 1:
        raise ValueError(f"jobs must be a positive number of chapters run at a time, got {jobs}")
    # This process's JAX allocates as it goes, leaving the GPU's memory to the chapters it starts.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    from igr_tutorial.sizes import data_source, device_info, select_size

    book = pathlib.Path(book)
    notebooks = sorted(book.glob("[0-9][0-9]_*.ipynb"))
    if chapters:
        notebooks = [nb for nb in notebooks if nb.name.startswith(tuple(chapters))]
    if not notebooks:
        raise ValueError(f"no chapter notebooks (NN_*.ipynb) in {book}{' matching ' + str(list(chapters)) if chapters else ''}: "
                         "run from the repository root or pass --book.")
    size_name = select_size(size).name
    info = device_info()
    kind = info["device_kind"]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "backend": info["backend"],
        "device": kind,
        "device_count": info["device_count"],
        "jax_version": info["jax_version"],
        "python": info["python"],
        "size": size_name,
        "data": data_source(select_size(size_name)),
        "precision": {
            "default_matmul_precision": jax.config.jax_default_matmul_precision or "default (TF32 on NVIDIA GPUs)",
            "chapters": "chapters 6-9 set jax_default_matmul_precision='highest' in their import cell",
        },
        "jobs": jobs,
        "chapters": [],
    }

    def one(nb: pathlib.Path) -> dict[str, Any]:
        progress(f"{nb.stem} at size {size_name!r} ...")
        result = run_chapter(nb, size_name, timeout_s)
        progress(f"{nb.stem}: {'passed' if result['passed'] else 'FAILED'} in {result['wall_s']:.1f} s")
        return result

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        report["chapters"] = list(pool.map(one, notebooks))  # in chapter order, whichever finishes first
    report["chapters_wall_s"] = round(time.perf_counter() - t0, 1)
    progress("paper sweep: timing one step ...")
    cost = paper_step_cost(**(paper or {}))
    peak = _peak(kind) if report["backend"] == "gpu" else None
    cost["peak_tflops"] = None if peak is None else peak / 1e12
    cost["fraction_of_peak"] = None if peak is None else cost["tflops"] * 1e12 / peak
    report["paper_step"] = cost
    report["passed"] = all(c["passed"] for c in report["chapters"])
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    progress(f"wrote {out}: {sum(c['passed'] for c in report['chapters'])}/{len(report['chapters'])} chapters passed; "
             f"paper step {cost['step_s'] * 1e3:.1f} ms, {cost['tflops']:.2f} TFLOP/s")
    return report
