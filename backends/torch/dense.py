"""Eager PyTorch dense first-order scan h_t = A h_{t-1} + b_t (A time-invariant): S4's recurrence.

Chunked doubling, a few large batched matrix products instead of L small ones (time axis 1,
chunks of T = CHUNK steps, all chunks at once):
  1. h0 folded into the first input: b_0 <- b_0 + A h0.
  2. Inside every chunk, from a zero state (Hillis-Steele doubling, log2 T passes):
       for d = 1, 2, 4, ... < T:  h[t] <- h[t] + A^d h[t - d]  (t >= d),  A^d by squaring,
     which leaves h[t] = sum_{s<=t} A^(t-s) b_s within the chunk.
  3. The states entering the chunks, sequentially over the L / T chunks: x_c = A^T x_{c-1} + the
     local end of chunk c-1; then h[c, t] += A^(t+1) x_c, the powers applied by doubling
     (g_0 = A x, g[k:2k] = A^k g[0:k]).
Autograd differentiates through these products (memory: about (log2 T + 2) copies of h).
"""

from __future__ import annotations

import math

import torch

__all__ = ["dense_scan", "CHUNK"]

#: steps per chunk (a power of two)
CHUNK = 64

_LOW = (torch.bfloat16, torch.float16)


def _mv(P, x):
    """P (*S, N, N) applied to x (..., *S, N), as one batched product over S (a broadcast
    matmul would copy P for every leading index)."""
    S, N = tuple(P.shape[:-2]), P.shape[-1]
    lead = tuple(x.shape[: x.dim() - len(S) - 1])
    xs = x.reshape((-1,) + (math.prod(S), N))
    out = torch.einsum("sij,psj->psi", P.reshape((math.prod(S), N, N)), xs)
    return out.reshape(lead + S + (N,))


def _check(A, b, h0):
    for name, x in (("A", A), ("b", b), ("h0", h0)):
        if x is None:
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"{name}: expected a floating dtype, got dtype {x.dtype}")
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A: expected shape (*S, N, N), got shape {tuple(A.shape)}")
    N, S = A.shape[-1], tuple(A.shape[:-2])
    if b.dim() != 3 + len(S) or b.shape[1] < 1 or tuple(b.shape[2:]) != S + (N,):
        raise ValueError(f"b: expected shape (batch, length >= 1, {', '.join(map(str, S + (N,)))}"
                         f"), got shape {tuple(b.shape)}")
    if h0 is not None and tuple(h0.shape) != (b.shape[0],) + S + (N,):
        raise ValueError(f"h0: expected shape {(b.shape[0],) + S + (N,)}, got shape "
                         f"{tuple(h0.shape)}")


def dense_scan(A, b, h0=None):
    """h_t = A h_{t-1} + b_t, h_{-1} = h0 (zeros if None); see liquidssm.spec.scan.dense_scan.

    A: (*S, N, N); b: (batch, L, *S, N); h0: (batch, *S, N). Returns h (batch, L, *S, N) in the
    common dtype; bfloat16 / float16 compute in float32 and return the input dtype."""
    _check(A, b, h0)
    low = b.dtype if b.dtype in _LOW else None
    dtype = torch.promote_types(A.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    if dtype in _LOW:
        dtype = torch.float32
    A, b = A.to(dtype), b.to(dtype)
    if h0 is not None:
        b = torch.cat([b[:, :1] + _mv(A, h0.to(dtype)).unsqueeze(1), b[:, 1:]], dim=1)
    B, L, rest = b.shape[0], b.shape[1], tuple(b.shape[2:])
    T = min(CHUNK, L)
    nc = -(-L // T)
    if nc * T != L:
        b = torch.cat([b, b.new_zeros((B, nc * T - L) + rest)], dim=1)
    h = b.reshape((B, nc, T) + rest)
    P, d = A, 1
    while d < T:  # 2. doubling inside every chunk
        h = torch.cat([h[:, :, :d], h[:, :, d:] + _mv(P, h[:, :, :-d])], dim=2)
        d *= 2
        if d < T or nc > 1:
            P = torch.matmul(P, P)
    if nc > 1:  # 3. here T = CHUNK is a power of two and P = A^T
        x, enter = torch.zeros_like(h[:, 0, 0]), []
        for c in range(nc):
            enter.append(x)
            x = _mv(P, x) + h[:, c, -1]
        g, Pk = _mv(A, torch.stack(enter, dim=1)).unsqueeze(2), A  # g[:, c, k] = A^(k+1) x_c
        while g.shape[2] < T:
            g = torch.cat([g, _mv(Pk, g)], dim=2)
            Pk = torch.matmul(Pk, Pk)
        h = h + g
    h = h.reshape((B, nc * T) + rest)[:, :L]
    return h if low is None else h.to(low)
