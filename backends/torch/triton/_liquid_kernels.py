"""Triton kernels of the liquid selective scan (real A, liquid_degree P >= 2), forward and backward.

Levels m = 0..P-1 per (b, d, n):
    h0_t = Abar_t h0_{t-1} + Delta_t B_t u_t,   hm_t = Abar_t hm_{t-1} + c_t h(m-1)_{t-1},
    c_t = Delta_t phi(BL_t u_t),   y_t = C_t . sum_m hm_t.
One program per (batch, block of BD channels), as the selective scan kernels. Per chunk of T
steps the (BD, NP, T) tiles are built once and the levels are scanned one after the other
(level m's input c_t h(m-1)_{t-1} needs the previous level's *exclusive* scan, so every scan
carries a second map, that of the prefix without its last element: `first_order_excl`). Only the
levels at chunk starts (b, P, d, chunks, n) are written. The backward walks the chunks in
reverse, recomputes the chunk's levels from that checkpoint (kept as a (BD, PP, NP, T) tile) and
runs the coupled adjoint from the top level down, as reverse scans of
    mu^m_t = Abar_t mu^m_{t+1} + Abar_t C_t g_t + c_t lambda^(m+1)_t,
    lambda^m_t = C_t g_t + mu^m_{t+1}   (the exclusive reverse scan),
mu^m being the cotangent carried to h^m_{t-1} (carried across chunks; d initial_state = mu_0).
dB / dC / dBL are reduced over the program's channels and written per block (input-dependent)
or accumulated over time (constant); the caller sums the blocks in a fixed order. No atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl
from liquidssm.spec._common import LCONTRACT_CODES, LECUN_SCALE, LECUN_SLOPE

from ._common import softplus_grad
from ._selective_kernels import _load_bc, _load_delta


@triton.jit
def first_order_excl(a1, b1, e1, f1, a2, b2, e2, f2):
    """h -> a h + b composed, plus (e, f): the composition without the segment's last element.

    Leaves are (a_t, b_t, 1, 0); the inclusive scan then gives at t the maps of [0..t] and of
    [0..t-1] (the exclusive scan), in scan order (reversed time for reverse=True).
    """
    return a2 * a1, a2 * b1 + b2, e2 * a1, e2 * b1 + f2


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


#: the spec's lcontract codes and constants (liquidssm.spec._common), as Triton compile-time
#: globals
_TANH = tl.constexpr(LCONTRACT_CODES["tanh"])
_LECUN = tl.constexpr(LCONTRACT_CODES["lecun"])
_SCALE = tl.constexpr(LECUN_SCALE)
_SLOPE = tl.constexpr(LECUN_SLOPE)


@triton.jit
def _phi(x, PHI: tl.constexpr):
    """lcontract (PHI its LCONTRACT_CODES code): none -> x, tanh, lecun -> _SCALE tanh(_SLOPE x)."""
    if PHI == _TANH:
        return _tanh(x)
    elif PHI == _LECUN:
        # tensor * constexpr (the interpreter cannot take constexpr * tensor)
        return _tanh(x * _SLOPE) * _SCALE
    else:
        return x


@triton.jit
def _phi_grad(x, PHI: tl.constexpr):
    if PHI == _TANH:
        t = _tanh(x)
        return 1.0 - t * t
    elif PHI == _LECUN:
        t = _tanh(x * _SLOPE)
        return (1.0 - t * t) * _SLOPE * _SCALE
    else:
        return tl.full(x.shape, 1.0, x.dtype)


@triton.jit
def _level(X, lev, m):
    """Level m of a (BD, PP, NP) stack -> (BD, NP)."""
    return tl.sum(tl.where(lev[None, :, None] == m, X, 0.0), axis=1)


@triton.jit
def _level4(X, lev, m):
    """Level m of a (BD, PP, NP, T) stack -> (BD, NP, T)."""
    return tl.sum(tl.where(lev[None, :, None, None] == m, X, 0.0), axis=1)


@triton.jit
def liquid_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, L_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, hlast_ptr, ck_ptr,
    L, DIM, NS, GSB, GSC, GSL, NCHUNK,
    sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, sLb, sLg, sLn, sLl,
    BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, P: tl.constexpr, PP: tl.constexpr,
    PHI: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr, SAVE_CK: tl.constexpr, CD: tl.constexpr,
):
    pb = tl.program_id(0)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    nmask = nn < NS
    tt = tl.arange(0, T)
    lev = tl.arange(0, PP)
    row = (pb * DIM + dd) * L
    # levels (b, P, d, n) and checkpoints (b, P, d, chunks, n) as (BD, PP, NP) offsets
    lrow = (pb * P + lev[None, :, None]) * DIM + dd[:, None, None]
    st_off = lrow * NS + nn[None, None, :]
    smask = (lev < P)[None, :, None] & nmask[None, None, :]
    A = tl.load(A_ptr + dd[:, None] * NS + nn[None, :], mask=nmask[None, :], other=0.0).to(CD)
    bias = tl.zeros((BD,), dtype=CD)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + dd).to(CD)
    if HAS_D:
        Dv = tl.load(D_ptr + dd).to(CD)
    hs = tl.zeros((BD, PP, NP), dtype=CD)
    if HAS_H0:
        hs = tl.load(h0_ptr + st_off, mask=smask, other=0.0).to(CD)
    ones = tl.full((BD, NP, T), 1.0, CD)
    zeros = tl.zeros((BD, NP, T), dtype=CD)
    for k in range(0, NCHUNK):
        if SAVE_CK:
            tl.store(ck_ptr + (lrow * NCHUNK + k) * NS + nn[None, None, :], hs, mask=smask)
        t = k * T + tt
        tm = t < L
        dl, raw = _load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS, SOFTPLUS, CD)
        u = tl.load(u_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        Bt = _load_bc(B_ptr, pb, dd // GSB, nn, nmask, t, tm, sBb, sBg, sBn, sBl, CD)
        Ct = _load_bc(C_ptr, pb, dd // GSC, nn, nmask, t, tm, sCb, sCg, sCn, sCl, CD)
        BLt = _load_bc(L_ptr, pb, dd // GSL, nn, nmask, t, tm, sLb, sLg, sLn, sLl, CD)
        dA = tl.exp(dl[:, None, :] * A[:, :, None])
        c = dl[:, None, :] * _phi(BLt * u[:, None, :], PHI)
        inp = (dl * u)[:, None, :] * Bt
        Hsum = tl.zeros((BD, NP, T), dtype=CD)
        Pm = tl.zeros((BD, NP, T), dtype=CD)
        new = hs
        for m in tl.static_range(P):
            hm = _level(hs, lev, m)
            if m > 0:
                inp = c * Pm
            Ac, Hs, Ec, Fs = tl.associative_scan((dA, inp, ones, zeros), axis=2,
                                                 combine_fn=first_order_excl)
            H = Ac * hm[:, :, None] + Hs
            Pm = Ec * hm[:, :, None] + Fs
            Hsum += H
            hl = tl.sum(tl.where(tt[None, None, :] == T - 1, H, 0.0), axis=2)
            new = tl.where(lev[None, :, None] == m, hl[:, None, :], new)
        hs = new
        y = tl.sum(Hsum * Ct, axis=1)
        if HAS_D:
            y = y + Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
            y = y * z * tl.sigmoid(z)
        o_ptr = out_ptr + row[:, None] + t[None, :]
        tl.store(o_ptr, y.to(out_ptr.dtype.element_ty), mask=tm[None, :])
    tl.store(hlast_ptr + st_off, hs, mask=smask)


@triton.jit
def liquid_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, L_ptr, D_ptr, z_ptr, bias_ptr, ck_ptr, g_ptr, dlast_ptr,
    du_ptr, ddt_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dL_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, DIM, NS, GSB, GSC, GSL, NCHUNK, NBLK,
    sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, sLb, sLg, sLn, sLl,
    BD: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, P: tl.constexpr, PP: tl.constexpr,
    PHI: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
    VAR_L: tl.constexpr, TIED: tl.constexpr, CD: tl.constexpr,
):
    """Gradients. Partial outputs (summed by the caller in a fixed order): dA (b, d, n),
    dh0 (b, P, d, n); dD, dbias (b, d); dB / dC / dBL (b, d, n) if constant else
    (b, d // BD, n, l). With TIED (BL is B) the BL gradient is added to dB and dL is unused.
    """
    pb = tl.program_id(0)
    pd = tl.program_id(1)
    dd = pd * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    nmask = nn < NS
    tt = tl.arange(0, T)
    lev = tl.arange(0, PP)
    row = (pb * DIM + dd) * L
    st_off = (pb * DIM + dd[:, None]) * NS + nn[None, :]
    lrow = (pb * P + lev[None, :, None]) * DIM + dd[:, None, None]
    lst_off = lrow * NS + nn[None, None, :]
    smask = (lev < P)[None, :, None] & nmask[None, None, :]
    A = tl.load(A_ptr + dd[:, None] * NS + nn[None, :], mask=nmask[None, :], other=0.0).to(CD)
    bias = tl.zeros((BD,), dtype=CD)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + dd).to(CD)
    Dv = tl.zeros((BD,), dtype=CD)
    if HAS_D:
        Dv = tl.load(D_ptr + dd).to(CD)
    mu = tl.zeros((BD, PP, NP), dtype=CD)
    if HAS_DLAST:
        mu = tl.load(dlast_ptr + lst_off, mask=smask, other=0.0).to(CD)
    ones = tl.full((BD, NP, T), 1.0, CD)
    zeros = tl.zeros((BD, NP, T), dtype=CD)
    dA_acc = tl.zeros((BD, NP), dtype=CD)
    dB_acc = tl.zeros((BD, NP), dtype=CD)
    dC_acc = tl.zeros((BD, NP), dtype=CD)
    dL_acc = tl.zeros((BD, NP), dtype=CD)
    dD_acc = tl.zeros((BD,), dtype=CD)
    dbias_acc = tl.zeros((BD,), dtype=CD)
    for kk in range(0, NCHUNK):
        k = NCHUNK - 1 - kk
        t = k * T + tt
        tm = t < L
        hs = tl.load(ck_ptr + (lrow * NCHUNK + k) * NS + nn[None, None, :], mask=smask,
                     other=0.0).to(CD)
        dl, raw = _load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS, SOFTPLUS, CD)
        u = tl.load(u_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        Bt = _load_bc(B_ptr, pb, dd // GSB, nn, nmask, t, tm, sBb, sBg, sBn, sBl, CD)
        Ct = _load_bc(C_ptr, pb, dd // GSC, nn, nmask, t, tm, sCb, sCg, sCn, sCl, CD)
        BLt = _load_bc(L_ptr, pb, dd // GSL, nn, nmask, t, tm, sLb, sLg, sLn, sLl, CD)
        dA = tl.exp(dl[:, None, :] * A[:, :, None])
        pre = BLt * u[:, None, :]
        ph = _phi(pre, PHI)
        c = dl[:, None, :] * ph
        # recompute the chunk's levels: Pall[:, m] = h^m_{t-1}, Hsum = sum_m h^m_t
        inp = (dl * u)[:, None, :] * Bt
        Hsum = tl.zeros((BD, NP, T), dtype=CD)
        Pm = tl.zeros((BD, NP, T), dtype=CD)
        Pall = tl.zeros((BD, PP, NP, T), dtype=CD)
        for m in tl.static_range(P):
            hm = _level(hs, lev, m)
            if m > 0:
                inp = c * Pm
            Ac, Hs, Ec, Fs = tl.associative_scan((dA, inp, ones, zeros), axis=2,
                                                 combine_fn=first_order_excl)
            Hsum += Ac * hm[:, :, None] + Hs
            Pm = Ec * hm[:, :, None] + Fs
            Pall = tl.where(lev[None, :, None, None] == m, Pm[:, None, :, :], Pall)
        # output gradient through z and D
        g = tl.load(g_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
        if HAS_Z:
            z = tl.load(z_ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)
            sz = tl.sigmoid(z)
            yp = tl.sum(Hsum * Ct, axis=1) + Dv[:, None] * u
            dz = g * yp * sz * (1.0 + z * (1.0 - sz))
            tl.store(dz_ptr + row[:, None] + t[None, :], dz, mask=tm[None, :])
            g = g * z * sz
        Cg = Ct * g[:, None, :]
        # coupled adjoint, top level first
        lam = tl.zeros((BD, NP, T), dtype=CD)
        dAb = tl.zeros((BD, NP, T), dtype=CD)
        dc = tl.zeros((BD, NP, T), dtype=CD)
        new = mu
        for i in tl.static_range(P):
            m = P - 1 - i
            mum = _level(mu, lev, m)
            leaf = dA * Cg
            if i > 0:
                leaf = leaf + c * lam
            Ra, Rb, Re, Rf = tl.associative_scan((dA, leaf, ones, zeros), axis=2,
                                                 combine_fn=first_order_excl, reverse=True)
            mut = Ra * mum[:, :, None] + Rb
            lam = Cg + Re * mum[:, :, None] + Rf
            dAb += lam * _level4(Pall, lev, m)
            if m > 0:
                dc += lam * _level4(Pall, lev, m - 1)
            mu0 = tl.sum(tl.where(tt[None, None, :] == 0, mut, 0.0), axis=2)
            new = tl.where(lev[None, :, None] == m, mu0[:, None, :], new)
        mu = new
        # gradients (lam is level 0's)
        ldl = lam * dl[:, None, :]
        dAh = dAb * dA
        dpre = dc * dl[:, None, :] * _phi_grad(pre, PHI)
        du = tl.sum(ldl * Bt + dpre * BLt, axis=1) + Dv[:, None] * g
        ddl = tl.sum(lam * Bt, axis=1) * u + tl.sum(dAh * A[:, :, None] + dc * ph, axis=1)
        dA_acc += tl.sum(dAh * dl[:, None, :], axis=2)
        if SOFTPLUS:
            ddl = ddl * softplus_grad(raw)
        ddl = tl.where(tm[None, :], ddl, 0.0)
        dbias_acc += tl.sum(ddl, axis=1)
        dD_acc += tl.sum(g * u, axis=1)
        tl.store(du_ptr + row[:, None] + t[None, :], du, mask=tm[None, :])
        tl.store(ddt_ptr + row[:, None] + t[None, :], ddl, mask=tm[None, :])
        dLt = dpre * u[:, None, :]
        dBt = ldl * u[:, None, :]
        if TIED:
            dBt = dBt + dLt
        dCt = g[:, None, :] * Hsum
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
        if not TIED:
            if VAR_L:
                tl.store(dL_ptr + part, tl.sum(dLt, axis=0), mask=pmask)
            else:
                dL_acc += tl.sum(dLt, axis=2)
    nm = nmask[None, :]
    tl.store(dA_ptr + st_off, dA_acc, mask=nm)
    tl.store(dh0_ptr + lst_off, mu, mask=smask)
    if not VAR_B:
        tl.store(dB_ptr + st_off, dB_acc, mask=nm)
    if not VAR_C:
        tl.store(dC_ptr + st_off, dC_acc, mask=nm)
    if not TIED:
        if not VAR_L:
            tl.store(dL_ptr + st_off, dL_acc, mask=nm)
    tl.store(dD_ptr + pb * DIM + dd, dD_acc)
    tl.store(dbias_ptr + pb * DIM + dd, dbias_acc)


def grid(b, d, bd):
    return (b, triton.cdiv(d, bd))
