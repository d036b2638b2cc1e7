"""The numba forward kernels (_kernels.py) on NumPy arrays: what liquidssm.numpy runs for
LIQUIDSSM_NUMPY_IMPL=numba (the spec's functions otherwise: they are the reference).

Same signatures and semantics as the spec's primitives, forward only (NumPy has no autodiff; the
spec's vjp functions are the gradients). The arguments are checked by the spec's checks, so
errors are the spec's; arrays of another library than NumPy (array_api_strict) and zero-size
calls run the spec. The arrays go to the kernels as C-contiguous copies in the compute dtype
(the same layouts as liquidssm.cpu._torch: B / C time-major (bX, G, LX, n), states flattened
for the level scans).
"""

from __future__ import annotations

import numpy as np
from liquidssm.spec import _checks
from liquidssm.spec import scan as _spec_scan
from liquidssm.spec import selective as _spec_sel
from liquidssm.spec._common import LCONTRACT_CODES

from . import _kernels as K

__all__ = ["selective_scan", "liquid_selective_scan", "diag_scan", "liquid_scan",
           "selective_state_update"]


def _numpy(*xs) -> bool:
    return all(x is None or isinstance(x, np.ndarray) for x in xs)


def _c(x, dtype):
    return None if x is None else np.ascontiguousarray(x, dtype=dtype)


def _opt(x, ndim, dtype):
    """x as _c, or a placeholder the kernel does not read."""
    return np.zeros((1,) * ndim, dtype=dtype) if x is None else _c(x, dtype)


def _bc4(X, d, n, wdt, cdt):
    """B / C / BL -> (bX, G, LX, n) time-major (see _kernels); complex A (cdt not None):
    complex, an input-dependent X's last axis (2 l) read as interleaved (Re, Im) pairs."""
    if X.ndim == 2:
        return _c(X, cdt or wdt).reshape(1, d, 1, n)
    X4 = (X if X.ndim == 4 else X[:, None]).astype(wdt, copy=False)
    if cdt is not None:
        X4 = X4[..., 0::2] + 1j * X4[..., 1::2]
    return _c(np.swapaxes(X4, -1, -2), cdt or wdt)


def _selective(s, args, softplus, h0, p, BL, lcontract):
    """(out (b, d, l) in u's dtype, last levels (b, p, d, n) in the compute dtype) of the
    checked call (s: its SelectiveArgs) on _kernels.selective_fwd."""
    u, delta, A, B, C, D, z, bias = args
    b, d, l, n = s.b, s.d, s.l, s.n
    wdt = np.float64 if u.dtype == np.float64 else np.float32
    cdt = (np.complex128 if wdt == np.float64 else np.complex64) if s.cplx else None
    B4, C4 = _bc4(B, d, n, wdt, cdt), _bc4(C, d, n, wdt, cdt)
    if cdt is not None:  # p = 1 reads no BL: a real placeholder
        L4, var_l = np.zeros((1, d, 1, n), wdt), False
    elif BL is None:
        L4, var_l = B4, B.ndim > 2
    else:
        L4, var_l = _bc4(BL, d, n, wdt, None), BL.ndim > 2
    sdt = cdt or wdt
    out = np.empty((b, d, l), wdt)
    last = np.empty((b, p, d, n), sdt)
    K.selective_fwd(_c(u, wdt), _c(delta, wdt), _c(A, sdt), B4, C4, L4, B.ndim > 2, C.ndim > 2,
                    var_l, _opt(D, 1, wdt), _opt(z, 3, wdt), _opt(bias, 1, wdt),
                    _opt(h0, 4, sdt), D is not None, z is not None, bias is not None,
                    h0 is not None, softplus, LCONTRACT_CODES[lcontract], p, cdt is not None,
                    1, False, out, last, np.empty((1,) * 5, sdt))
    return out.astype(u.dtype, copy=False), last


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """spec.selective.selective_scan on _kernels.selective_fwd (real or complex A):
    h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t, out = (C_t . h_t + D u) silu(z) (2 Re(...)
    for complex A); u, delta, z (b, d, l), A (d, n), B / C (d, n) | (b, n, l) | (b, g, n, l)."""
    args = (u, delta, A, B, C, D, z, delta_bias)
    s = _checks.selective_scan_args(*args, delta_softplus, initial_state, return_last_state)
    if s.empty or not _numpy(*args, initial_state):
        return _spec_sel.selective_scan(*args, delta_softplus, initial_state, return_last_state)
    h0 = None if initial_state is None else initial_state[:, None]
    out, last = _selective(s, args, delta_softplus, h0, 1, None, "none")
    return (out, last[:, 0]) if return_last_state else out


def liquid_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_last_state=False, *,
                          liquid_degree=1, BL=None, lcontract="none"):
    """spec.selective.liquid_selective_scan on _kernels.selective_fwd: p = liquid_degree levels,
    hm_t = exp(Delta_t A) hm_{t-1} + Delta_t phi(BL_t u_t) h(m-1)_{t-1}, y_t = C_t . sum_m hm_t;
    initial / last state (b, p, d, n)."""
    args = (u, delta, A, B, C, D, z, delta_bias)
    s = _checks.selective_scan_args(*args, delta_softplus, initial_state, return_last_state,
                                    liquid=True, liquid_degree=liquid_degree, BL=BL,
                                    lcontract=lcontract)
    if s.empty or not _numpy(*args, initial_state, BL):
        return _spec_sel.liquid_selective_scan(
            *args, delta_softplus, initial_state, return_last_state,
            liquid_degree=liquid_degree, BL=BL, lcontract=lcontract)
    out, last = _selective(s, args, delta_softplus, initial_state, liquid_degree, BL, lcontract)
    return (out, last) if return_last_state else out


def _levels(a, b, c, h0, p, reverse):
    """(y (batch, L, *S), last levels (batch, p, *S)) of the checked liquid / diag scan on
    _kernels.level_fwd, in NumPy's promoted dtype of the arguments (computed in float32 below
    it)."""
    B, L, S = b.shape[0], b.shape[1], b.shape[2:]
    dtype = np.result_type(*(x for x in (a, b, c, h0) if x is not None))
    wdt = np.promote_types(dtype, np.float32)
    flat = lambda x: _c(x, wdt).reshape(x.shape[0], L, -1)  # noqa: E731
    aw, bw = flat(a), flat(b)
    M = bw.shape[2]
    cw = np.zeros((1, 1, M), wdt) if c is None else flat(c)  # p = 1: a placeholder, not read
    h = np.zeros((B, p, M), wdt) if h0 is None else _c(h0, wdt).reshape(B, p, M)
    y, last = np.empty_like(bw), np.empty((B, p, M), wdt)
    K.level_fwd(aw, bw, cw, h, p, reverse, 1, K.level_width(B, M), False, y, last,
                np.empty((1,) * 4, wdt))
    return (y.reshape(B, L, *S).astype(dtype, copy=False),
            last.reshape(B, p, *S).astype(dtype, copy=False))


def diag_scan(a, b, h0=None, *, reverse=False):
    """spec.scan.diag_scan on _kernels.level_fwd (p = 1): h_t = a_t h_{t-1} + b_t (reverse:
    h_{t+1}); a (1 or batch, L, *S), b (batch, L, *S), h0 (batch, *S); real or complex."""
    s = _checks.diag_scan_args(a, b, h0, reverse)
    if s.empty or not _numpy(a, b, h0):
        return _spec_scan.diag_scan(a, b, h0, reverse=reverse)
    return _levels(a, b, None, None if h0 is None else h0[:, None], 1, reverse)[0]


def liquid_scan(a, b, c, h0=None, *, degree, reverse=False):
    """spec.scan.liquid_scan on _kernels.level_fwd: p = degree levels, h0_t = a_t h0_{t-1} + b_t,
    hm_t = a_t hm_{t-1} + c_t h(m-1)_{t-1}; returns (y = sum_m hm, last (batch, p, *S))."""
    s = _checks.liquid_scan_args(a, b, c, h0, degree, reverse)
    if s.empty or not _numpy(a, b, c, h0):
        return _spec_scan.liquid_scan(a, b, c, h0, degree=degree, reverse=reverse)
    return _levels(a, b, c, h0, degree, reverse)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """spec.selective.selective_state_update on _kernels.state_step: state (b, d, n); x, dt, z
    (b, d); A (d, n); B, C (b, n) or (b, g, n); D, dt_bias (d,). Delta = softplus(dt + dt_bias)
    if dt_softplus; new_state = exp(Delta A) state + Delta B x; out = (C . new_state + D x)
    silu(z). Returns (out in x's dtype, new_state in the compute dtype: float64 for float64 x,
    else float32)."""
    args = (state, x, dt, A, B, C, D, z, dt_bias)
    s = _checks.selective_state_update_args(*args, dt_softplus)
    if s.empty or not _numpy(*args):
        return _spec_sel.selective_state_update(*args, dt_softplus)
    wdt = np.float64 if x.dtype == np.float64 else np.float32
    b, d, n = s.b, s.d, s.n
    Bg, Cg = (_c(_spec_sel._per_channel(np, np.asarray(X, dtype=wdt), d), wdt) for X in (B, C))
    out, new = np.empty((b, d), wdt), np.empty((b, 1, d, n), wdt)
    K.state_step(_c(state, wdt).reshape(b, 1, d, n), _c(x, wdt), _c(dt, wdt), _c(A, wdt), Bg,
                 Cg, Bg, _opt(D, 1, wdt), _opt(z, 2, wdt), _opt(dt_bias, 1, wdt),
                 D is not None, z is not None, dt_bias is not None, bool(dt_softplus),
                 LCONTRACT_CODES["none"], 1, out, new)
    return out.astype(x.dtype, copy=False), new.reshape(b, d, n)
