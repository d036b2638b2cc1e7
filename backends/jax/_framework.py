"""JaxFramework: how the spec's variants are bound to jax arrays (see liquidssm._bind).

dtype policy: NumPy floating arrays become float32 (complex64) unless a dtype is given;
float64 (complex128) needs jax x64 enabled (`jax.config.update("jax_enable_x64", True)`).
bfloat16 / float16 inputs compute in float32. Non-floating arrays are never cast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._bind import map_arrays
from ..spec._common import register_int_reader

__all__ = ["JaxFramework", "FRAMEWORK", "x64_enabled", "params_from_spec", "params_to_spec"]


def x64_enabled() -> bool:
    return bool(jax.config.jax_enable_x64)


def _complex_of(real_dtype):
    return jnp.complex128 if jnp.dtype(real_dtype) == jnp.float64 else jnp.complex64


class JaxFramework:
    name = "jax"
    array_type = jax.Array  # tracers under jit / grad are jax.Array instances too
    array_type_name = "jax.Array"

    def from_numpy(self, x, *, dtype=None, device=None):
        """x as a jax array; floating x in `dtype` (default float32; complex x in the complex
        dtype of that precision). float64 is refused unless x64 is enabled."""
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact):
            real = jnp.dtype(jnp.float32 if dtype is None else dtype)
            if not jnp.issubdtype(real, jnp.floating):
                raise TypeError(f"dtype: expected a real floating dtype, got {dtype!r}")
            if real == jnp.float64 and not x64_enabled():
                raise TypeError(
                    "dtype: expected float32, bfloat16 or float16 (float64 needs "
                    "jax.config.update('jax_enable_x64', True)), got float64"
                )
            target = _complex_of(real) if np.iscomplexobj(x) else real
            out = jnp.asarray(x, dtype=target)
        else:
            out = jnp.asarray(x)
        return out if device is None else jax.device_put(out, device)

    def to_numpy(self, x):
        """A NumPy array; floating arrays as float64, complex as complex128."""
        a = np.asarray(jax.device_get(x))
        if np.iscomplexobj(a):
            return a.astype(np.complex128)
        if jnp.issubdtype(a.dtype, jnp.floating):  # includes bfloat16 (ml_dtypes)
            return a.astype(np.float64)
        return a

    def compute_dtype(self, dtype):
        """float32 for bfloat16 / float16; other dtypes unchanged."""
        dtype = jnp.dtype(dtype)
        return jnp.dtype(jnp.float32) if dtype in (jnp.bfloat16, jnp.float16) else dtype

    def cast(self, x, real_dtype):
        """x in `real_dtype` (complex x in the complex dtype of that precision); non-floating
        arrays unchanged."""
        if jnp.issubdtype(x.dtype, jnp.complexfloating):
            return x.astype(_complex_of(real_dtype))
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(real_dtype)
        return x


FRAMEWORK = JaxFramework()


def _int_bounds(x):
    """(min, max) of a concrete CPU array (None for tracers under jit / grad / vmap)."""
    if isinstance(x, jax.core.Tracer) or x.size == 0:
        return None
    if any(d.platform != "cpu" for d in x.devices()):
        return None
    v = np.asarray(x)
    return int(v.min()), int(v.max())


register_int_reader(jax.Array, _int_bounds)


def params_from_spec(params, *, dtype=None, device=None):
    """A dict of spec (NumPy) parameters / states as jax arrays (default float32)."""
    return map_arrays(params, lambda a: FRAMEWORK.from_numpy(a, dtype=dtype, device=device))


def params_to_spec(params):
    """A dict of jax arrays as NumPy float64 / complex128 arrays (the spec's form)."""
    return map_arrays(params, FRAMEWORK.to_numpy)
