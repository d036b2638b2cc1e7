"""numba kernels of the selective scan (real A) and its adjoint, on NumPy arrays.

Layouts (all C-contiguous, in the compute dtype: float32, or float64 for float64 inputs):
u, delta, z, out (b, d, l); A (d, n); D, bias (d,); h0, last (b, d, n);
B / C as X4 (bX, G, LX, n) with a flag vb / vc (input-dependent): bX = 1 and LX = 1 for a
constant (d, n) (then G = d, one "group" per channel), bX = b and LX = l for input-dependent
(G = 1) or grouped (G = g) B / C;
channel c reads group c // (d / G) (time-major along LX so the inner loop over n is contiguous).
Checkpoints ck (b, d, nchunk, n): the state before each chunk of T steps.

Forward, per (batch, channel), t = 0..l-1 (the spec's recurrence, spec/selective.py):
    Delta = softplus(delta + bias) (threshold 20) or delta + bias
    h_t = exp(Delta A) h_{t-1} + Delta u_t B_t;  y_t = C_t . h_t;  out = (y + D u) silu(z)
Backward: the adjoint of spec.selective.selective_scan_vjp, chunk by chunk in reverse, each
chunk's states recomputed from its checkpoint (memory O(T n) per thread). Deterministic: a
thread owns one (batch, block of channels); gradients shared across threads (A, D, bias and
B / C) are written as per-thread partial sums and reduced afterwards in a fixed order.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

#: fast-math flags without nnan / ninf (inf and nan propagate as in the spec)
_FM = {"contract", "arcp", "nsz", "afn", "reassoc"}
_OPTS = dict(cache=True, nogil=True, fastmath=_FM)


@nb.njit(inline="always", **_OPTS)
def _softplus(x):
    return x if x > 20.0 else math.log1p(math.exp(x))


@nb.njit(inline="always", **_OPTS)
def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@nb.njit(parallel=True, **_OPTS)
def selective_fwd(u, delta, A, B4, C4, vb, vc, D, z, bias, h0, has_d, has_z, has_bias, has_h0,
                  softplus, T, save, out, last, ck):
    """Fills out (b, d, l), last (b, d, n) and, if save, ck (b, d, nchunk, n)."""
    b, d, l = u.shape
    n = A.shape[1]
    gsb = d // B4.shape[1]
    gsc = d // C4.shape[1]
    for job in nb.prange(b * d):
        bi = job // d
        c = job % d
        h = np.empty(n, dtype=u.dtype)
        a = np.empty(n, dtype=u.dtype)
        for k in range(n):
            h[k] = h0[bi, c, k] if has_h0 else 0.0
        Bv = B4[bi if vb else 0, c // gsb]
        Cv = C4[bi if vc else 0, c // gsc]
        Ac = A[c]
        for t in range(l):
            if save and t % T == 0:
                for k in range(n):
                    ck[bi, c, t // T, k] = h[k]
            raw = delta[bi, c, t]
            if has_bias:
                raw += bias[c]
            dt = _softplus(raw) if softplus else raw
            ut = u[bi, c, t]
            x = dt * ut
            Bt = Bv[t if vb else 0]
            Ct = Cv[t if vc else 0]
            for k in range(n):
                a[k] = math.exp(dt * Ac[k])
            y = 0.0
            for k in range(n):
                h[k] = a[k] * h[k] + x * Bt[k]
                y += Ct[k] * h[k]
            if has_d:
                y += D[c] * ut
            if has_z:
                zt = z[bi, c, t]
                y *= zt * _sigmoid(zt)
            out[bi, c, t] = y
        for k in range(n):
            last[bi, c, k] = h[k]


@nb.njit(parallel=True, **_OPTS)
def selective_bwd(u, delta, A, B4, C4, vb, vc, D, z, bias, ck, dout, dlast, has_d, has_z,
                  has_bias, has_dlast, softplus, T, BD, du, ddelta, dz, dA_p, dB_p, dC_p, dD_p,
                  dbias_p, dh0):
    """The adjoint. Per (batch, channel) outputs: du, ddelta, dz (b, d, l), dh0 (b, d, n).
    Partial sums (zeroed by the caller), reduced afterwards over the leading axes:
    dA_p (b, d, n), dD_p, dbias_p (b, d); dB_p / dC_p (b, S, LX, n) with S = d slots for a
    constant B / C (summed over b afterwards) or S = d / BD blocks of BD channels (each block
    lies in one group; summed over the blocks of a group afterwards)."""
    b, d, l = u.shape
    n = A.shape[1]
    nchunk = ck.shape[2]
    gsb = d // B4.shape[1]
    gsc = d // C4.shape[1]
    nblk = d // BD
    for job in nb.prange(b * nblk):
        bi = job // nblk
        blk = job % nblk
        H = np.empty((T + 1, n), dtype=u.dtype)
        Ab = np.empty((T, n), dtype=u.dtype)
        dts = np.empty(T, dtype=u.dtype)
        raws = np.empty(T, dtype=u.dtype)
        lam = np.empty(n, dtype=u.dtype)
        for c in range(blk * BD, (blk + 1) * BD):
            Bv = B4[bi if vb else 0, c // gsb]
            Cv = C4[bi if vc else 0, c // gsc]
            sb = blk if vb else c
            sc = blk if vc else c
            Ac = A[c]
            for k in range(n):
                lam[k] = dlast[bi, c, k] if has_dlast else 0.0
            gD = 0.0
            gbias = 0.0
            for ci in range(nchunk - 1, -1, -1):
                s = ci * T
                e = min(s + T, l)
                for k in range(n):
                    H[0, k] = ck[bi, c, ci, k]
                for t in range(s, e):
                    j = t - s
                    raw = delta[bi, c, t]
                    if has_bias:
                        raw += bias[c]
                    dt = _softplus(raw) if softplus else raw
                    raws[j] = raw
                    dts[j] = dt
                    x = dt * u[bi, c, t]
                    Bt = Bv[t if vb else 0]
                    for k in range(n):
                        Ab[j, k] = math.exp(dt * Ac[k])
                    for k in range(n):
                        H[j + 1, k] = Ab[j, k] * H[j, k] + x * Bt[k]
                for t in range(e - 1, s - 1, -1):
                    j = t - s
                    dt = dts[j]
                    ut = u[bi, c, t]
                    g = dout[bi, c, t]
                    Bt = Bv[t if vb else 0]
                    Ct = Cv[t if vc else 0]
                    if has_z:
                        y = 0.0
                        for k in range(n):
                            y += Ct[k] * H[j + 1, k]
                        if has_d:
                            y += D[c] * ut
                        zt = z[bi, c, t]
                        sg = _sigmoid(zt)
                        dz[bi, c, t] = g * y * sg * (1.0 + zt * (1.0 - sg))
                        g = g * zt * sg
                    gu = 0.0
                    if has_d:
                        gD += g * ut
                        gu = D[c] * g
                    gdt = 0.0
                    x = dt * ut
                    tb = t if vb else 0
                    tc = t if vc else 0
                    for k in range(n):
                        lk = Ct[k] * g + lam[k]
                        ak = Ab[j, k]
                        w = lk * H[j, k] * ak
                        dA_p[bi, c, k] += w * dt
                        gdt += w * Ac[k] + lk * Bt[k] * ut
                        gu += lk * dt * Bt[k]
                        dB_p[bi, sb, tb, k] += lk * x
                        dC_p[bi, sc, tc, k] += g * H[j + 1, k]
                        lam[k] = ak * lk
                    if softplus and raws[j] <= 20.0:
                        gdt *= _sigmoid(raws[j])
                    gbias += gdt
                    du[bi, c, t] = gu
                    ddelta[bi, c, t] = gdt
            for k in range(n):
                dh0[bi, c, k] = lam[k]
            dD_p[bi, c] = gD
            dbias_p[bi, c] = gbias


@nb.njit(**_OPTS)
def sum_leading(P, out):
    """out[...] = sum_i P[i, ...] in the order i = 0, 1, ... (P flattened to (m, k))."""
    m, k = P.shape
    for j in range(k):
        out[j] = P[0, j]
    for i in range(1, m):
        for j in range(k):
            out[j] += P[i, j]


@nb.njit(parallel=True, **_OPTS)
def sum_blocks(P, per, out):
    """out[b, g, :] = sum_{i < per} P[b, g * per + i, :] in order; P (b, S, k), out (b, G, k)."""
    b, G, k = out.shape
    for job in nb.prange(b * G):
        bi = job // G
        gi = job % G
        for j in range(k):
            out[bi, gi, j] = P[bi, gi * per, j]
        for i in range(1, per):
            for j in range(k):
                out[bi, gi, j] += P[bi, gi * per + i, j]


@nb.njit(parallel=True, **_OPTS)
def state_update(state, x, dt, A, B3, C3, D, z, bias, has_d, has_z, has_bias, softplus, out,
                 new_state):
    """One decode step. state, new_state (b, d, n); x, dt, z, out (b, d); A (d, n); B3, C3
    (b, G, n), channel c reads group c // (d / G); D, bias (d,)."""
    b, d = x.shape
    n = A.shape[1]
    gs = d // B3.shape[1]
    for job in nb.prange(b * d):
        bi = job // d
        c = job % d
        raw = dt[bi, c]
        if has_bias:
            raw += bias[c]
        de = _softplus(raw) if softplus else raw
        xt = x[bi, c]
        y = 0.0
        for k in range(n):
            hk = math.exp(de * A[c, k]) * state[bi, c, k] + de * xt * B3[bi, c // gs, k]
            new_state[bi, c, k] = hk
            y += C3[bi, c // gs, k] * hk
        if has_d:
            y += D[c] * xt
        if has_z:
            zt = z[bi, c]
            y *= zt * _sigmoid(zt)
        out[bi, c] = y
