"""The NumPy backend: the specification itself, exposed through the common API.

Arrays are NumPy (float64, or float32: the spec casts parameters and states to u's dtype, so
init's float64 parameters with float32 u return float32); the functions are the spec's, unchanged.
"""

from liquidssm.spec import (  # noqa: F401
    dense_scan,
    diag_scan,
    liquid_mamba,
    liquid_s4,
    liquid_s5,
    liquid_scan,
    liquid_selective_scan,
    mamba,
    mamba_block,
    mamba_lm,
    s4,
    s4_block,
    s4d,
    s5,
    s5_layer,
    selective_scan,
    selective_state_update,
    sequence_model,
)

name = "numpy"
