"""liquid_selective_scan (liquid_degree >= 2) on the Triton kernels, as torch.library custom ops."""

from __future__ import annotations

import torch
from liquidssm.spec._common import LCONTRACT_CODES

from . import _liquid_kernels as K
from ._common import CONFIG, check_device, dummy, next_pow2, register_scan_autograd
from ._selective import _block_d, _compute, _layout, _or, _reduce_bc, _strides


@torch.library.custom_op("liquidssm::liquid_selective_scan_fwd", mutates_args=())
def _fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
         C: torch.Tensor, BL: torch.Tensor | None, D: torch.Tensor | None,
         z: torch.Tensor | None, delta_bias: torch.Tensor | None,
         initial_state: torch.Tensor | None, delta_softplus: bool, degree: int, lcontract: str,
         gsb: int, gsc: int, gsl: int, chunk: int, block_d: int, save: bool
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, d, l = u.shape
    n = A.shape[1]
    cdt, tcd = _compute(u.dtype)
    nchunk = -(-l // chunk)
    out = torch.empty_like(u)
    hlast = torch.empty((b, degree, d, n), dtype=cdt, device=u.device)
    ck = torch.empty((b, degree, d, nchunk, n) if save else (1,), dtype=cdt, device=u.device)
    XL = B if BL is None else BL
    sb, sc, sl = _strides(B, gsb, n, l), _strides(C, gsc, n, l), _strides(XL, gsl, n, l)
    ph = dummy(u)
    K.liquid_fwd_kernel[K.grid(b, d, block_d)](
        u, delta, A, B, C, XL, _or(D, ph), _or(z, ph), _or(delta_bias, ph),
        _or(initial_state, ph), out, hlast, ck, l, d, n, gsb, gsc, gsl, nchunk, *sb, *sc, *sl,
        BD=block_d, NP=next_pow2(n), T=chunk, P=degree, PP=next_pow2(degree),
        PHI=LCONTRACT_CODES[lcontract], HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        HAS_H0=initial_state is not None, SAVE_CK=save, CD=tcd,
    )
    return out, hlast, ck


@_fwd.register_fake
def _(u, delta, A, B, C, BL, D, z, delta_bias, initial_state, delta_softplus, degree,
      lcontract, gsb, gsc, gsl, chunk, block_d, save):
    b, d, l = u.shape
    n = A.shape[1]
    cdt, _ = _compute(u.dtype)
    nchunk = -(-l // chunk)
    return (torch.empty_like(u), u.new_empty((b, degree, d, n), dtype=cdt),
            u.new_empty((b, degree, d, nchunk, n) if save else (1,), dtype=cdt))


@torch.library.custom_op("liquidssm::liquid_selective_scan_bwd", mutates_args=())
def _bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
         C: torch.Tensor, BL: torch.Tensor | None, D: torch.Tensor | None,
         z: torch.Tensor | None, delta_bias: torch.Tensor | None, ck: torch.Tensor,
         dout: torch.Tensor, dlast: torch.Tensor | None, delta_softplus: bool, degree: int,
         lcontract: str, gsb: int, gsc: int, gsl: int, chunk: int, block_d: int
         ) -> list[torch.Tensor]:
    """Returns [du, ddelta, dA, dB, dC, dBL, dD, dz, ddelta_bias, dinitial_state] in the compute
    dtype (dBL / dD / dz / ddelta_bias are empty when the argument is absent)."""
    b, d, l = u.shape
    n = A.shape[1]
    cdt, tcd = _compute(u.dtype)
    nchunk = ck.shape[3]
    nblk = d // block_d
    XL = B if BL is None else BL
    var_b, var_c, var_l = B.dim() > 2, C.dim() > 2, XL.dim() > 2
    new = lambda *s: torch.empty(s, dtype=cdt, device=u.device)  # noqa: E731
    du, ddt, dz = new(b, d, l), new(b, d, l), new(b, d, l) if z is not None else new(0)
    dA, dh0, dD, dbias = new(b, d, n), new(b, degree, d, n), new(b, d), new(b, d)
    part = lambda v: new(b, nblk, n, l) if v else new(b, d, n)  # noqa: E731
    dBp, dCp = part(var_b), part(var_c)
    dLp = part(var_l) if BL is not None else new(0)
    sb, sc, sl = _strides(B, gsb, n, l), _strides(C, gsc, n, l), _strides(XL, gsl, n, l)
    ph = dummy(u)
    K.liquid_bwd_kernel[K.grid(b, d, block_d)](
        u, delta, A, B, C, XL, _or(D, ph), _or(z, ph), _or(delta_bias, ph), ck,
        dout.contiguous(), _or(dlast, ph), du, ddt, dz if z is not None else ph, dA, dBp, dCp,
        dLp if BL is not None else ph, dD, dbias, dh0,
        l, d, n, gsb, gsc, gsl, nchunk, nblk, *sb, *sc, *sl,
        BD=block_d, NP=next_pow2(n), T=chunk, P=degree, PP=next_pow2(degree),
        PHI=LCONTRACT_CODES[lcontract], HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_DLAST=dlast is not None,
        VAR_B=var_b, VAR_C=var_c, VAR_L=var_l, TIED=BL is None, CD=tcd,
    )
    dB = _reduce_bc(dBp, B, d, block_d)
    dC = _reduce_bc(dCp, C, d, block_d)
    dBL = _reduce_bc(dLp, BL, d, block_d) if BL is not None else new(0)
    return [du, ddt, dA.sum(0), dB, dC, dBL, dD.sum(0) if D is not None else new(0), dz,
            dbias.sum(0) if delta_bias is not None else new(0), dh0]


@_bwd.register_fake
def _(u, delta, A, B, C, BL, D, z, delta_bias, ck, dout, dlast, delta_softplus, degree,
      lcontract, gsb, gsc, gsl, chunk, block_d):
    b, d, l = u.shape
    n = A.shape[1]
    cdt, _ = _compute(u.dtype)
    new = lambda *s: u.new_empty(s, dtype=cdt)  # noqa: E731
    return [new(b, d, l), new(b, d, l), new(d, n), B.new_empty(B.shape, dtype=cdt),
            C.new_empty(C.shape, dtype=cdt),
            BL.new_empty(BL.shape, dtype=cdt) if BL is not None else new(0),
            new(d) if D is not None else new(0), new(b, d, l) if z is not None else new(0),
            new(d) if delta_bias is not None else new(0), new(b, degree, d, n)]


# 10 tensor inputs: u, delta, A, B, C, BL, D, z, delta_bias, initial_state
register_scan_autograd(_fwd, _bwd, 10, 5, "liquid_selective_scan")


def liquid_selective_scan_p(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                            return_last_state, degree, BL, lcontract, forms):
    """The degree >= 2 path (arguments checked by liquidssm.spec._checks; forms of B, C, BL)."""
    d = u.shape[1]
    B, gsb, fb = _layout(B, forms[0], d)
    C, gsc, fc = _layout(C, forms[1], d)
    gsl, fl = gsb, fb
    if BL is not None:
        BL, gsl, fl = _layout(BL, forms[2], d)
    check_device(u=u, delta=delta, A=A, B=B, C=C, BL=BL, D=D, z=z, delta_bias=delta_bias,
                 initial_state=initial_state)
    args = [x if x is None else x.contiguous()
            for x in (u, delta, A, B, C, BL, D, z, delta_bias, initial_state)]
    save = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in args)
    out, last, _ = _fwd(*args, delta_softplus, degree, lcontract, gsb, gsc, gsl,
                        CONFIG["chunk"], _block_d(d, (gsb, fb), (gsc, fc), (gsl, fl)), save)
    return (out, last) if return_last_state else out
