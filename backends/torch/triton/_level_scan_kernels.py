"""Triton kernel of the diagonal / liquid linear recurrences (time axis 1, state flattened to M).

One program per (batch, block of BM state elements); the p levels live in a (P, BM) register
tile and the kernel steps through time (each step loads BM contiguous elements of a, b, c).
Levels m = 0..DEG-1:
    H[0]_t = a_t H[0]_{t-1} + b_t            (B_ALL: every level gets + b_t)
    H[m]_t = a_t H[m]_{t-1} + c_t H[m-1]_{t-1}
y_t = sum_m H[m]_t. Complex tensors are passed as interleaved (re, im) float pairs (CPLX).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _ld(ptr, off, mask, CPLX: tl.constexpr, CD: tl.constexpr):
    if CPLX:
        re = tl.load(ptr + 2 * off, mask=mask, other=0.0).to(CD)
        im = tl.load(ptr + 2 * off + 1, mask=mask, other=0.0).to(CD)
    else:
        re = tl.load(ptr + off, mask=mask, other=0.0).to(CD)
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _st(ptr, off, re, im, mask, CPLX: tl.constexpr):
    if CPLX:
        tl.store(ptr + 2 * off, re.to(ptr.dtype.element_ty), mask=mask)
        tl.store(ptr + 2 * off + 1, im.to(ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(ptr + off, re.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _shift(X, SEL):
    """X (P, BM) -> Y with Y[m] = X[m - 1], Y[0] = 0 (SEL (P, P) = [j == m - 1])."""
    return tl.sum(SEL[:, :, None] * X[None, :, :], axis=1)


@triton.jit
def levels_scan_kernel(
    a_ptr, b_ptr, c_ptr, h0_ptr, y_ptr, hl_ptr, lv_ptr,
    L, M, sa, sc,
    DEG: tl.constexpr, P: tl.constexpr, BM: tl.constexpr,
    HAS_C: tl.constexpr, HAS_H0: tl.constexpr, REV: tl.constexpr, B_ALL: tl.constexpr,
    STORE_LV: tl.constexpr, CPLX: tl.constexpr, CD: tl.constexpr,
):
    """a, c: (1 | batch, L, M) with batch strides sa, sc; b, y: (batch, L, M);
    h0, hl: (batch, DEG, M); lv (STORE_LV): (batch, L, DEG, M), the levels after every step."""
    pb = tl.program_id(0)
    mm = tl.program_id(1) * BM + tl.arange(0, BM)
    mmask = mm < M
    lvl = tl.arange(0, P)
    lmask = lvl < DEG
    m2 = lmask[:, None] & mmask[None, :]
    sel = (tl.arange(0, P)[None, :] == lvl[:, None] - 1).to(CD)
    st_off = (pb * DEG + lvl[:, None]) * M + mm[None, :]
    hr = tl.zeros((P, BM), dtype=CD)
    hi = tl.zeros((P, BM), dtype=CD)
    if HAS_H0:
        hr, hi = _ld(h0_ptr, st_off, m2, CPLX, CD)
    inb = (lvl == 0)[:, None]
    if B_ALL:
        inb = lmask[:, None]
    for i in range(0, L):
        t = i
        if REV:
            t = L - 1 - i
        ar, ai = _ld(a_ptr, pb * sa + t * M + mm, mmask, CPLX, CD)
        br, bi = _ld(b_ptr, (pb * L + t) * M + mm, mmask, CPLX, CD)
        nr = ar[None, :] * hr - ai[None, :] * hi + tl.where(inb, br[None, :], 0.0)
        ni = ar[None, :] * hi + ai[None, :] * hr + tl.where(inb, bi[None, :], 0.0)
        if HAS_C:
            cr, ci = _ld(c_ptr, pb * sc + t * M + mm, mmask, CPLX, CD)
            sr = _shift(hr, sel)
            si = _shift(hi, sel)
            nr += cr[None, :] * sr - ci[None, :] * si
            ni += cr[None, :] * si + ci[None, :] * sr
        hr = tl.where(lmask[:, None], nr, 0.0)
        hi = tl.where(lmask[:, None], ni, 0.0)
        _st(y_ptr, (pb * L + t) * M + mm, tl.sum(hr, axis=0), tl.sum(hi, axis=0), mmask, CPLX)
        if STORE_LV:
            _st(lv_ptr, ((pb * L + t) * DEG + lvl[:, None]) * M + mm[None, :], hr, hi, m2, CPLX)
    _st(hl_ptr, st_off, hr, hi, m2, CPLX)
