"""The package's errors: each says what went wrong and what to do about it.

* :class:`DivergenceError`: an iteration (gradient descent, momentum, SGD, SAM, training) produced non-finite
  parameters, past its stability limit (chapter 1);
* :class:`FlowError`: the adaptive ODE solver could not integrate a flow over the requested times;
* :class:`NotConvergedError`: an iterative eigenvalue estimate (Lanczos) did not reach its tolerance;
* :class:`ArgumentTypeError`: an argument of the wrong type (a float where an integer is meant, a string, an array
  where one number is meant).

All three are ``ValueError`` subclasses, as they were when the package defined them in ``flows`` and ``curvature``
(which still export them).
"""

from __future__ import annotations

__all__ = ["ArgumentTypeError", "DivergenceError", "FlowError", "NotConvergedError"]


class DivergenceError(ValueError):
    """Gradient descent produced non-finite parameters (the step size is past the stability limit)."""


class FlowError(ValueError):
    """The ODE solver could not integrate a flow over the requested times."""


class NotConvergedError(ValueError):
    """An iterative eigenvalue estimate did not reach its tolerance within its iteration cap."""


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. A ``TypeError``, as Python's own; also a ``ValueError``, which the package
    raised for these before version 0.2, so that code written against it keeps catching them."""
