"""selective_scan / selective_state_update on the Triton kernels, as torch.library custom ops."""

from __future__ import annotations

import math

import torch
from liquidssm.spec import _checks
from liquidssm.spec import selective as _spec

from . import _selective_kernels as K
from ._common import (
    CONFIG,
    check_device,
    dummy,
    next_pow2,
    pow2_divisor,
    register_scan_autograd,
)

_TORCH = "torch.Tensor"  # the array type the checks (liquidssm.spec._checks) require


def _compute(dtype):
    """(torch, triton) compute dtypes: float64 for float64 inputs, else float32."""
    import triton.language as tl

    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _layout(X, form, d):
    """A checked B / C / BL of `form` (liquidssm.spec._checks) -> (contiguous tensor, channels per
    group, form name)."""
    gs = 1 if form[0] == "const" else d if form[0] == "var" else d // form[1]
    return X.contiguous(), gs, form[0]


def _block_d(d, *forms):
    """Channels per program: a power of two dividing d and the group size of every
    input-dependent B / C / BL; forms are (group size, form) pairs from _bc."""
    m = d
    for gs, form in forms:
        if form != "const":
            m = math.gcd(m, gs)
    return pow2_divisor(m, CONFIG["block_d"])


# ------------------------------------------------------------------------------------------------
# custom ops


@torch.library.custom_op("liquidssm::selective_scan_fwd", mutates_args=())
def _fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
         C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
         delta_bias: torch.Tensor | None, initial_state: torch.Tensor | None,
         delta_softplus: bool, gsb: int, gsc: int, chunk: int, block_d: int, save: bool
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, d, l = u.shape
    n = A.shape[1]
    cdt, tcd = _compute(u.dtype)
    nchunk = -(-l // chunk)
    out = torch.empty_like(u)
    hlast = torch.empty((b, d, n), dtype=cdt, device=u.device)
    ck = torch.empty((b, d, nchunk, n) if save else (1,), dtype=cdt, device=u.device)
    sb, sc = _strides(B, gsb, n, l), _strides(C, gsc, n, l)
    ph = dummy(u)
    K.selective_fwd_kernel[K.grid(b, d, block_d)](
        u, delta, A, B, C, _or(D, ph), _or(z, ph), _or(delta_bias, ph), _or(initial_state, ph),
        out, hlast, ck, l, d, n, gsb, gsc, nchunk, *sb, *sc,
        BD=block_d, NP=next_pow2(n), T=chunk, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        HAS_H0=initial_state is not None, SAVE_CK=save, CD=tcd,
    )
    return out, hlast, ck


@_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, gsb, gsc, chunk,
      block_d, save):
    b, d, l = u.shape
    n = A.shape[1]
    cdt, _ = _compute(u.dtype)
    nchunk = -(-l // chunk)
    return (torch.empty_like(u), u.new_empty((b, d, n), dtype=cdt),
            u.new_empty((b, d, nchunk, n) if save else (1,), dtype=cdt))


@torch.library.custom_op("liquidssm::selective_scan_bwd", mutates_args=())
def _bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
         C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
         delta_bias: torch.Tensor | None, ck: torch.Tensor, dout: torch.Tensor,
         dlast: torch.Tensor | None, delta_softplus: bool, gsb: int, gsc: int, chunk: int,
         block_d: int) -> list[torch.Tensor]:
    """Returns [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state] in the compute
    dtype (dD / dz / ddelta_bias are empty when the argument is absent)."""
    b, d, l = u.shape
    n = A.shape[1]
    cdt, tcd = _compute(u.dtype)
    nchunk = ck.shape[2]
    nblk = d // block_d
    var_b, var_c = B.dim() > 2, C.dim() > 2
    new = lambda *s: torch.empty(s, dtype=cdt, device=u.device)  # noqa: E731
    du, ddt, dz = new(b, d, l), new(b, d, l), new(b, d, l) if z is not None else new(0)
    dA, dh0, dD, dbias = new(b, d, n), new(b, d, n), new(b, d), new(b, d)
    dBp = new(b, nblk, n, l) if var_b else new(b, d, n)
    dCp = new(b, nblk, n, l) if var_c else new(b, d, n)
    sb, sc = _strides(B, gsb, n, l), _strides(C, gsc, n, l)
    ph = dummy(u)
    K.selective_bwd_kernel[K.grid(b, d, block_d)](
        u, delta, A, B, C, _or(D, ph), _or(z, ph), _or(delta_bias, ph), ck, dout.contiguous(),
        _or(dlast, ph), du, ddt, dz if z is not None else ph, dA, dBp, dCp, dD, dbias, dh0,
        l, d, n, gsb, gsc, nchunk, nblk, *sb, *sc,
        BD=block_d, NP=next_pow2(n), T=chunk, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_DLAST=dlast is not None,
        VAR_B=var_b, VAR_C=var_c, CD=tcd,
    )
    # fixed-order reductions of the partial sums
    dB = _reduce_bc(dBp, B, d, block_d)
    dC = _reduce_bc(dCp, C, d, block_d)
    return [du, ddt, dA.sum(0), dB, dC, dD.sum(0) if D is not None else new(0), dz,
            dbias.sum(0) if delta_bias is not None else new(0), dh0]


@_bwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, ck, dout, dlast, delta_softplus, gsb, gsc, chunk,
      block_d):
    b, d, l = u.shape
    n = A.shape[1]
    cdt, _ = _compute(u.dtype)
    new = lambda *s: u.new_empty(s, dtype=cdt)  # noqa: E731
    return [new(b, d, l), new(b, d, l), new(d, n), B.new_empty(B.shape, dtype=cdt),
            C.new_empty(C.shape, dtype=cdt), new(d) if D is not None else new(0),
            new(b, d, l) if z is not None else new(0),
            new(d) if delta_bias is not None else new(0), new(b, d, n)]


def _reduce_bc(part, X, d, block_d):
    if X.dim() == 2:
        return part.sum(0)
    b, nblk, n, l = part.shape
    g = 1 if X.dim() == 3 else X.shape[1]
    red = part.reshape(b, g, nblk // g, n, l).sum(2)
    return red[:, 0] if X.dim() == 3 else red


def _strides(X, gs, n, l):
    if X.dim() == 2:
        return (0, n, 1, 0)
    if X.dim() == 3:
        return (n * l, 0, l, 1)
    return (X.shape[1] * n * l, n * l, l, 1)


def _or(x, default):
    return default if x is None else x


register_scan_autograd(_fwd, _bwd, 9, 4, "selective_scan")


# ------------------------------------------------------------------------------------------------
# public functions


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """Mamba's selective scan on Triton; see liquidssm.spec.selective.selective_scan.

    u, delta, z (b, d, l); A (d, n) real or complex; B, C (d, n) | (b, n, l) | (b, g, n, l)
    ((d, n) complex or real, (b, n, 2l) | (b, g, n, 2l) real (re, im) interleaved when A is
    complex); D, delta_bias (d,); initial_state (b, d, n). Returns out (b, d, l) in u's dtype
    [, last_state (b, d, n) in the compute dtype (float32, or float64 for float64 u; complex64 /
    complex128 for complex A)].
    """
    s = _checks.selective_scan_args(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    initial_state, return_last_state, kind=_TORCH)
    if s.empty:
        return _spec.selective_scan.reference(u, delta, A, B, C, D, z, delta_bias,
                                              delta_softplus, initial_state, return_last_state)
    if s.cplx:
        from ._complex import selective_scan_complex

        return selective_scan_complex(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      initial_state, return_last_state, s.forms)
    d = s.d
    B, gsb, fb = _layout(B, s.forms[0], d)
    C, gsc, fc = _layout(C, s.forms[1], d)
    check_device(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                 initial_state=initial_state)
    args = [x if x is None else x.contiguous()
            for x in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
    save = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in args)
    out, last, _ = _fwd(*args, delta_softplus, gsb, gsc, CONFIG["chunk"],
                        _block_d(d, (gsb, fb), (gsc, fc)), save)
    return (out, last) if return_last_state else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """One decode step (real A); see liquidssm.spec.selective.selective_state_update.

    state (b, d, n); x, dt, z (b, d); A (d, n); B, C (b, n) | (b, g, n); D, dt_bias (d,).
    Returns (out (b, d) in x's dtype, new_state (b, d, n) in the compute dtype); no input is
    modified. The kernel is the forward; gradients re-run the eager step under autograd.
    """
    s = _checks.selective_state_update_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus,
                                            kind=_TORCH)
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
    cdt, tcd = _compute(x.dtype)
    out = torch.empty_like(x)
    new_state = torch.empty((b, d, n), dtype=cdt, device=x.device)
    ph = dummy(x)
    bd = min(CONFIG["block_d"] * 4, next_pow2(d))
    K.state_update_kernel[K.grid(b, d, bd)](
        state, x, dt, A, B, C, _or(D, ph), _or(z, ph), _or(dt_bias, ph), out, new_state,
        d, n, d // groups_b, groups_b, d // groups_c, groups_c, BD=bd, NP=next_pow2(n),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=dt_softplus, CD=tcd,
    )
    return out, new_state


@_update.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, groups_b, groups_c):
    b, d = x.shape
    cdt, _ = _compute(x.dtype)
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
