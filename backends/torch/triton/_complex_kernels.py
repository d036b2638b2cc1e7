"""Triton kernels of the selective scan with complex A (mamba's complex selective_scan_ref).

Complex numbers are (re, im) pairs of real tiles in registers. Layouts (all real tensors):
A, constant B / C (d, n, 2); input-dependent B / C (b, n, 2 l) and grouped (b, g, n, 2 l),
(re, im) interleaved along time (element [.., 2t] is Re, [.., 2t + 1] Im: the same memory as
(.., l, 2)); states (b, d, n, 2). Recurrence h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t,
y_t = 2 Re(sum_n C_t h_t). Same structure as the real kernels (_selective_kernels): per chunk an
associative scan of the complex first-order maps; checkpoints (b, d, chunks, n, 2) only.
Backward, with lambda = dL/dRe h + i dL/dIm h (torch's convention for complex gradients):
    lambda_t = 2 g_t conj(C_t) + conj(Abar_{t+1}) lambda_{t+1},   dAbar_t = conj(h_{t-1}) lambda_t
    dA = sum_t Delta_t conj(Abar_t) dAbar_t,  dDelta_t = sum_n Re(conj(A Abar_t) dAbar_t
    + conj(B_t) u_t lambda_t),  dB_t = Delta_t u_t lambda_t,  dC_t = 2 g_t conj(h_t),
    du_t = Delta_t sum_n Re(conj(B_t) lambda_t) + D g_t,  d h_{-1} = conj(Abar_0) lambda_0.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import softplus_grad
from ._selective_kernels import _load_bc, _load_delta


@triton.jit
def complex_first_order(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    """(a1, b1) then (a2, b2) for complex h -> a h + b: (a2 a1, a2 b1 + b2)."""
    return (ar2 * ar1 - ai2 * ai1, ar2 * ai1 + ai2 * ar1,
            ar2 * br1 - ai2 * bi1 + br2, ar2 * bi1 + ai2 * br1 + bi2)


@triton.jit
def _abar(dl, Ar, Ai):
    """exp(Delta A) as (re, im) (BD, NP, T) tiles."""
    mag = tl.exp(dl[:, None, :] * Ar[:, :, None])
    ang = dl[:, None, :] * Ai[:, :, None]
    return mag * tl.cos(ang), mag * tl.sin(ang)


@triton.jit
def _load_c(ptr, pb, grp, nn, nmask, t, tm, sb, sg, sn, sl, CD: tl.constexpr):
    """A complex B / C tile: (re, im), the imaginary part one element after the real part."""
    re = _load_bc(ptr, pb, grp, nn, nmask, t, tm, sb, sg, sn, sl, CD)
    im = _load_bc(ptr + 1, pb, grp, nn, nmask, t, tm, sb, sg, sn, sl, CD)
    return re, im


@triton.jit
def complex_fwd_kernel(
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
    nm = nmask[None, :]
    tt = tl.arange(0, T)
    row = (pb * DIM + dd) * L
    st_off = ((pb * DIM + dd[:, None]) * NS + nn[None, :]) * 2
    a_off = (dd[:, None] * NS + nn[None, :]) * 2
    Ar = tl.load(A_ptr + a_off, mask=nm, other=0.0).to(CD)
    Ai = tl.load(A_ptr + a_off + 1, mask=nm, other=0.0).to(CD)
    bias = tl.zeros((BD,), dtype=CD)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + dd).to(CD)
    if HAS_D:
        Dv = tl.load(D_ptr + dd).to(CD)
    hr = tl.zeros((BD, NP), dtype=CD)
    hi = tl.zeros((BD, NP), dtype=CD)
    if HAS_H0:
        hr = tl.load(h0_ptr + st_off, mask=nm, other=0.0).to(CD)
        hi = tl.load(h0_ptr + st_off + 1, mask=nm, other=0.0).to(CD)
    for k in range(0, NCHUNK):
        if SAVE_CK:
            ck_off = (((pb * DIM + dd[:, None]) * NCHUNK + k) * NS + nn[None, :]) * 2
            tl.store(ck_ptr + ck_off, hr, mask=nm)
            tl.store(ck_ptr + ck_off + 1, hi, mask=nm)
        t = k * T + tt
        tm = t < L
        dl, raw = _load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS, SOFTPLUS, CD)
        u = tl.load(u_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        Br, Bi = _load_c(B_ptr, pb, dd // GSB, nn, nmask, t, tm, sBb, sBg, sBn, sBl, CD)
        Cr, Ci = _load_c(C_ptr, pb, dd // GSC, nn, nmask, t, tm, sCb, sCg, sCn, sCl, CD)
        ar, ai = _abar(dl, Ar, Ai)
        du_ = (dl * u)[:, None, :]
        Acr, Aci, Hsr, Hsi = tl.associative_scan((ar, ai, du_ * Br, du_ * Bi), axis=2,
                                                 combine_fn=complex_first_order)
        Hr = Acr * hr[:, :, None] - Aci * hi[:, :, None] + Hsr
        Hi = Acr * hi[:, :, None] + Aci * hr[:, :, None] + Hsi
        y = 2.0 * tl.sum(Cr * Hr - Ci * Hi, axis=1)
        last = tt[None, None, :] == T - 1
        hr = tl.sum(tl.where(last, Hr, 0.0), axis=2)
        hi = tl.sum(tl.where(last, Hi, 0.0), axis=2)
        if HAS_D:
            y = y + Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
            y = y * z * tl.sigmoid(z)
        o_ptr = out_ptr + row[:, None] + t[None, :]
        tl.store(o_ptr, y.to(out_ptr.dtype.element_ty), mask=tm[None, :])
    tl.store(hlast_ptr + st_off, hr, mask=nm)
    tl.store(hlast_ptr + st_off + 1, hi, mask=nm)


@triton.jit
def complex_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ck_ptr, g_ptr, dlast_ptr,
    du_ptr, ddt_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, DIM, NS, GSB, GSC, NCHUNK, NBLK,
    sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl,
    BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr, CD: tl.constexpr,
):
    """Gradients. Partial outputs (summed by the caller in a fixed order): dA, dh0
    (b, d, n, 2); dD, dbias (b, d); dB / dC (b, d, n, 2) if constant else (b, d // BD, n, 2 l).
    """
    pb = tl.program_id(0)
    pd = tl.program_id(1)
    dd = pd * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    nmask = nn < NS
    nm = nmask[None, :]
    tt = tl.arange(0, T)
    row = (pb * DIM + dd) * L
    st_off = ((pb * DIM + dd[:, None]) * NS + nn[None, :]) * 2
    a_off = (dd[:, None] * NS + nn[None, :]) * 2
    Ar = tl.load(A_ptr + a_off, mask=nm, other=0.0).to(CD)
    Ai = tl.load(A_ptr + a_off + 1, mask=nm, other=0.0).to(CD)
    bias = tl.zeros((BD,), dtype=CD)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + dd).to(CD)
    Dv = tl.zeros((BD,), dtype=CD)
    if HAS_D:
        Dv = tl.load(D_ptr + dd).to(CD)
    lr = tl.zeros((BD, NP), dtype=CD)
    li = tl.zeros((BD, NP), dtype=CD)
    if HAS_DLAST:
        lr = tl.load(dlast_ptr + st_off, mask=nm, other=0.0).to(CD)
        li = tl.load(dlast_ptr + st_off + 1, mask=nm, other=0.0).to(CD)
    dAr_acc = tl.zeros((BD, NP), dtype=CD)
    dAi_acc = tl.zeros((BD, NP), dtype=CD)
    dBr_acc = tl.zeros((BD, NP), dtype=CD)
    dBi_acc = tl.zeros((BD, NP), dtype=CD)
    dCr_acc = tl.zeros((BD, NP), dtype=CD)
    dCi_acc = tl.zeros((BD, NP), dtype=CD)
    dD_acc = tl.zeros((BD,), dtype=CD)
    dbias_acc = tl.zeros((BD,), dtype=CD)
    dh0r = tl.zeros((BD, NP), dtype=CD)
    dh0i = tl.zeros((BD, NP), dtype=CD)
    for kk in range(0, NCHUNK):
        k = NCHUNK - 1 - kk
        t = k * T + tt
        tm = t < L
        ck_off = (((pb * DIM + dd[:, None]) * NCHUNK + k) * NS + nn[None, :]) * 2
        hr = tl.load(ck_ptr + ck_off, mask=nm, other=0.0).to(CD)
        hi = tl.load(ck_ptr + ck_off + 1, mask=nm, other=0.0).to(CD)
        # step t
        dl, raw = _load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS, SOFTPLUS, CD)
        u = tl.load(u_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        Br, Bi = _load_c(B_ptr, pb, dd // GSB, nn, nmask, t, tm, sBb, sBg, sBn, sBl, CD)
        Cr, Ci = _load_c(C_ptr, pb, dd // GSC, nn, nmask, t, tm, sCb, sCg, sCn, sCl, CD)
        ar, ai = _abar(dl, Ar, Ai)
        # h_{t-1}: scan of the step t-1 inputs (identity at the chunk's first step)
        tp = t - 1
        mp = tm & (tt >= 1)
        dlp, _ = _load_delta(dt_ptr, row, tp, mp, bias, HAS_BIAS, SOFTPLUS, CD)
        up = tl.load(u_ptr + row[:, None] + tp[None, :], mask=mp[None, :], other=0.0).to(CD)
        Bpr, Bpi = _load_c(B_ptr, pb, dd // GSB, nn, nmask, tp, mp, sBb, sBg, sBn, sBl, CD)
        apr, api = _abar(dlp, Ar, Ai)
        dup = (dlp * up)[:, None, :]
        Acr, Aci, Hsr, Hsi = tl.associative_scan((apr, api, dup * Bpr, dup * Bpi), axis=2,
                                                 combine_fn=complex_first_order)
        Pr = Acr * hr[:, :, None] - Aci * hi[:, :, None] + Hsr
        Pi = Acr * hi[:, :, None] + Aci * hr[:, :, None] + Hsi
        dlu = (dl * u)[:, None, :]
        Hr = ar * Pr - ai * Pi + dlu * Br
        Hi = ar * Pi + ai * Pr + dlu * Bi
        # output gradient through z and D
        g = tl.load(g_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        if HAS_Z:
            z = tl.load(z_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
            sz = tl.sigmoid(z)
            pre = 2.0 * tl.sum(Cr * Hr - Ci * Hi, axis=1) + Dv[:, None] * u
            dz = g * pre * sz * (1.0 + z * (1.0 - sz))
            tl.store(dz_ptr + row[:, None] + t[None, :], dz, mask=tm[None, :])
            g = g * z * sz
        # lambda_t = 2 g_t conj(C_t) + conj(Abar_{t+1}) lambda_{t+1}
        tn = t + 1
        mn = tn < L
        dln, _ = _load_delta(dt_ptr, row, tn, mn, bias, HAS_BIAS, SOFTPLUS, CD)
        anr, ani = _abar(dln, Ar, Ai)
        g2 = 2.0 * g[:, None, :]
        Rcr, Rci, Rsr, Rsi = tl.associative_scan((anr, -ani, g2 * Cr, -g2 * Ci), axis=2,
                                                 combine_fn=complex_first_order, reverse=True)
        Lr = Rcr * lr[:, :, None] - Rci * li[:, :, None] + Rsr
        Li = Rcr * li[:, :, None] + Rci * lr[:, :, None] + Rsi
        first = tt[None, None, :] == 0
        lr = tl.sum(tl.where(first, Lr, 0.0), axis=2)
        li = tl.sum(tl.where(first, Li, 0.0), axis=2)
        # d h_{-1} (kept from the first chunk) = conj(Abar_0) lambda_0
        dh0r = tl.sum(tl.where(first, ar * Lr + ai * Li, 0.0), axis=2)
        dh0i = tl.sum(tl.where(first, ar * Li - ai * Lr, 0.0), axis=2)
        # dAbar = conj(h_{t-1}) lambda_t
        wr = Pr * Lr + Pi * Li
        wi = Pr * Li - Pi * Lr
        # dA += Delta conj(Abar) dAbar
        dlx = dl[:, None, :]
        dAr_acc += tl.sum(dlx * (ar * wr + ai * wi), axis=2)
        dAi_acc += tl.sum(dlx * (ar * wi - ai * wr), axis=2)
        # Re(conj(A Abar) dAbar) and Re(conj(B) lambda)
        qr = Ar[:, :, None] * ar - Ai[:, :, None] * ai
        qi = Ar[:, :, None] * ai + Ai[:, :, None] * ar
        rb = tl.sum(Br * Lr + Bi * Li, axis=1)
        ddl = tl.sum(qr * wr + qi * wi, axis=1) + rb * u
        du = dl * rb + Dv[:, None] * g
        if SOFTPLUS:
            ddl = ddl * softplus_grad(raw)
        ddl = tl.where(tm[None, :], ddl, 0.0)
        dbias_acc += tl.sum(ddl, axis=1)
        dD_acc += tl.sum(g * u, axis=1)
        tl.store(du_ptr + row[:, None] + t[None, :], du, mask=tm[None, :])
        tl.store(ddt_ptr + row[:, None] + t[None, :], ddl, mask=tm[None, :])
        dBr, dBi = dlu * Lr, dlu * Li
        dCr, dCi = g2 * Hr, -g2 * Hi
        part = (((pb * NBLK + pd) * NS + nn[:, None]) * L + t[None, :]) * 2
        pmask = nmask[:, None] & tm[None, :]
        if VAR_B:
            tl.store(dB_ptr + part, tl.sum(dBr, axis=0), mask=pmask)
            tl.store(dB_ptr + part + 1, tl.sum(dBi, axis=0), mask=pmask)
        else:
            dBr_acc += tl.sum(dBr, axis=2)
            dBi_acc += tl.sum(dBi, axis=2)
        if VAR_C:
            tl.store(dC_ptr + part, tl.sum(dCr, axis=0), mask=pmask)
            tl.store(dC_ptr + part + 1, tl.sum(dCi, axis=0), mask=pmask)
        else:
            dCr_acc += tl.sum(dCr, axis=2)
            dCi_acc += tl.sum(dCi, axis=2)
    tl.store(dA_ptr + st_off, dAr_acc, mask=nm)
    tl.store(dA_ptr + st_off + 1, dAi_acc, mask=nm)
    tl.store(dh0_ptr + st_off, dh0r, mask=nm)
    tl.store(dh0_ptr + st_off + 1, dh0i, mask=nm)
    if not VAR_B:
        tl.store(dB_ptr + st_off, dBr_acc, mask=nm)
        tl.store(dB_ptr + st_off + 1, dBi_acc, mask=nm)
    if not VAR_C:
        tl.store(dC_ptr + st_off, dCr_acc, mask=nm)
        tl.store(dC_ptr + st_off + 1, dCi_acc, mask=nm)
    tl.store(dD_ptr + pb * DIM + dd, dD_acc)
    tl.store(dbias_ptr + pb * DIM + dd, dbias_acc)


def grid(b, d, bd):
    return (b, triton.cdiv(d, bd))
