"""igr_tutorial: the JAX package behind the executable book on Implicit Gradient Regularization.

Barrett & Dherin (ICLR 2021): gradient descent with step ``h`` follows the flow of the modified loss
``E + (h/4)·‖∇E‖²`` more closely than the gradient flow of ``E``.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .analysis import convergence_order, global_error, trajectory_error
from .curvature import (
    NotConvergedError,
    TopEigenResult,
    hessian_top_eigenvalue,
    hessian_trace,
    hvp,
    third_derivative_contraction,
)
from .flows import (
    DivergenceError,
    FlowError,
    first_nonfinite_step,
    gradient_descent,
    gradient_descent_sweep,
    gradient_flow,
    modified_flow,
    modified_vector_field,
)
from .modified import gradient_norm_squared, implicit_regularization_strength, modified_loss, r_ig
from .tree import num_parameters, tree_sq_norm, tree_vdot

try:
    __version__ = _version("igr-tutorial")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "DivergenceError",
    "FlowError",
    "NotConvergedError",
    "TopEigenResult",
    "convergence_order",
    "first_nonfinite_step",
    "global_error",
    "gradient_descent",
    "gradient_descent_sweep",
    "gradient_flow",
    "gradient_norm_squared",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hvp",
    "implicit_regularization_strength",
    "modified_flow",
    "modified_loss",
    "modified_vector_field",
    "num_parameters",
    "r_ig",
    "third_derivative_contraction",
    "trajectory_error",
    "tree_sq_norm",
    "tree_vdot",
]
