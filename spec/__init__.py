"""liquidssm.spec: the NumPy / array-API reference that defines every variant's mathematics.

Variants are modules (`liquidssm.spec.s4d`, ...), each with Config, init, forward, step,
initial_state (and kernel for the convolutional ones); so are the blocks around them
(s4_block, s5_layer, mamba_block; liquid_mamba is its own block) and the models
(sequence_model, mamba_lm). Primitives are functions: diag_scan, liquid_scan, dense_scan
(scan.py); selective_scan, selective_state_update, selective_scan_vjp, liquid_selective_scan
(selective.py). See spec/README.md for the equations.
"""

import importlib

SPEC_VERSION = "0.1.0"

VARIANTS = ("s4d", "s4", "liquid_s4", "s5", "liquid_s5", "mamba", "liquid_mamba")
#: the composition layer: blocks around the variants and whole models, with the variant
#: interface (Config, param_shapes, init, initial_state, forward, step)
BLOCKS = ("s4_block", "s5_layer", "mamba_block")
MODELS = ("sequence_model", "mamba_lm")

#: the primitives every backend exports (the vjps below are the spec's own)
PRIMITIVES = ("diag_scan", "liquid_scan", "dense_scan", "selective_scan",
              "selective_state_update", "liquid_selective_scan")
_PRIMITIVES = {
    "diag_scan": "scan",
    "liquid_scan": "scan",
    "dense_scan": "scan",
    "selective_scan": "selective",
    "selective_state_update": "selective",
    "selective_scan_vjp": "selective",
    "liquid_selective_scan": "selective",
    "liquid_selective_scan_vjp": "selective",
}

__all__ = ["SPEC_VERSION", "VARIANTS", "BLOCKS", "MODELS", "PRIMITIVES", *VARIANTS, *BLOCKS,
           *MODELS, *_PRIMITIVES]


def __getattr__(name):
    if name in VARIANTS or name in BLOCKS or name in MODELS:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _PRIMITIVES:
        return getattr(importlib.import_module(f"{__name__}.{_PRIMITIVES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
