"""Triton kernels of the selective scan, real A and complex A, forward and backward.

One program per (batch, block of BD channels) (see _jit). Time is cut into chunks of T steps;
per chunk the (BD, NP, T) tiles of exp(Delta A) and Delta B u are combined by an associative scan
in registers, and only the state at the chunk's start (b, d, chunks, n) is written (for the
backward). The backward walks the chunks in reverse, recomputes the chunk's states from that
checkpoint (a scan over the inputs loaded one step earlier, which gives h_{t-1} directly), and
runs the adjoint lambda_t = C_t g_t + Abar_{t+1} lambda_{t+1} as a reverse scan over inputs
loaded one step later. dB / dC are reduced over the program's channels and written per block
(input-dependent B / C) or accumulated over time (constant B / C); the caller sums the blocks in
a fixed order (no atomics).

Complex A (mamba's complex selective_scan_ref): complex numbers are (re, im) pairs of real tiles.
Layouts (all real tensors): A, constant B / C (d, n, 2); input-dependent B / C (b, n, 2 l) and
grouped (b, g, n, 2 l), (re, im) interleaved along time (element [.., 2t] is Re, [.., 2t + 1]
Im: the memory of (.., l, 2)); states (b, d, n, 2), checkpoints (b, d, chunks, n, 2).
h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t, y_t = 2 Re(sum_n C_t h_t). Backward, with
lambda = dL/dRe h + i dL/dIm h (torch's convention for complex gradients):
    lambda_t = 2 g_t conj(C_t) + conj(Abar_{t+1}) lambda_{t+1},   dAbar_t = conj(h_{t-1}) lambda_t
    dA = sum_t Delta_t conj(Abar_t) dAbar_t,  dDelta_t = sum_n Re(conj(A Abar_t) dAbar_t
    + conj(B_t) u_t lambda_t),  dB_t = Delta_t u_t lambda_t,  dC_t = 2 g_t conj(h_t),
    du_t = Delta_t sum_n Re(conj(B_t) lambda_t) + D g_t,  d h_{-1} = conj(Abar_0) lambda_0.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._jit import (
    bc_grad,
    chunk_offsets,
    complex_first_order,
    first_order,
    first_step,
    gated_out,
    last_step,
    load_b,
    load_bc,
    load_delta,
    load_opt,
    load_rows,
    load_step,
    out_cotangent,
    partials,
    prologue,
    step_grads,
    store_acc,
    store_channel_grads,
)


@triton.jit
def _chunk(dl, u, Bt, A, h):
    """The states H_t = exp(dl_t A) H_{t-1} + dl_t u_t B_t (BD, NP, T) over steps whose inputs
    are dl, u (BD, T), Bt, from H_{-1} = h (BD, NP)."""
    Ac, Hs = tl.associative_scan(
        (tl.exp(dl[:, None, :] * A[:, :, None]), (dl * u)[:, None, :] * Bt),
        axis=2, combine_fn=first_order,
    )
    return Ac * h[:, :, None] + Hs


@triton.jit
def _cmad(ar, ai, xr, xi, br, bi):
    """a x + b for complex (re, im) tiles."""
    return ar * xr - ai * xi + br, ar * xi + ai * xr + bi


@triton.jit
def _abar(dl, Ar, Ai):
    """exp(Delta A) as (re, im) (BD, NP, T) tiles."""
    mag = tl.exp(dl[:, None, :] * Ar[:, :, None])
    ang = dl[:, None, :] * Ai[:, :, None]
    return mag * tl.cos(ang), mag * tl.sin(ang)


@triton.jit
def _complex_chunk(dl, u, Br, Bi, Ar, Ai, hr, hi):
    """_chunk for complex A, B and states, as (re, im) tiles."""
    ar, ai = _abar(dl, Ar, Ai)
    du = (dl * u)[:, None, :]
    Acr, Aci, Hsr, Hsi = tl.associative_scan((ar, ai, du * Br, du * Bi), axis=2,
                                             combine_fn=complex_first_order)
    return _cmad(Acr, Aci, hr[:, :, None], hi[:, :, None], Hsr, Hsi)


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
    pb, pd, dd, nn, nmask, tt, row, st, A, _, bias, Dv = prologue(
        A_ptr, bias_ptr, D_ptr, L, DIM, NS, BD, NP, T, HAS_BIAS, HAS_D, False, CD)
    nm = nmask[None, :]
    h = load_opt(h0_ptr, st, nm, HAS_H0, CD)
    for k in range(0, NCHUNK):
        if SAVE_CK:
            tl.store(ck_ptr + chunk_offsets(pb, DIM, dd, NCHUNK, k, NS, nn, 1), h, mask=nm)
        t = k * T + tt
        tm = t < L
        dl, raw, u, Bt, _, Ct, _ = load_step(
            dt_ptr, u_ptr, B_ptr, C_ptr, row, pb, dd, nn, nmask, t, tm, bias, GSB, GSC,
            sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, HAS_BIAS, SOFTPLUS, False, CD)
        H = _chunk(dl, u, Bt, A, h)
        h = last_step(H, tt, T)
        gated_out(tl.sum(H * Ct, axis=1), u, Dv, z_ptr, out_ptr, row, t, tm, HAS_D, HAS_Z, CD)
    tl.store(hlast_ptr + st, h, mask=nm)


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
    pb, pd, dd, nn, nmask, tt, row, st, A, _, bias, Dv = prologue(
        A_ptr, bias_ptr, D_ptr, L, DIM, NS, BD, NP, T, HAS_BIAS, HAS_D, False, CD)
    nm = nmask[None, :]
    lam = load_opt(dlast_ptr, st, nm, HAS_DLAST, CD)
    dA_acc = tl.zeros((BD, NP), dtype=CD)
    dB_acc = tl.zeros((BD, NP), dtype=CD)
    dC_acc = tl.zeros((BD, NP), dtype=CD)
    dh0 = tl.zeros((BD, NP), dtype=CD)
    dD_acc = tl.zeros((BD,), dtype=CD)
    dbias_acc = tl.zeros((BD,), dtype=CD)
    for kk in range(0, NCHUNK):
        k = NCHUNK - 1 - kk
        t = k * T + tt
        tm = t < L
        h = load_opt(ck_ptr, chunk_offsets(pb, DIM, dd, NCHUNK, k, NS, nn, 1), nm, True, CD)
        # step t
        dl, raw, u, Bt, _, Ct, _ = load_step(
            dt_ptr, u_ptr, B_ptr, C_ptr, row, pb, dd, nn, nmask, t, tm, bias, GSB, GSC,
            sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, HAS_BIAS, SOFTPLUS, False, CD)
        dA = tl.exp(dl[:, None, :] * A[:, :, None])
        # h_{t-1}: scan of the step t-1 inputs (identity at the chunk's first step)
        tp = t - 1
        mp = tm & (tt >= 1)
        dlp, _ = load_delta(dt_ptr, row, tp, mp, bias, HAS_BIAS, SOFTPLUS, CD)
        up = load_rows(u_ptr, row, tp, mp, CD)
        Bp = load_bc(B_ptr, pb, dd // GSB, nn, nmask, tp, mp, sBb, sBg, sBn, sBl, CD)
        Hprev = _chunk(dlp, up, Bp, A, h)
        H = dA * Hprev + (dl * u)[:, None, :] * Bt
        g = out_cotangent(g_ptr, z_ptr, dz_ptr, tl.sum(H * Ct, axis=1), u, Dv, row, t, tm,
                          HAS_Z, CD)
        # lambda_t = C_t g_t + Abar_{t+1} lambda_{t+1}: reverse scan over step t+1's Abar
        dln, _ = load_delta(dt_ptr, row, t + 1, t + 1 < L, bias, HAS_BIAS, SOFTPLUS, CD)
        Rc, Rs = tl.associative_scan(
            (tl.exp(dln[:, None, :] * A[:, :, None]), Ct * g[:, None, :]),
            axis=2, combine_fn=first_order, reverse=True,
        )
        lamt = Rc * lam[:, :, None] + Rs
        lam = first_step(lamt, tt)
        dh0 = first_step(dA * lamt, tt)
        # gradients
        ldl = lamt * dl[:, None, :]
        dAh = lamt * dA * Hprev
        dA_acc += tl.sum(dAh * dl[:, None, :], axis=2)
        ddl = tl.sum(lamt * Bt, axis=1) * u + tl.sum(dAh * A[:, :, None], axis=1)
        du = tl.sum(ldl * Bt, axis=1) + Dv[:, None] * g
        dbias_acc, dD_acc = step_grads(ddl, du, raw, g, u, row, t, tm, du_ptr, ddt_ptr,
                                       dbias_acc, dD_acc, SOFTPLUS)
        part, pmask = partials(pb, pd, NBLK, NS, nn, nmask, L, t, tm, 1)
        dB_acc = bc_grad(dB_ptr, part, pmask, ldl * u[:, None, :], dB_acc, VAR_B)
        dC_acc = bc_grad(dC_ptr, part, pmask, g[:, None, :] * H, dC_acc, VAR_C)
    tl.store(dA_ptr + st, dA_acc, mask=nm)
    tl.store(dh0_ptr + st, dh0, mask=nm)
    store_acc(dB_ptr, st, dB_acc, nm, VAR_B)
    store_acc(dC_ptr, st, dC_acc, nm, VAR_C)
    store_channel_grads(dD_ptr, dbias_ptr, pb, DIM, dd, dD_acc, dbias_acc)


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
    pb, pd, dd, nn, nmask, tt, row, st, Ar, Ai, bias, Dv = prologue(
        A_ptr, bias_ptr, D_ptr, L, DIM, NS, BD, NP, T, HAS_BIAS, HAS_D, True, CD)
    nm = nmask[None, :]
    hr = load_opt(h0_ptr, st, nm, HAS_H0, CD)
    hi = load_opt(h0_ptr + 1, st, nm, HAS_H0, CD)
    for k in range(0, NCHUNK):
        if SAVE_CK:
            ck = chunk_offsets(pb, DIM, dd, NCHUNK, k, NS, nn, 2)
            tl.store(ck_ptr + ck, hr, mask=nm)
            tl.store(ck_ptr + ck + 1, hi, mask=nm)
        t = k * T + tt
        tm = t < L
        dl, raw, u, Br, Bi, Cr, Ci = load_step(
            dt_ptr, u_ptr, B_ptr, C_ptr, row, pb, dd, nn, nmask, t, tm, bias, GSB, GSC,
            sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, HAS_BIAS, SOFTPLUS, True, CD)
        Hr, Hi = _complex_chunk(dl, u, Br, Bi, Ar, Ai, hr, hi)
        hr = last_step(Hr, tt, T)
        hi = last_step(Hi, tt, T)
        y = 2.0 * tl.sum(Cr * Hr - Ci * Hi, axis=1)
        gated_out(y, u, Dv, z_ptr, out_ptr, row, t, tm, HAS_D, HAS_Z, CD)
    tl.store(hlast_ptr + st, hr, mask=nm)
    tl.store(hlast_ptr + st + 1, hi, mask=nm)


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
    pb, pd, dd, nn, nmask, tt, row, st, Ar, Ai, bias, Dv = prologue(
        A_ptr, bias_ptr, D_ptr, L, DIM, NS, BD, NP, T, HAS_BIAS, HAS_D, True, CD)
    nm = nmask[None, :]
    lr = load_opt(dlast_ptr, st, nm, HAS_DLAST, CD)
    li = load_opt(dlast_ptr + 1, st, nm, HAS_DLAST, CD)
    dAr_acc = tl.zeros((BD, NP), dtype=CD)
    dAi_acc = tl.zeros((BD, NP), dtype=CD)
    dBr_acc = tl.zeros((BD, NP), dtype=CD)
    dBi_acc = tl.zeros((BD, NP), dtype=CD)
    dCr_acc = tl.zeros((BD, NP), dtype=CD)
    dCi_acc = tl.zeros((BD, NP), dtype=CD)
    dh0r = tl.zeros((BD, NP), dtype=CD)
    dh0i = tl.zeros((BD, NP), dtype=CD)
    dD_acc = tl.zeros((BD,), dtype=CD)
    dbias_acc = tl.zeros((BD,), dtype=CD)
    for kk in range(0, NCHUNK):
        k = NCHUNK - 1 - kk
        t = k * T + tt
        tm = t < L
        ck = chunk_offsets(pb, DIM, dd, NCHUNK, k, NS, nn, 2)
        hr = load_opt(ck_ptr, ck, nm, True, CD)
        hi = load_opt(ck_ptr + 1, ck, nm, True, CD)
        # step t
        dl, raw, u, Br, Bi, Cr, Ci = load_step(
            dt_ptr, u_ptr, B_ptr, C_ptr, row, pb, dd, nn, nmask, t, tm, bias, GSB, GSC,
            sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, HAS_BIAS, SOFTPLUS, True, CD)
        ar, ai = _abar(dl, Ar, Ai)
        # h_{t-1}: scan of the step t-1 inputs (identity at the chunk's first step)
        tp = t - 1
        mp = tm & (tt >= 1)
        dlp, _ = load_delta(dt_ptr, row, tp, mp, bias, HAS_BIAS, SOFTPLUS, CD)
        up = load_rows(u_ptr, row, tp, mp, CD)
        Bpr, Bpi = load_b(B_ptr, pb, dd // GSB, nn, nmask, tp, mp, sBb, sBg, sBn, sBl, True, CD)
        Pr, Pi = _complex_chunk(dlp, up, Bpr, Bpi, Ar, Ai, hr, hi)
        dlu = (dl * u)[:, None, :]
        Hr, Hi = _cmad(ar, ai, Pr, Pi, dlu * Br, dlu * Bi)
        g = out_cotangent(g_ptr, z_ptr, dz_ptr, 2.0 * tl.sum(Cr * Hr - Ci * Hi, axis=1), u, Dv,
                          row, t, tm, HAS_Z, CD)
        # lambda_t = 2 g_t conj(C_t) + conj(Abar_{t+1}) lambda_{t+1}
        dln, _ = load_delta(dt_ptr, row, t + 1, t + 1 < L, bias, HAS_BIAS, SOFTPLUS, CD)
        anr, ani = _abar(dln, Ar, Ai)
        g2 = 2.0 * g[:, None, :]
        Rcr, Rci, Rsr, Rsi = tl.associative_scan((anr, -ani, g2 * Cr, -g2 * Ci), axis=2,
                                                 combine_fn=complex_first_order, reverse=True)
        Lr, Li = _cmad(Rcr, Rci, lr[:, :, None], li[:, :, None], Rsr, Rsi)
        lr = first_step(Lr, tt)
        li = first_step(Li, tt)
        # d h_{-1} (kept from the first chunk) = conj(Abar_0) lambda_0
        dh0r = first_step(ar * Lr + ai * Li, tt)
        dh0i = first_step(ar * Li - ai * Lr, tt)
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
        dbias_acc, dD_acc = step_grads(ddl, du, raw, g, u, row, t, tm, du_ptr, ddt_ptr,
                                       dbias_acc, dD_acc, SOFTPLUS)
        part, pmask = partials(pb, pd, NBLK, NS, nn, nmask, L, t, tm, 2)
        dBr_acc = bc_grad(dB_ptr, part, pmask, dlu * Lr, dBr_acc, VAR_B)
        dBi_acc = bc_grad(dB_ptr + 1, part, pmask, dlu * Li, dBi_acc, VAR_B)
        dCr_acc = bc_grad(dC_ptr, part, pmask, g2 * Hr, dCr_acc, VAR_C)
        dCi_acc = bc_grad(dC_ptr + 1, part, pmask, -g2 * Hi, dCi_acc, VAR_C)
    tl.store(dA_ptr + st, dAr_acc, mask=nm)
    tl.store(dA_ptr + st + 1, dAi_acc, mask=nm)
    tl.store(dh0_ptr + st, dh0r, mask=nm)
    tl.store(dh0_ptr + st + 1, dh0i, mask=nm)
    store_acc(dB_ptr, st, dBr_acc, nm, VAR_B)
    store_acc(dB_ptr + 1, st, dBi_acc, nm, VAR_B)
    store_acc(dC_ptr, st, dCr_acc, nm, VAR_C)
    store_acc(dC_ptr + 1, st, dCi_acc, nm, VAR_C)
    store_channel_grads(dD_ptr, dbias_ptr, pb, DIM, dd, dD_acc, dbias_acc)
