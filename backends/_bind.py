"""Bind the spec's modules to a framework: the spec's functions on framework arrays.

A backend does not re-implement a variant, a block or a model: `bind(spec_module, framework)`
makes the module `liquidssm.<backend>.<name>` whose functions convert parameters, call the spec's
function on framework arrays (the backend's registered fast primitives run inside it), and apply
the dtype policy: bfloat16/float16 inputs compute in float32 (state and accumulation) and the
output is cast back to the input dtype; float32 and float64 compute as given. Models that take
integer tokens (spec `takes_tokens(config)`) compute in, and return, the parameters' dtype.
The input must be an array of the framework's own type (`Framework.array_type`): an array of
another library gets a TypeError naming the argument and the expected type.
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
    array_type: type  # torch.Tensor, jax.Array
    array_type_name: str  # "torch.Tensor", "jax.Array"

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


def check_input(fw: Framework, name: str, x, *, tokens: bool = False) -> None:
    """A TypeError naming `name` unless x is an array of fw's type with a real floating dtype
    (an integer dtype when `tokens`), checked before any cast."""
    if not isinstance(x, fw.array_type):
        what = f"{type(x).__module__}.{type(x).__qualname__}" if x is not None else "None"
        raise TypeError(f"{name}: expected a {fw.array_type_name} (the {fw.name} backend's "
                        f"array type), got {what}")
    kind = str(x.dtype).rsplit(".", 1)[-1]
    if tokens:
        if not kind.startswith(("int", "uint")):
            raise TypeError(f"{name}: expected an integer dtype (token ids), got shape "
                            f"{tuple(x.shape)} and dtype {x.dtype}")
        return
    if not kind.startswith(("float", "bfloat")):
        raise TypeError(f"{name}: expected a real floating dtype (float64, float32, bfloat16 or "
                        f"float16), got shape {tuple(x.shape)} and dtype {x.dtype}")


def _is_data(x) -> bool:
    return isinstance(x, dict) or hasattr(x, "dtype")


def _first_floating(tree):
    for v in (tree.values() if isinstance(tree, dict) else ()):
        found = _first_floating(v) if isinstance(v, dict) else v
        if found is not None and "float" in str(found.dtype):
            return found
    return None


def bind(spec_module, fw: Framework, backend_package: str) -> types.ModuleType:
    """The module `<backend_package>.<name>`: Config, param_shapes, init, forward, step,
    initial_state (and kernel where the spec has one), with the spec's signatures, on `fw`'s
    arrays."""
    short = spec_module.__name__.rsplit(".", 1)[-1]
    mod = types.ModuleType(f"{backend_package}.{short}", spec_module.__doc__)
    mod.Config = spec_module.Config
    if hasattr(spec_module, "param_shapes"):
        mod.param_shapes = spec_module.param_shapes
    takes_tokens = getattr(spec_module, "takes_tokens", lambda config: False)

    def init(config, seed: int = 0, *, dtype=None, device=None):
        """spec.init(config, seed) as framework arrays (default dtype float32)."""
        params = spec_module.init(config, seed)
        return map_arrays(params, lambda a: fw.from_numpy(a, dtype=dtype, device=device))

    def initial_state(config, batch: int, *, dtype=None, device=None):
        """spec.initial_state(config, batch) as framework arrays (complex stays complex)."""
        state = spec_module.initial_state(config, batch)
        return map_arrays(state, lambda a: fw.from_numpy(a, dtype=dtype, device=device))

    def _run(fn, u, args, kwargs):
        config, params = args[0], args[1]
        step = fn is spec_module.step
        if takes_tokens(config):
            check_input(fw, "token" if step else "tokens", u, tokens=True)
            ref = _first_floating(params)
            out_dtype = ref.dtype if ref is not None else u.dtype
        else:
            check_input(fw, "u_t" if step else "u", u)
            out_dtype = u.dtype
        cdt = fw.compute_dtype(out_dtype)
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
        return _run(spec_module.forward, u, [config, params, u], kwargs)

    @functools.wraps(spec_module.step)
    def step(config, params, state, u_t, **kwargs):
        return _run(spec_module.step, u_t, [config, params, state, u_t], kwargs)

    mod.init, mod.initial_state, mod.forward, mod.step = init, initial_state, forward, step
    if hasattr(spec_module, "kernel"):

        @functools.wraps(spec_module.kernel)
        def kernel(config, params, length: int):
            return spec_module.kernel(config, params, length)

        mod.kernel = kernel
    sys.modules[mod.__name__] = mod
    return mod
