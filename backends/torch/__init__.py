"""liquidssm.torch: the spec's variants and primitives on torch tensors (CPU and CUDA).

Variants (`s4d`, `s4`, `liquid_s4`, `s5`, `liquid_s5`, `mamba`, `liquid_mamba`) are the spec's
modules bound to tensors (liquidssm._bind); params are dicts of tensors under the spec's names
(`params_from_spec` / `params_to_spec` convert, as in liquidssm.jax). The primitives are eager
PyTorch with custom backward (scans.py, selective.py; dense.py through autograd), or the Triton /
numba kernels where LIQUIDSSM_TORCH_IMPL chooses them (_impl.py, liquidssm.registry); they are
registered with the spec's dispatch so the variants' recurrences run through them.
"""

from __future__ import annotations

import functools
import importlib

import torch

from .. import BLOCKS, MODELS, VARIANTS
from .._bind import bind
from ..spec import _checks, _common, _dispatch
from ..spec import mamba as _spec_mamba
from ..spec import selective as _spec_selective
from . import scans as _scans
from . import selective as _selective
from ._framework import FRAMEWORK, TorchFramework, params_from_spec, params_to_spec
from ._impl import implementation, primitive
from .dense import dense_scan

name = "torch"



def _with_process_group(fn):
    """fn with the keyword process_group=: None runs fn; a torch.distributed group runs this
    rank's slice of the time axis (liquidssm.torch.parallel, imported on first use)."""

    @functools.wraps(fn)
    def call(*args, process_group=None, **kwargs):
        if process_group is None:
            return fn(*args, **kwargs)
        from . import parallel

        return getattr(parallel, fn.__name__)(fn, *args, group=process_group, **kwargs)

    return call


selective_state_update = primitive("selective_state_update", _selective.selective_state_update)
_dispatch.register("torch", "selective_state_update", selective_state_update)
# the decode steps' unchecked state updates, and Mamba's whole step (on u_t, its 4th argument)
for _name, _ref, _on in (("_state_update", _spec_selective._state_update.reference, 1),
                         ("_liquid_state_update", _spec_selective._liquid_state_update.reference,
                          1), ("mamba_step", _spec_mamba._step.reference, 3)):
    _dispatch.register("torch", _name, primitive(_name, _ref, follows="selective_state_update",
                                                 on=_on))
for _name, _eager in (("diag_scan", _scans.diag_scan), ("liquid_scan", _scans.liquid_scan),
                      ("selective_scan", _selective.selective_scan),
                      ("liquid_selective_scan", _selective.liquid_selective_scan)):
    globals()[_name] = _with_process_group(primitive(_name, _eager))
    _dispatch.register("torch", _name, globals()[_name])  # what the variants call
_dispatch.register("torch", "erf", torch.special.erf)
# the same functions as spec.nn's (same definitions: softplus is x above its threshold), one
# fused torch call each instead of several array ops (what the decode step mostly runs)
_dispatch.register("torch", "sigmoid", torch.sigmoid)
_dispatch.register("torch", "silu", torch.nn.functional.silu)
_dispatch.register("torch", "softplus", lambda x, threshold=20.0: torch.nn.functional.softplus(
    x, beta=1.0, threshold=threshold))
_dispatch.register("torch", "linear", torch.nn.functional.linear)
#: no Triton kernel: chunked-doubling eager torch under every LIQUIDSSM_TORCH_IMPL (dense.py)
_dispatch.register("torch", "dense_scan", dense_scan)


#: the spec's namespace and array-type lookups become dict reads for tensors and parameters from
#: here on, also when the first call is inside torch.compile (dynamo does not trace
#: array_api_compat's lru_cache-wrapped helpers: it warns about every one it meets)
for _t in (torch.empty(0), torch.nn.Parameter(torch.empty(0))):
    _common.namespace(_t), _checks.array_kind(_t)

for _name in (*VARIANTS, *BLOCKS, *MODELS):
    globals()[_name] = bind(importlib.import_module(f"liquidssm.spec.{_name}"), FRAMEWORK,
                            __name__)

__all__ = [
    "name", "TorchFramework", "FRAMEWORK", "params_from_spec", "params_to_spec", "implementation",
    "diag_scan", "liquid_scan", "dense_scan", "selective_scan", "selective_state_update",
    "liquid_selective_scan",
    *VARIANTS, *BLOCKS, *MODELS,
]


def __getattr__(attr):
    """liquidssm.torch.nn (the nn.Module classes) is imported on first use."""
    if attr == "nn":
        return importlib.import_module(f"{__name__}.nn")
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
