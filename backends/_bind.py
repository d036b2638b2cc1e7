"""Bind the spec's variant modules to a framework: the spec's functions on framework arrays.

A backend does not re-implement a variant: `bind_variant(spec_module, framework)` makes the module
`liquidssm.<backend>.<variant>` whose functions convert parameters, call the spec's function on
framework arrays (the backend's registered fast primitives run inside it), and apply the dtype
policy: bfloat16/float16 inputs compute in float32 (state and accumulation) and the output is cast
back to the input dtype; float32 and float64 compute as given.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any, Protocol

import numpy as np


class Framework(Protocol):
    """What a backend supplies to bind the spec (see liquidssm.torch / liquidssm.jax)."""

    name: str  # "torch", "jax"

    def from_numpy(self, x: np.ndarray, *, dtype: Any = None, device: Any = None) -> Any:
        """A framework array from a NumPy array (complex arrays keep a complex dtype)."""

    def to_numpy(self, x: Any) -> np.ndarray:
        """A NumPy array (float64 / complex128 where the input is floating)."""

    def compute_dtype(self, dtype: Any) -> Any:
        """The real dtype computations run in for inputs of `dtype` (float32 for bf16/fp16)."""

    def cast(self, x: Any, real_dtype: Any) -> Any:
        """x in `real_dtype` (complex arrays go to the complex dtype of that precision)."""


def map_arrays(tree, fn):
    """Apply fn to every array in a dict (nested dicts allowed); None stays None."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: map_arrays(v, fn) for k, v in tree.items()}
    return fn(tree)


def _check_floating(name: str, x) -> None:
    """A TypeError naming `name` unless x has a real floating dtype (before any cast to it)."""
    if not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if not str(x.dtype).rsplit(".", 1)[-1].startswith(("float", "bfloat")):
        raise TypeError(f"{name}: expected a real floating dtype (float64, float32, bfloat16 or "
                        f"float16), got shape {tuple(x.shape)} and dtype {x.dtype}")


def _is_data(x) -> bool:
    return isinstance(x, dict) or hasattr(x, "dtype")


def bind_variant(spec_module, fw: Framework, backend_package: str) -> types.ModuleType:
    """The module `<backend_package>.<variant>`: Config, init, forward, step, initial_state (and
    kernel where the spec has one), with the spec's signatures, on `fw`'s arrays."""
    short = spec_module.__name__.rsplit(".", 1)[-1]
    mod = types.ModuleType(f"{backend_package}.{short}", spec_module.__doc__)
    mod.Config = spec_module.Config

    def init(config, seed: int = 0, *, dtype=None, device=None):
        """spec.init(config, seed) as framework arrays (default dtype float32)."""
        params = spec_module.init(config, seed)
        return map_arrays(params, lambda a: fw.from_numpy(a, dtype=dtype, device=device))

    def initial_state(config, batch: int, *, dtype=None, device=None):
        """spec.initial_state(config, batch) as framework arrays (complex stays complex)."""
        state = spec_module.initial_state(config, batch)
        return map_arrays(state, lambda a: fw.from_numpy(a, dtype=dtype, device=device))

    def _run(fn, u, args, kwargs, out_dtype):
        _check_floating("u_t" if fn is spec_module.step else "u", u)
        cdt = fw.compute_dtype(u.dtype)
        cast = lambda a: fw.cast(a, cdt) if hasattr(a, "dtype") else a  # noqa: E731
        args = [map_arrays(a, cast) if _is_data(a) else a for a in args]
        kwargs = {k: map_arrays(v, cast) if _is_data(v) else v for k, v in kwargs.items()}
        out = fn(*args, **kwargs)
        if cdt == out_dtype:
            return out
        if isinstance(out, tuple):  # (y, state): only y returns to the input dtype
            return (fw.cast(out[0], out_dtype),) + out[1:]
        return fw.cast(out, out_dtype)

    @functools.wraps(spec_module.forward)  # the spec's signature and docstring
    def forward(config, params, u, **kwargs):
        return _run(spec_module.forward, u, [config, params, u], kwargs, u.dtype)

    @functools.wraps(spec_module.step)
    def step(config, params, state, u_t, **kwargs):
        return _run(spec_module.step, u_t, [config, params, state, u_t], kwargs, u_t.dtype)

    mod.init, mod.initial_state, mod.forward, mod.step = init, initial_state, forward, step
    if hasattr(spec_module, "kernel"):

        @functools.wraps(spec_module.kernel)
        def kernel(config, params, length: int):
            return spec_module.kernel(config, params, length)

        mod.kernel = kernel
    sys.modules[mod.__name__] = mod
    return mod
