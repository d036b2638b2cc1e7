"""Pallas selective scan (real A, levels m < p), forward and backward.

Time-major, as liquidssm.jax.selective's core: u, dt (L, b, d); A (d, n) real; B, C, BL either
constant (d, n) or (L, b, g, n) (channel i uses group i // (d / g)); H0 (p, b, d, n).
Per step, for a channel block (dblk channels) and the whole state axis n:
    Abar_t = exp(dt_t A),  beta_t = dt_t B_t u_t,  c_t = dt_t phi(BL_t u_t)
    h0_t = Abar_t h0_{t-1} + beta_t,  hm_t = Abar_t hm_{t-1} + c_t h(m-1)_{t-1}
    y_t = sum_n C_t sum_m hm_t
The forward saves the p states at the start of every chunk of K steps, (L/K, p, b, d, n); the
backward walks the chunks in reverse, recomputes a chunk's K states from its start (unrolled,
held as values) and solves the adjoint
    lm_t = G_t + mu_m,  G_t = gy_t C_t,  mu_m <- Abar_t lm_t + c_t l(m+1)_t
(mu carried across chunks and sequence blocks, starting from dL/dH_last, ending as dL/dH0);
then dAbar_t = sum_m lm_t hm_{t-1}, dbeta_t = l0_t, dc_t = sum_{m>=1} lm_t h(m-1)_{t-1} are
pulled back to u, dt, A, B, BL by jax.vjp of the per-step coefficient map inside the kernel.
Nothing of size (b, l, d, n) is written to HBM.

Padding (the kernel sees whole blocks only): time to a multiple of T with dt = u = 0 (an
identity step: Abar = 1, beta = c = 0, so the last state is exact); channels per group to a
multiple of the channel block and n to a power of two (GPU) with zeros (their states stay 0).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from liquidssm.spec.nn import lcontract

from . import _plan

__all__ = ["selective_core"]


def _coef(p, phi, u, dt, A, B, BL=None):
    """Abar, beta[, c] (dblk, n) of one step; u, dt (dblk,), A (dblk, n), B / BL (n,) or
    (dblk, n)."""
    dtn, un = dt[:, None], u[:, None]
    Abar = jnp.exp(dtn * A)
    beta = dtn * B * un
    if p == 1:
        return Abar, beta
    return Abar, beta, dtn * lcontract(BL * un, phi)


def _step(H, Abar, beta, c=None):
    """The p levels after one step (old levels feed the next level's input)."""
    out = [Abar * H[0] + beta]
    for m in range(1, len(H)):
        out.append(Abar * H[m] + c * H[m - 1])
    return out


def _row(ref, t, const):
    return ref[...] if const else ref[t, :]


def _fwd_kernel(cfg, *refs):
    p, phi, K, nck, consts, save = cfg
    it = iter(refs)
    u_ref, dt_ref, A_ref, B_ref, C_ref = (next(it) for _ in range(5))
    BL_ref = next(it) if p > 1 else None
    h0_ref, y_ref, last_ref = next(it), next(it), next(it)
    bnd_ref = next(it) if save else None
    cB, cC, cBL = consts

    @pl.when(pl.program_id(2) == 0)
    def _():
        for m in range(p):  # per level: Triton arrays must have power-of-two sizes
            last_ref[m] = h0_ref[m]

    A = A_ref[...]

    def chunk(ci, H):
        if save:
            for m in range(p):  # per level: Triton has no stack of more than 2 values
                bnd_ref[ci, m] = H[m]
        for k in range(K):
            t = ci * K + k
            extra = (_row(BL_ref, t, cBL),) if p > 1 else ()
            co = _coef(p, phi, u_ref[t, :], dt_ref[t, :], A, _row(B_ref, t, cB), *extra)
            H = _step(H, *co)
            y_ref[t, :] = jnp.sum(_row(C_ref, t, cC) * sum(H[1:], H[0]), axis=1)
        return tuple(H)

    H = lax.fori_loop(0, nck, chunk, tuple(last_ref[m] for m in range(p)))
    for m in range(p):
        last_ref[m] = H[m]


def _bwd_kernel(cfg, *refs):
    p, phi, K, nck, consts = cfg
    cB, cC, cBL = consts
    it = iter(refs)
    u_ref, dt_ref, A_ref, B_ref, C_ref = (next(it) for _ in range(5))
    BL_ref = next(it) if p > 1 else None
    bnd_ref, gy_ref, gH_ref = next(it), next(it), next(it)
    gu_ref, gdt_ref, gA_ref, gB_ref, gC_ref = (next(it) for _ in range(5))
    gBL_ref = next(it) if p > 1 else None
    gH0_ref = next(it)
    const_refs = [r for r, c in ((gB_ref, cB), (gC_ref, cC), (gBL_ref, cBL)) if c and r is not None]

    @pl.when(pl.program_id(2) == 0)
    def _():
        for m in range(p):
            gH0_ref[m] = gH_ref[m]
        gA_ref[...] = jnp.zeros(gA_ref.shape, gA_ref.dtype)
        for r in const_refs:
            r[...] = jnp.zeros(r.shape, r.dtype)

    A = A_ref[...]

    def chunk(i, carry):
        ci = nck - 1 - i
        mu, gA, gB, gC, gBL = carry
        H = [bnd_ref[ci, m] for m in range(p)]
        hist, steps = [H], []
        for k in range(K):  # recompute the chunk's states from its start
            t = ci * K + k
            args = (u_ref[t, :], dt_ref[t, :], A, _row(B_ref, t, cB))
            if p > 1:
                args += (_row(BL_ref, t, cBL),)
            co, pull = jax.vjp(functools.partial(_coef, p, phi), *args)
            H = _step(H, *co)
            hist.append(H)
            steps.append((t, co, pull))
        for k in reversed(range(K)):
            t, co, pull = steps[k]
            prev, new = hist[k], hist[k + 1]
            gy = gy_ref[t, :][:, None]
            Ct = _row(C_ref, t, cC)
            gCt = gy * sum(new[1:], new[0])
            if cC:
                gC = gC + gCt
            else:
                gC_ref[t, :] = jnp.sum(gCt, axis=0)
            lam = [gy * Ct + mu[m] for m in range(p)]
            gco = (sum(lam[m] * prev[m] for m in range(p)), lam[0])
            if p > 1:
                gco += (sum(lam[m] * prev[m - 1] for m in range(1, p)),)
            Abar = co[0]
            mu = tuple(Abar * lam[m] + (co[2] * lam[m + 1] if m + 1 < p else 0)
                       for m in range(p))
            g = pull(gco)
            gu_ref[t, :] = g[0]
            gdt_ref[t, :] = g[1]
            gA = gA + g[2]
            if cB:
                gB = gB + g[3]
            else:
                gB_ref[t, :] = g[3]
            if p > 1:
                if cBL:
                    gBL = gBL + g[4]
                else:
                    gBL_ref[t, :] = g[4]
        return mu, gA, gB, gC, gBL

    zero = jnp.zeros(A.shape, A.dtype)
    mu0 = tuple(gH0_ref[m] for m in range(p))
    mu, gA, gB, gC, gBL = lax.fori_loop(0, nck, chunk, (mu0, zero, zero, zero, zero))
    for m in range(p):
        gH0_ref[m] = mu[m]
    gA_ref[...] += gA
    for r, v, c in ((gB_ref, gB, cB), (gC_ref, gC, cC), (gBL_ref, gBL, cBL)):
        if c and r is not None:
            r[...] += v


# ---------------------------------------------------------------------------------------------
# Layout: padding and block specs.


class _Layout:
    """Block sizes and padding for one call (static: shapes only)."""

    def __init__(self, plan, u, A, Bs):
        L, self.b, d = u.shape
        n = A.shape[1]
        gs = [X.shape[2] for X in Bs if X is not None and X.ndim == 4]
        self.G = math.lcm(*gs) if gs else 1
        self.L, self.d, self.n = L, d, n
        self.dg = d // self.G
        self.dblk = plan.chan(self.dg, whole=self.G == 1)
        self.dgp = -(-self.dg // self.dblk) * self.dblk
        self.bpg = self.dgp // self.dblk  # channel blocks per group
        self.nd = self.G * self.bpg
        self.np = _plan.next_pow2(n) if plan.pow2 else n
        self.K = plan.chunk
        self.T = plan.steps(L)
        self.Lp = -(-L // self.T) * self.T
        self.ns = self.Lp // self.T
        self.nck = self.T // self.K

    def pad_d(self, x, axis):
        if self.dgp == self.dg:
            return x
        shape = x.shape
        x = x.reshape(shape[:axis] + (self.G, self.dg) + shape[axis + 1:])
        pads = [(0, 0)] * x.ndim
        pads[axis + 1] = (0, self.dgp - self.dg)
        return jnp.pad(x, pads).reshape(shape[:axis] + (self.G * self.dgp,) + shape[axis + 1:])

    def unpad_d(self, x, axis):
        if self.dgp == self.dg:
            return x
        shape = x.shape
        x = x.reshape(shape[:axis] + (self.G, self.dgp) + shape[axis + 1:])
        x = lax.slice_in_dim(x, 0, self.dg, axis=axis + 1)
        return x.reshape(shape[:axis] + (self.d,) + shape[axis + 1:])

    def pad_n(self, x, axis=-1):
        if self.np == self.n:
            return x
        pads = [(0, 0)] * x.ndim
        pads[axis] = (0, self.np - self.n)
        return jnp.pad(x, pads)

    def pad_t(self, x):
        if self.Lp == self.L:
            return x
        return jnp.pad(x, [(0, self.Lp - self.L)] + [(0, 0)] * (x.ndim - 1))

    def seq(self, reverse):
        ns = self.ns
        return (lambda s: ns - 1 - s) if reverse else (lambda s: s)

    def chan_spec(self, reverse=False):
        """u, dt, y and their gradients, batch-major (b, Lp, dpad)."""
        sq = self.seq(reverse)
        return pl.BlockSpec((None, self.T, self.dblk), lambda bi, j, s: (bi, sq(s), j))

    def bc_spec(self, X, reverse=False):
        """B, C or BL (padded): constant (dpad, np) or varying, batch-major (b, g, Lp, np)."""
        if X.ndim == 2:
            return pl.BlockSpec((self.dblk, self.np), lambda bi, j, s: (j, 0))
        sq, bpg, per = self.seq(reverse), self.bpg, self.G // X.shape[1]
        return pl.BlockSpec((None, None, self.T, self.np),
                            lambda bi, j, s: (bi, (j // bpg) // per, sq(s), 0))

    def a_spec(self):
        return pl.BlockSpec((self.dblk, self.np), lambda bi, j, s: (j, 0))

    def state_spec(self, p):
        return pl.BlockSpec((p, None, self.dblk, self.np), lambda bi, j, s: (0, bi, j, 0))

    def bnd_spec(self, p, reverse=False):
        sq = self.seq(reverse)
        return pl.BlockSpec((self.nck, p, None, self.dblk, self.np),
                            lambda bi, j, s: (sq(s), 0, bi, j, 0))

    @property
    def dpad(self):
        return self.G * self.dgp

    @property
    def grid(self):
        return (self.b, self.nd, self.ns)


def _batch_major(x):
    """(L, b, ...) -> (b, L, ...) for the kernels (time-major callers): Mosaic (TPU) wants the
    last two dimensions of a block whole or tiled by (8, 128), so time and channels go last."""
    return jnp.swapaxes(x, 0, 1)


def _prep(lay, u, dt, A, B, C, BL, H0):
    """Padded kernel inputs: u, dt (b, Lp, dpad); B, C, BL (dpad, np) or (b, g, Lp, np)."""
    u, dt = (_batch_major(lay.pad_d(lay.pad_t(x), 2)) for x in (u, dt))
    A = lay.pad_n(lay.pad_d(A, 0))

    def bc(X):
        if X is None:
            return None
        if X.ndim == 2:
            return lay.pad_n(lay.pad_d(X, 0))
        return jnp.transpose(lay.pad_n(lay.pad_t(X)), (1, 2, 0, 3))

    return u, dt, A, bc(B), bc(C), bc(BL), lay.pad_n(lay.pad_d(H0, 2))


def _forward(p, phi, u, dt, A, B, C, BL, H0, save):
    plan = _plan.plan()
    lay = _Layout(plan, u, A, (B, C, BL))
    u, dt, A, B, C, BL, H0 = _prep(lay, u, dt, A, B, C, BL, H0)
    consts = tuple(X is not None and X.ndim == 2 for X in (B, C, BL))
    ins = [u, dt, A, B, C] + ([BL] if p > 1 else []) + [H0]
    in_specs = [lay.chan_spec(), lay.chan_spec(), lay.a_spec(), lay.bc_spec(B), lay.bc_spec(C)]
    in_specs += ([lay.bc_spec(BL)] if p > 1 else []) + [lay.state_spec(p)]
    f = u.dtype
    out_shape = [jax.ShapeDtypeStruct((lay.b, lay.Lp, lay.dpad), f),
                 jax.ShapeDtypeStruct(H0.shape, f)]
    out_specs = [lay.chan_spec(), lay.state_spec(p)]
    if save:
        out_shape.append(jax.ShapeDtypeStruct((lay.Lp // lay.K,) + H0.shape, f))
        out_specs.append(lay.bnd_spec(p))
    outs = pl.pallas_call(
        functools.partial(_fwd_kernel, (p, phi, lay.K, lay.nck, consts, save)),
        out_shape=out_shape, grid=lay.grid, in_specs=in_specs, out_specs=out_specs,
        interpret=plan.interpret, compiler_params=_plan.compiler_params(plan),
        name="liquidssm_selective_fwd",
    )(*ins)
    y = lay.unpad_d(_batch_major(outs[0])[:lay.L], 2)
    H_last = lay.unpad_d(outs[1], 2)[..., :lay.n]
    return y, H_last, (outs[2] if save else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def selective_core(p, phi, u, dt, A, B, C, BL, H0):
    """(y (L, b, d), H_last (p, b, d, n)) of the selective scan (module docstring)."""
    y, H_last, _ = _forward(p, phi, u, dt, A, B, C, BL, H0, False)
    return y, H_last


def _core_fwd(p, phi, u, dt, A, B, C, BL, H0):
    y, H_last, bnd = _forward(p, phi, u, dt, A, B, C, BL, H0, True)
    return (y, H_last), (u, dt, A, B, C, BL, bnd)


def _core_bwd(p, phi, res, cts):
    u0, dt, A0, B0, C0, BL0, bnd = res
    gy, gH = cts
    plan = _plan.plan()
    lay = _Layout(plan, u0, A0, (B0, C0, BL0))
    u, dt, A, B, C, BL, gH = _prep(lay, u0, dt, A0, B0, C0, BL0, gH.astype(u0.dtype))
    gy = _batch_major(lay.pad_d(lay.pad_t(gy.astype(u.dtype)), 2))
    consts = tuple(X is not None and X.ndim == 2 for X in (B, C, BL))
    Xs = [B, C] + ([BL] if p > 1 else [])
    ins = [u, dt, A, B, C] + ([BL] if p > 1 else []) + [bnd, gy, gH]
    in_specs = [lay.chan_spec(True), lay.chan_spec(True), lay.a_spec(),
                *(lay.bc_spec(X, True) for X in Xs),
                lay.bnd_spec(p, True), lay.chan_spec(True), lay.state_spec(p)]
    f = u.dtype
    chan = jax.ShapeDtypeStruct((lay.b, lay.Lp, lay.dpad), f)
    per_b = jax.ShapeDtypeStruct((lay.b, lay.dpad, lay.np), f)
    per_b_spec = pl.BlockSpec((None, lay.dblk, lay.np), lambda bi, j, s: (bi, j, 0))
    sq = lay.seq(True)
    var_spec = pl.BlockSpec((None, None, lay.T, lay.np), lambda bi, j, s: (bi, j, sq(s), 0))
    var = jax.ShapeDtypeStruct((lay.b, lay.nd, lay.Lp, lay.np), f)
    out_shape = [chan, chan, per_b] + [per_b if X.ndim == 2 else var for X in Xs]
    out_shape.append(jax.ShapeDtypeStruct(gH.shape, f))
    out_specs = [lay.chan_spec(True), lay.chan_spec(True), per_b_spec]
    out_specs += [per_b_spec if X.ndim == 2 else var_spec for X in Xs] + [lay.state_spec(p)]
    outs = pl.pallas_call(
        functools.partial(_bwd_kernel, (p, phi, lay.K, lay.nck, consts)),
        out_shape=out_shape, grid=lay.grid, in_specs=in_specs, out_specs=out_specs,
        interpret=plan.interpret, compiler_params=_plan.compiler_params(plan),
        name="liquidssm_selective_bwd",
    )(*ins)
    gu, gdt, gA = outs[0], outs[1], outs[2]
    gu, gdt = (lay.unpad_d(_batch_major(x)[:lay.L], 2) for x in (gu, gdt))
    gA = lay.unpad_d(jnp.sum(gA, axis=0), 0)[:, :lay.n]

    def back(g, X0):
        if X0 is None:
            return None
        if X0.ndim == 2:
            return lay.unpad_d(jnp.sum(g, axis=0), 0)[:, :lay.n].astype(X0.dtype)
        # (b, nd, Lp, np): sum the channel blocks of each of X's groups, back to (L, b, g, n)
        gx = X0.shape[2]
        g = g[:, :, :lay.L, :lay.n].reshape(lay.b, gx, lay.nd // gx, lay.L, lay.n)
        return jnp.transpose(jnp.sum(g, axis=2), (2, 0, 1, 3)).astype(X0.dtype)

    gB, gC = back(outs[3], B0), back(outs[4], C0)
    gBL = back(outs[5], BL0) if p > 1 else (None if BL0 is None else jnp.zeros_like(BL0))
    gH0 = lay.unpad_d(outs[-1], 2)[..., :lay.n]
    return gu, gdt, gA.astype(A0.dtype), gB, gC, gBL, gH0


selective_core.defvjp(_core_fwd, _core_bwd)
