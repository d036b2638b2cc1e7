"""liquidssm.torch.triton: Triton kernels for the scan primitives (torch tensors).

Same signatures as the spec's primitives (docs/design.md). Each kernel is a torch.library
custom op (namespace `liquidssm::`) with a fake (meta) implementation and an autograd formula, so
torch.compile graphs keep it. Runs on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was
set before triton was imported. Implemented: selective_scan (real A, forward and backward),
diag_scan and liquid_scan (real and complex, forward and backward), selective_state_update
(forward), liquid_selective_scan with liquid_degree=1. Not implemented (NotImplementedError):
complex A in the selective scans, liquid_selective_scan with liquid_degree > 1.
"""

from __future__ import annotations

import importlib.util
import os

__all__ = [
    "available",
    "configure",
    "diag_scan",
    "liquid_scan",
    "selective_scan",
    "liquid_selective_scan",
    "selective_state_update",
]


def available() -> bool:
    """True if triton is installed and can run here (a CUDA device, or TRITON_INTERPRET=1)."""
    if importlib.util.find_spec("triton") is None:
        return False
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return True
    import torch

    return torch.cuda.is_available()


from ._common import configure  # noqa: E402
from ._scan import diag_scan, liquid_scan  # noqa: E402
from ._selective import selective_scan, selective_state_update  # noqa: E402


def liquid_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_last_state=False, *,
                          liquid_degree=1, BL=None, lcontract="none"):
    """Liquid selective scan (see liquidssm.spec.selective.liquid_selective_scan).

    initial_state / last_state (b, p, d, n). Only liquid_degree = 1 (the selective scan, with
    BL and lcontract unused) runs on Triton; degree > 1 raises NotImplementedError.
    """
    import torch

    if isinstance(liquid_degree, bool) or not isinstance(liquid_degree, int) or liquid_degree < 1:
        raise ValueError(f"liquid_degree: expected an int >= 1, got {liquid_degree!r}")
    if lcontract not in ("none", "tanh", "lecun"):
        raise ValueError(f"lcontract: expected one of ['none', 'tanh', 'lecun'], got {lcontract!r}")
    if liquid_degree > 1:
        raise NotImplementedError(
            f"liquid_degree: the Triton liquid_selective_scan supports liquid_degree=1 only, got "
            f"{liquid_degree} (the degree-p level kernels are not written yet); use the eager "
            "torch backend (LIQUIDSSM_TORCH_IMPL=eager)"
        )
    h0 = initial_state
    if h0 is not None:
        if not isinstance(h0, torch.Tensor) or h0.dim() != 4 or h0.shape[1] != 1:
            raise ValueError(f"initial_state: expected shape (batch, 1, d, n), got "
                             f"{getattr(h0, 'shape', type(h0).__name__)}")
        h0 = h0[:, 0]
    res = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0,
                         return_last_state)
    if return_last_state:
        return res[0], res[1][:, None]
    return res
