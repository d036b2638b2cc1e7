"""Backends may replace a spec primitive by a faster implementation for their own array type.

The spec's functions are the reference. `overridable` marks the few primitives (scans, erf) that
a backend registers a fast implementation of; the implementation is chosen by the framework of the
first argument (einops-style dispatch on the array type). With none registered (NumPy,
array-api-strict), the reference runs. `fn.reference` is always the reference itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ._checks import array_kind

_IMPLEMENTATIONS: dict[tuple[str, str], Callable] = {}


def framework_of(x) -> str | None:
    """'torch' or 'jax' for arrays of those frameworks (tracers included), else None."""
    return _FRAMEWORKS.get(array_kind(x))


_FRAMEWORKS = {"torch.Tensor": "torch", "jax.Array": "jax"}


def register(framework: str, name: str, fn: Callable) -> None:
    """Use `fn` for primitive `name` whenever its first argument is a `framework` array."""
    _IMPLEMENTATIONS[(framework, name)] = fn


def registered(framework: str, name: str) -> Callable | None:
    return _IMPLEMENTATIONS.get((framework, name))


def overridable(fn: Callable | None = None, *, on: int = 0, name: str | None = None) -> Callable:
    """Mark `fn` as a primitive that backends may override for their array type: the type of
    its positional argument `on` (0: the first; the decode steps' unchecked state updates,
    whose first argument is the namespace, dispatch on 1), registered under `name` (default
    fn's own)."""
    if fn is None:
        return functools.partial(overridable, on=on, name=name)
    key = name or fn.__name__

    @functools.wraps(fn)
    def dispatch(*args, **kwargs):
        framework = framework_of(args[on]) if len(args) > on else None
        impl = _IMPLEMENTATIONS.get((framework, key)) if framework else None
        return (impl or fn)(*args, **kwargs)

    dispatch.reference = fn
    return dispatch
