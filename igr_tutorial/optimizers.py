"""Beyond plain gradient descent (chapter 9): one import for the modules of the chapter.

The functions live in :mod:`igr_tutorial.momentum` (heavy ball and its modified loss), :mod:`igr_tutorial.adam`
(any optax optimizer, Adam's memory correction), :mod:`igr_tutorial.sam` (sharpness-aware minimization) and
:mod:`igr_tutorial.sharpness` (the edge of stability); the gradient flow of ``E + c·‖∇E‖²`` is
:func:`igr_tutorial.flows.penalized_gradient_flow`. Every name the book's chapters import from here
(``from igr_tutorial import optimizers as opt``) keeps working.
"""

from __future__ import annotations

from ._deprecation import deprecated_alias
from ._validate import check_momentum as _check_momentum
from ._validate import check_radius as _check_radius
from .adam import (adam_memory_coefficient, adam_modified_loss, adam_sweep, adam_update_first_order, optax_descent,
                   perturbed_one_norm)
from .flows import penalized_gradient_flow
from .momentum import (flow_matched_velocity, heavy_ball, heavy_ball_spectral_radius, heavy_ball_stability_limit,
                       heavy_ball_update, momentum_effective_lr, momentum_modified_loss,
                       momentum_regularization_strength)
from .sam import sam_descent, sam_gradient, sam_gradient_first_order
from .sharpness import SharpnessTrace, gd_quadratic_exact_rate, gd_quadratic_modified_rate, sharpness_trace

__all__: list[str] = []  # documented in the modules above; nothing is defined here

check_momentum = deprecated_alias(_check_momentum, "igr_tutorial.optimizers.check_momentum",
                                  "a private validator (heavy_ball and the Adam functions check beta themselves)")
check_radius = deprecated_alias(_check_radius, "igr_tutorial.optimizers.check_radius",
                                "a private validator (the SAM functions check rho themselves)")

_REEXPORTED = (adam_memory_coefficient, adam_modified_loss, adam_sweep, adam_update_first_order, optax_descent,
               perturbed_one_norm, penalized_gradient_flow, flow_matched_velocity, heavy_ball,
               heavy_ball_spectral_radius, heavy_ball_stability_limit, heavy_ball_update, momentum_effective_lr,
               momentum_modified_loss, momentum_regularization_strength, sam_descent, sam_gradient,
               sam_gradient_first_order, SharpnessTrace, gd_quadratic_exact_rate, gd_quadratic_modified_rate,
               sharpness_trace)
