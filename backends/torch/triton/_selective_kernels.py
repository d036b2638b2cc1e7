"""Triton kernels of the selective scan (real A), forward and backward.

One program per (batch, block of BD channels). Time is cut into chunks of T steps; per chunk the
(BD, NP, T) tiles of exp(Delta A) and Delta B u are combined by an associative scan in registers,
and only the state at the chunk's start (b, d, n, chunks) is written (for the backward). The
backward walks the chunks in reverse, recomputes the chunk's states from that checkpoint (a scan
over the inputs loaded one step earlier, which gives h_{t-1} directly), and runs the adjoint
lambda_t = C_t g_t + Abar_{t+1} lambda_{t+1} as a reverse scan over inputs loaded one step later.
dB / dC are reduced over the program's channels and written per block (input-dependent B/C) or
accumulated over time (constant B/C); the caller sums the blocks in a fixed order.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import first_order, softplus, softplus_grad


@triton.jit
def _load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                CD: tl.constexpr):
    """Delta (BD, T) at times t, and the raw value delta + bias; 0 where t is masked out."""
    raw = tl.load(dt_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dl = raw
    if SOFTPLUS:
        dl = softplus(raw)
    return tl.where(tm[None, :], dl, 0.0), raw


@triton.jit
def _load_bc(ptr, pb, grp, nn, nmask, t, tm, sb, sg, sn, sl, CD: tl.constexpr):
    """B or C as a (BD, NP, T) tile: element [b, d // GSIZE, n, t] of the strided (b, g, n, l)."""
    off = pb * sb + grp[:, None, None] * sg + nn[None, :, None] * sn + t[None, None, :] * sl
    m = nmask[None, :, None] & tm[None, None, :]
    return tl.load(ptr + off, mask=m, other=0.0).to(CD)


@triton.jit
def selective_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, hlast_ptr, ck_ptr,
    L, DIM, NS, GSB, GSC, NCHUNK,
    sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl,
    BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, SAVE_CK: tl.constexpr, CD: tl.constexpr,
):
    pb = tl.program_id(0)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    nmask = nn < NS
    tt = tl.arange(0, T)
    row = (pb * DIM + dd) * L
    st_off = (pb * DIM + dd[:, None]) * NS + nn[None, :]
    A = tl.load(A_ptr + dd[:, None] * NS + nn[None, :], mask=nmask[None, :], other=0.0).to(CD)
    bias = tl.zeros((BD,), dtype=CD)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + dd).to(CD)
    if HAS_D:
        Dv = tl.load(D_ptr + dd).to(CD)
    h = tl.zeros((BD, NP), dtype=CD)
    if HAS_H0:
        h = tl.load(h0_ptr + st_off, mask=nmask[None, :], other=0.0).to(CD)
    for k in range(0, NCHUNK):
        if SAVE_CK:
            ck_off = ((pb * DIM + dd[:, None]) * NCHUNK + k) * NS + nn[None, :]
            tl.store(ck_ptr + ck_off, h, mask=nmask[None, :])
        t = k * T + tt
        tm = t < L
        dl, raw = _load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS, SOFTPLUS, CD)
        u = tl.load(u_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        Bt = _load_bc(B_ptr, pb, dd // GSB, nn, nmask, t, tm, sBb, sBg, sBn, sBl, CD)
        Ct = _load_bc(C_ptr, pb, dd // GSC, nn, nmask, t, tm, sCb, sCg, sCn, sCl, CD)
        dA = tl.exp(dl[:, None, :] * A[:, :, None])
        dBu = (dl * u)[:, None, :] * Bt
        Ac, Hs = tl.associative_scan((dA, dBu), axis=2, combine_fn=first_order)
        H = Ac * h[:, :, None] + Hs
        y = tl.sum(H * Ct, axis=1)
        h = tl.sum(tl.where(tt[None, None, :] == T - 1, H, 0.0), axis=2)
        if HAS_D:
            y = y + Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
            y = y * z * tl.sigmoid(z)
        o_ptr = out_ptr + row[:, None] + t[None, :]
        tl.store(o_ptr, y.to(out_ptr.dtype.element_ty), mask=tm[None, :])
    tl.store(hlast_ptr + st_off, h, mask=nmask[None, :])


@triton.jit
def selective_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ck_ptr, g_ptr, dlast_ptr,
    du_ptr, ddt_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, DIM, NS, GSB, GSC, NCHUNK, NBLK,
    sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl,
    BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, CD: tl.constexpr,
):
    """Gradients. Partial outputs (summed by the caller in a fixed order):
    dA, dh0 (b, d, n); dD, dbias (b, d); dB / dC (b, d, n) if constant else (b, d // BD, n, l).
    """
    pb = tl.program_id(0)
    pd = tl.program_id(1)
    dd = pd * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    nmask = nn < NS
    tt = tl.arange(0, T)
    row = (pb * DIM + dd) * L
    st_off = (pb * DIM + dd[:, None]) * NS + nn[None, :]
    A = tl.load(A_ptr + dd[:, None] * NS + nn[None, :], mask=nmask[None, :], other=0.0).to(CD)
    bias = tl.zeros((BD,), dtype=CD)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + dd).to(CD)
    Dv = tl.zeros((BD,), dtype=CD)
    if HAS_D:
        Dv = tl.load(D_ptr + dd).to(CD)
    lam = tl.zeros((BD, NP), dtype=CD)
    if HAS_DLAST:
        lam = tl.load(dlast_ptr + st_off, mask=nmask[None, :], other=0.0).to(CD)
    dA_acc = tl.zeros((BD, NP), dtype=CD)
    dB_acc = tl.zeros((BD, NP), dtype=CD)
    dC_acc = tl.zeros((BD, NP), dtype=CD)
    dD_acc = tl.zeros((BD,), dtype=CD)
    dbias_acc = tl.zeros((BD,), dtype=CD)
    dh0 = tl.zeros((BD, NP), dtype=CD)
    for kk in range(0, NCHUNK):
        k = NCHUNK - 1 - kk
        t = k * T + tt
        tm = t < L
        h = tl.load(ck_ptr + ((pb * DIM + dd[:, None]) * NCHUNK + k) * NS + nn[None, :],
                    mask=nmask[None, :], other=0.0).to(CD)
        # step t
        dl, raw = _load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS, SOFTPLUS, CD)
        u = tl.load(u_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        Bt = _load_bc(B_ptr, pb, dd // GSB, nn, nmask, t, tm, sBb, sBg, sBn, sBl, CD)
        Ct = _load_bc(C_ptr, pb, dd // GSC, nn, nmask, t, tm, sCb, sCg, sCn, sCl, CD)
        dA = tl.exp(dl[:, None, :] * A[:, :, None])
        # h_{t-1}: scan of the step t-1 inputs (identity at the chunk's first step)
        tp = t - 1
        mp = tm & (tt >= 1)
        dlp, _ = _load_delta(dt_ptr, row, tp, mp, bias, HAS_BIAS, SOFTPLUS, CD)
        up = tl.load(u_ptr + row[:, None] + tp[None, :], mask=mp[None, :], other=0.0).to(CD)
        Bp = _load_bc(B_ptr, pb, dd // GSB, nn, nmask, tp, mp, sBb, sBg, sBn, sBl, CD)
        Ac, Hs = tl.associative_scan(
            (tl.exp(dlp[:, None, :] * A[:, :, None]), (dlp * up)[:, None, :] * Bp),
            axis=2, combine_fn=first_order,
        )
        Hprev = Ac * h[:, :, None] + Hs
        H = dA * Hprev + (dl * u)[:, None, :] * Bt
        # output gradient through z and D
        g = tl.load(g_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        if HAS_Z:
            z = tl.load(z_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
            sz = tl.sigmoid(z)
            pre = tl.sum(H * Ct, axis=1) + Dv[:, None] * u
            dz = g * pre * sz * (1.0 + z * (1.0 - sz))
            tl.store(dz_ptr + row[:, None] + t[None, :], dz, mask=tm[None, :])
            g = g * z * sz
        # lambda_t = C_t g_t + Abar_{t+1} lambda_{t+1}: reverse scan over step t+1's Abar
        tn = t + 1
        mn = tn < L
        dln, _ = _load_delta(dt_ptr, row, tn, mn, bias, HAS_BIAS, SOFTPLUS, CD)
        Rc, Rs = tl.associative_scan(
            (tl.exp(dln[:, None, :] * A[:, :, None]), Ct * g[:, None, :]),
            axis=2, combine_fn=first_order, reverse=True,
        )
        lamt = Rc * lam[:, :, None] + Rs
        first = tt[None, None, :] == 0
        lam = tl.sum(tl.where(first, lamt, 0.0), axis=2)
        dh0 = tl.sum(tl.where(first, dA * lamt, 0.0), axis=2)
        # gradients
        ldl = lamt * dl[:, None, :]
        du = tl.sum(ldl * Bt, axis=1) + Dv[:, None] * g
        dAh = lamt * dA * Hprev
        ddl = tl.sum(lamt * Bt, axis=1) * u + tl.sum(dAh * A[:, :, None], axis=1)
        dA_acc += tl.sum(dAh * dl[:, None, :], axis=2)
        if SOFTPLUS:
            ddl = ddl * softplus_grad(raw)
        ddl = tl.where(tm[None, :], ddl, 0.0)
        dbias_acc += tl.sum(ddl, axis=1)
        dD_acc += tl.sum(g * u, axis=1)
        tl.store(du_ptr + row[:, None] + t[None, :], du, mask=tm[None, :])
        tl.store(ddt_ptr + row[:, None] + t[None, :], ddl, mask=tm[None, :])
        dBt = ldl * u[:, None, :]
        dCt = g[:, None, :] * H
        part = ((pb * NBLK + pd) * NS + nn[:, None]) * L + t[None, :]
        pmask = nmask[:, None] & tm[None, :]
        if VAR_B:
            tl.store(dB_ptr + part, tl.sum(dBt, axis=0), mask=pmask)
        else:
            dB_acc += tl.sum(dBt, axis=2)
        if VAR_C:
            tl.store(dC_ptr + part, tl.sum(dCt, axis=0), mask=pmask)
        else:
            dC_acc += tl.sum(dCt, axis=2)
    nm = nmask[None, :]
    tl.store(dA_ptr + st_off, dA_acc, mask=nm)
    tl.store(dh0_ptr + st_off, dh0, mask=nm)
    if not VAR_B:
        tl.store(dB_ptr + st_off, dB_acc, mask=nm)
    if not VAR_C:
        tl.store(dC_ptr + st_off, dC_acc, mask=nm)
    tl.store(dD_ptr + pb * DIM + dd, dD_acc)
    tl.store(dbias_ptr + pb * DIM + dd, dbias_acc)


@triton.jit
def state_update_kernel(
    s_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ns_ptr,
    DIM, NS, GSB, GB, GSC, GC,
    BD: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    CD: tl.constexpr,
):
    """new_state = exp(Delta A) state + Delta B x; out = (C . new_state + D x) silu(z)."""
    pb = tl.program_id(0)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = dd < DIM
    nn = tl.arange(0, NP)
    m2 = dmask[:, None] & (nn < NS)[None, :]
    st = (pb * DIM + dd[:, None]) * NS + nn[None, :]
    dl = tl.load(dt_ptr + pb * DIM + dd, mask=dmask, other=0.0).to(CD)
    if HAS_BIAS:
        dl = dl + tl.load(bias_ptr + dd, mask=dmask, other=0.0).to(CD)
    if SOFTPLUS:
        dl = softplus(dl)
    x = tl.load(x_ptr + pb * DIM + dd, mask=dmask, other=0.0).to(CD)
    A = tl.load(A_ptr + dd[:, None] * NS + nn[None, :], mask=m2, other=0.0).to(CD)
    Bv = tl.load(B_ptr + (pb * GB + dd[:, None] // GSB) * NS + nn[None, :], mask=m2,
                 other=0.0).to(CD)
    Cv = tl.load(C_ptr + (pb * GC + dd[:, None] // GSC) * NS + nn[None, :], mask=m2,
                 other=0.0).to(CD)
    s = tl.load(s_ptr + st, mask=m2, other=0.0).to(CD)
    s = tl.exp(dl[:, None] * A) * s + (dl * x)[:, None] * Bv
    tl.store(ns_ptr + st, s, mask=m2)
    y = tl.sum(Cv * s, axis=1)
    if HAS_D:
        y = y + tl.load(D_ptr + dd, mask=dmask, other=0.0).to(CD) * x
    if HAS_Z:
        z = tl.load(z_ptr + pb * DIM + dd, mask=dmask, other=0.0).to(CD)
        y = y * z * tl.sigmoid(z)
    tl.store(out_ptr + pb * DIM + dd, y.to(out_ptr.dtype.element_ty), mask=dmask)


def grid(b, d, bd):
    return (b, triton.cdiv(d, bd))
