"""liquid_selective_scan (liquid_degree >= 2) on the Triton level kernels, as torch.library
custom ops."""

from __future__ import annotations

from liquidssm.spec._common import LCONTRACT_CODES

from . import _liquid_levels_kernels as K
from ._host import (
    bc_partials,
    bc_strides,
    chunked_scan_op,
    grid,
    layout,
    next_pow2,
    optional_grads,
    or_dummy,
    reduce_partials,
    run_scan,
    scan_grads,
    scan_meta,
)


def _state(a):
    return (a.u.shape[0], a.degree, a.u.shape[1], a.A.shape[1])


def _bcl(a):
    """B, C, BL (B itself when BL is None, tied) and their strides."""
    n, l = a.A.shape[1], a.u.shape[2]
    XL = a.B if a.BL is None else a.BL
    return XL, [s for X in (a.B, a.C, XL) for s in bc_strides(X, n, l, X.dim() == 2)]


def _meta(a):
    return dict(scan_meta(a), P=a.degree, PP=next_pow2(a.degree),
                PHI=LCONTRACT_CODES[a.lcontract])


def _launch_fwd(a, out, hlast, ck):
    b, d, l = a.u.shape
    XL, strides = _bcl(a)
    K.liquid_fwd_kernel[grid(b, d, a.block_d)](
        a.u, a.delta, a.A, a.B, a.C, XL, *or_dummy(a.u, a.D, a.z, a.delta_bias, a.initial_state),
        out, hlast, ck, l, d, a.A.shape[1], a.gsb, a.gsc, a.gsl, -(-l // a.chunk), *strides,
        **_meta(a), HAS_H0=a.initial_state is not None, SAVE_CK=a.save,
    )


def _launch_bwd(a):
    """[du, ddelta, dA, dB, dC, dBL, dD, dz, ddelta_bias, dinitial_state] in the compute dtype
    (dBL / dD / dz / ddelta_bias (0,) when the argument is absent)."""
    b, d, l = a.u.shape
    n = a.A.shape[1]
    nblk = d // a.block_d
    XL, strides = _bcl(a)
    du, ddt, dz, dA, dh0, dD, dbias, new = scan_grads(a, (b, d, n), _state(a))
    dBp, dCp, dLp = (None if X is None else bc_partials(new, (b, d, n), nblk, n, l, X.dim() == 2)
                     for X in (a.B, a.C, a.BL))
    K.liquid_bwd_kernel[grid(b, d, a.block_d)](
        a.u, a.delta, a.A, a.B, a.C, XL, *or_dummy(a.u, a.D, a.z, a.delta_bias), a.ck,
        a.dout.contiguous(), *or_dummy(a.u, a.dlast), du, ddt, *or_dummy(a.u, dz), dA, dBp,
        dCp, *or_dummy(a.u, dLp), dD, dbias, dh0,
        l, d, n, a.gsb, a.gsc, a.gsl, a.ck.shape[3], nblk, *strides,
        **_meta(a), HAS_DLAST=a.dlast is not None, VAR_B=a.B.dim() > 2, VAR_C=a.C.dim() > 2,
        VAR_L=XL.dim() > 2, TIED=a.BL is None,
    )
    dBL = new(0) if a.BL is None else reduce_partials(dLp, a.BL, a.BL.dim() == 2)
    dD, dz, dbias = optional_grads(new, a, dD, dz, dbias)
    return [du, ddt, dA.sum(0), reduce_partials(dBp, a.B, a.B.dim() == 2),
            reduce_partials(dCp, a.C, a.C.dim() == 2), dBL, dD, dz, dbias, dh0]


_fwd = chunked_scan_op(
    "liquid_selective_scan",
    ("u", "delta", "A", "B", "C", "BL?", "D?", "z?", "delta_bias?", "initial_state?"),
    ("bool delta_softplus", "int degree", "str lcontract", "int gsb", "int gsc", "int gsl"),
    _state, 3, _launch_fwd, _launch_bwd,
)


def liquid_selective_scan_p(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                            return_last_state, degree, BL, lcontract, forms):
    """The degree >= 2 path (arguments checked by liquidssm.spec._checks; forms of B, C, BL)."""
    d = u.shape[1]
    B, gsb, fb = layout(B, forms[0], d)
    C, gsc, fc = layout(C, forms[1], d)
    gsl, fl = gsb, fb
    if BL is not None:
        BL, gsl, fl = layout(BL, forms[2], d)
    return run_scan(_fwd, dict(u=u, delta=delta, A=A, B=B, C=C, BL=BL, D=D, z=z,
                               delta_bias=delta_bias, initial_state=initial_state),
                    (delta_softplus, degree, lcontract, gsb, gsc, gsl),
                    ((gsb, fb), (gsc, fc), (gsl, fl)), return_last_state)
