"""The decode step (selective_state_update) on jax arrays.

One step has no recurrence to speed up: under the XLA strategies it is the spec's array-API
function, traced under jit as it is. Under the `pallas` strategy it is the Pallas selective
scan of length 1 (the same kernel and vjp as selective_scan): new_state = exp(Delta A) state +
Delta B x is the scan's last state from initial_state = state, out its one output. The spec's
function checks the arguments first (abstractly, jax.eval_shape: no compute), so the error
messages are the spec's.
"""

from __future__ import annotations

import functools

import jax
from liquidssm.spec import selective as _spec_selective
from liquidssm.spec._checks import selective_state_update_args

from .scans import JAX, scan_strategy

__all__ = ["selective_state_update"]

_reference = _spec_selective.selective_state_update.reference


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """As liquidssm.spec.selective_state_update: state (b, d, n); x, dt, z (b, d); A (d, n)
    real; B, C (b, n) or (b, g, n); D, dt_bias (d,). Returns (out (b, d), new_state)."""
    from .selective import selective_scan
    from .selective import selective_state_update as checked_reference

    if scan_strategy(1) != "pallas":
        return checked_reference(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    # the shared check first (arrays of this backend, shapes), then the spec's own, abstractly
    selective_state_update_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, kind=JAX)
    check = functools.partial(_reference, dt_softplus=dt_softplus)
    jax.eval_shape(check, state, x, dt, A, B, C, D, z, dt_bias)

    col = lambda v: None if v is None else v[..., None]  # noqa: E731  (..., 1): length 1
    out, new_state = selective_scan(col(x), col(dt), A, col(B), col(C), D, col(z), dt_bias,
                                    dt_softplus, state, True)
    return out[..., 0], new_state
