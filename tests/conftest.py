"""Test-wide settings: CPU JAX in float64 for the unit tests; notebook kernels inherit the environment."""

import os

# A GPU machine's CUDA warnings on stderr would otherwise enter the nbval comparison of notebook outputs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
