"""Eager PyTorch selective scans (mamba layout), chunked, with an adjoint backward.

Per chunk of T = scans.CHUNK steps, (T, b, d, n) tensors are built time-major,
    a_t = exp(Delta_t A),  x_t = Delta_t u_t B_t,  c_t = Delta_t phi(BL_t u_t)  (liquid only),
the level recurrence of liquidssm.torch.scans runs over them (one fused multiply-add per step on
the (b, d, n) state), and y_t = sum_n C_t sum_m H[t, m] (2 Re for complex A) is written out.
Saved for backward: the inputs and the levels at chunk starts, (l / T, p, b, d, n). The backward
walks the chunks in reverse, recomputes each chunk's states and runs the adjoint scan, so peak
memory is O(b d l + b d n l / T + T b d n); no (b, d, n, l) tensor is ever made.
Semantics, checks and errors are the spec's (liquidssm.spec.selective): the arguments are
validated by the spec's own checks run on shape-only ("meta") copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from liquidssm.spec import selective as _spec
from liquidssm.spec._common import check_choice, check_int

from . import scans
from .scans import _as, _promote, levels_backward, levels_forward

__all__ = ["selective_scan", "liquid_selective_scan", "selective_state_update"]


def _meta(x):
    return torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x


def _validate(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
              return_last_state, p, BL, liquid):
    """Raise exactly the spec's errors, without computing anything."""
    m = [_meta(x) for x in (u, delta, A, B, C, D, z, delta_bias, BL, initial_state)]
    a = _spec._prepare(*m[:8], delta_softplus, liquid=liquid, BL=m[8])
    _spec._check_bool("return_last_state", return_last_state)
    _spec._initial_levels(a, m[9], p, liquid)


def _phi(x, kind):
    if kind == "none":
        return x
    return torch.tanh(x) if kind == "tanh" else 1.7159 * torch.tanh(0.666 * x)


def _dphi(x, kind):
    if kind == "none":
        return torch.ones_like(x)
    if kind == "tanh":
        return 1 - torch.tanh(x) ** 2
    return 1.7159 * 0.666 * (1 - torch.tanh(0.666 * x) ** 2)


# B, C, BL arrive normalised: (d, n) constant, or (b, g, n, l) (g = 1 for (b, n, l)).


def _chunk(X, s, e):
    """(T, b, g, n) time-major chunk of a (b, g, n, l) argument; a constant (d, n) as is."""
    return X if X.dim() == 2 else X[..., s:e].permute(3, 0, 1, 2).contiguous()


def _outer(w, Xc):
    """w (T, b, d) times the chunk Xc of B/C/BL -> (T, b, d, n)."""
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
    g = Xc.shape[2]
    return (G.reshape(T, b, g, d // g, n) * Xc[:, :, :, None, :]).sum(-1).reshape(T, b, d)


def _reduce(G, w, X):
    """The gradient of X for the product w (T, b, d) * X: sum over the channels that share it."""
    w = w.to(G.dtype)
    if X.dim() == 2:
        return torch.einsum("tbdn,tbd->dn", G, w)
    T, b, d, n = G.shape
    g = X.shape[1]
    return torch.einsum("tbgkn,tbgk->bgnt", G.reshape(T, b, g, d // g, n),
                        w.reshape(T, b, g, d // g))


def _tm(x, s, e):
    return x[..., s:e].permute(2, 0, 1).contiguous()


class _Selective(torch.autograd.Function):
    """(u, dt, A, B, C, BL, h0 (p, b, d, n)) -> (y = C . sum_m h_m (b, d, l), last levels)."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, BL, h0, phi, chunk):
        b, d, l = u.shape
        p = h0.shape[0]
        y = torch.empty((b, d, l), dtype=u.dtype, device=u.device)
        h, starts = h0, []
        for s in range(0, l, chunk):
            e = min(s + chunk, l)
            uc, dc = _tm(u, s, e), _tm(dt, s, e)
            a, x, c = _inputs(uc, dc, A, B, BL, s, e, p, phi)
            starts.append(h)
            H = levels_forward(a, x, c, h)
            y[..., s:e] = _readout(H, _chunk(C, s, e)).permute(1, 2, 0)
            h = H[-1].clone()
        ctx.save_for_backward(u, dt, A, B, C, BL, torch.stack(starts))
        ctx.phi, ctx.chunk = phi, chunk
        return y, h

    @staticmethod
    def backward(ctx, gy, glast):
        u, dt, A, B, C, BL, starts = ctx.saved_tensors
        phi, chunk, l = ctx.phi, ctx.chunk, u.shape[2]
        p, k = starts.shape[1], 2 if starts.is_complex() else 1
        K = glast.to(starts.dtype)
        gu, gdt = torch.empty_like(u), torch.empty_like(dt)
        gA = torch.zeros_like(A)
        gB, gC = torch.zeros_like(B), torch.zeros_like(C)
        gBL = None if BL is None else torch.zeros_like(BL)
        for i in reversed(range(starts.shape[0])):
            s, h = i * chunk, starts[i]
            e = min(s + chunk, l)
            uc, dc, gc_ = _tm(u, s, e), _tm(dt, s, e), _tm(gy, s, e)
            Bc, Cc = _chunk(B, s, e), _chunk(C, s, e)
            a, x, c = _inputs(uc, dc, A, B, BL, s, e, p, phi)
            H = levels_forward(a, x, c, h)
            Lam, K = levels_backward(a, c, _outer(k * gc_, Cc.conj()), K)
            hsum = H[:, 0] if p == 1 else H.sum(1)
            Hprev = torch.cat([h[None], H[:-1]]).conj()
            _add(gC, _reduce(hsum.conj(), k * gc_, C), s, e)
            w = (Lam * Hprev).sum(1) * a.conj()  # dL/d(Delta A)
            gA += torch.einsum("tbdn,tbd->dn", w, dc.to(w.dtype))
            g_dt = torch.einsum("tbdn,dn->tbd", w, A.conj()).real
            q = _contract(Lam[:, 0], Bc.conj()).real  # dL/d(Delta u)
            g_u = dc * q
            g_dt += uc * q
            _add(gB, _reduce(Lam[:, 0], dc * uc, B), s, e)
            if p > 1:
                BLc = _chunk(BL, s, e)
                pre = _outer(uc, BLc)
                gc = (Lam[:, 1:] * Hprev[:, :-1]).sum(1)  # dL/dc (real: liquid A is real)
                g_dt += (gc * _phi(pre, phi)).sum(-1)
                dpre = gc * dc[..., None] * _dphi(pre, phi)
                g_u += _contract(dpre, BLc)
                _add(gBL, _reduce(dpre, uc, BL), s, e)
            gu[..., s:e] = g_u.permute(1, 2, 0)
            gdt[..., s:e] = g_dt.permute(1, 2, 0)
        return (gu, gdt, _as(gA, A), _as(gB, B), _as(gC, C), _as(gBL, BL), K, None, None)


def _inputs(uc, dc, A, B, BL, s, e, p, phi):
    """a, x, c (T, b, d, n) for one chunk (c None when p = 1)."""
    a = torch.exp(dc[..., None] * A)
    x = _outer(dc * uc, _chunk(B, s, e))
    c = None if p == 1 else dc[..., None] * _phi(_outer(uc, _chunk(BL, s, e)), phi)
    return a, x, c


def _readout(H, Cc):
    """y (T, b, d) = sum_n C sum_m H[:, m] (2 Re(...) when complex)."""
    y = _contract(H[:, 0] if H.shape[1] == 1 else H.sum(1), Cc)
    return 2 * y.real if y.is_complex() else y


def _add(G, g, s, e):
    """Accumulate a chunk gradient g into G (constant: whole; per-time: G[..., s:e])."""
    if G.dim() == 2:
        G += g
    else:
        G[..., s:e] += g


def _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state,
         p, BL, lcontract, liquid):
    _validate(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
              return_last_state, p, BL, liquid)
    wdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    cdt = torch.complex128 if wdt == torch.float64 else torch.complex64
    cplx = A.is_complex()
    l = u.shape[2]

    def norm(X):
        if X.dim() == 2:
            return X.to(cdt if cplx else wdt)
        X = X.to(wdt)
        X = X[:, None] if X.dim() == 3 else X
        return torch.view_as_complex(X.unflatten(-1, (l, 2)).contiguous()) if cplx else X

    uw, A = u.to(wdt), A.to(cdt if cplx else wdt)
    B, C = norm(B), norm(C)
    BL = (B if BL is None else norm(BL)) if p > 1 else None
    raw = delta.to(wdt)
    if delta_bias is not None:
        raw = raw + delta_bias.to(wdt)[:, None]
    dt = F.softplus(raw) if delta_softplus else raw
    sdt = cdt if cplx else wdt
    b, d, n = u.shape[0], u.shape[1], A.shape[1]
    if initial_state is None:
        h0 = torch.zeros((p, b, d, n), dtype=sdt, device=u.device)
    else:
        h0 = initial_state.to(sdt).movedim(1, 0) if liquid else initial_state.to(sdt)[None]
    y, last = _Selective.apply(uw, dt, A, B, C, BL, h0, lcontract, scans.CHUNK)
    out = y if D is None else y + D.to(wdt)[:, None] * uw
    if z is not None:
        out = out * F.silu(z.to(wdt))
    out = out.to(u.dtype)
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
    p = check_int("liquid_degree", liquid_degree)
    check_choice("lcontract", lcontract, ("none", "tanh", "lecun"))
    return _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                return_last_state, p, BL, lcontract, True)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """One decode step (spec.selective_state_update, no loop: the spec's code on tensors).

    new_state = exp(Delta A) state + Delta B x; out = (C . new_state + D x) * silu(z).
    Returns (out (b, d) in x's dtype, new_state (b, d, n)).
    """
    return _spec.selective_state_update.reference(state, x, dt, A, B, C, D, z, dt_bias,
                                                  dt_softplus)
