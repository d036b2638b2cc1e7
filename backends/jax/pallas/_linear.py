"""Pallas diagonal / liquid linear recurrence (real or complex), forward and backward.

Time-major: a (L, 1 or batch, F), b (L, batch, F), c None or (L, 1 or batch, F), H0 (p, batch, F)
(F: the flattened state axes). Levels m < p:
    h0_t = a_t h0_{t-1} + b_t,  hm_t = a_t hm_{t-1} + c_t h(m-1)_{t-1},  y_t = sum_m hm_t
Complex arrays travel as separate real / imaginary planes (products are complex products).
The backward mirrors _selective.py: chunk-start states saved by the forward, a chunk's K states
recomputed, the adjoint lm_t = gy_t + mu_m, mu_m <- a_t lm_t + c_t l(m+1)_t, and
    da_t = sum_m lm_t hm_{t-1},  db_t = l0_t,  dc_t = sum_{m>=1} lm_t h(m-1)_{t-1}
(products without conjugation: jax's cotangent convention, the transpose of the linear map).
bfloat16 / float16 inputs are loaded and computed in float32. Padding: time with a = 1,
b = c = 0 (identity steps), F to a multiple of the block with zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from . import _plan

__all__ = ["linear_scan"]


def _mul(x, y):
    if len(x) == 1:
        return (x[0] * y[0],)
    return (x[0] * y[0] - x[1] * y[1], x[0] * y[1] + x[1] * y[0])


def _add(*xs):
    return tuple(sum(v[1:], v[0]) for v in zip(*xs))


def _step(H, a, b, c):
    out = [_add(_mul(a, H[0]), b)]
    for m in range(1, len(H)):
        out.append(_add(_mul(a, H[m]), _mul(c, H[m - 1])))
    return out


def _fwd_kernel(cfg, *refs):
    p, P, K, nck, f, save = cfg
    it = iter(refs)
    take = lambda: [next(it) for _ in range(P)]  # noqa: E731
    a_ref, b_ref = take(), take()
    c_ref = take() if p > 1 else None
    h0_ref, y_ref, last_ref = take(), take(), take()
    bnd_ref = take() if save else None

    @pl.when(pl.program_id(2) == 0)
    def _():
        for r0, r in zip(h0_ref, last_ref):
            for m in range(p):  # per level: Triton arrays must have power-of-two sizes
                r[m] = r0[m]

    row = lambda refs, t: tuple(r[t, :].astype(f) for r in refs)  # noqa: E731

    def chunk(ci, H):
        H = [tuple(H[m * P:(m + 1) * P]) for m in range(p)]
        if save:
            for q in range(P):  # per level and plane: Triton has no general stack
                for m in range(p):
                    bnd_ref[q][ci, m] = H[m][q]
        for k in range(K):
            t = ci * K + k
            H = _step(H, row(a_ref, t), row(b_ref, t), row(c_ref, t) if p > 1 else None)
            y = _add(*H)
            for q in range(P):
                y_ref[q][t, :] = y[q].astype(y_ref[q].dtype)
        return tuple(v for h in H for v in h)

    H0 = tuple(last_ref[q][m] for m in range(p) for q in range(P))
    H = lax.fori_loop(0, nck, chunk, H0)
    for q in range(P):
        for m in range(p):
            last_ref[q][m] = H[m * P + q]


def _bwd_kernel(cfg, *refs):
    """refs: a, b, [c], bnd, gy, g_last (inputs); ga, gb, [gc], gh0 (outputs); P planes each."""
    p, P, K, nck, f = cfg
    it = iter(refs)
    take = lambda: [next(it) for _ in range(P)]  # noqa: E731
    a_ref, b_ref = take(), take()
    c_ref = take() if p > 1 else None
    bnd_ref, gy_ref, gl_ref = take(), take(), take()
    ga_ref, gb_ref = take(), take()
    gc_ref = take() if p > 1 else None
    gh0_ref = take()

    @pl.when(pl.program_id(2) == 0)
    def _():
        for r0, r in zip(gl_ref, gh0_ref):
            for m in range(p):
                r[m] = r0[m]

    row = lambda refs, t: tuple(r[t, :].astype(f) for r in refs)  # noqa: E731

    def chunk(i, mu):
        ci = nck - 1 - i
        mu = [tuple(mu[m * P:(m + 1) * P]) for m in range(p)]
        H = [tuple(bnd_ref[q][ci, m] for q in range(P)) for m in range(p)]
        hist, coefs = [H], []
        for k in range(K):  # recompute the chunk's states from its start
            t = ci * K + k
            a = row(a_ref, t)
            c = row(c_ref, t) if p > 1 else None
            H = _step(H, a, row(b_ref, t), c)
            hist.append(H)
            coefs.append((t, a, c))
        for k in reversed(range(K)):
            t, a, c = coefs[k]
            prev = hist[k]
            gy = row(gy_ref, t)
            lam = [_add(gy, mu[m]) for m in range(p)]
            ga = _add(*[_mul(lam[m], prev[m]) for m in range(p)])
            store = [(ga_ref, ga), (gb_ref, lam[0])]
            if p > 1:
                store.append((gc_ref, _add(*[_mul(lam[m], prev[m - 1]) for m in range(1, p)])))
            for refs_, v in store:
                for q in range(P):
                    refs_[q][t, :] = v[q]
            mu = [_add(_mul(a, lam[m]), _mul(c, lam[m + 1])) if m + 1 < p else _mul(a, lam[m])
                  for m in range(p)]
        return tuple(v for h in mu for v in h)

    mu0 = tuple(gh0_ref[q][m] for m in range(p) for q in range(P))
    mu = lax.fori_loop(0, nck, chunk, mu0)
    for q in range(P):
        for m in range(p):
            gh0_ref[q][m] = mu[m * P + q]


# ---------------------------------------------------------------------------------------------
# Layout and the custom vjp.


def _planes(x):
    if x is None:
        return []
    return [jnp.real(x), jnp.imag(x)] if jnp.iscomplexobj(x) else [x]


def _join(planes, cplx):
    return lax.complex(planes[0], planes[1]) if cplx else planes[0]


class _Layout:
    def __init__(self, plan, b):
        self.L, self.batch, self.F = b.shape
        self.fblk = plan.chan(self.F)
        self.Fp = -(-self.F // self.fblk) * self.fblk
        self.K = plan.chunk
        self.T = plan.steps(self.L)
        self.Lp = -(-self.L // self.T) * self.T
        self.ns, self.nck = self.Lp // self.T, self.T // self.K
        self.grid = (self.batch, self.Fp // self.fblk, self.ns)

    def pad(self, x, value=0):
        """(L, ., F) padded in time with `value` and in F with zeros, batch-major (., Lp, Fp):
        Mosaic (TPU) wants the last two dimensions of a block whole or tiled by (8, 128)."""
        x = jnp.pad(x, [(0, 0), (0, 0), (0, self.Fp - self.F)])
        x = jnp.pad(x, [(0, self.Lp - self.L), (0, 0), (0, 0)], constant_values=value)
        return jnp.swapaxes(x, 0, 1)

    def unpad(self, x):
        """(., Lp, Fp) kernel output -> (L, ., F)."""
        return jnp.swapaxes(x, 0, 1)[:self.L, :, :self.F]

    def seq_spec(self, x, reverse=False):
        ns, one = self.ns, x.shape[0] == 1
        sq = (lambda s: ns - 1 - s) if reverse else (lambda s: s)
        return pl.BlockSpec((None, self.T, self.fblk),
                            lambda bi, j, s: (0 if one else bi, sq(s), j))

    def state(self, x, f):
        """(p, batch, F) state -> the kernel's (batch, p, Fp) in dtype f."""
        return jnp.swapaxes(jnp.pad(x.astype(f), [(0, 0), (0, 0), (0, self.Fp - self.F)]), 0, 1)

    def unstate(self, x):
        return jnp.swapaxes(x, 0, 1)[:, :, :self.F]

    def state_spec(self, p):
        return pl.BlockSpec((None, p, self.fblk), lambda bi, j, s: (bi, 0, j))

    def bnd_spec(self, p, reverse=False):
        """Chunk-start states (batch, Lp / K, p, Fp)."""
        ns = self.ns
        sq = (lambda s: ns - 1 - s) if reverse else (lambda s: s)
        return pl.BlockSpec((None, self.nck, p, self.fblk), lambda bi, j, s: (bi, sq(s), 0, j))


def _compute_dtype(dtype):
    real = jnp.finfo(dtype).dtype
    return jnp.float32 if real in (jnp.bfloat16, jnp.float16) else real


def _forward(a, b, c, H0, save):
    plan = _plan.plan()
    p, cplx = H0.shape[0], jnp.iscomplexobj(b)
    lay = _Layout(plan, b)
    f = _compute_dtype(b.dtype)
    P = 2 if cplx else 1
    pa = [lay.pad(x, 1 if q == 0 else 0) for q, x in enumerate(_planes(a))]
    pb = [lay.pad(x) for x in _planes(b)]
    pc = [lay.pad(x) for x in _planes(c)]
    ph = [lay.state(x, f) for x in _planes(H0)]
    ins = pa + pb + (pc if p > 1 else []) + ph
    specs = ([lay.seq_spec(x) for x in pa + pb + (pc if p > 1 else [])]
             + [lay.state_spec(p)] * P)
    yt = jnp.finfo(b.dtype).dtype
    out_shape = ([jax.ShapeDtypeStruct((lay.batch, lay.Lp, lay.Fp), yt)] * P
                 + [jax.ShapeDtypeStruct(ph[0].shape, f)] * P)
    out_specs = [lay.seq_spec(pb[0])] * P + [lay.state_spec(p)] * P
    if save:
        out_shape += [jax.ShapeDtypeStruct((lay.batch, lay.Lp // lay.K, p, lay.Fp), f)] * P
        out_specs += [lay.bnd_spec(p)] * P
    outs = pl.pallas_call(
        functools.partial(_fwd_kernel, (p, P, lay.K, lay.nck, f, save)),
        out_shape=out_shape, grid=lay.grid, in_specs=specs, out_specs=out_specs,
        interpret=plan.interpret, compiler_params=_plan.compiler_params(plan),
        name="liquidssm_linear_fwd",
    )(*ins)
    y = _join([lay.unpad(o) for o in outs[:P]], cplx)
    last = _join([lay.unstate(o) for o in outs[P:2 * P]], cplx).astype(H0.dtype)
    return y, last, (outs[2 * P:] if save else None)


@jax.custom_vjp
def linear_scan(a, b, c, H0):
    """(y (L, batch, F) = sum of the p levels, last (p, batch, F)); a, b, c (L, ., F) in one
    dtype (c None when p = 1), H0 (p, batch, F)."""
    y, last, _ = _forward(a, b, c, H0, False)
    return y, last


def _fwd(a, b, c, H0):
    y, last, bnd = _forward(a, b, c, H0, True)
    return (y, last), (a, b, c, H0, bnd)


def _bwd(res, cts):
    a, b, c, H0, bnd = res
    gy, glast = cts
    plan = _plan.plan()
    p, cplx = H0.shape[0], jnp.iscomplexobj(b)
    lay = _Layout(plan, b)
    f = _compute_dtype(b.dtype)
    P = 2 if cplx else 1
    pa = [lay.pad(x, 1 if q == 0 else 0) for q, x in enumerate(_planes(a))]
    pb = [lay.pad(x) for x in _planes(b)]
    pc = [lay.pad(x) for x in _planes(c)] if p > 1 else []
    pgy = [lay.pad(x.astype(f)) for x in _planes(gy.astype(b.dtype))]
    pgl = [lay.state(x, f) for x in _planes(glast.astype(H0.dtype))]
    ins = pa + pb + pc + list(bnd) + pgy + pgl
    specs = ([lay.seq_spec(x, True) for x in pa + pb + pc] + [lay.bnd_spec(p, True)] * P
             + [lay.seq_spec(x, True) for x in pgy] + [lay.state_spec(p)] * P)
    full = jax.ShapeDtypeStruct((lay.batch, lay.Lp, lay.Fp), f)
    nseq = 3 if p > 1 else 2
    out_shape = [full] * (nseq * P) + [jax.ShapeDtypeStruct(pgl[0].shape, f)] * P
    out_specs = [lay.seq_spec(pb[0], True)] * (nseq * P) + [lay.state_spec(p)] * P
    outs = pl.pallas_call(
        functools.partial(_bwd_kernel, (p, P, lay.K, lay.nck, f)),
        out_shape=out_shape, grid=lay.grid, in_specs=specs, out_specs=out_specs,
        interpret=plan.interpret, compiler_params=_plan.compiler_params(plan),
        name="liquidssm_linear_bwd",
    )(*ins)

    def grad(q, like):
        g = _join([lay.unpad(o) for o in outs[q * P:(q + 1) * P]], cplx)
        if like.shape[1] == 1:
            g = jnp.sum(g, axis=1, keepdims=True)
        return g.astype(like.dtype)

    ga, gb = grad(0, a), grad(1, b)
    gc = grad(2, c) if p > 1 else (None if c is None else jnp.zeros_like(c))
    gh0 = _join([lay.unstate(o) for o in outs[nseq * P:]], cplx).astype(H0.dtype)
    return ga, gb, gc, gh0


linear_scan.defvjp(_fwd, _bwd)
