"""liquidssm.cpu: fused CPU kernels of the scan primitives, compiled with numba (LLVM).

Optional (pip install 'liquidssm[cpu]'). The kernels (_kernels.py) work on NumPy arrays; the torch
primitives built on them (liquidssm.cpu._torch, torch.library custom ops) are what
LIQUIDSSM_TORCH_IMPL=numba runs, and what `auto` runs for CPU tensors when numba is installed.
Each kernel is compiled on first use (reported apart by benchmarks/cpu_selective_scan.py) and
cached on disk (numba cache=True), so later processes load it.

Implemented, forward and backward (deterministic: per-thread partial sums reduced in a fixed
order): selective_scan with real or complex A (B / C constant, input-dependent or grouped; D,
z, delta_bias, softplus, initial_state, return_last_state), float32 and float64 (bfloat16 /
float16 inputs are computed in float32; complex A in complex64 / complex128), and
liquid_selective_scan at every liquid_degree p (p levels, BL tied or its own, every lcontract),
by one kernel pair (p = 1 is the selective scan);
diag_scan and liquid_scan at every degree, real and complex, forward and reverse, a / c given
per batch entry or broadcast, by a second pair (level_fwd / level_bwd; p = 1 is the diag scan);
the decode step, forward only (float32 / float64; with a gradient to record, the spec's torch
ops run): state_step (selective_state_update and the liquid step at every degree and
lcontract) and mamba_step (the Mamba mixer's whole step, its matrix-vector products included).
The NumPy backend keeps the spec's loops by default (the reference the kernels are checked
against); LIQUIDSSM_NUMPY_IMPL=numba runs its scan primitives on the forward kernels
(liquidssm.cpu._numpy, NumPy arrays in directly).
"""

from __future__ import annotations

import importlib.util

from liquidssm import registry

__all__ = ["available", "PRIMITIVES", "KERNELS"]

#: primitives liquidssm.cpu._torch provides
PRIMITIVES = ("selective_scan", "liquid_selective_scan", "selective_state_update", "diag_scan",
              "liquid_scan")
#: those with a numba kernel (for some arguments): what LIQUIDSSM_TORCH_IMPL=auto picks on CPU
#: (the registry record's `kernels`)
KERNELS = registry.get("torch:numba").kernels


def available() -> bool:
    """True if numba is installed."""
    return importlib.util.find_spec("numba") is not None
