"""The package's errors: each says what went wrong and what to do about it.

* :class:`DivergenceError`: an iteration (gradient descent, momentum, SGD, SAM, training) produced non-finite
  parameters, past its stability limit (chapter 1);
* :class:`FlowError`: the adaptive ODE solver could not integrate a flow over the requested times;
* :class:`NotConvergedError`: an iterative eigenvalue estimate (Lanczos) did not reach its tolerance.

All three are ``ValueError`` subclasses, as they were when the package defined them in ``flows`` and ``curvature``
(which still export them).
"""

from __future__ import annotations

__all__ = ["DivergenceError", "FlowError", "NotConvergedError"]


class DivergenceError(ValueError):
    """Gradient descent produced non-finite parameters (the step size is past the stability limit)."""


class FlowError(ValueError):
    """The ODE solver could not integrate a flow over the requested times."""


class NotConvergedError(ValueError):
    """An iterative eigenvalue estimate did not reach its tolerance within its iteration cap."""
