"""selective_state_update (real A) on a Triton kernel, as a torch.library custom op: the kernel
is the forward; its gradient re-runs the eager step under autograd."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from liquidssm.spec import _checks
from liquidssm.spec import selective as _spec

from ._host import CONFIG, check_device, compute, grid, next_pow2, or_dummy
from ._jit import load_opt, softplus


@triton.jit
def state_update_kernel(
    s_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ns_ptr,
    DIM, NS, GSB, GB, GSC, GC,
    BD: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    CD: tl.constexpr,
):
    """new_state = exp(Delta A) state + Delta B x; out = (C . new_state + D x) silu(z).
    One program per (batch, block of BD channels); x, dt, z (b, d); state (b, d, n)."""
    pb = tl.program_id(0)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = dd < DIM
    nn = tl.arange(0, NP)
    m2 = dmask[:, None] & (nn < NS)[None, :]
    st = (pb * DIM + dd[:, None]) * NS + nn[None, :]
    dl = load_opt(dt_ptr, pb * DIM + dd, dmask, True, CD)
    if HAS_BIAS:
        dl = dl + load_opt(bias_ptr, dd, dmask, True, CD)
    if SOFTPLUS:
        dl = softplus(dl)
    x = load_opt(x_ptr, pb * DIM + dd, dmask, True, CD)
    A = load_opt(A_ptr, dd[:, None] * NS + nn[None, :], m2, True, CD)
    Bv = load_opt(B_ptr, (pb * GB + dd[:, None] // GSB) * NS + nn[None, :], m2, True, CD)
    Cv = load_opt(C_ptr, (pb * GC + dd[:, None] // GSC) * NS + nn[None, :], m2, True, CD)
    s = load_opt(s_ptr, st, m2, True, CD)
    s = tl.exp(dl[:, None] * A) * s + (dl * x)[:, None] * Bv
    tl.store(ns_ptr + st, s, mask=m2)
    y = tl.sum(Cv * s, axis=1)
    if HAS_D:
        y = y + load_opt(D_ptr, dd, dmask, True, CD) * x
    if HAS_Z:
        z = load_opt(z_ptr, pb * DIM + dd, dmask, True, CD)
        y = y * z * tl.sigmoid(z)
    tl.store(out_ptr + pb * DIM + dd, y.to(out_ptr.dtype.element_ty), mask=dmask)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """One decode step (real A); see liquidssm.spec.selective.selective_state_update.

    state (b, d, n); x, dt, z (b, d); A (d, n); B, C (b, n) | (b, g, n); D, dt_bias (d,).
    Returns (out (b, d) in x's dtype, new_state (b, d, n) in the compute dtype); no input is
    modified. The kernel is the forward; gradients re-run the eager step under autograd.
    """
    s = _checks.selective_state_update_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus,
                                            kind="torch.Tensor")
    if s.empty:
        return _spec.selective_state_update.reference(state, x, dt, A, B, C, D, z, dt_bias,
                                                      dt_softplus)
    check_device(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    args = [t if t is None else t.contiguous()
            for t in (state, x, dt, A, B, C, D, z, dt_bias)]
    return _update(*args, dt_softplus, s.groups[0], s.groups[1])


@torch.library.custom_op("liquidssm::selective_state_update", mutates_args=())
def _update(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
            B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
            dt_bias: torch.Tensor | None, dt_softplus: bool, groups_b: int, groups_c: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    b, d = x.shape
    n = A.shape[1]
    cdt, tcd = compute(x.dtype)
    out = torch.empty_like(x)
    new_state = torch.empty((b, d, n), dtype=cdt, device=x.device)
    bd = min(CONFIG["block_d"] * 4, next_pow2(d))
    state_update_kernel[grid(b, d, bd)](
        state, x, dt, A, B, C, *or_dummy(x, D, z, dt_bias), out, new_state,
        d, n, d // groups_b, groups_b, d // groups_c, groups_c, BD=bd, NP=next_pow2(n),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=dt_softplus, CD=tcd,
    )
    return out, new_state


@_update.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, groups_b, groups_c):
    b, d = x.shape
    cdt, _ = compute(x.dtype)
    return torch.empty_like(x), x.new_empty((b, d, A.shape[1]), dtype=cdt)


def _update_setup(ctx, inputs, output):
    *tensors, ctx.dt_softplus, _groups_b, _groups_c = inputs
    ctx.present = [t is not None for t in tensors]
    ctx.save_for_backward(*[t for t in tensors if t is not None])


def _update_backward(ctx, dout, dstate):
    """vjp of one decode step: the eager step (liquidssm.torch.selective) re-run under autograd.
    A step costs O(b d n) and runs once per token, so its gradient needs no kernel of its own."""
    from ..selective import selective_state_update as eager

    saved = iter(ctx.saved_tensors)
    with torch.enable_grad():
        leaves = [next(saved).detach().requires_grad_() if p else None for p in ctx.present]
        out, new_state = eager(*leaves, dt_softplus=ctx.dt_softplus)
        cots = [torch.zeros_like(o) if g is None else g
                for o, g in ((out, dout), (new_state, dstate))]
        grads = iter(torch.autograd.grad((out, new_state), [t for t in leaves if t is not None],
                                         cots, allow_unused=True))
    return (*[next(grads) if p else None for p in ctx.present], None, None, None)


_update.register_autograd(_update_backward, setup_context=_update_setup)
