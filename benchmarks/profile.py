"""Profiles behind ``--profile``: what XLA's cost model says a step costs, to explain a case's result.

Off by default: they compile extra programs and judge no goal. The steps are written from the package's public
functions, with the same arithmetic as the steps ``train`` and ``train_sweep`` run: GD ``θ − h∇E`` and EGR
``θ − h(g + 2μHg)`` with ``Hg`` by forward-over-reverse (:func:`igr_tutorial.hvp`).
"""

from __future__ import annotations

from typing import Any, Callable

from benchmarks.harness import Variant, block, time_variants


def gd_step(loss: Callable) -> Callable:
    import jax

    return lambda p, lr: jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p))


def egr_step(loss: Callable, mu: float) -> Callable:
    import jax

    from igr_tutorial import hvp

    def step(p, lr):
        g = jax.grad(loss)(p)
        return jax.tree.map(lambda a, gi, hi: a - lr * (gi + 2 * mu * hi), p, g, hvp(loss, p, g))

    return step


def cost(fn: Callable, *args: Any) -> dict[str, float]:
    """XLA's cost model of ``jax.jit(fn)(*args)``: flops and bytes accessed."""
    import jax

    ca = jax.jit(fn).lower(*args).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return {"flops": float(ca.get("flops", float("nan"))), "bytes_accessed": float(ca.get("bytes accessed", float("nan")))}


def sweep_step_cost(params: Any, data: Any, lrs: list[float]) -> dict[str, Any]:
    """Case 2: one GD step of one run, and of all runs vmapped (per run): the same work, or not?"""
    import jax
    import jax.numpy as jnp

    from igr_tutorial.train import train_loss_fn

    step = gd_step(train_loss_fn(data))
    stacked = jax.tree.map(lambda a: jnp.stack([a] * len(lrs)), params)
    lr = jnp.asarray(lrs, jnp.float32)
    vmapped = cost(jax.vmap(step), stacked, lr)
    return {"xla_cost_per_run_one_gd_step": {"single": cost(step, params, lr[0]),
                                              "vmap": {k: v / len(lrs) for k, v in vmapped.items()}}}


def egr_step_cost(params: Any, data: Any, lr: float, mu: float) -> dict[str, Any]:
    """Case 4: one GD step and one EGR step, and their ratios."""
    from igr_tutorial.train import train_loss_fn

    loss = train_loss_fn(data)
    costs = {"gd": cost(gd_step(loss), params, lr), "egr": cost(egr_step(loss, mu), params, lr)}
    return {"xla_cost_one_step": costs, "flop_ratio": costs["egr"]["flops"] / costs["gd"]["flops"],
            "bytes_ratio": costs["egr"]["bytes_accessed"] / costs["gd"]["bytes_accessed"]}


def training_floor() -> dict[str, Any]:
    """Case 5: the arithmetic of the two training cells (chapter 6's GD sweep, chapter 7's EGR sweep) at the
    default size, and the least time it takes at the flop rate ``train`` sustains on this machine.

    Flops of one step (cost model) × steps × runs; the rate is GD on the widest network, timed. The EGR figure is
    an upper bound: every run for the whole time budget (chapter 6's runs stop at the target loss).
    """
    import jax
    import jax.numpy as jnp

    from igr_tutorial.experiments import layer_sizes, load_data, select_size
    from igr_tutorial.nets import init_mlp
    from igr_tutorial.train import train, train_loss_fn

    size = select_size()
    data = load_data(size)
    loss = train_loss_fn(data, size.activation)
    key = jax.random.PRNGKey(0)

    def step_flops(step: Callable, width: int) -> float:
        return cost(step, init_mlp(key, layer_sizes(data, width, size.depth)), 0.01)["flops"]

    from igr_tutorial.experiments import equal_time_schedule

    sweep_steps = sum(equal_time_schedule(size.lrs, size.horizon, size.record_time)[0])   # every h to the horizon
    egr_steps = equal_time_schedule([size.egr_lr], size.egr_horizon, size.egr_horizon / 8)[0][0]
    work = {
        "06 learning_rate_sweep (GD)": sum(step_flops(gd_step(loss), w) for w in size.widths) * sweep_steps * size.seeds,
        "07 egr_sweep (EGR)": step_flops(egr_step(loss, 0.01), size.egr_width) * egr_steps * len(size.egr_partners)
        * size.egr_seeds,
    }
    width, steps = max(size.widths), 200
    params = init_mlp(key, layer_sizes(data, width, size.depth))
    stats, _ = time_variants({"train": Variant(f"train(), width {width}, {steps} steps", lambda: block(
        train(params, data, 0.05, steps, record_every=steps, activation=size.activation)[0]), 5)})
    rate = step_flops(gd_step(loss), width) * steps / stats["train"]["median_s"]
    a = jnp.ones((2048, 2048), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    stats_mm, _ = time_variants({"matmul": Variant("2048×2048 float32 matrix product", lambda: block(matmul(a)), 7)})
    return {"size": size.name, "flops": work, "train_flops_per_s": rate,
            "matmul_flops_per_s": 2 * 2048**3 / stats_mm["matmul"]["median_s"],
            "floor_s": {k: v / rate for k, v in work.items()}}
