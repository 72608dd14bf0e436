"""Case 4: the cost of one EGR step relative to one GD step of :func:`igr_tutorial.train.train` (chapter 7).

An EGR step is ``θ ← θ − h(g + 2μHg)``: one gradient and one Hessian-vector product. Goal: at most 3× one GD
step on the same MLP. With ``--profile``: XLA's cost model of one GD and one EGR step.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import Variant, block, condition, goal, time_variants

GOAL_RATIO = 3.0


def run(s: Any, profile: bool = False) -> dict[str, Any]:
    import jax

    from igr_tutorial.experiments import SIZES, layer_sizes, load_data
    from igr_tutorial.nets import init_mlp
    from igr_tutorial.train import train

    size = SIZES["small"]
    data = load_data(size)
    if s.egr_train is not None:
        data = data.subset(s.egr_train, s.egr_train // 2)
    sizes = layer_sizes(data, s.egr_width, size.depth)
    params = init_mlp(jax.random.PRNGKey(0), sizes)
    m = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    steps, lr, mu = s.egr_steps, size.egr_lr, size.egr_mus[-1]

    def run_method(method):
        return lambda: block(train(params, data, lr, steps, method=method, mu=mu, record_every=steps)[0])

    stats, _ = time_variants({
        "gd": Variant(f'train(method="gd"), {steps} steps', run_method("gd"), s.egr_repeats),
        "egr": Variant(f'train(method="egr", mu={mu:g}), {steps} steps', run_method("egr"), s.egr_repeats),
    })
    for v in stats.values():
        v["per_step_s"] = v["median_s"] / steps
    ratio = stats["egr"]["median_s"] / stats["gd"]["median_s"]
    case = {
        "description": f"Per-step cost of train() with method=\"egr\" (θ ← θ − h(g + 2μHg), one Hessian-vector product "
                       f"per step) vs method=\"gd\", {'-'.join(map(str, sizes))} tanh MLP ({m:,} parameters, float32) "
                       f"on {data.x_train.shape[0]} MNIST-1D signals (chapter 7's small size), {steps} steps per call.",
        "settings": {"steps": steps, "lr": lr, "mu": mu, "layers": sizes, "parameters": m,
                     "train": int(data.x_train.shape[0]), "dtype": "float32"},
        "variants": stats, "baseline": "gd",
        "goal": goal(f"one EGR step costs at most {GOAL_RATIO:g}× one GD step",
                     [condition("EGR step ÷ GD step", "t(egr) / t(gd)", "<=", GOAL_RATIO, ratio, "×")]),
        "notes": [],
    }
    if profile:
        from benchmarks.profile import egr_step_cost

        case["profile"] = egr_step_cost(params, data, lr, mu)
        case["notes"].append(f"XLA's cost model: an EGR step does {case['profile']['flop_ratio']:.2f}× the flops and "
                             f"moves {case['profile']['bytes_ratio']:.2f}× the bytes of a GD step; measured: {ratio:.2f}×")
    return case
