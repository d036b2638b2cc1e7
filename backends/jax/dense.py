"""JAX dense first-order scan h_t = A h_{t-1} + b_t (A time-invariant): S4's recurrence.

Strategy (scans.scan_strategy, LIQUIDSSM_JAX_SCAN):
    sequential     lax.scan over time, one batched matrix-vector product per step
    associative,   chunked doubling (as liquidssm.torch's dense_scan): inside chunks of
    chunked        min(CHUNK, L) steps, h[t] += A^d h[t - d] for d = 1, 2, 4, ... (A^d by
                   squaring), then the states entering the chunks by lax.scan over chunks
                   (x_c = A^T x_{c-1} + the local end of chunk c-1) and h[c, t] += A^(t+1) x_c
                   (powers applied by doubling). log-depth within a chunk.
Both compile in time independent of L; autodiff goes through them.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax
from liquidssm.spec._common import describe

from . import scans
from .scans import scan_strategy

__all__ = ["dense_scan"]


def _mv(P, x):
    """P (*S, N, N) applied to x (..., *S, N), as one batched product over S."""
    S, N = tuple(P.shape[:-2]), P.shape[-1]
    lead = tuple(x.shape[: x.ndim - len(S) - 1])
    xs = x.reshape((-1, math.prod(S), N))
    out = jnp.einsum("sij,psj->psi", P.reshape((math.prod(S), N, N)), xs)
    return out.reshape(lead + S + (N,))


def _check(A, b, h0):
    for name, x in (("A", A), ("b", b), ("h0", h0)):
        if x is not None and not (hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)):
            raise TypeError(f"{name}: expected a floating jax array, got {describe(x)}")
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A: expected shape (*S, N, N), got {describe(A)}")
    S, N = tuple(A.shape[:-2]), A.shape[-1]
    if b.ndim != 3 + len(S) or b.shape[1] < 1 or tuple(b.shape[2:]) != S + (N,):
        raise ValueError(f"b: expected shape (batch, length >= 1, "
                         f"{', '.join(map(str, S + (N,)))}), got {describe(b)}")
    if h0 is not None and tuple(h0.shape) != (b.shape[0],) + S + (N,):
        raise ValueError(f"h0: expected shape {(b.shape[0],) + S + (N,)}, got {describe(h0)}")


def _sequential(A, b):
    def step(h, bt):
        h = _mv(A, h) + bt
        return h, h

    return jnp.moveaxis(lax.scan(step, jnp.zeros_like(b[:, 0]), jnp.moveaxis(b, 1, 0))[1], 0, 1)


def _doubling(A, b):
    B, L, rest = b.shape[0], b.shape[1], tuple(b.shape[2:])
    T = min(scans.CHUNK, L)  # read at trace time (a power of two)
    nc = -(-L // T)
    if nc * T != L:
        b = jnp.concatenate([b, jnp.zeros((B, nc * T - L) + rest, b.dtype)], axis=1)
    h = b.reshape((B, nc, T) + rest)
    P, d = A, 1
    while d < T:
        h = jnp.concatenate([h[:, :, :d], h[:, :, d:] + _mv(P, h[:, :, :-d])], axis=2)
        d *= 2
        if d < T or nc > 1:
            P = jnp.matmul(P, P)
    if nc > 1:  # T = scans.CHUNK and P = A^T

        def carry(x, end):
            return _mv(P, x) + end, x

        enter = lax.scan(carry, jnp.zeros_like(h[:, 0, 0]), jnp.moveaxis(h[:, :, -1], 1, 0))[1]
        g, Pk = _mv(A, jnp.moveaxis(enter, 0, 1))[:, :, None], A  # g[:, c, k] = A^(k+1) x_c
        while g.shape[2] < T:
            g = jnp.concatenate([g, _mv(Pk, g)], axis=2)
            Pk = jnp.matmul(Pk, Pk)
        h = h + g
    return h.reshape((B, nc * T) + rest)[:, :L]


def dense_scan(A, b, h0=None):
    """h_t = A h_{t-1} + b_t, h_{-1} = h0 (zeros if None); see liquidssm.spec.scan.dense_scan.

    A: (*S, N, N); b: (batch, L, *S, N); h0: (batch, *S, N). Returns h (batch, L, *S, N) in the
    common dtype of the inputs (real or complex)."""
    _check(A, b, h0)
    dtype = jnp.result_type(A, b, *(() if h0 is None else (h0,)))
    A, b = A.astype(dtype), b.astype(dtype)
    if h0 is not None:
        b = b.at[:, 0].add(_mv(A, h0.astype(dtype)))
    if scan_strategy(b.shape[1]) == "sequential":
        return _sequential(A, b)
    return _doubling(A, b)
