"""selective_scan with complex A on the Triton kernels (mamba's complex selective_scan_ref).

The custom ops see real tensors only: complex A, constant B / C and the states are passed as
torch.view_as_real views (d, n, 2) / (b, d, n, 2) (the conversions to the compute dtype and the
views are ordinary differentiable torch ops, so real inputs get real gradients); input-dependent
B / C are already real, (b, n, 2 l) or (b, g, n, 2 l) with (re, im) interleaved along time.
"""

from __future__ import annotations

import torch

from . import _complex_kernels as K
from ._common import CONFIG, check_device, dummy, next_pow2, register_scan_autograd
from ._selective import _block_d, _compute, _or


def _strides(X, n, l):
    """Real-element strides (sb, sg, sn, sl) of an input-dependent B / C, l time steps."""
    if X.dim() == 3:  # (b, n, 2 l)
        return (2 * n * l, 0, 2 * l, 2)
    return (X.shape[1] * 2 * n * l, 2 * n * l, 2 * l, 2)  # (b, g, n, 2 l)


@torch.library.custom_op("liquidssm::selective_scan_complex_fwd", mutates_args=())
def _fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
         C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
         delta_bias: torch.Tensor | None, initial_state: torch.Tensor | None,
         delta_softplus: bool, const_b: bool, const_c: bool, gsb: int, gsc: int, chunk: int,
         block_d: int, save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, d, l = u.shape
    n = A.shape[1]
    cdt, tcd = _compute(u.dtype)
    nchunk = -(-l // chunk)
    out = torch.empty_like(u)
    hlast = torch.empty((b, d, n, 2), dtype=cdt, device=u.device)
    ck = torch.empty((b, d, nchunk, n, 2) if save else (1,), dtype=cdt, device=u.device)
    sb = (0, 2 * n, 2, 0) if const_b else _strides(B, n, l)
    sc = (0, 2 * n, 2, 0) if const_c else _strides(C, n, l)
    ph = dummy(u)
    K.complex_fwd_kernel[K.grid(b, d, block_d)](
        u, delta, A, B, C, _or(D, ph), _or(z, ph), _or(delta_bias, ph), _or(initial_state, ph),
        out, hlast, ck, l, d, n, gsb, gsc, nchunk, *sb, *sc,
        BD=block_d, NP=next_pow2(n), T=chunk, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
        HAS_H0=initial_state is not None, SAVE_CK=save, CD=tcd,
    )
    return out, hlast, ck


@_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, const_b, const_c,
      gsb, gsc, chunk, block_d, save):
    b, d, l = u.shape
    n = A.shape[1]
    cdt, _ = _compute(u.dtype)
    nchunk = -(-l // chunk)
    return (torch.empty_like(u), u.new_empty((b, d, n, 2), dtype=cdt),
            u.new_empty((b, d, nchunk, n, 2) if save else (1,), dtype=cdt))


@torch.library.custom_op("liquidssm::selective_scan_complex_bwd", mutates_args=())
def _bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
         C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
         delta_bias: torch.Tensor | None, ck: torch.Tensor, dout: torch.Tensor,
         dlast: torch.Tensor | None, delta_softplus: bool, const_b: bool, const_c: bool,
         gsb: int, gsc: int, chunk: int, block_d: int) -> list[torch.Tensor]:
    """[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state] (real layouts, compute
    dtype; dD / dz / ddelta_bias empty when the argument is absent)."""
    b, d, l = u.shape
    n = A.shape[1]
    cdt, tcd = _compute(u.dtype)
    nchunk = ck.shape[2]
    nblk = d // block_d
    new = lambda *s: torch.empty(s, dtype=cdt, device=u.device)  # noqa: E731
    du, ddt, dz = new(b, d, l), new(b, d, l), new(b, d, l) if z is not None else new(0)
    dA, dh0, dD, dbias = new(b, d, n, 2), new(b, d, n, 2), new(b, d), new(b, d)
    dBp = new(b, d, n, 2) if const_b else new(b, nblk, n, 2 * l)
    dCp = new(b, d, n, 2) if const_c else new(b, nblk, n, 2 * l)
    sb = (0, 2 * n, 2, 0) if const_b else _strides(B, n, l)
    sc = (0, 2 * n, 2, 0) if const_c else _strides(C, n, l)
    ph = dummy(u)
    K.complex_bwd_kernel[K.grid(b, d, block_d)](
        u, delta, A, B, C, _or(D, ph), _or(z, ph), _or(delta_bias, ph), ck, dout.contiguous(),
        _or(dlast, ph), du, ddt, dz if z is not None else ph, dA, dBp, dCp, dD, dbias, dh0,
        l, d, n, gsb, gsc, nchunk, nblk, *sb, *sc,
        BD=block_d, NP=next_pow2(n), T=chunk, HAS_D=D is not None, HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, HAS_DLAST=dlast is not None,
        VAR_B=not const_b, VAR_C=not const_c, CD=tcd,
    )
    return [du, ddt, dA.sum(0), _reduce(dBp, B, const_b), _reduce(dCp, C, const_c),
            dD.sum(0) if D is not None else new(0), dz,
            dbias.sum(0) if delta_bias is not None else new(0), dh0]


@_bwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, ck, dout, dlast, delta_softplus, const_b, const_c,
      gsb, gsc, chunk, block_d):
    b, d, l = u.shape
    n = A.shape[1]
    cdt, _ = _compute(u.dtype)
    new = lambda *s: u.new_empty(s, dtype=cdt)  # noqa: E731
    return [new(b, d, l), new(b, d, l), new(d, n, 2), B.new_empty(B.shape, dtype=cdt),
            C.new_empty(C.shape, dtype=cdt), new(d) if D is not None else new(0),
            new(b, d, l) if z is not None else new(0),
            new(d) if delta_bias is not None else new(0), new(b, d, n, 2)]


def _reduce(part, X, const):
    """Fixed-order sum of the per-program partials into X's (real) layout."""
    if const:
        return part.sum(0)
    b, nblk, n, l2 = part.shape
    g = 1 if X.dim() == 3 else X.shape[1]
    red = part.reshape(b, g, nblk // g, n, l2).sum(2)
    return red[:, 0] if X.dim() == 3 else red


register_scan_autograd(_fwd, _bwd, 9, 5, "selective_scan")


def _bc(X, form, d, cdt):
    """A checked B / C (liquidssm.spec._checks) for complex A -> (real tensor, channels per
    group, form name): a constant (d, n) as its (d, n, 2) real view."""
    if form[0] == "const":
        return torch.view_as_real(X.to(cdt)).contiguous(), 1, "const"
    return X.contiguous(), d if form[0] == "var" else d // form[1], form[0]


def selective_scan_complex(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                           return_last_state, forms):
    """The complex-A path of selective_scan (arguments checked, forms of B and C given)."""
    b, d, l = u.shape
    wdt, _ = _compute(u.dtype)
    cdt = torch.complex128 if wdt == torch.float64 else torch.complex64
    Ar = torch.view_as_real(A.to(cdt)).contiguous()
    B, gsb, fb = _bc(B, forms[0], d, cdt)
    C, gsc, fc = _bc(C, forms[1], d, cdt)
    h0 = initial_state
    if h0 is not None:
        h0 = torch.view_as_real(h0.to(cdt)).contiguous()
    check_device(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                 initial_state=h0)
    args = [x if x is None else x.contiguous()
            for x in (u, delta, Ar, B, C, D, z, delta_bias, h0)]
    save = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in args)
    out, last, _ = _fwd(*args, delta_softplus, fb == "const", fc == "const", gsb, gsc,
                        CONFIG["chunk"], _block_d(d, (gsb, fb), (gsc, fc)), save)
    return (out, torch.view_as_complex(last)) if return_last_state else out
