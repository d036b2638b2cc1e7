"""Eager PyTorch diagonal and liquid scans, with an adjoint (reverse-scan) backward.

The recurrence runs sequentially over time, one fused multiply-add per step on the whole
(batch, *S) state, in chunks of CHUNK steps laid out time-major. Only the levels at chunk starts
are saved; the backward recomputes a chunk's states from them and runs the adjoint scan. This is
the definition's own arithmetic (no cumulative-log-decay tricks), so it is as stable as the spec.

Level recurrence (p levels, p = 1 is the diagonal scan), over a chunk t = 0..T-1:
    H[t, 0] = a_t H[t-1, 0] + x_t,    H[t, m] = a_t H[t-1, m] + c_t H[t-1, m-1]   (m >= 1)
Adjoint, for a loss with direct gradient e_t on every level of H[t] and K on H[T-1]:
    Lam[T-1] = e_{T-1} + K,   Lam[t, m] = e_t + a*_{t+1} Lam[t+1, m] + c*_{t+1} Lam[t+1, m+1]
    dL/dH[-1, m] = a*_0 Lam[0, m] + c*_0 Lam[0, m+1],  dL/da_t = sum_m Lam[t, m] H*[t-1, m],
    dL/dc_t = sum_{m>=1} Lam[t, m] H*[t-1, m-1],  dL/dx_t = Lam[t, 0]   (* = complex conjugate).
"""

from __future__ import annotations

import torch
from liquidssm.spec import _checks
from liquidssm.spec import scan as _spec_scan

__all__ = ["diag_scan", "liquid_scan", "CHUNK"]

#: time steps per chunk (memory of saved states: (levels, batch, *S) per chunk)
CHUNK = 64

_LOW = (torch.bfloat16, torch.float16)
_TORCH = "torch.Tensor"  # the array type the checks (liquidssm.spec._checks) require


def _promote(*tensors):
    dtype = None
    for t in tensors:
        if t is not None:
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return dtype


def _as(grad, ref):
    """grad in ref's dtype (the real part for a real ref)."""
    if grad is None or ref is None:
        return None
    if grad.is_complex() and not ref.is_complex():
        grad = grad.real
    return grad.to(ref.dtype)


def levels_forward(a, x, c, h):
    """Run the level recurrence over one chunk.

    a, c: (T, *) broadcastable to x[t]; x: (T, *S'); h: (p, *S') levels before step 0.
    Returns H (T, p, *S') in h's dtype.
    """
    T, p = x.shape[0], h.shape[0]
    H = torch.empty((T,) + tuple(h.shape), dtype=h.dtype, device=h.device)
    As, Xs = a.unbind(0), x.unbind(0)
    if p == 1:
        out, prev = H[:, 0].unbind(0), h[0]
        for t in range(T):
            prev = torch.addcmul(Xs[t], As[t], prev, out=out[t])
        return H
    Cs, Hs, prev = c.unbind(0), H.unbind(0), h
    for t in range(T):
        cur = Hs[t]
        torch.addcmul(Xs[t], As[t], prev[0], out=cur[0])
        torch.mul(As[t], prev[1:], out=cur[1:])
        cur[1:].addcmul_(Cs[t], prev[:-1])
        prev = cur
    return H


def levels_backward(a, c, e, K):
    """The adjoint of `levels_forward` (module docstring).

    a, c as in levels_forward; e: (T, *S') the direct gradient on each level of H[t];
    K: (p, *S') the gradient on H[T-1] from later steps. Returns (Lam (T, p, *S'), dL/dh).
    """
    T, p = e.shape[0], K.shape[0]
    ac = a.conj().resolve_conj()
    Lam = torch.empty((T,) + tuple(K.shape), dtype=_promote(e, K, a), device=K.device)
    As, Es, Ls = ac.unbind(0), e.unbind(0), Lam.unbind(0)
    torch.add(Es[T - 1], K, out=Ls[T - 1])
    if p == 1:
        out = Lam[:, 0].unbind(0)
        for t in range(T - 2, -1, -1):
            torch.addcmul(Es[t], As[t + 1], out[t + 1], out=out[t])
        return Lam, As[0] * Ls[0]
    Cs = c.conj().resolve_conj().unbind(0)
    for t in range(T - 2, -1, -1):
        torch.addcmul(Es[t], As[t + 1], Ls[t + 1], out=Ls[t])
        Ls[t][:-1].addcmul_(Cs[t + 1], Ls[t + 1][1:])
    back = As[0] * Ls[0]
    back[:-1].addcmul_(Cs[0], Ls[0][1:])
    return Lam, back


def _tm(x, s, e):
    """Time-major contiguous chunk x[:, s:e] -> (T, batch, *S); None stays None."""
    return None if x is None else x[:, s:e].movedim(1, 0).contiguous()


def _sum_to(g, shape):
    """Sum the broadcast batch axis (axis 1 of a time-major chunk) back to size 1 if needed."""
    return g.sum(1, keepdim=True) if shape[0] == 1 and g.shape[1] != 1 else g


class _LevelScan(torch.autograd.Function):
    """(a, b, c, h0 (batch, p, *S)) -> (y = sum_m H[:, :, m], last levels (batch, p, *S))."""

    @staticmethod
    def forward(ctx, a, b, c, h0, chunk):
        L, p = b.shape[1], h0.shape[1]
        dtype = _promote(a, b, c, h0)
        h = h0.movedim(1, 0).to(dtype)
        y = torch.empty(b.shape, dtype=dtype, device=b.device)
        starts = []
        for s in range(0, L, chunk):
            e = min(s + chunk, L)
            starts.append(h)
            H = levels_forward(_tm(a, s, e), _tm(b, s, e), _tm(c, s, e), h)
            y[:, s:e] = (H[:, 0] if p == 1 else H.sum(1)).movedim(0, 1)
            h = H[-1].clone()
        ctx.save_for_backward(a, b, c, torch.stack(starts))
        ctx.chunk = chunk
        return y, h.movedim(0, 1)

    @staticmethod
    def backward(ctx, gy, glast):
        a, b, c, starts = ctx.saved_tensors
        L, chunk = b.shape[1], ctx.chunk
        K = glast.movedim(1, 0).to(_promote(glast, starts))
        ga = torch.zeros_like(a, dtype=starts.dtype)
        gb = torch.empty_like(b, dtype=starts.dtype)
        gc = None if c is None else torch.zeros_like(c, dtype=starts.dtype)
        for i in reversed(range(starts.shape[0])):
            s, h = i * chunk, starts[i]
            e = min(s + chunk, L)
            ac, cc = _tm(a, s, e), _tm(c, s, e)
            H = levels_forward(ac, _tm(b, s, e), cc, h)
            Lam, K = levels_backward(ac, cc, _tm(gy, s, e), K)
            Hprev = torch.cat([h[None], H[:-1]]).conj()
            gb[:, s:e] = Lam[:, 0].movedim(0, 1)
            ga[:, s:e] = _sum_to((Lam * Hprev).sum(1), a.shape).movedim(0, 1)
            if c is not None:
                gcc = (Lam[:, 1:] * Hprev[:, :-1]).sum(1)
                gc[:, s:e] = _sum_to(gcc, c.shape).movedim(0, 1)
        return _as(ga, a), _as(gb, b), _as(gc, c), K.movedim(0, 1), None


def _run(a, b, c, h0, degree, reverse):
    """The checked arguments (h0 (batch, p, *S) or None) -> (y, h_last)."""
    low = b.dtype if b.dtype in _LOW else None
    if low is not None:
        a, b, c, h0 = (None if t is None else t.float() for t in (a, b, c, h0))
    if reverse:
        a, b, c = (None if t is None else t.flip(1) for t in (a, b, c))
    if h0 is None:
        h0 = torch.zeros((b.shape[0], degree) + tuple(b.shape[2:]), dtype=_promote(a, b, c),
                         device=b.device)
    y, last = _LevelScan.apply(a, b, c, h0, CHUNK)
    if reverse:
        y = y.flip(1)
    return (y if low is None else y.to(low)), last


def diag_scan(a, b, h0=None, *, reverse: bool = False):
    """h_t = a_t h_{t-1} + b_t (t = 0..L-1; reverse: h_t = a_t h_{t+1} + b_t), h_{-1} = h0 or 0.

    a: (batch or 1, L, *S), b: (batch, L, *S), h0: (batch, *S); real or complex.
    Returns h (batch, L, *S); bfloat16/float16 compute in float32 and return the input dtype.
    """
    if _checks.diag_scan_args(a, b, h0, reverse, kind=_TORCH).empty:
        return _spec_scan.diag_scan.reference(a, b, h0, reverse=reverse)
    return _run(a, b, None, None if h0 is None else h0[:, None], 1, reverse)[0]


def liquid_scan(a, b, c, h0=None, *, degree: int, reverse: bool = False):
    """Liquid recurrence truncated at degree p (levels m = 0..p-1), see spec.scan.liquid_scan:
    h0_t = a_t h0_{t-1} + b_t, hm_t = a_t hm_{t-1} + c_t h(m-1)_{t-1}; y_t = sum_m hm_t.

    a, c: (batch or 1, L, *S); b: (batch, L, *S); h0: (batch, p, *S) or None.
    Returns (y (batch, L, *S), h_last (batch, p, *S)); h_last in the compute dtype.
    """
    if _checks.liquid_scan_args(a, b, c, h0, degree, reverse, kind=_TORCH).empty:
        return _spec_scan.liquid_scan.reference(a, b, c, h0, degree=degree, reverse=reverse)
    return _run(a, b, c, h0, degree, reverse)
