"""Case 2: a learning-rate sweep of 32 small MLP trainings on MNIST-1D (chapter 6's experiment, shrunk).

``train_sweep(mode="vmap")`` (all runs in one compiled call) against ``mode="loop"`` (a loop over one compiled
single run, the baseline) and, when ``import torch`` works, the same training written in PyTorch. Goal: the
vmapped sweep is faster than both. With ``--profile``: XLA's cost model of one GD step, single and vmapped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.harness import Variant, block, condition, goal, time_variants


def torch_sweep(torch: Any, init_params: Any, data: Any, lrs: list[float], steps: int, record_every: int) -> np.ndarray:
    """The chapter-6 training as a PyTorch user would write it: nn.Sequential, SGD, full batch.

    Same initialization (copied from the JAX parameters), same metrics at the same steps as ``train_sweep``
    (train loss and accuracy, test loss and accuracy, ‖∇E‖²); returns them with shape ``(runs, records, 5)``.
    """
    nn = torch.nn
    xtr, ytr = torch.tensor(np.array(data.x_train)), torch.tensor(np.array(data.y_train), dtype=torch.long)
    xte, yte = torch.tensor(np.array(data.x_test)), torch.tensor(np.array(data.y_test), dtype=torch.long)
    weights = [(np.array(layer["W"]).T.copy(), np.array(layer["b"])) for layer in init_params]
    loss_fn = nn.CrossEntropyLoss()

    def metrics(model):
        model.zero_grad()
        out = model(xtr)
        loss = loss_fn(out, ytr)
        loss.backward()
        with torch.no_grad():
            gn = sum(float((p.grad**2).sum()) for p in model.parameters())
            te = model(xte)
            return [float(loss), float((out.argmax(1) == ytr).float().mean()), float(loss_fn(te, yte)),
                    float((te.argmax(1) == yte).float().mean()), gn]

    runs = []
    for lr in lrs:
        layers = []
        for i, (w, b) in enumerate(weights):
            lin = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin, nn.Tanh()] if i < len(weights) - 1 else [lin]
        model = nn.Sequential(*layers)
        opt = torch.optim.SGD(model.parameters(), lr=float(lr))
        records = [metrics(model)]
        for step in range(1, steps + 1):
            opt.zero_grad()
            loss_fn(model(xtr), ytr).backward()
            opt.step()
            if step % record_every == 0:
                records.append(metrics(model))
        runs.append(records)
    return np.asarray(runs)


def run(s: Any, profile: bool = False) -> dict[str, Any]:
    import jax

    from igr_tutorial.data import load_mnist1d
    from igr_tutorial.nets import init_mlp
    from igr_tutorial.train import train_sweep

    n_tr, n_te = s.sweep_train, s.sweep_test
    data = load_mnist1d(num_samples=n_tr + n_te, train_split=n_tr / (n_tr + n_te))
    sizes = [data.x_train.shape[1]] + [s.sweep_width] * s.sweep_depth + [data.num_classes]
    init = init_mlp(jax.random.PRNGKey(0), sizes)
    m = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    lrs = [float(x) for x in np.geomspace(0.01, 1.0, s.sweep_runs)]
    steps, rec = s.sweep_steps, s.sweep_record_every

    def sweep(mode):
        def fn():
            final, hist = train_sweep(init, data, lrs, steps, mode=mode, record_every=rec)
            block(final)
            return np.asarray(hist.train_loss[:, -1], dtype=float)
        return fn

    budget = s.sweep_variant_budget_s
    variants = {
        "vmap": Variant(f'train_sweep(mode="vmap"): all {len(lrs)} runs in one compiled call', sweep("vmap"),
                        s.sweep_repeats, budget_s=budget),
        "loop": Variant('train_sweep(mode="loop"): a loop over one compiled single run', sweep("loop"),
                        s.sweep_repeats, budget_s=budget),
    }
    notes = []
    try:
        import torch  # optional: only for the PyTorch baseline
    except Exception as exc:  # ImportError, or a broken installation
        torch = None
        notes.append(f"PyTorch baseline skipped: `import torch` failed ({type(exc).__name__}: {exc}).")
    if torch is not None:
        variants["torch"] = Variant(
            f"PyTorch {torch.__version__} loop (nn.Sequential + SGD), {torch.get_num_threads()} threads",
            lambda: torch_sweep(torch, init, data, lrs, steps, rec)[:, -1, 0], s.sweep_repeats, budget_s=budget,
            warmup_fn=lambda: torch_sweep(torch, init, data, lrs[:1], rec, rec))  # nothing to compile
    stats, results = time_variants(variants)
    for v in stats.values():
        v["per_run_step_us"] = v["median_s"] / (len(lrs) * steps) * 1e6
    half = len(lrs) // 2
    diffs = {k: np.abs(results[k] - results["loop"]) for k in results if k != "loop" and k in stats}
    notes.append("final training losses compared with mode=\"loop\", largest difference: "
                 + "; ".join(f"{k} {np.nanmax(d):.1e} (over h ≤ {lrs[half - 1]:.3g}: {np.nanmax(d[:half]):.1e})"
                             for k, d in diffs.items())
                 + "; at large h full-batch GD oscillates at the edge of stability, which amplifies the rounding "
                   "differences between two compiled programs")
    t_vmap = stats["vmap"]["median_s"]
    conditions = [condition('speed-up of mode="vmap" over mode="loop"', "t(loop) / t(vmap)", ">", 1.0,
                            stats["loop"]["median_s"] / t_vmap, "×")]
    if "torch" in stats:
        conditions.append(condition('speed-up of mode="vmap" over PyTorch', "t(torch) / t(vmap)", ">", 1.0,
                                    stats["torch"]["median_s"] / t_vmap, "×"))
    case = {
        "description": f"{len(lrs)} full-batch GD trainings (h log-spaced from {lrs[0]:g} to {lrs[-1]:g}) of a "
                       f"{'-'.join(map(str, sizes))} tanh MLP ({m:,} parameters, float32) on {n_tr} MNIST-1D "
                       f"signals, {steps} steps each, metrics on the train and {n_te} test signals every {rec} steps.",
        "settings": {"runs": len(lrs), "steps": steps, "record_every": rec, "layers": sizes, "parameters": m,
                     "train": n_tr, "test": n_te, "lrs": lrs, "dtype": "float32"},
        "variants": stats, "baseline": "loop",
        "goal": goal('train_sweep(mode="vmap") faster than both the loop of compiled runs and PyTorch', conditions),
        "notes": notes,
    }
    if profile:
        from benchmarks.profile import sweep_step_cost

        case["profile"] = sweep_step_cost(init, data, lrs)
    return case
