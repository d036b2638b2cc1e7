"""The linear recurrences every variant is made of, as plain sequential loops (the definition).

Time is axis 1 of every argument: arrays are (batch, length, *S) with S any state shape, and
`a`, `c` may have size 1 on the batch axis (broadcast). Backends register faster implementations
of these primitives for their own array types (see `_dispatch`); the loops here are the reference.
Complex and real dtypes are both allowed. Arguments are checked by `_checks` (the same checks
every backend runs); zero batch or length gives an empty result, and h_last = h0 (zeros if None).
"""

from __future__ import annotations

from ._checks import diag_scan_args, liquid_scan_args
from ._common import namespace
from ._dispatch import overridable

__all__ = ["diag_scan", "liquid_scan", "dense_scan"]


def _zeros_state(xp, b, shape_from):
    return xp.zeros((b.shape[0],) + tuple(shape_from.shape[2:]), dtype=b.dtype)


def _result_dtype(xp, *arrays):
    return xp.result_type(*[x for x in arrays if x is not None])


@overridable
def diag_scan(a, b, h0=None, *, reverse: bool = False):
    """Diagonal linear recurrence.

    h_t = a_t * h_{t-1} + b_t   for t = 0..L-1, with h_{-1} = h0 (zeros if None);
    reverse=True runs from t = L-1 down to 0: h_t = a_t * h_{t+1} + b_t, h_L = h0.
    a: (batch or 1, L, *S), b: (batch, L, *S), h0: (batch, *S).  Returns h: (batch, L, *S).
    The final state is h[:, -1] (h[:, 0] when reverse).
    """
    L = diag_scan_args(a, b, h0, reverse).length
    xp = namespace(a, b, h0)
    if L == 0:
        return xp.zeros(b.shape, dtype=_result_dtype(xp, a, b, h0))
    h = _zeros_state(xp, b, b) if h0 is None else h0
    out = [None] * L
    for t in reversed(range(L)) if reverse else range(L):
        h = a[:, t, ...] * h + b[:, t, ...]
        out[t] = h
    return xp.stack(out, axis=1)


@overridable
def liquid_scan(a, b, c, h0=None, *, degree: int, reverse: bool = False):
    """Liquid recurrence x_t = (a_t + c_t) x_{t-1} + b_t, truncated exactly at degree p in c.

    Levels m = 0..p-1 (p = degree):
        h0_t = a_t * h0_{t-1} + b_t
        hm_t = a_t * hm_{t-1} + c_t * h(m-1)_{t-1}
    so sum_m hm_t keeps every term of the full recurrence with at most p-1 factors of c.
    reverse=True runs from t = L-1 down to 0 (t-1 becomes t+1).
    a, c: (batch or 1, L, *S); b: (batch, L, *S); h0: (batch, p, *S) (zeros if None).
    Returns (y, h_last): y = sum_m hm (batch, L, *S), h_last (batch, p, *S) the levels after the
    last step taken (t = L-1, or t = 0 when reverse).
    """
    L = liquid_scan_args(a, b, c, h0, degree, reverse).length
    xp = namespace(a, b, c, h0)
    if L == 0:
        dtype = _result_dtype(xp, a, b, c, h0)
        last = (xp.zeros((b.shape[0], degree) + tuple(b.shape[2:]), dtype=dtype) if h0 is None
                else xp.astype(h0, dtype))
        return xp.zeros(b.shape, dtype=dtype), last
    zero = _zeros_state(xp, b, b)
    levels = [zero] * degree if h0 is None else [h0[:, m, ...] for m in range(degree)]
    out = [None] * L
    for t in reversed(range(L)) if reverse else range(L):
        at, ct = a[:, t, ...], c[:, t, ...]
        new = [at * levels[0] + b[:, t, ...]]
        for m in range(1, degree):
            new.append(at * levels[m] + ct * levels[m - 1])
        levels = new
        total = levels[0]
        for m in range(1, degree):
            total = total + levels[m]
        out[t] = total
    return xp.stack(out, axis=1), xp.stack(levels, axis=1)


@overridable
def dense_scan(A, b, h0=None):
    """Dense first-order linear recurrence with a time-invariant matrix (S4's DPLR recurrence).

    h_t = A h_{t-1} + b_t   for t = 0..L-1, with h_{-1} = h0 (zeros if None), i.e.
    h_t = A^(t+1) h0 + sum_{s<=t} A^(t-s) b_s.
    A: (*S, N, N), broadcast against b's (batch, L, *S, N); h0: (batch, *S, N).
    Returns h: (batch, L, *S, N); the final state is h[:, -1]. Real or complex.
    """
    xp = namespace(A, b, h0)
    L = b.shape[1]
    h = _zeros_state(xp, b, b) if h0 is None else h0
    out = [None] * L
    for t in range(L):
        h = xp.matmul(A, h[..., None])[..., 0] + b[:, t, ...]
        out[t] = h
    return xp.stack(out, axis=1)
