"""liquidssm.jax: the spec's variants and primitives on jax arrays.

Variant modules (s4d, s4, liquid_s4, s5, liquid_s5, mamba, liquid_mamba) are the spec's functions
bound to jax arrays (liquidssm._bind); params are dicts of jax arrays under the spec's names
(`params_from_spec` / `params_to_spec` convert). Every recurrence runs through this package's
primitives, registered with the spec's dispatch for jax arrays (tracers included), so every
forward / step is jax.jit-able (config static), jax.grad-able and vmap-friendly.
Scan strategy: LIQUIDSSM_JAX_SCAN = auto | sequential | associative | chunked | pallas
(scan_strategy(); pallas: the Pallas kernels of liquidssm.jax.pallas, docs/pallas.md).
"""

from __future__ import annotations

import importlib

import jax.scipy.special
from liquidssm import BLOCKS, MODELS
from liquidssm._bind import bind
from liquidssm.spec import _dispatch

from ..spec import VARIANTS  # the one list of variants
from ._decode import selective_state_update
from ._framework import FRAMEWORK, JaxFramework, params_from_spec, params_to_spec
from .dense import dense_scan
from .scans import diag_scan, liquid_scan, scan_strategy
from .selective import liquid_selective_scan, selective_scan

__all__ = [
    "name", "FRAMEWORK", "JaxFramework", "scan_strategy", "params_from_spec", "params_to_spec",
    "diag_scan", "liquid_scan", "dense_scan", "selective_scan", "selective_state_update",
    "liquid_selective_scan", "VARIANTS",
]

name = "jax"
for _name, _fn in (
    ("diag_scan", diag_scan),
    ("liquid_scan", liquid_scan),
    ("dense_scan", dense_scan),
    ("selective_scan", selective_scan),
    ("selective_state_update", selective_state_update),
    ("liquid_selective_scan", liquid_selective_scan),
    ("erf", jax.scipy.special.erf),
):
    _dispatch.register("jax", _name, _fn)


def __getattr__(attr):
    """Variant modules are bound on first access (the spec modules are imported then)."""
    if attr in VARIANTS or attr in BLOCKS or attr in MODELS:
        mod = bind(importlib.import_module(f"liquidssm.spec.{attr}"), FRAMEWORK, __name__)
        globals()[attr] = mod
        return mod
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
