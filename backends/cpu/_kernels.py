"""numba kernels of the (liquid) selective scan and of the level (diag / liquid) scans, with
their adjoints, on NumPy arrays (the level scans: level_fwd / level_bwd at the end), and of the
decode step (state_step: the (liquid) state update; mamba_step: the Mamba mixer's whole step).

Layouts (all C-contiguous, in the compute dtype: float32, or float64 for float64 inputs; with
complex A (the selective scan, p = 1) A, B / C, h0 and the states in complex64 / complex128):
u, delta, z, out (b, d, l); A (d, n); D, bias (d,); h0, last (b, p, d, n) (p liquid levels);
B / C / BL as X4 (bX, G, LX, n) with a flag vb / vc (input-dependent): bX = 1 and LX = 1 for a
constant (d, n) (then G = d, one "group" per channel), bX = b and LX = l for input-dependent
(G = 1) or grouped (G = g) B / C;
channel c reads group c // (d / G) (time-major along LX so the inner loop over n is contiguous).
Checkpoints ck (b, d, nchunk, p, n): the levels before each chunk of T steps.

Forward, per (batch, channel), chunk by chunk of T steps: first the chunk's Delta and silu(z)
gates in loops over t, then the recurrence, t = 0..l-1 (the spec's, spec/selective.py):
    Delta = softplus(delta + bias) (threshold 20) or delta + bias
    h_t = exp(Delta A) h_{t-1} + Delta u_t B_t;  y_t = C_t . h_t;  out = (y + D u) silu(z)
and with p liquid levels (spec.selective.liquid_selective_scan) hm_t = exp(Delta A) hm_{t-1}
+ Delta phi(BL_t u_t) h(m-1)_{t-1}, y_t = C_t . sum_m hm_t (p = 1: the selective scan);
complex A: y_t = 2 Re(C_t . h_t), one code path (conj and Re are the identity on reals).
exp, softplus and sigmoid: in float32 plain-arithmetic versions (_exp, _softplus, _sigmoid:
max relative errors 1e-7 to 3e-7, given there) that LLVM vectorises, so that each time step's
n exponentials and each chunk's T softplus / sigmoid run in SIMD lanes (numba's own call libm
once per element: this llvmlite has no SVML); float64 and complex call NumPy / libm as before.
Backward: the adjoint of spec.selective.liquid_selective_scan_vjp, chunk by chunk in reverse, each
chunk's states recomputed from its checkpoint (memory O(T n) per thread). Deterministic: a
thread owns one (batch, block of channels); gradients shared across threads (A, D, bias and
B / C) are written as per-thread partial sums and reduced afterwards in a fixed order.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from liquidssm.spec._common import LCONTRACT_CODES, LECUN_SCALE, LECUN_SLOPE
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

# numba reads module-level numbers as compile-time constants
_LECUN_SCALE, _LECUN_SLOPE = LECUN_SCALE, LECUN_SLOPE
_NONE, _TANH = LCONTRACT_CODES["none"], LCONTRACT_CODES["tanh"]
#: fast-math flags without nnan / ninf (inf and nan propagate as in the spec)
_FM = {"contract", "arcp", "nsz", "afn", "reassoc"}
_OPTS = dict(cache=True, nogil=True, fastmath=_FM)


#: the float32 exp / log1p below are compiled without reassoc: it would let LLVM fold the
#: two-constant reduction x - k ln2_hi - k ln2_lo into one product and lose its precision
_FM_POLY = {"contract", "arcp", "nsz", "afn"}
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # hi: 9 bits (exact k hi)
_LOG2E = np.float32(1.4426950408889634)


@intrinsic
def _f32_from_bits(typingctx, i):
    """The float32 whose bit pattern is the integer i's low 32 bits (2**k for i = (k + 127)
    << 23)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if i.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif i.bitwidth < 32:
            v = builder.sext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(i), codegen


def _exp(x):
    """exp(x): np.exp, except float32 (_exp32_impl)."""


def _log1p(x):
    """log1p(x): math.log1p, except float32 (_log1p32_impl, for 0 <= x <= 1 only)."""


def _exp32_impl(x):
    """exp of a float32 in plain arithmetic, so that LLVM vectorises loops of it (numba's
    np.exp is a scalar libm call per element here: no SVML). x = k ln2 + r, |r| <= ln2 / 2 (k
    by rounding, r with ln2 split in two: k ln2_hi exact), exp(r) its Taylor polynomial of
    degree 7 (truncation <= 7e-10 relative), 2**k as two float32 powers of two built from bits
    (k in [-150, 128] after clamping x to [-104, 89]: gradual underflow to 0 and overflow to inf
    come from the last product). Measured max relative error against float64 exp over 2e7
    float32 points in [-87, 88]: 1.0e-7 (numpy's float32 exp on the same points: 2.1e-7)."""
    xc = min(max(x, np.float32(-104.0)), np.float32(89.0))
    kf = np.floor(xc * _LOG2E + np.float32(0.5))
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    f = np.float32
    q = f(1 / 5040) * r + f(1 / 720)
    q = ((q * r + f(1 / 120)) * r + f(1 / 24)) * r + f(1 / 6)
    q = ((q * r + f(0.5)) * r + f(1.0)) * r + f(1.0)
    k = np.int32(kf)
    k1 = k >> 1
    e = q * _f32_from_bits((k1 + 127) << 23)
    e = e * _f32_from_bits((k - k1 + 127) << 23)
    return x if x != x else e


def _log1p32_impl(x):
    """log1p of a float32 x in [0, 1] in plain arithmetic (vectorisable): log1p(x) =
    2 atanh(s), s = x / (2 + x) in [0, 1/3], as 2 s sum_{i<=7} s**(2i) / (2i + 1) (truncation
    <= 1.2e-9 relative). Measured max relative error against float64 log1p over 1e7 float32
    points in [0, 1]: 2.3e-7 (about 2 ulp)."""
    s = x / (np.float32(2.0) + x)
    s2 = s * s
    f = np.float32
    q = (f(1 / 15) * s2 + f(1 / 13)) * s2 + f(1 / 11)
    q = ((q * s2 + f(1 / 9)) * s2 + f(1 / 7)) * s2 + f(1 / 5)
    q = (q * s2 + f(1 / 3)) * s2 + f(1.0)
    return f(2.0) * s * q


@overload(_exp, jit_options=dict(fastmath=_FM_POLY, error_model="numpy"))
def _ov_exp(x):
    if x == types.float32:
        return _exp32_impl
    return lambda x: np.exp(x)


@overload(_log1p, jit_options=dict(fastmath=_FM_POLY, error_model="numpy"))
def _ov_log1p(x):
    if x == types.float32:
        return _log1p32_impl
    return lambda x: math.log1p(x)


def _softplus(x):
    """softplus(x) = log1p(exp(x)), x itself above 20 (the spec's threshold). float32: as
    max(x, 0) + log1p(exp(-|x|)) on _exp32_impl / _log1p32_impl, measured max relative error
    against float64 over 1e7 points in [-60, 30]: 2.7e-7 (numpy's float32 log1p(exp(x)):
    2.8e-7)."""


def _sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)). float32: e = exp(-|x|), 1 / (1 + e) or e / (1 + e), on
    _exp32_impl: measured max relative error against float64 over 1e7 points in [-60, 30]:
    1.9e-7."""


@overload(_softplus, jit_options=dict(fastmath=_FM, error_model="numpy"))
def _ov_softplus(x):
    if x == types.float32:  # max(x, 0) + log1p(exp(-|x|)): the same value, vectorisable
        zero, big = np.float32(0.0), np.float32(20.0)

        def sp32(x):
            q = (x if x > zero else zero) + _log1p(_exp(-abs(x)))
            return x if x > big else q

        return sp32
    return lambda x: x if x > 20.0 else math.log1p(math.exp(x))


@overload(_sigmoid, jit_options=dict(fastmath=_FM, error_model="numpy"))
def _ov_sigmoid(x):
    if x == types.float32:  # e = exp(-|x|): 1 / (1 + e) for x >= 0, else e / (1 + e)
        one, zero = np.float32(1.0), np.float32(0.0)

        def sig32(x):
            e = _exp(-abs(x))
            s = one / (one + e)
            return s if x >= zero else e * s

        return sig32

    def sig(x):
        if x >= 0:
            return 1.0 / (1.0 + math.exp(-x))
        e = math.exp(x)
        return e / (1.0 + e)

    return sig


@nb.njit(inline="always", **_OPTS)
def _phi(x, kind):
    """lcontract (kind its LCONTRACT_CODES code): none -> x, tanh -> tanh(x), lecun ->
    SCALE tanh(SLOPE x)."""
    if kind == _NONE:
        return x
    if kind == _TANH:
        return math.tanh(x)
    return _LECUN_SCALE * math.tanh(_LECUN_SLOPE * x)


@nb.njit(inline="always", **_OPTS)
def _dphi(x, kind):
    if kind == _NONE:
        return 1.0
    if kind == _TANH:
        t = math.tanh(x)
        return 1.0 - t * t
    t = math.tanh(_LECUN_SLOPE * x)
    return _LECUN_SCALE * _LECUN_SLOPE * (1.0 - t * t)


@nb.njit(parallel=True, **_OPTS)
def selective_fwd(u, delta, A, B4, C4, L4, vb, vc, vl, D, z, bias, h0, has_d, has_z, has_bias,
                  has_h0, softplus, phi, p, cplx, T, save, out, last, ck):
    """Fills out (b, d, l), last (b, p, d, n) and, if save, ck (b, d, nchunk, p, n).
    p levels: h0_t = Abar h0 + Delta u B; hm_t = Abar hm + c_t h(m-1)_{t-1} with
    c_t = Delta phi(BL_t u_t) (BL as L4); y = C . sum_m hm (p = 1: the selective scan).
    cplx (complex A, B4, C4, h0 and states; p = 1): y = 2 Re(C . h)."""
    b, d, l = u.shape
    n = A.shape[1]
    gsb = d // B4.shape[1]
    gsc = d // C4.shape[1]
    gsl = d // L4.shape[1]
    for job in nb.prange(b * d):
        bi = job // d
        c = job % d
        h = np.empty((p, n), dtype=A.dtype)
        a = np.empty(n, dtype=A.dtype)
        cc = np.empty(n, dtype=u.dtype)
        dts = np.empty(T, dtype=u.dtype)
        gate = np.empty(T, dtype=u.dtype)
        for m in range(p):
            for k in range(n):
                h[m, k] = h0[bi, m, c, k] if has_h0 else 0.0
        Bv = B4[bi if vb else 0, c // gsb]
        Cv = C4[bi if vc else 0, c // gsc]
        Lv = L4[bi if vl else 0, c // gsl]
        Ac = A[c]
        bc = bias[c] if has_bias else u.dtype.type(0)
        for s in range(0, l, T):
            e = min(s + T, l)
            if save:
                for m in range(p):
                    for k in range(n):
                        ck[bi, c, s // T, m, k] = h[m, k]
            # the chunk's steps Delta and gates silu(z), in loops over t of their own (SIMD)
            for t in range(s, e):
                dts[t - s] = delta[bi, c, t] + bc
            if softplus:
                for j in range(e - s):
                    dts[j] = _softplus(dts[j])
            if has_z:
                for t in range(s, e):
                    zt = z[bi, c, t]
                    gate[t - s] = zt * _sigmoid(zt)
            for t in range(s, e):
                dt = dts[t - s]
                ut = u[bi, c, t]
                x = dt * ut
                Bt = Bv[t if vb else 0]
                Ct = Cv[t if vc else 0]
                for k in range(n):
                    a[k] = _exp(dt * Ac[k])
                if p > 1:
                    Lt = Lv[t if vl else 0]
                    for k in range(n):
                        cc[k] = dt * _phi(Lt[k] * ut, phi)
                yc = 0.0
                for k in range(n):
                    total = 0.0
                    for m in range(p - 1, 0, -1):  # top down: level m reads the old m - 1
                        h[m, k] = a[k] * h[m, k] + cc[k] * h[m - 1, k]
                        total += h[m, k]
                    h[0, k] = a[k] * h[0, k] + x * Bt[k]
                    yc += Ct[k] * (total + h[0, k])
                y = 2.0 * yc.real if cplx else yc.real
                if has_d:
                    y += D[c] * ut
                if has_z:
                    y *= gate[t - s]
                out[bi, c, t] = y
        for m in range(p):
            for k in range(n):
                last[bi, m, c, k] = h[m, k]


@nb.njit(parallel=True, **_OPTS)
def selective_bwd(u, delta, A, B4, C4, L4, vb, vc, vl, D, z, bias, ck, dout, dlast, has_d,
                  has_z, has_bias, has_dlast, softplus, phi, p, cplx, T, BD, du, ddelta, dz,
                  dA_p, dB_p, dC_p, dL_p, dD_p, dbias_p, dh0):
    """The adjoint (spec.selective.liquid_selective_scan_vjp). Per (batch, channel) outputs:
    du, ddelta, dz (b, d, l), dh0 (b, p, d, n). Partial sums (zeroed by the caller), reduced
    afterwards over the leading axes: dA_p (b, d, n), dD_p, dbias_p (b, d); dB_p / dC_p / dL_p
    (b, S, LX, n) with S = d slots for a constant B / C / BL (summed over b afterwards) or
    S = d / BD blocks of BD channels (each block lies in one group; summed over the blocks of a
    group afterwards). lambda^m_t = C_t g_t + Abar_{t+1} lambda^m_{t+1} + c_{t+1}
    lambda^(m+1)_{t+1} (lambda^p = 0), carried in lam.
    cplx (p = 1; spec.selective.selective_scan_vjp's convention, torch's): g -> 2 g and each
    complex coefficient conjugated, lambda_t = 2 conj(C_t) g_t + conj(Abar_{t+1}) lambda_{t+1},
    dA += lambda Delta conj(Abar h_{t-1}), dC += 2 g conj(h), dB += lambda Delta u,
    dDelta += Re(lambda conj(A Abar h_{t-1} + B u)), du += Re(lambda Delta conj(B)); the
    conjugates are the identity for real A.

    Per chunk of T steps, as the forward: first the chunk's Delta, softplus'(raw) =
    sigmoid(raw), silu(z) and its derivative in loops over t (SIMD), then the states recomputed
    from the checkpoint (with y_t, for dz), then the adjoint backwards in t; every loop over the
    n state entries (and the levels' loops inside it) is a plain loop of arithmetic over
    contiguous rows, sums over k included, that LLVM vectorises."""
    b, d, l = u.shape
    n = A.shape[1]
    nchunk = ck.shape[2]
    gsb = d // B4.shape[1]
    gsc = d // C4.shape[1]
    gsl = d // L4.shape[1]
    nblk = d // BD
    zero = u.dtype.type(0)
    szero = A.dtype.type(0)
    for job in nb.prange(b * nblk):
        bi = job // nblk
        blk = job % nblk
        H = np.empty((T + 1, p, n), dtype=A.dtype)  # H[j + 1]: the levels after step s + j
        Ab = np.empty((T, n), dtype=A.dtype)
        PH = np.empty((T, n), dtype=u.dtype)  # phi(BL_t u_t), p > 1
        DP = np.empty((T, n), dtype=u.dtype)  # phi'(BL_t u_t), p > 1
        dts = np.empty(T, dtype=u.dtype)
        raws = np.empty(T, dtype=u.dtype)
        dsp = np.empty(T, dtype=u.dtype)  # dDelta / draw
        gate = np.empty(T, dtype=u.dtype)
        dgate = np.empty(T, dtype=u.dtype)
        ys = np.empty(T, dtype=u.dtype)  # y before the gate (has_z)
        lam = np.empty((p, n), dtype=A.dtype)
        LK = np.empty((p, n), dtype=A.dtype)
        WA = np.empty(n, dtype=A.dtype)  # sum_m lk_m conj(h_m(t-1))
        DC = np.empty(n, dtype=A.dtype)  # sum_{m>=1} lk_m h_(m-1)(t-1), p > 1
        HS = np.empty(n, dtype=A.dtype)  # sum_m h_m(t)
        dAl = np.empty(n, dtype=A.dtype)
        for c in range(blk * BD, (blk + 1) * BD):
            Bv = B4[bi if vb else 0, c // gsb]
            Cv = C4[bi if vc else 0, c // gsc]
            Lv = L4[bi if vl else 0, c // gsl]
            dBv = dB_p[bi, blk if vb else c]
            dCv = dC_p[bi, blk if vc else c]
            dLv = dL_p[bi, blk if vl else c]
            Ac = A[c]
            bc = bias[c] if has_bias else zero
            Dc = D[c] if has_d else zero
            for m in range(p):
                for k in range(n):
                    lam[m, k] = dlast[bi, m, c, k] if has_dlast else 0.0
            for k in range(n):
                dAl[k] = 0.0
            gD = zero
            gbias = zero
            for ci in range(nchunk - 1, -1, -1):
                s = ci * T
                e = min(s + T, l)
                w = e - s
                for j in range(w):
                    raws[j] = delta[bi, c, s + j] + bc
                if softplus:
                    for j in range(w):
                        dts[j] = _softplus(raws[j])
                        dsp[j] = _sigmoid(raws[j]) if raws[j] <= 20.0 else 1.0
                else:
                    for j in range(w):
                        dts[j] = raws[j]
                        dsp[j] = 1.0
                if has_z:
                    for j in range(w):
                        zt = z[bi, c, s + j]
                        sg = _sigmoid(zt)
                        gate[j] = zt * sg
                        dgate[j] = sg * (1.0 + zt * (1.0 - sg))
                for m in range(p):
                    for k in range(n):
                        H[0, m, k] = ck[bi, c, ci, m, k]
                for j in range(w):  # recompute the chunk's levels from its checkpoint
                    t = s + j
                    dt = dts[j]
                    ut = u[bi, c, t]
                    x = dt * ut
                    Bt = Bv[t if vb else 0]
                    Abj = Ab[j]
                    for k in range(n):
                        Abj[k] = _exp(dt * Ac[k])
                    H0, H1 = H[j], H[j + 1]
                    for k in range(n):
                        H1[0, k] = Abj[k] * H0[0, k] + x * Bt[k]
                    if p > 1:  # real A
                        Lt = Lv[t if vl else 0]
                        for k in range(n):
                            v = Lt[k] * ut
                            PH[j, k] = _phi(v, phi)
                            DP[j, k] = _dphi(v, phi)
                        for m in range(1, p):
                            for k in range(n):
                                H1[m, k] = Abj[k] * H0[m, k] + dt * PH[j, k] * H0[m - 1, k]
                    if has_z:
                        Ct = Cv[t if vc else 0]
                        yc = szero
                        for m in range(p):
                            for k in range(n):
                                yc += Ct[k] * H1[m, k]
                        ys[j] = (2.0 * yc.real if cplx else yc.real) + Dc * ut
                for j in range(w - 1, -1, -1):  # the adjoint, backwards in t
                    t = s + j
                    dt = dts[j]
                    ut = u[bi, c, t]
                    g = dout[bi, c, t]
                    if has_z:
                        dz[bi, c, t] = g * ys[j] * dgate[j]
                        g = g * gate[j]
                    gD += g * ut
                    gu = Dc * g
                    gy = 2.0 * g if cplx else g  # y = 2 Re(C . h) for complex A
                    x = dt * ut
                    tb = t if vb else 0
                    tc = t if vc else 0
                    Bt, Ct = Bv[tb], Cv[tc]
                    dBt, dCt = dBv[tb], dCv[tc]
                    Abj, H0, H1 = Ab[j], H[j], H[j + 1]
                    for m in range(p):
                        for k in range(n):
                            LK[m, k] = np.conj(Ct[k]) * gy + lam[m, k]
                    for k in range(n):
                        WA[k] = LK[0, k] * np.conj(H0[0, k])
                        HS[k] = H1[0, k]
                    for m in range(1, p):  # real A
                        for k in range(n):
                            WA[k] += LK[m, k] * H0[m, k]
                            HS[k] += H1[m, k]
                    for m in range(p - 1):
                        for k in range(n):
                            lam[m, k] = Abj[k] * LK[m, k] + dt * PH[j, k] * LK[m + 1, k]
                    gdt = zero
                    slb = zero
                    for k in range(n):
                        ak = np.conj(Abj[k])
                        wk = WA[k] * ak
                        dAl[k] += wk * dt
                        gdt += (wk * np.conj(Ac[k])).real
                        lb = (LK[0, k] * np.conj(Bt[k])).real
                        slb += lb
                        dBt[k] += LK[0, k] * x
                        dCt[k] += gy * np.conj(HS[k])
                        lam[p - 1, k] = ak * LK[p - 1, k]
                    gdt += slb * ut
                    gu += slb * dt
                    if p > 1:  # the levels' coefficients c_t = Delta phi(BL_t u_t)
                        tl = t if vl else 0
                        Lt, dLt = Lv[tl], dLv[tl]
                        for k in range(n):
                            DC[k] = LK[1, k] * H0[0, k]
                        for m in range(2, p):
                            for k in range(n):
                                DC[k] += LK[m, k] * H0[m - 1, k]
                        sph = zero
                        sq = zero
                        for k in range(n):
                            sph += DC[k].real * PH[j, k]
                            q = DC[k].real * dt * DP[j, k]
                            sq += q * Lt[k]
                            dLt[k] += q * ut
                        gdt += sph
                        gu += sq
                    gdt *= dsp[j]
                    gbias += gdt
                    du[bi, c, t] = gu
                    ddelta[bi, c, t] = gdt
            for m in range(p):
                for k in range(n):
                    dh0[bi, m, c, k] = lam[m, k]
            for k in range(n):
                dA_p[bi, c, k] = dAl[k]
            dD_p[bi, c] = gD
            dbias_p[bi, c] = gbias


#: channels per work item of the decode step (a prange over single rows of n costs more than
#: the rows: 2.3 against 1.0 ns per state entry, batch 16 x 512 x 16, one thread)
STEP_BLOCK = 64


@nb.njit(parallel=True, **_OPTS)
def state_step(levels, x, delta, A, B, C, L, D, z, bias, has_d, has_z, has_bias, softplus, phi,
               p, out, new):
    """One decode step of the (liquid) selective scan (spec.selective._state_update, p = 1, and
    _liquid_state_update): levels, new (b, p, d, n); x, delta, z, out (b, d); A (d, n); B, C, L
    (b, G, n) with G = 1 (shared by the channels) or d; D, bias (d,). Delta = softplus(delta +
    bias) (softplus, has_bias); Abar = exp(Delta A); new0 = Abar h0 + Delta x B, newm = Abar hm
    + Delta phi(L x) h(m-1) (the old levels); out = (C . sum_m newm + D x) silu(z). A work
    item is a batch entry's block of STEP_BLOCK channels (its temporaries: the block's Delta
    and gates, a channel's Abar and Delta phi(L x) rows of n, computed once for all levels);
    the loops over n are SIMD."""
    b, _, d, n = levels.shape
    zero = x.dtype.type(0)
    gb = 1 if B.shape[1] > 1 else 0  # channel c reads row c * gb
    gc = 1 if C.shape[1] > 1 else 0
    gl = 1 if L.shape[1] > 1 else 0
    nblk = (d + STEP_BLOCK - 1) // STEP_BLOCK
    for job in nb.prange(b * nblk):
        bi = job // nblk
        c0 = (job % nblk) * STEP_BLOCK
        w = min(d, c0 + STEP_BLOCK) - c0
        dts = np.empty(STEP_BLOCK, dtype=x.dtype)  # the block's Delta, in a loop of its own (SIMD)
        for j in range(w):
            dts[j] = delta[bi, c0 + j] + (bias[c0 + j] if has_bias else zero)
        if softplus:
            for j in range(w):
                dts[j] = _softplus(dts[j])
        gts = np.empty(STEP_BLOCK, dtype=x.dtype)  # the block's silu(z) gates (SIMD)
        for j in range(w):
            if has_z:
                zt = z[bi, c0 + j]
                gts[j] = zt * _sigmoid(zt)
            else:
                gts[j] = 1.0
        abar = np.empty(n, dtype=x.dtype)  # the channel's exp(Delta A), kept for levels m >= 1
        coupling = np.empty(n, dtype=x.dtype)  # the channel's Delta phi(L x)
        for c in range(c0, c0 + w):
            dt = dts[c - c0]
            xt = x[bi, c]
            dx = dt * xt
            y = zero
            for k in range(n):
                a = _exp(dt * A[c, k])
                abar[k] = a
                v = a * levels[bi, 0, c, k] + dx * B[bi, c * gb, k]
                new[bi, 0, c, k] = v
                y += C[bi, c * gc, k] * v
            if p > 1:
                for k in range(n):
                    coupling[k] = dt * _phi(L[bi, c * gl, k] * xt, phi)
            for m in range(1, p):
                for k in range(n):
                    v = abar[k] * levels[bi, m, c, k] + coupling[k] * levels[bi, m - 1, c, k]
                    new[bi, m, c, k] = v
                    y += C[bi, c * gc, k] * v
            if has_d:
                y += D[c] * xt
            out[bi, c] = y * gts[c - c0]


@nb.njit(inline="always", **_OPTS)
def _matvec(W, x, out):
    """out = W x: W (o, i) row-major, each row a contiguous dot product (SIMD)."""
    o, i = W.shape
    for r in range(o):
        acc = x.dtype.type(0)
        for k in range(i):
            acc += W[r, k] * x[k]
        out[r] = acc


@nb.njit(inline="always", **_OPTS)
def _add(out, bias):
    """out += bias (the bias of a linear layer, after its _matvec)."""
    for r in range(out.shape[0]):
        out[r] += bias[r]


@nb.njit(parallel=True, **_OPTS)
def mamba_step(u, W_in, b_in, W_x, W_dt, b_dt, W_out, b_out, conv_wt, conv_b, A, D, rows, h,
               has_b_in, has_b_out, has_conv_b, out, new_rows, new_h):
    """One decode step of the Mamba mixer (spec.mamba._step): u, out
    (b, d_model); W_in (2 d, d_model), W_x (r + 2 N, d), W_dt (d, r), W_out (d_model, d) (and
    their biases b_in, b_dt, b_out); conv_wt (K, d), conv_b, D (d,); A (d, N); rows, new_rows
    (b, K, d): the conv window's rows (conv_state^T); h, new_h (b, d, N). Per batch entry:
    [x, z] = W_in u; rows <- [rows[1:], x]; x_c = silu(sum_k conv_wt[k] rows[k] + conv_b);
    [dt_in, B, C] = W_x x_c; Delta = softplus(W_dt dt_in + b_dt); h <- exp(Delta A) h +
    Delta x_c B; y = (C . h + D x_c) silu(z); out = W_out y. A batch entry per work item; the
    matrix-vector products are loops of contiguous dot products (at batch 1 they beat torch's
    addmm here)."""
    b, dm = u.shape
    K, d = conv_wt.shape
    n = A.shape[1]
    r = W_dt.shape[1]
    zero = u.dtype.type(0)
    for bi in nb.prange(b):
        xz = np.empty(2 * d, dtype=u.dtype)
        xc = np.empty(d, dtype=u.dtype)
        dbl = np.empty(W_x.shape[0], dtype=u.dtype)
        dts = np.empty(d, dtype=u.dtype)
        y = np.empty(d, dtype=u.dtype)
        _matvec(W_in, u[bi], xz)
        if has_b_in:
            _add(xz, b_in)
        for k in range(K - 1):
            for c in range(d):
                new_rows[bi, k, c] = rows[bi, k + 1, c]
        for c in range(d):
            new_rows[bi, K - 1, c] = xz[c]
            xc[c] = conv_b[c] if has_conv_b else zero
        for k in range(K):
            for c in range(d):
                xc[c] += conv_wt[k, c] * new_rows[bi, k, c]
        for c in range(d):
            xc[c] = xc[c] * _sigmoid(xc[c])
        _matvec(W_x, xc, dbl)
        _matvec(W_dt, dbl[:r], dts)
        _add(dts, b_dt)
        for c in range(d):
            dts[c] = _softplus(dts[c])
        for c in range(d):
            dt = dts[c]
            dx = dt * xc[c]
            acc = zero
            for k in range(n):
                v = _exp(dt * A[c, k]) * h[bi, c, k] + dx * dbl[r + k]
                new_h[bi, c, k] = v
                acc += dbl[r + n + k] * v
            y[c] = acc + D[c] * xc[c]
        for c in range(d):
            zt = xz[d + c]
            y[c] *= zt * _sigmoid(zt)
        _matvec(W_out, y, out[bi])
        if has_b_out:
            _add(out[bi], b_out)


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


#: the most state elements per thread of the level scans (contiguous along the flattened state)
LEVEL_BLOCK = 128


def level_width(batch, M, threads=None):
    """State elements per thread, W: the widest of 128, 64, 32 that still gives every one of
    numba's threads two work items (batch x ceil(M / W)), else 32. Wider rows make each time
    step's loads and stores longer contiguous runs (fewer pages and prefetch streams touched per
    step); the results do not depend on W (each element is its own sequential loop)."""
    threads = nb.get_num_threads() if threads is None else threads
    for w in (LEVEL_BLOCK, 64):
        if batch * (-(-M // w)) >= 2 * threads:
            return w
    return 32


@nb.njit(inline="always", **_OPTS)
def _level_job(job, nblk, M, W, batch_a, batch_c):
    """A thread's work item: (batch entry, first state element, width (<= W), the batch
    entries of a and c read: 0 for a broadcast one)."""
    bi = job // nblk
    m0 = (job % nblk) * W
    return bi, m0, min(M, m0 + W) - m0, bi if batch_a > 1 else 0, bi if batch_c > 1 else 0


@nb.njit(inline="always", **_OPTS)
def _level_step(at, bt, ct, H, p, w):
    """One step of the levels H (p, >= w) of w state elements (rows of one time step): top down,
    level k reads the old level k - 1; loops over the contiguous elements innermost (SIMD)."""
    for k in range(p - 1, 0, -1):
        for j in range(w):
            H[k, j] = at[j] * H[k, j] + ct[j] * H[k - 1, j]
    for j in range(w):
        H[0, j] = at[j] * H[0, j] + bt[j]


@nb.njit(parallel=True, **_OPTS)
def level_fwd(a, b, c, h0, p, rev, T, W, save, y, last, ck):
    """The liquid scan (p levels; p = 1 with c unused: the diag scan) over flattened states.

    a, c (1 or B, L, M) (p = 1: c a (1, 1, M) placeholder); b, y (B, L, M); h0, last (B, p, M);
    ck (B, nchunk, p, M): the levels before each chunk of T steps in scan order (s = t, or
    L - 1 - t if rev), filled if save. A thread runs W (<= LEVEL_BLOCK) state elements.
    h0_t = a_t h0_{t-1} + b_t, hm_t = a_t hm_{t-1} + c_t h(m-1)_{t-1}, y_t = sum_m hm_t."""
    B, L, M = b.shape
    nblk = (M + W - 1) // W
    for job in nb.prange(B * nblk):
        bi, m0, w, ai, ci = _level_job(job, nblk, M, W, a.shape[0], c.shape[0])
        H = np.empty((p, LEVEL_BLOCK), dtype=y.dtype)
        for k in range(p):
            for j in range(w):
                H[k, j] = h0[bi, k, m0 + j]
        for s in range(L):
            t = L - 1 - s if rev else s
            if save and s % T == 0:
                for k in range(p):
                    for j in range(w):
                        ck[bi, s // T, k, m0 + j] = H[k, j]
            tc = t if p > 1 else 0
            _level_step(a[ai, t, m0:m0 + w], b[bi, t, m0:m0 + w], c[ci, tc, m0:m0 + w], H, p, w)
            yt = y[bi, t, m0:m0 + w]
            for j in range(w):
                yt[j] = H[0, j]
            for k in range(1, p):
                for j in range(w):
                    yt[j] += H[k, j]
        for k in range(p):
            for j in range(w):
                last[bi, k, m0 + j] = H[k, j]


@nb.njit(parallel=True, **_OPTS)
def level_bwd(a, b, c, ck, gy, glast, p, rev, T, W, da, db, dc, dh0):
    """The adjoint of level_fwd, chunk by chunk in reverse scan order, each chunk's levels
    recomputed from its checkpoint ck (memory O(T p) per state element of a thread).

    Cotangents gy (B, L, M), glast (B, p, M). With lam_k the adjoint of level k at step t and K
    the adjoint carried to the levels before it (K starts at glast; lam_p = 0):
        lam_k = gy_t + K_k,   then   K_k <- conj(a_t) lam_k + conj(c_t) lam_{k+1};
    db_t = lam_0, da_t = sum_k lam_k conj(h_k(t-1)), dc_t = sum_{k>=1} lam_k conj(h_{k-1}(t-1))
    (torch's convention for complex gradients), dh0 = K after the first step. da, dc (B, L, M)
    per batch entry (the caller sums a broadcast a or c over the batch, in order); p = 1: c and
    dc (1, 1, M) placeholders, neither read nor written."""
    B, L, M = b.shape
    nblk = (M + W - 1) // W
    nchunk = ck.shape[1]
    for job in nb.prange(B * nblk):
        bi, m0, w, ai, ci = _level_job(job, nblk, M, W, a.shape[0], c.shape[0])
        K = np.empty((p, LEVEL_BLOCK), dtype=db.dtype)
        lam = np.empty((p + 1, LEVEL_BLOCK), dtype=db.dtype)
        prev = np.empty((T, p, LEVEL_BLOCK), dtype=db.dtype)  # levels before each step
        H = np.empty((p, LEVEL_BLOCK), dtype=db.dtype)
        for k in range(p):
            for j in range(w):
                K[k, j] = glast[bi, k, m0 + j]
        for j in range(w):
            lam[p, j] = 0.0
        for q in range(nchunk - 1, -1, -1):
            s0 = q * T
            s1 = min(L, s0 + T)
            for k in range(p):
                for j in range(w):
                    H[k, j] = ck[bi, q, k, m0 + j]
            for s in range(s0, s1):  # recompute the chunk
                t = L - 1 - s if rev else s
                for k in range(p):
                    for j in range(w):
                        prev[s - s0, k, j] = H[k, j]
                tc = t if p > 1 else 0
                _level_step(a[ai, t, m0:m0 + w], b[bi, t, m0:m0 + w], c[ci, tc, m0:m0 + w], H,
                            p, w)
            for s in range(s1 - 1, s0 - 1, -1):  # the adjoint, backwards
                t = L - 1 - s if rev else s
                tc, bc = (t, bi) if p > 1 else (0, 0)
                at, ct = a[ai, t, m0:m0 + w], c[ci, tc, m0:m0 + w]
                gt, pv = gy[bi, t, m0:m0 + w], prev[s - s0]
                dat, dbt, dct = da[bi, t, m0:m0 + w], db[bi, t, m0:m0 + w], dc[bc, tc, m0:m0 + w]
                for k in range(p):
                    for j in range(w):
                        lam[k, j] = gt[j] + K[k, j]
                for j in range(w):
                    dbt[j] = lam[0, j]
                    dat[j] = lam[0, j] * np.conj(pv[0, j])
                for k in range(1, p):
                    for j in range(w):
                        dat[j] += lam[k, j] * np.conj(pv[k, j])
                if p > 1:
                    for j in range(w):
                        dct[j] = lam[1, j] * np.conj(pv[0, j])
                    for k in range(2, p):
                        for j in range(w):
                            dct[j] += lam[k, j] * np.conj(pv[k - 1, j])
                    for k in range(p):
                        for j in range(w):
                            K[k, j] = np.conj(at[j]) * lam[k, j] + np.conj(ct[j]) * lam[k + 1, j]
                else:
                    for j in range(w):
                        K[0, j] = np.conj(at[j]) * lam[0, j]
        for k in range(p):
            for j in range(w):
                dh0[bi, k, m0 + j] = K[k, j]
