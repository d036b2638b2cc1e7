"""The torch side of the spec binding: NumPy <-> tensor conversion and the dtype policy."""

from __future__ import annotations

import numpy as np
import torch

from .._bind import map_arrays
from ..spec._common import register_int_reader

__all__ = ["TorchFramework", "FRAMEWORK", "params_from_spec", "params_to_spec"]

_LOW = (torch.bfloat16, torch.float16)


def _complex_of(real_dtype):
    """complex128 for float64, complex64 for every other real dtype (no complex bf16/fp16)."""
    return torch.complex128 if real_dtype == torch.float64 else torch.complex64


class TorchFramework:
    """`Framework` (liquidssm._bind) for torch tensors."""

    name = "torch"
    array_type = torch.Tensor
    array_type_name = "torch.Tensor"

    def from_numpy(self, x, *, dtype=None, device=None):
        """Tensor from a NumPy array: real floating -> `dtype` (default float32), complex -> the
        complex dtype of that precision, integer/bool arrays unchanged."""
        arr = np.asarray(x)
        t = torch.as_tensor(arr, device=device)
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype: expected a torch.dtype or None, got {dtype!r}")
        real = torch.float32 if dtype is None else dtype
        if np.iscomplexobj(arr):
            return t.to(real if real.is_complex else _complex_of(real))
        if arr.dtype.kind == "f":
            return t.to(real)
        return t

    def to_numpy(self, x) -> np.ndarray:
        """float64 / complex128 NumPy array (other dtypes unchanged), detached, on the host."""
        t = x.detach().cpu().resolve_conj()
        if t.is_complex():
            return t.to(torch.complex128).numpy()
        if t.is_floating_point():
            return t.to(torch.float64).numpy()
        return t.numpy()

    def compute_dtype(self, dtype):
        """float32 for bfloat16/float16, else `dtype`."""
        return torch.float32 if dtype in _LOW else dtype

    def cast(self, x, real_dtype):
        """x in `real_dtype` (complex x: the complex dtype of that precision; others unchanged)."""
        if not isinstance(x, torch.Tensor):
            return x
        if x.is_complex():
            return x.to(_complex_of(real_dtype))
        if x.is_floating_point():
            return x.to(real_dtype)
        return x


FRAMEWORK = TorchFramework()


def _int_bounds(x):
    """(min, max) of a CPU tensor outside torch.compile (no device sync, no graph break)."""
    if x.device.type != "cpu" or torch.compiler.is_compiling() or x.numel() == 0:
        return None
    return int(x.min()), int(x.max())


register_int_reader(torch.Tensor, _int_bounds)


def params_from_spec(params, *, dtype=None, device=None):
    """A dict of spec (NumPy) parameters / states (nested allowed) as tensors (default
    float32)."""
    return map_arrays(params, lambda a: FRAMEWORK.from_numpy(a, dtype=dtype, device=device))


def params_to_spec(params):
    """A dict of tensors as NumPy float64 / complex128 arrays (the spec's form)."""
    return map_arrays(params, FRAMEWORK.to_numpy)
