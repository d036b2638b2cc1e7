"""Triton kernels of the liquid selective scan (real A, liquid_degree P >= 2), forward and backward.

Levels m = 0..P-1 per (b, d, n):
    h0_t = Abar_t h0_{t-1} + Delta_t B_t u_t,   hm_t = Abar_t hm_{t-1} + c_t h(m-1)_{t-1},
    c_t = Delta_t phi(BL_t u_t),   y_t = C_t . sum_m hm_t.
One program per (batch, block of BD channels), as the selective scan kernels (_jit). Per chunk of T
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

from ._jit import (
    bc_grad,
    first_order_excl,
    first_step,
    gated_out,
    last_step,
    load_bc,
    load_opt,
    load_step,
    out_cotangent,
    partials,
    prologue,
    step_grads,
    store_acc,
    store_channel_grads,
)


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
def _level_offsets(pb, DIM, NS, dd, nn, nmask, P: tl.constexpr, PP: tl.constexpr):
    """Levels lev (PP,); rows lrow (BD, PP, 1) of the program's channels in (b, P, d, ...); the
    offsets (BD, PP, NP) of its elements in a (b, P, d, n) stack of states, and their mask."""
    lev = tl.arange(0, PP)
    lrow = (pb * P + lev[None, :, None]) * DIM + dd[:, None, None]
    smask = (lev < P)[None, :, None] & nmask[None, None, :]
    return lev, lrow, lrow * NS + nn[None, None, :], smask


@triton.jit
def _levels(hs, lev, dA, inp, c, ones, zeros, tt, BD: tl.constexpr, NP: tl.constexpr,
            T: tl.constexpr, P: tl.constexpr, PP: tl.constexpr, KEEP_PREV: tl.constexpr):
    """A chunk's levels from their states hs (BD, PP, NP) before it; dA = Abar, inp = level 0's
    input Delta B u and c the coupling, (BD, NP, T). Returns sum_m h^m_t (BD, NP, T), the levels
    after the chunk (BD, PP, NP) (unless KEEP_PREV), and with KEEP_PREV h^m_{t-1} as a
    (BD, PP, NP, T) stack (else 0)."""
    Hsum = zeros
    Pm = zeros
    new = hs
    Pall = tl.zeros((BD, PP, NP, T), dtype=dA.dtype)
    for m in tl.static_range(P):
        hm = _level(hs, lev, m)
        if m > 0:
            inp = c * Pm
        Ac, Hs, Ec, Fs = tl.associative_scan((dA, inp, ones, zeros), axis=2,
                                             combine_fn=first_order_excl)
        H = Ac * hm[:, :, None] + Hs
        Pm = Ec * hm[:, :, None] + Fs
        Hsum += H
        if KEEP_PREV:
            Pall = tl.where(lev[None, :, None, None] == m, Pm[:, None, :, :], Pall)
        else:
            new = tl.where(lev[None, :, None] == m, last_step(H, tt, T)[:, None, :], new)
    return Hsum, new, Pall


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
    """Levels (b, P, d, n) and checkpoints (b, P, d, chunks, n) as (BD, PP, NP) tiles."""
    pb, pd, dd, nn, nmask, tt, row, _, A, _, bias, Dv = prologue(
        A_ptr, bias_ptr, D_ptr, L, DIM, NS, BD, NP, T, HAS_BIAS, HAS_D, False, CD)
    lev, lrow, lst, smask = _level_offsets(pb, DIM, NS, dd, nn, nmask, P, PP)
    hs = load_opt(h0_ptr, lst, smask, HAS_H0, CD)
    ones = tl.full((BD, NP, T), 1.0, CD)
    zeros = tl.zeros((BD, NP, T), dtype=CD)
    for k in range(0, NCHUNK):
        if SAVE_CK:
            tl.store(ck_ptr + (lrow * NCHUNK + k) * NS + nn[None, None, :], hs, mask=smask)
        t = k * T + tt
        tm = t < L
        dl, raw, u, Bt, _, Ct, _ = load_step(
            dt_ptr, u_ptr, B_ptr, C_ptr, row, pb, dd, nn, nmask, t, tm, bias, GSB, GSC,
            sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, HAS_BIAS, SOFTPLUS, False, CD)
        BLt = load_bc(L_ptr, pb, dd // GSL, nn, nmask, t, tm, sLb, sLg, sLn, sLl, CD)
        dA = tl.exp(dl[:, None, :] * A[:, :, None])
        c = dl[:, None, :] * _phi(BLt * u[:, None, :], PHI)
        Hsum, hs, _ = _levels(hs, lev, dA, (dl * u)[:, None, :] * Bt, c, ones, zeros, tt,
                              BD, NP, T, P, PP, False)
        gated_out(tl.sum(Hsum * Ct, axis=1), u, Dv, z_ptr, out_ptr, row, t, tm, HAS_D, HAS_Z,
                  CD)
    tl.store(hlast_ptr + lst, hs, mask=smask)


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
    pb, pd, dd, nn, nmask, tt, row, st, A, _, bias, Dv = prologue(
        A_ptr, bias_ptr, D_ptr, L, DIM, NS, BD, NP, T, HAS_BIAS, HAS_D, False, CD)
    nm = nmask[None, :]
    lev, lrow, lst, smask = _level_offsets(pb, DIM, NS, dd, nn, nmask, P, PP)
    mu = load_opt(dlast_ptr, lst, smask, HAS_DLAST, CD)
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
        hs = load_opt(ck_ptr, (lrow * NCHUNK + k) * NS + nn[None, None, :], smask, True, CD)
        dl, raw, u, Bt, _, Ct, _ = load_step(
            dt_ptr, u_ptr, B_ptr, C_ptr, row, pb, dd, nn, nmask, t, tm, bias, GSB, GSC,
            sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, HAS_BIAS, SOFTPLUS, False, CD)
        BLt = load_bc(L_ptr, pb, dd // GSL, nn, nmask, t, tm, sLb, sLg, sLn, sLl, CD)
        dA = tl.exp(dl[:, None, :] * A[:, :, None])
        pre = BLt * u[:, None, :]
        ph = _phi(pre, PHI)
        c = dl[:, None, :] * ph
        # recompute the chunk's levels: Pall[:, m] = h^m_{t-1}, Hsum = sum_m h^m_t
        Hsum, _, Pall = _levels(hs, lev, dA, (dl * u)[:, None, :] * Bt, c, ones, zeros, tt,
                                BD, NP, T, P, PP, True)
        g = out_cotangent(g_ptr, z_ptr, dz_ptr, tl.sum(Hsum * Ct, axis=1), u, Dv, row, t, tm,
                          HAS_Z, CD)
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
            new = tl.where(lev[None, :, None] == m, first_step(mut, tt)[:, None, :], new)
        mu = new
        # gradients (lam is level 0's)
        ldl = lam * dl[:, None, :]
        dAh = dAb * dA
        dpre = dc * dl[:, None, :] * _phi_grad(pre, PHI)
        du = tl.sum(ldl * Bt + dpre * BLt, axis=1) + Dv[:, None] * g
        ddl = tl.sum(lam * Bt, axis=1) * u + tl.sum(dAh * A[:, :, None] + dc * ph, axis=1)
        dA_acc += tl.sum(dAh * dl[:, None, :], axis=2)
        dbias_acc, dD_acc = step_grads(ddl, du, raw, g, u, row, t, tm, du_ptr, ddt_ptr,
                                       dbias_acc, dD_acc, SOFTPLUS)
        dLt = dpre * u[:, None, :]
        dBt = ldl * u[:, None, :]
        if TIED:
            dBt = dBt + dLt
        part, pmask = partials(pb, pd, NBLK, NS, nn, nmask, L, t, tm, 1)
        dB_acc = bc_grad(dB_ptr, part, pmask, dBt, dB_acc, VAR_B)
        dC_acc = bc_grad(dC_ptr, part, pmask, g[:, None, :] * Hsum, dC_acc, VAR_C)
        if not TIED:
            dL_acc = bc_grad(dL_ptr, part, pmask, dLt, dL_acc, VAR_L)
    tl.store(dA_ptr + st, dA_acc, mask=nm)
    tl.store(dh0_ptr + lst, mu, mask=smask)
    store_acc(dB_ptr, st, dB_acc, nm, VAR_B)
    store_acc(dC_ptr, st, dC_acc, nm, VAR_C)
    if not TIED:
        store_acc(dL_ptr, st, dL_acc, nm, VAR_L)
    store_channel_grads(dD_ptr, dbias_ptr, pb, DIM, dd, dD_acc, dbias_acc)
