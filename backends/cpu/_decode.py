"""numba kernel of the decode step, selective_state_update (real A), on NumPy arrays.

Layouts (C-contiguous, one compute dtype: float32, or float64 for float64 inputs): state,
new_state (b, d, n); x, dt, z, out (b, d); A (d, n); D, bias (d,); B, C (b, G, n), channel c
reading group c // (d / G) (G = 1 for (b, n)). Per (batch, channel), the spec's step
(spec.selective.selective_state_update):
    Delta = softplus(dt + bias) (threshold 20) or dt + bias
    new_state = exp(Delta A) state + Delta x B;  out = (C . new_state + D x) silu(z)
in one pass over the state (torch's eager step runs ~8 passes). `state_update` runs the rows
one after another, `state_update_parallel` splits them over numba's threads (prange): the
caller picks by size (a parallel launch costs more than a small state takes).
"""

from __future__ import annotations

import math

import numba as nb

from ._kernels import _OPTS, _sigmoid, _softplus

__all__ = ["state_update", "state_update_parallel"]


@nb.njit(inline="always", **_OPTS)
def _row(r, state, x, dt, A, B, C, D, z, bias, has_d, has_z, has_bias, softplus, new, out):
    """Row r = batch i * d + channel c of the step."""
    d, n = A.shape
    i, c = r // d, r % d
    gb, gc = c // (d // B.shape[1]), c // (d // C.shape[1])
    delta = dt[i, c] + (bias[c] if has_bias else 0.0)
    if softplus:
        delta = _softplus(delta)
    xv = x[i, c]
    dx = delta * xv
    acc = 0.0
    for k in range(n):
        h = math.exp(delta * A[c, k]) * state[i, c, k] + dx * B[i, gb, k]
        new[i, c, k] = h
        acc += C[i, gc, k] * h
    if has_d:
        acc += D[c] * xv
    if has_z:
        acc *= z[i, c] * _sigmoid(z[i, c])
    out[i, c] = acc


@nb.njit(**_OPTS)
def state_update(state, x, dt, A, B, C, D, z, bias, has_d, has_z, has_bias, softplus, new, out):
    """The step (module docstring) into new (b, d, n) and out (b, d), serially."""
    for r in range(x.shape[0] * x.shape[1]):
        _row(r, state, x, dt, A, B, C, D, z, bias, has_d, has_z, has_bias, softplus, new, out)


@nb.njit(parallel=True, **_OPTS)
def state_update_parallel(state, x, dt, A, B, C, D, z, bias, has_d, has_z, has_bias, softplus,
                          new, out):
    """state_update with the rows split over numba's threads."""
    for r in nb.prange(x.shape[0] * x.shape[1]):
        _row(r, state, x, dt, A, B, C, D, z, bias, has_d, has_z, has_bias, softplus, new, out)
