"""liquidssm.torch.triton: Triton kernels for the scan primitives (torch tensors).

Same signatures as the spec's primitives (docs/design.md). Each kernel is a torch.library
custom op (namespace `liquidssm::`) with a fake (meta) implementation and an autograd formula, so
torch.compile graphs keep it. Runs on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was
set before triton was imported. Implemented, forward and backward (deterministic: no atomics):
- selective_scan, real A and complex A (_selective_scan.py; complex A as mamba's complex
  selective_scan_ref, complex numbers as (re, im) register pairs; B / C complex or real (d, n),
  or real (b, n, 2l) / (b, g, n, 2l) with (re, im) interleaved along time);
- liquid_selective_scan: liquid_degree = 1 runs the selective scan; liquid_degree >= 2 runs the
  level kernels of _liquid_levels.py (real A; B, C and BL each constant, input-dependent or
  grouped; BL None = tied to B; lcontract none / tanh / lecun; initial / last state (b, p, d, n));
- diag_scan and liquid_scan (real and complex; _level_scan.py);
- selective_state_update (real A; _state_update.py): the kernel is the forward; its gradient
  re-runs the eager step under autograd.
Shared pieces: _host.py (layouts, block sizes, reductions, and the one registration of a chunked
scan's forward / backward custom ops, fakes and autograd) and _jit.py (@triton.jit helpers: the
kernels' prologue, loads and per-step epilogues).
The selective-scan kernels keep the state in registers and write only per-chunk checkpoints.
Not implemented (the spec raises for them too): complex A in liquid_selective_scan (TypeError)
and in selective_state_update.
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


import torch  # noqa: E402
from liquidssm.spec import _checks  # noqa: E402
from liquidssm.spec import selective as _spec  # noqa: E402

from ._host import configure  # noqa: E402
from ._level_scan import diag_scan, liquid_scan  # noqa: E402
from ._liquid_levels import liquid_selective_scan_p  # noqa: E402
from ._selective_scan import selective_scan  # noqa: E402
from ._state_update import selective_state_update  # noqa: E402


def liquid_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_last_state=False, *,
                          liquid_degree=1, BL=None, lcontract="none"):
    """Liquid selective scan (see liquidssm.spec.selective.liquid_selective_scan).

    initial_state / last_state (b, p, d, n). liquid_degree = 1 is the selective scan (BL and
    lcontract unused); liquid_degree >= 2 runs the level kernels (_liquid_levels.py, real A only).
    """
    s = _checks.selective_scan_args(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    initial_state, return_last_state, liquid=True,
                                    liquid_degree=liquid_degree, BL=BL, lcontract=lcontract,
                                    kind="torch.Tensor")
    if s.empty:
        return _spec.liquid_selective_scan.reference(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state,
            liquid_degree=liquid_degree, BL=BL, lcontract=lcontract)
    if liquid_degree > 1:
        return liquid_selective_scan_p(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                       initial_state, return_last_state, liquid_degree, BL,
                                       lcontract, s.forms)
    h0 = None if initial_state is None else initial_state[:, 0]
    res = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0,
                         return_last_state)
    out, last = res if return_last_state else (res, None)
    if BL is not None:  # unused at degree 1: a zero gradient (as eager torch and JAX give)
        out = _zero_grad_for(out, BL)
    return (out, last[:, None]) if return_last_state else out


class _Unused(torch.autograd.Function):
    """(out, x) -> out, with a zero gradient for x (an argument the forward does not use)."""

    @staticmethod
    def forward(ctx, out, x):
        ctx.x_meta = (x.shape, x.dtype, x.device)
        return out.clone()

    @staticmethod
    def backward(ctx, g):
        shape, dtype, device = ctx.x_meta
        return g, torch.zeros(shape, dtype=dtype, device=device)


def _zero_grad_for(out, x):
    """out, with x (unused) an input of zero gradient when it requires one."""
    return _Unused.apply(out, x) if torch.is_grad_enabled() and x.requires_grad else out
