"""Renamed public names and arguments keep working for one release, with a ``DeprecationWarning`` that names the new
spelling (the CHANGELOG lists every one)."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable


def renamed_arguments(**renames: str) -> Callable[[Callable], Callable]:
    """Accept the old keyword ``old=`` of a function as its new name ``renames[old]``, with a warning."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {old}= and its new name {new}=; pass {new}= only.")
                    warnings.warn(f"{fn.__name__}(): the argument {old}= is now called {new}= (optax's name); {old}= "
                                  "will be removed in a later release.", DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def deprecated_alias(fn: Callable, old: str, new: str) -> Callable:
    """``fn`` under its old public name ``old``, warning that it is now ``new`` (or private)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"{old} is {new}; the old name will be removed in a later release.", DeprecationWarning,
                      stacklevel=2)
        return fn(*args, **kwargs)

    wrapper.__name__ = wrapper.__qualname__ = old.rsplit(".", 1)[-1]
    wrapper.__doc__ = f"Deprecated: {new}."
    return wrapper
