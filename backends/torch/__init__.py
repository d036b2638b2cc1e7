"""liquidssm.torch: the spec's variants and primitives on torch tensors (CPU and CUDA).

Variants (`s4d`, `s4`, `liquid_s4`, `s5`, `liquid_s5`, `mamba`, `liquid_mamba`) are the spec's
modules bound to tensors (liquidssm._bind); params are dicts of tensors under the spec's names
(`to_params` / `from_params` convert). The primitives are eager PyTorch with custom backward
(scans.py, selective.py; dense.py through autograd), or Triton kernels where LIQUIDSSM_TORCH_IMPL
chooses them (_impl.py); they are registered with the spec's dispatch so the variants' recurrences
run through them.
"""

from __future__ import annotations

import importlib

import torch

from .. import VARIANTS
from .._bind import bind_variant
from ..spec import _dispatch
from . import modules as nn  # noqa: F401  (nn.Module classes: liquidssm.torch.nn.S4D, ...)
from . import scans as _scans
from . import selective as _selective
from ._framework import FRAMEWORK, TorchFramework, from_params, to_params
from ._impl import implementation, primitive
from .dense import dense_scan

name = "torch"

diag_scan = primitive("diag_scan", _scans.diag_scan)
liquid_scan = primitive("liquid_scan", _scans.liquid_scan)
selective_scan = primitive("selective_scan", _selective.selective_scan)
selective_state_update = primitive("selective_state_update", _selective.selective_state_update)
liquid_selective_scan = primitive("liquid_selective_scan", _selective.liquid_selective_scan)

for _name in ("diag_scan", "liquid_scan", "selective_scan", "selective_state_update",
              "liquid_selective_scan"):
    _dispatch.register("torch", _name, globals()[_name])
_dispatch.register("torch", "erf", torch.special.erf)
#: no Triton kernel: chunked-doubling eager torch under every LIQUIDSSM_TORCH_IMPL (dense.py)
_dispatch.register("torch", "dense_scan", dense_scan)


def _bind(variant):
    """liquidssm.torch.<variant>, or None while the spec module does not exist yet."""
    try:
        spec_module = importlib.import_module(f"liquidssm.spec.{variant}")
    except ModuleNotFoundError as err:
        if err.name != f"liquidssm.spec.{variant}":
            raise
        return None
    return bind_variant(spec_module, FRAMEWORK, __name__)


for _variant in VARIANTS:
    _module = _bind(_variant)
    if _module is not None:
        globals()[_variant] = _module

__all__ = [
    "name", "TorchFramework", "FRAMEWORK", "to_params", "from_params", "implementation",
    "diag_scan", "liquid_scan", "dense_scan", "selective_scan", "selective_state_update",
    "liquid_selective_scan",
    *[v for v in VARIANTS if v in globals()],
]
