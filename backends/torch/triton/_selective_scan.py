"""selective_scan (real and complex A) on the Triton kernels, as torch.library custom ops.

Complex A: the custom ops see real tensors only. Complex A, constant B / C and the states are
passed as torch.view_as_real views (d, n, 2) / (b, d, n, 2) (the conversions to the compute dtype
and the views are ordinary differentiable torch ops, so real inputs get real gradients);
input-dependent B / C are already real, (b, n, 2 l) or (b, g, n, 2 l) with (re, im) interleaved
along time.
"""

from __future__ import annotations

import torch
from liquidssm.spec import _checks
from liquidssm.spec import selective as _spec

from . import _selective_scan_kernels as K
from ._host import (
    bc_partials,
    bc_strides,
    chunked_scan_op,
    compute,
    grid,
    layout,
    optional_grads,
    or_dummy,
    reduce_partials,
    run_scan,
    scan_grads,
    scan_meta,
)

_TENSORS = ("u", "delta", "A", "B", "C", "D?", "z?", "delta_bias?", "initial_state?")


def _launchers(fwd_kernel, bwd_kernel, w, consts):
    """state / launch_fwd / launch_bwd (chunked_scan_op) of a kernel pair: w = 1 (real A) or 2
    (complex A, (re, im) pairs); consts(a) -> whether B, C are constant."""

    def state(a):
        return (*a.u.shape[:2], a.A.shape[1], *((2,) if w == 2 else ()))

    def strides(a):
        n, l = a.A.shape[1], a.u.shape[2]
        cb, cc = consts(a)
        return (*bc_strides(a.B, n, l, cb, w), *bc_strides(a.C, n, l, cc, w))

    def launch_fwd(a, out, hlast, ck):
        b, d, l = a.u.shape
        fwd_kernel[grid(b, d, a.block_d)](
            a.u, a.delta, a.A, a.B, a.C, *or_dummy(a.u, a.D, a.z, a.delta_bias, a.initial_state),
            out, hlast, ck, l, d, a.A.shape[1], a.gsb, a.gsc, -(-l // a.chunk), *strides(a),
            **scan_meta(a), HAS_H0=a.initial_state is not None, SAVE_CK=a.save,
        )

    def launch_bwd(a):
        """[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state] (real layouts, compute
        dtype; dD / dz / ddelta_bias (0,) when the argument is absent)."""
        b, d, l = a.u.shape
        n = a.A.shape[1]
        nblk = d // a.block_d
        cb, cc = consts(a)
        st = state(a)
        du, ddt, dz, dA, dh0, dD, dbias, new = scan_grads(a, st, st)
        dBp, dCp = (bc_partials(new, st, nblk, n, w * l, c) for c in (cb, cc))
        bwd_kernel[grid(b, d, a.block_d)](
            a.u, a.delta, a.A, a.B, a.C, *or_dummy(a.u, a.D, a.z, a.delta_bias), a.ck,
            a.dout.contiguous(), *or_dummy(a.u, a.dlast), du, ddt, *or_dummy(a.u, dz),
            dA, dBp, dCp, dD, dbias, dh0, l, d, n, a.gsb, a.gsc, a.ck.shape[2], nblk,
            *strides(a), **scan_meta(a), HAS_DLAST=a.dlast is not None, VAR_B=not cb,
            VAR_C=not cc,
        )
        return [du, ddt, dA.sum(0), reduce_partials(dBp, a.B, cb),
                reduce_partials(dCp, a.C, cc), *optional_grads(new, a, dD, dz, dbias), dh0]

    return dict(state=state, launch_fwd=launch_fwd, launch_bwd=launch_bwd)


_real_fwd = chunked_scan_op(
    "selective_scan", _TENSORS, ("bool delta_softplus", "int gsb", "int gsc"), ck_dim=2,
    **_launchers(K.selective_fwd_kernel, K.selective_bwd_kernel, 1,
                 lambda a: (a.B.dim() == 2, a.C.dim() == 2)),
)
_complex_fwd = chunked_scan_op(
    "selective_scan_complex", _TENSORS,
    ("bool delta_softplus", "bool const_b", "bool const_c", "int gsb", "int gsc"), ck_dim=2,
    **_launchers(K.complex_fwd_kernel, K.complex_bwd_kernel, 2,
                 lambda a: (a.const_b, a.const_c)),
)


def _complex_bc(X, form, d, cdt):
    """A checked B / C for complex A -> (real tensor, channels per group, form name): a
    constant (d, n) as its (d, n, 2) real view."""
    if form[0] == "const":
        return torch.view_as_real(X.to(cdt)).contiguous(), 1, "const"
    return layout(X, form, d)


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
                                    initial_state, return_last_state, kind="torch.Tensor")
    if s.empty:
        return _spec.selective_scan.reference(u, delta, A, B, C, D, z, delta_bias,
                                              delta_softplus, initial_state, return_last_state)
    d = s.d
    if not s.cplx:
        B, gsb, fb = layout(B, s.forms[0], d)
        C, gsc, fc = layout(C, s.forms[1], d)
        return run_scan(_real_fwd, dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z,
                                        delta_bias=delta_bias, initial_state=initial_state),
                        (delta_softplus, gsb, gsc), ((gsb, fb), (gsc, fc)), return_last_state)
    cdt = torch.complex128 if compute(u.dtype)[0] == torch.float64 else torch.complex64
    B, gsb, fb = _complex_bc(B, s.forms[0], d, cdt)
    C, gsc, fc = _complex_bc(C, s.forms[1], d, cdt)
    h0 = None if initial_state is None else torch.view_as_real(initial_state.to(cdt))
    res = run_scan(_complex_fwd, dict(u=u, delta=delta, A=torch.view_as_real(A.to(cdt)), B=B,
                                      C=C, D=D, z=z, delta_bias=delta_bias, initial_state=h0),
                   (delta_softplus, fb == "const", fc == "const", gsb, gsc),
                   ((gsb, fb), (gsc, fc)), return_last_state)
    return (res[0], torch.view_as_complex(res[1])) if return_last_state else res
