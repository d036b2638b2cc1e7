"""Shared @triton.jit pieces of the kernels: the maps the scans combine, and the prologue, loads
and per-step epilogues of the chunked selective-scan kernels (real, complex and liquid).

Layout of those kernels: one program per (batch pb, block pd of BD channels dd); state index nn
(NP, a power of two >= n, masked by nmask); a chunk's steps t = k T + tt, masked by tm (t < L);
row (BD,) = the offsets of the channels' rows in a (b, d, l) input.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def softplus(x):
    """log(1 + exp(x)), x itself where x > 20 (torch's threshold); accurate log1p for small e."""
    e = tl.exp(-tl.abs(x))
    lp = tl.where(e < 1e-4, e * (1.0 - 0.5 * e), tl.log(1.0 + e))
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + lp)


@triton.jit
def softplus_grad(x):
    """d softplus / dx with the threshold: 1 where x > 20, else sigmoid(x)."""
    return tl.where(x > 20.0, 1.0, tl.sigmoid(x))


@triton.jit
def first_order(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2) for h -> a h + b: (a2 a1, a2 b1 + b2)."""
    return a2 * a1, a2 * b1 + b2


@triton.jit
def complex_first_order(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    """(a1, b1) then (a2, b2) for complex h -> a h + b: (a2 a1, a2 b1 + b2)."""
    return (ar2 * ar1 - ai2 * ai1, ar2 * ai1 + ai2 * ar1,
            ar2 * br1 - ai2 * bi1 + br2, ar2 * bi1 + ai2 * br1 + bi2)


@triton.jit
def first_order_excl(a1, b1, e1, f1, a2, b2, e2, f2):
    """h -> a h + b composed, plus (e, f): the composition without the segment's last element.

    Leaves are (a_t, b_t, 1, 0); the inclusive scan then gives at t the maps of [0..t] and of
    [0..t-1] (the exclusive scan), in scan order (reversed time for reverse=True).
    """
    return a2 * a1, a2 * b1 + b2, e2 * a1, e2 * b1 + f2


@triton.jit
def load_opt(ptr, off, mask, HAS: tl.constexpr, CD: tl.constexpr):
    """ptr[off] in CD (0 where mask is False) if HAS, else zeros of off's shape: an optional
    input (D, delta bias, initial state, last-state cotangent, the imaginary part of A)."""
    if HAS:
        x = tl.load(ptr + off, mask=mask, other=0.0).to(CD)
    else:
        x = tl.zeros(off.shape, dtype=CD)
    return x


@triton.jit
def prologue(A_ptr, bias_ptr, D_ptr, L, DIM, NS, BD: tl.constexpr, NP: tl.constexpr,
             T: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, CPLX: tl.constexpr,
             CD: tl.constexpr):
    """The program's indices and parameters: pb, pd, dd, nn, nmask, tt, row (see the module
    docstring); st (BD, NP), the offsets of its elements in a (b, d, n) state ((b, d, n, 2)
    (re, im) pairs if CPLX); A (d, n) [(d, n, 2)] as (re, im) (BD, NP) tiles (im 0 if real);
    the delta bias and D (BD,) (0 when absent)."""
    pb = tl.program_id(0)
    pd = tl.program_id(1)
    dd = pd * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    nmask = nn < NS
    st = (pb * DIM + dd[:, None]) * NS + nn[None, :]
    a = dd[:, None] * NS + nn[None, :]
    if CPLX:
        st = st * 2
        a = a * 2
    Ar = load_opt(A_ptr, a, nmask[None, :], True, CD)
    Ai = load_opt(A_ptr + 1, a, nmask[None, :], CPLX, CD)
    bias = load_opt(bias_ptr, dd, dd < DIM, HAS_BIAS, CD)
    Dv = load_opt(D_ptr, dd, dd < DIM, HAS_D, CD)
    return pb, pd, dd, nn, nmask, tl.arange(0, T), (pb * DIM + dd) * L, st, Ar, Ai, bias, Dv


@triton.jit
def load_rows(ptr, row, t, tm, CD: tl.constexpr):
    """A (b, d, l) input at the program's channels and steps t: (BD, T), 0 where tm is False."""
    return tl.load(ptr + row[:, None] + t[None, :], mask=tm[None, :], other=0.0).to(CD)


@triton.jit
def store_rows(ptr, row, t, tm, x):
    """x (BD, T) into a (b, d, l) output at the program's channels and steps t."""
    tl.store(ptr + row[:, None] + t[None, :], x.to(ptr.dtype.element_ty), mask=tm[None, :])


@triton.jit
def load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
               CD: tl.constexpr):
    """Delta (BD, T) at steps t, and the raw value delta + bias; 0 where t is masked out."""
    raw = load_rows(dt_ptr, row, t, tm, CD)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dl = raw
    if SOFTPLUS:
        dl = softplus(raw)
    return tl.where(tm[None, :], dl, 0.0), raw


@triton.jit
def load_bc(ptr, pb, grp, nn, nmask, t, tm, sb, sg, sn, sl, CD: tl.constexpr):
    """B or C as a (BD, NP, T) tile: element [b, grp, n, t] of the strided (b, g, n, l)."""
    off = pb * sb + grp[:, None, None] * sg + nn[None, :, None] * sn + t[None, None, :] * sl
    m = nmask[None, :, None] & tm[None, None, :]
    return tl.load(ptr + off, mask=m, other=0.0).to(CD)


@triton.jit
def last_step(X, tt, T: tl.constexpr):
    """X (BD, NP, T) at the chunk's last step -> (BD, NP)."""
    return tl.sum(tl.where(tt[None, None, :] == T - 1, X, 0.0), axis=2)


@triton.jit
def first_step(X, tt):
    """X (BD, NP, T) at the chunk's first step -> (BD, NP)."""
    return tl.sum(tl.where(tt[None, None, :] == 0, X, 0.0), axis=2)


@triton.jit
def gated_out(y, u, Dv, z_ptr, out_ptr, row, t, tm, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
              CD: tl.constexpr):
    """Stores out = (y + D u) silu(z) at steps t (D, z optional)."""
    if HAS_D:
        y = y + Dv[:, None] * u
    if HAS_Z:
        z = load_rows(z_ptr, row, t, tm, CD)
        y = y * z * tl.sigmoid(z)
    store_rows(out_ptr, row, t, tm, y)


@triton.jit
def out_cotangent(g_ptr, z_ptr, dz_ptr, y, u, Dv, row, t, tm, HAS_Z: tl.constexpr,
                  CD: tl.constexpr):
    """The cotangent of the scan's output y (BD, T) at steps t: dout, through silu(z) (storing
    dz, with y + D u the gate's input) when z is given."""
    g = load_rows(g_ptr, row, t, tm, CD)
    if HAS_Z:
        z = load_rows(z_ptr, row, t, tm, CD)
        sz = tl.sigmoid(z)
        dz = g * (y + Dv[:, None] * u) * sz * (1.0 + z * (1.0 - sz))
        store_rows(dz_ptr, row, t, tm, dz)
        g = g * z * sz
    return g


@triton.jit
def step_grads(ddl, du, raw, g, u, row, t, tm, du_ptr, ddt_ptr, dbias, dD,
               SOFTPLUS: tl.constexpr):
    """Stores du and d delta (through the softplus; 0 past the end) at steps t; returns the
    sums dbias, dD (BD,) with the steps' parts of d delta_bias and dD added."""
    if SOFTPLUS:
        ddl = ddl * softplus_grad(raw)
    ddl = tl.where(tm[None, :], ddl, 0.0)
    store_rows(du_ptr, row, t, tm, du)
    store_rows(ddt_ptr, row, t, tm, ddl)
    return dbias + tl.sum(ddl, axis=1), dD + tl.sum(g * u, axis=1)


@triton.jit
def load_b(ptr, pb, grp, nn, nmask, t, tm, sb, sg, sn, sl, CPLX: tl.constexpr,
           CD: tl.constexpr):
    """B or C (BD, NP, T) as (re, im): the imaginary part one element after the real part if
    CPLX, else 0."""
    re = load_bc(ptr, pb, grp, nn, nmask, t, tm, sb, sg, sn, sl, CD)
    if CPLX:
        im = load_bc(ptr + 1, pb, grp, nn, nmask, t, tm, sb, sg, sn, sl, CD)
    else:
        im = tl.zeros(re.shape, dtype=CD)
    return re, im


@triton.jit
def load_step(dt_ptr, u_ptr, B_ptr, C_ptr, row, pb, dd, nn, nmask, t, tm, bias, GSB, GSC,
              sBb, sBg, sBn, sBl, sCb, sCg, sCn, sCl, HAS_BIAS: tl.constexpr,
              SOFTPLUS: tl.constexpr, CPLX: tl.constexpr, CD: tl.constexpr):
    """The inputs of steps t: Delta and raw delta + bias, u (BD, T); B, C (BD, NP, T) as
    (re, im) (im 0 unless CPLX); channel c reads group c // GS of a grouped B / C."""
    dl, raw = load_delta(dt_ptr, row, t, tm, bias, HAS_BIAS, SOFTPLUS, CD)
    u = load_rows(u_ptr, row, t, tm, CD)
    Br, Bi = load_b(B_ptr, pb, dd // GSB, nn, nmask, t, tm, sBb, sBg, sBn, sBl, CPLX, CD)
    Cr, Ci = load_b(C_ptr, pb, dd // GSC, nn, nmask, t, tm, sCb, sCg, sCn, sCl, CPLX, CD)
    return dl, raw, u, Br, Bi, Cr, Ci


@triton.jit
def chunk_offsets(pb, DIM, dd, NCHUNK, k, NS, nn, W: tl.constexpr):
    """Offsets (BD, NP) of chunk k's checkpoint in (b, d, chunks, n[, W])."""
    return (((pb * DIM + dd[:, None]) * NCHUNK + k) * NS + nn[None, :]) * W


@triton.jit
def partials(pb, pd, NBLK, NS, nn, nmask, L, t, tm, W: tl.constexpr):
    """Offsets (NP, T) and mask of the steps t in this program's block of the (b, d // BD, n,
    W l) partial sums of an input-dependent B / C gradient (W = 2: (re, im) pairs)."""
    part = (((pb * NBLK + pd) * NS + nn[:, None]) * L + t[None, :]) * W
    return part, nmask[:, None] & tm[None, :]


@triton.jit
def bc_grad(ptr, part, pmask, dX, acc, VAR: tl.constexpr):
    """A step tile dX (BD, NP, T) of dB / dC: its channel sum stored at `part` (input-dependent,
    VAR) or its time sum added to acc (BD, NP) (constant); returns acc."""
    if VAR:
        tl.store(ptr + part, tl.sum(dX, axis=0), mask=pmask)
    else:
        acc += tl.sum(dX, axis=2)
    return acc


@triton.jit
def store_acc(ptr, st, acc, mask, VAR: tl.constexpr):
    """The accumulated (BD, NP) gradient of a constant B / C (not VAR)."""
    if not VAR:
        tl.store(ptr + st, acc, mask=mask)


@triton.jit
def store_channel_grads(dD_ptr, dbias_ptr, pb, DIM, dd, dD, dbias):
    """The program's dD and d delta_bias (BD,) partials, one row per batch element."""
    tl.store(dD_ptr + pb * DIM + dd, dD)
    tl.store(dbias_ptr + pb * DIM + dd, dbias)
