"""Sweeps split across devices give the single-device results.

Two host "devices" stand in for two GPUs: `XLA_FLAGS=--xla_force_host_platform_device_count=2` (it must be set
before jax is imported, hence a subprocess). The same script then runs with one device, and every number of the
two runs must agree to float64 rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _repo import ROOT, with_test_xla_flags

SCRIPT = textwrap.dedent('''
    import dataclasses, json, sys
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    from igr_tutorial import _runs, experiments as ex, train as tr
    from igr_tutorial.data import Dataset
    from igr_tutorial.nets import init_mlp

    calls = []
    original = _runs._sharded
    def counted(*args, **kwargs):
        calls.append(len(args[-1]))
        return original(*args, **kwargs)
    _runs._sharded = counted

    rng = np.random.default_rng(0)
    def draw(n):
        y = rng.integers(0, 3, n)
        return rng.normal(size=(n, 4)) + y[:, None], y.astype(np.int32)
    data = Dataset("blobs", *draw(48), *draw(24))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    inits = tr.stacked_init(init_mlp, keys, [4, 8, 3], dtype=jax.numpy.float64)
    out = {}
    for method, kw in [("gd", {}), ("egr", {"mus": 0.05}), ("sgd", {"batch_size": 12}), ("rk4", {})]:
        final, hist = tr.train_sweep(inits, data, [0.05, 0.2, 0.5], 30, method=method, record_every=10, **kw)
        out[method] = [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(final)] + [hist.train_loss.tolist()]
    final, hist = tr.train_sweep(inits, data, [0.1, 0.3, 0.6], 60, record_every=5, target_loss=0.6)
    out["target"] = hist.train_loss.tolist()
    size = dataclasses.replace(ex.SIZES["tiny"], widths=(8,), lrs=(0.25, 0.5), horizon=4.0, record_time=2.0,
                               seeds=3, num_train=48, num_test=24, trace_samples=2)
    data32 = Dataset("blobs", *(a.astype(np.float32) if a.dtype == np.float64 else a for a in
                                 (data.x_train, data.y_train, data.x_test, data.y_test)))
    ex.load_data = lambda s: data32  # the experiments initialize in float32
    sweep = ex.learning_rate_sweep(size)
    out["sweep"] = [[r[k] for k in ("train_loss", "r_ig", "test_accuracy", "sharpness")] for r in sweep["runs"]]
    # A second gd sweep of the same shapes with other learning rates reuses the compiled sharded program.
    gd = (tr._train, tuple(sorted(dict(num_records=3, method="gd", activation="tanh", batch_size=None,
                                       sharpness_iters=0).items())),
          (0, None, 0, 0, 0, None, 0), tuple(jax.devices()))
    sharded = len(jax.devices()) > 1
    programs = _runs.program.cache_info().currsize
    compiled = _runs.program(*gd)._cache_size() if sharded else 0
    tr.train_sweep(inits, data, [0.07, 0.1, 0.3], 30, method="gd", record_every=10)
    reused = {"programs": [programs, _runs.program.cache_info().currsize],
              "compiled": [compiled, _runs.program(*gd)._cache_size() if sharded else 0]}
    json.dump({"devices": len(jax.devices()), "sharded_calls": calls, "out": out, "reused": reused}, sys.stdout)
''')


def _run(devices: int) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": with_test_xla_flags(f"--xla_force_host_platform_device_count={devices}")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def both():
    return _run(2), _run(1)


def test_two_devices_are_seen_and_used(both):
    two, one = both
    assert two["devices"] == 2 and one["devices"] == 1
    # Every train_sweep call (4 methods, the target-loss run, the experiment's one width) went through the
    # sharded path on two devices, and none did on one.
    assert two["sharded_calls"] == [2] * 7 and one["sharded_calls"] == []


def test_a_second_sharded_sweep_of_the_same_shapes_compiles_nothing(both):
    """The sharded program is built once per configuration and device set (not a fresh jit per call), and the
    gd sweep's was compiled once: a repeat with other learning rates adds neither a program nor a compilation."""
    two, _ = both
    programs = two["reused"]["programs"]
    assert programs[0] >= 6 and programs[1] == programs[0]  # gd, egr, sgd, rk4, the target-loss run, the sweep, …
    assert two["reused"]["compiled"] == [1, 1]


@pytest.mark.parametrize("case", ["gd", "egr", "sgd", "rk4", "target", "sweep"])
def test_sharded_sweeps_equal_the_single_device_run(both, case):
    """Three runs on two devices (padded to four) give what one device gives, to rounding: float64 for the
    training cases, float32 for the experiment's sweep (its networks are float32)."""
    two, one = both
    a, b = two["out"][case], one["out"][case]
    rtol, atol = (1e-4, 1e-6) if case == "sweep" else (1e-9, 1e-12)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=rtol, atol=atol)
