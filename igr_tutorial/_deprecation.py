"""Renamed public names and arguments keep working for one release, with a ``DeprecationWarning`` that names the new
spelling (the CHANGELOG lists every one)."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable


def renamed_arguments(why: str = "optax's name", **renames: str) -> Callable[[Callable], Callable]:
    """Accept the old keyword ``old=`` of a function as its new name ``renames[old]``, with a warning that says
    ``why``."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {old}= and its new name {new}=; pass {new}= only.")
                    warnings.warn(f"{fn.__name__}(): the argument {old}= is now called {new}= ({why}); {old}= "
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


def keyword_only(count: int, *names: str) -> Callable[[Callable], Callable]:
    """Accept, for one release, the arguments ``names`` (now keyword-only, after the first ``count``) passed by
    position as before, with a warning that names the keywords."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > count:
                extra = args[count:]
                if len(extra) > len(names):
                    raise TypeError(f"{fn.__name__}() takes {count} positional arguments, then keywords "
                                    f"{', '.join(n + '=' for n in names)}; got {len(args)} positional arguments.")
                moved = names[:len(extra)]
                for name in moved:
                    if name in kwargs:
                        raise TypeError(f"{fn.__name__}() got {name} both by position and as {name}=.")
                warnings.warn(f"{fn.__name__}(): pass {', '.join(n + '=' for n in moved)} by keyword; passing them by "
                              "position will stop working in a later release.", DeprecationWarning, stacklevel=2)
                kwargs.update(zip(moved, extra))
                args = args[:count]
            return fn(*args, **kwargs)

        return wrapper

    return decorate
