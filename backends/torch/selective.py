"""Eager PyTorch selective scans (mamba layout), chunked, with an adjoint backward.

Per chunk of T = scans.CHUNK steps, (T, b, d, n) tensors are built time-major,
    a_t = exp(Delta_t A),  x_t = Delta_t u_t B_t,  c_t = Delta_t phi(BL_t u_t)  (liquid only),
the level recurrence of liquidssm.torch.scans runs over them (one fused multiply-add per step on
the (b, d, n) state), and y_t = sum_n C_t sum_m H[t, m] (2 Re for complex A) is written out.
Saved for backward: the inputs and the levels at chunk starts, (l / T, p, b, d, n). The backward
walks the chunks in reverse, recomputes each chunk's states and runs the adjoint scan, so peak
memory is O(b d l + b d n l / T + T b d n); no (b, d, n, l) tensor is ever made.
Semantics, checks and errors are the spec's: the arguments are validated by
liquidssm.spec._checks (the checks every implementation runs); an empty call (zero batch or
length) runs the spec's reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from liquidssm.spec import _checks
from liquidssm.spec import selective as _spec
from liquidssm.spec.nn import LECUN_SCALE, LECUN_SLOPE

from . import scans
from .scans import _as, levels_backward, levels_forward

__all__ = ["selective_scan", "liquid_selective_scan", "selective_state_update"]

_TORCH = "torch.Tensor"  # the array type the checks require


def _phi(x, kind):
    """spec.nn.lcontract on tensors."""
    if kind == "none":
        return x
    return torch.tanh(x) if kind == "tanh" else LECUN_SCALE * torch.tanh(LECUN_SLOPE * x)


def _dphi(x, kind):
    """spec.nn.lcontract_grad on tensors."""
    if kind == "none":
        return torch.ones_like(x)
    if kind == "tanh":
        return 1 - torch.tanh(x) ** 2
    return LECUN_SCALE * LECUN_SLOPE * (1 - torch.tanh(LECUN_SLOPE * x) ** 2)


class _Spec:
    """The static description of one call: compute dtypes, liquid degree, phi, chunk."""

    def __init__(self, u, A, p, phi, softplus, chunk, tied):
        self.wdt = torch.float64 if u.dtype == torch.float64 else torch.float32
        self.cdt = torch.complex128 if self.wdt == torch.float64 else torch.complex64
        self.cplx = A.is_complex()
        self.sdt = self.cdt if self.cplx else self.wdt
        self.p, self.phi, self.softplus, self.chunk, self.tied = p, phi, softplus, chunk, tied


def _tm(x, s, e, dtype):
    """(b, d, l) -> time-major chunk (T, b, d) in dtype, a strided view when the dtype matches
    (elementwise ops read it in place: a transposing copy per chunk costs more); None stays None."""
    return None if x is None else x[..., s:e].permute(2, 0, 1).to(dtype)


def _chunk(X, s, e, sp):
    """B, C or BL for steps s..e-1: a constant (d, n) as is, else (T, b, g, n) time-major
    ((b, n, l) is g = 1; interleaved (re, im) pairs become complex for complex A)."""
    if X.dim() == 2:
        return X.to(sp.cdt if sp.cplx else sp.wdt)
    X = X if X.dim() == 4 else X[:, None]
    if sp.cplx:
        X = torch.view_as_complex(X[..., 2 * s:2 * e].to(sp.wdt).unflatten(-1, (e - s, 2))
                                  .contiguous())
    else:
        X = X[..., s:e].to(sp.wdt)
    return X.permute(3, 0, 1, 2).contiguous()


def _put(G, g, s, e, sp):
    """Accumulate the chunk gradient g (from _reduce) into G, the gradient of B, C or BL."""
    if G.dim() == 2:
        G += g
        return
    g = g if G.dim() == 4 else g[:, 0]
    if sp.cplx:
        G[..., 2 * s:2 * e] += torch.view_as_real(g).flatten(-2)
    else:
        G[..., s:e] += g


def _zeros_grad(X, sp):
    """Accumulator for the gradient of B, C or BL (complex for a constant with complex A)."""
    return torch.zeros_like(X, dtype=sp.sdt if X.dim() == 2 else sp.wdt)


def _outer(w, Xc):
    """w (T, b, d) times a chunk Xc of B/C/BL -> (T, b, d, n)."""
    if Xc.dim() == 2:
        return w[..., None] * Xc
    T, b, d = w.shape
    g = Xc.shape[2]
    return (w.reshape(T, b, g, d // g, 1) * Xc[:, :, :, None, :]).reshape(T, b, d, -1)


def _contract(G, Xc):
    """sum_n G[t, b, d, n] X[t, b, d, n] -> (T, b, d)."""
    if Xc.dim() == 2:
        return (G * Xc).sum(-1)
    T, b, d, n = G.shape
    g = Xc.shape[2]  # a batched matrix-vector product: no (T, b, d, n) temporary
    return torch.matmul(G.reshape(T, b, g, d // g, n), Xc[..., None]).reshape(T, b, d)


def _reduce(G, w, Xc):
    """Gradient of the chunk Xc in the product w (T, b, d) * X: sum over the channels sharing it;
    (d, n) for a constant, (b, g, n, T) otherwise."""
    w = w.to(G.dtype)
    if Xc.dim() == 2:
        return torch.einsum("tbdn,tbd->dn", G, w)
    T, b, d, n = G.shape
    g = Xc.shape[2]  # (T, b, g, 1, k) @ (T, b, g, k, n): batched, no copy of G
    out = torch.matmul(w.reshape(T, b, g, 1, d // g), G.reshape(T, b, g, d // g, n))
    return out[:, :, :, 0].permute(1, 2, 3, 0)


def _chunk_states(sp, u, delta, A, B, BL, bias, h, s, e):
    """Recompute one chunk: (uc, raw, dt, a, x, c, H) with H (T, p, b, d, n)."""
    uc = _tm(u, s, e, sp.wdt)
    raw = _tm(delta, s, e, sp.wdt)
    if bias is not None:
        raw = raw + bias.to(sp.wdt)
    dt = F.softplus(raw) if sp.softplus else raw
    a = torch.exp(dt[..., None] * A)
    x = _outer(dt * uc, _chunk(B, s, e, sp))
    c = None
    if sp.p > 1:
        c = dt[..., None] * _phi(_outer(uc, _chunk(BL, s, e, sp)), sp.phi)
    return uc, raw, dt, a, x, c, levels_forward(a, x, c, h)


def _readout(H, Cc):
    """y (T, b, d) = sum_n C sum_m H[:, m] (2 Re(...) when complex)."""
    y = _contract(H[:, 0] if H.shape[1] == 1 else H.sum(1), Cc)
    return 2 * y.real if y.is_complex() else y


class _Selective(torch.autograd.Function):
    """The whole selective scan (Delta, recurrence, readout, D, gate) chunk by chunk."""

    @staticmethod
    def forward(ctx, sp, u, delta, A, B, C, D, z, bias, BL, h0):
        b, d, l = u.shape
        A = A.to(sp.sdt)
        BL = B if sp.tied else BL
        out = torch.empty_like(u)
        h, starts = h0.to(sp.sdt), []
        for s in range(0, l, sp.chunk):
            e = min(s + sp.chunk, l)
            starts.append(h)
            uc, _, _, _, _, _, H = _chunk_states(sp, u, delta, A, B, BL, bias, h, s, e)
            y = _readout(H, _chunk(C, s, e, sp))
            if D is not None:
                y = y + D.to(sp.wdt) * uc
            if z is not None:
                y = y * F.silu(_tm(z, s, e, sp.wdt))
            out[..., s:e] = y.permute(1, 2, 0)
            h = H[-1].clone()
        ctx.save_for_backward(u, delta, A, B, C, D, z, bias, BL, torch.stack(starts))
        ctx.sp = sp
        return out, h

    @staticmethod
    def backward(ctx, gout, glast):
        u, delta, A, B, C, D, z, bias, BL, starts = ctx.saved_tensors
        sp, l = ctx.sp, u.shape[2]
        k = 2 if sp.cplx else 1
        K = glast.to(sp.sdt)
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gz = None if z is None else torch.empty_like(z)
        gA = torch.zeros_like(A)
        gB, gC, gBL = (None if X is None else _zeros_grad(X, sp) for X in (B, C, BL))
        gD = None if D is None else torch.zeros_like(D, dtype=sp.wdt)
        gbias = None if bias is None else torch.zeros_like(bias, dtype=sp.wdt)
        for i in reversed(range(starts.shape[0])):
            s, h = i * sp.chunk, starts[i]
            e = min(s + sp.chunk, l)
            uc, raw, dt, a, x, c, H = _chunk_states(sp, u, delta, A, B, BL, bias, h, s, e)
            Bc, Cc = _chunk(B, s, e, sp), _chunk(C, s, e, sp)
            g = _tm(gout, s, e, sp.wdt)
            g_u = 0
            if z is not None:  # out = pre * silu(z)
                zc = _tm(z, s, e, sp.wdt)
                pre = _readout(H, Cc) + (0 if D is None else D.to(sp.wdt) * uc)
                sig = torch.sigmoid(zc)
                gz[..., s:e] = (g * pre * sig * (1 + zc * (1 - sig))).permute(1, 2, 0)
                g = g * zc * sig
            if D is not None:
                gD += (g * uc).sum((0, 1))
                g_u = D.to(sp.wdt) * g
            # the recurrence: e_t = dL/dh_t from the readout, Lam = dL/dH
            Lam, K = levels_backward(a, c, _outer(k * g, Cc.conj()), K)
            hsum = H[:, 0] if sp.p == 1 else H.sum(1)
            _put(gC, _reduce(hsum.conj(), k * g, Cc), s, e, sp)
            # dL/d(Delta A) = sum_m Lam_m[t] conj(H_m[t-1]) conj(a_t), H[-1] = h
            if sp.p == 1:
                w = torch.empty_like(Lam[:, 0])
                torch.mul(Lam[1:, 0], H[:-1, 0].conj(), out=w[1:])
                torch.mul(Lam[0, 0], h[0].conj(), out=w[0])
            else:
                Hprev = torch.cat([h[None], H[:-1]]).conj()
                w = (Lam * Hprev).sum(1)
            w *= a.conj()
            # gA[d, n] = sum_tb w dt and g_dt[t, b, d] = sum_n w conj(A): two bmm over d
            T, nb = w.shape[0], w.shape[1]
            wd = w.permute(2, 0, 1, 3).reshape(w.shape[2], T * nb, -1)
            gA += torch.bmm(dt.to(w.dtype).permute(2, 0, 1).reshape(-1, 1, T * nb), wd)[:, 0]
            g_dt = torch.bmm(wd, A.conj()[:, :, None])[..., 0].reshape(-1, T, nb)
            g_dt = g_dt.permute(1, 2, 0).real
            q = _contract(Lam[:, 0], Bc.conj()).real  # dL/d(Delta u)
            g_u = g_u + dt * q
            g_dt += uc * q
            _put(gB, _reduce(Lam[:, 0], dt * uc, Bc), s, e, sp)
            if sp.p > 1:
                BLc = _chunk(BL, s, e, sp)  # Hprev was made above for p > 1
                pre = _outer(uc, BLc)
                gc = (Lam[:, 1:] * Hprev[:, :-1]).sum(1)  # dL/dc (real: liquid A is real)
                g_dt += (gc * _phi(pre, sp.phi)).sum(-1)
                dpre = gc * dt[..., None] * _dphi(pre, sp.phi)
                g_u = g_u + _contract(dpre, BLc)
                _put(gB if sp.tied else gBL, _reduce(dpre, uc, BLc), s, e, sp)
            if sp.softplus:
                g_dt = g_dt * torch.where(raw > 20.0, 1.0, torch.sigmoid(raw))
            if bias is not None:
                gbias += g_dt.sum((0, 1))
            gu[..., s:e] = g_u.permute(1, 2, 0)
            gdelta[..., s:e] = g_dt.permute(1, 2, 0)
        return (None, gu, gdelta, _as(gA, A), _as(gB, B), _as(gC, C), _as(gD, D), gz,
                _as(gbias, bias), None if sp.tied else _as(gBL, BL), K)


def _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state,
         p, BL, lcontract, liquid):
    args = _checks.selective_scan_args(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state,
        liquid=liquid, liquid_degree=p, BL=BL, lcontract=lcontract, kind=_TORCH)
    if args.empty:
        return _spec.reference_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                    initial_state, return_last_state, liquid=liquid,
                                    liquid_degree=p, BL=BL, lcontract=lcontract)
    sp = _Spec(u, A, p, lcontract, delta_softplus, scans.CHUNK, p > 1 and BL is None)
    b, d, n = u.shape[0], u.shape[1], A.shape[1]
    if initial_state is None:
        h0 = torch.zeros((p, b, d, n), dtype=sp.sdt, device=u.device)
    else:
        h0 = initial_state.movedim(1, 0) if liquid else initial_state[None]
    # BL is passed at p = 1 too (unused there), so that its gradient is zeros, not None
    out, last = _Selective.apply(sp, u, delta, A, B, C, D, z, delta_bias, BL, h0)
    if not return_last_state:
        return out
    return out, (last.movedim(0, 1) if liquid else last[0])


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """Mamba's selective_scan_fn (same arguments and outputs), plus initial_state (b, d, n).

    u, delta, z (b, d, l); A (d, n) real or complex; B, C (d, n), (b, n, l) or (b, g, n, l)
    ((b, n, 2l) / (b, g, n, 2l) interleaved re, im for complex A); D, delta_bias (d,).
    Delta = softplus(delta + delta_bias) (if delta_softplus); h_t = exp(Delta_t A) h_{t-1}
    + Delta_t B_t u_t; out = (C_t . h_t + D u) * silu(z) (2 Re for complex A), in u's dtype.
    Returns out, or (out, h_{l-1}) with return_last_state (gradients flow through both).
    """
    return _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                return_last_state, 1, None, "none", False)


def liquid_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_last_state=False, *,
                          liquid_degree=1, BL=None, lcontract="none"):
    """spec.liquid_selective_scan: c_t = Delta_t phi(BL_t u_t) (BL None = B), levels m < p,
    h0_t = Abar_t h0_{t-1} + Delta_t B_t u_t, hm_t = Abar_t hm_{t-1} + c_t h(m-1)_{t-1},
    y_t = C_t . sum_m hm_t. initial_state / last_state (b, p, d, n); real A only.
    """
    return _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                return_last_state, liquid_degree, BL, lcontract, True)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """One decode step (spec.selective_state_update, no loop: the spec's code on tensors).

    new_state = exp(Delta A) state + Delta B x; out = (C . new_state + D x) * silu(z).
    Returns (out (b, d) in x's dtype, new_state (b, d, n)).
    """
    _checks.selective_state_update_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus,
                                        kind=_TORCH)
    return _spec.selective_state_update.reference(state, x, dt, A, B, C, D, z, dt_bias,
                                                  dt_softplus)
