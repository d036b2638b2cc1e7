"""JAX scans: the strategy switch and the diagonal / liquid linear recurrences.

Strategy (`LIQUIDSSM_JAX_SCAN` = auto | sequential | associative | chunked | pallas, read at
trace time):
    sequential   lax.scan over time
    associative  lax.associative_scan over the whole sequence (log depth, O(L) work and memory)
    chunked      lax.associative_scan inside chunks of CHUNK steps, lax.scan carrying the state
                 between chunks (bounded memory)
    pallas       the Pallas kernels of liquidssm.jax.pallas (GPU, TPU; on CPU only in the Pallas
                 interpreter, LIQUIDSSM_PALLAS_INTERPRET=1; complex-A selective scans fall back
                 to the XLA strategy of the platform)
    auto         CPU: sequential; GPU, TPU: pallas.
diag_scan and liquid_scan are differentiated by JAX autodiff through these scans (their
memory is of the order of their output); the selective scans have custom vjps (selective.py).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax import lax
from liquidssm import registry
from liquidssm.spec import scan as _spec_scan
from liquidssm.spec._checks import diag_scan_args, liquid_scan_args
from liquidssm.spec._common import check_choice

from . import parallel

__all__ = ["STRATEGIES", "CHUNK", "scan_strategy", "diag_scan", "liquid_scan"]

#: the registered JAX implementations (auto first)
STRATEGIES = registry.names("jax")
JAX = "jax.Array"  # the array type the checks (liquidssm.spec._checks) require
#: chunk length of the chunked strategy (and the checkpoint spacing of the selective vjps)
CHUNK = 64


def scan_strategy(length: int | None = None, platform: str | None = None) -> str:
    """The strategy used for a sequence of `length` steps (None: a long one) on `platform`
    (default: jax.default_backend()): LIQUIDSSM_JAX_SCAN if set, else the auto rule."""
    choice = os.environ.get("LIQUIDSSM_JAX_SCAN", "auto").strip().lower() or "auto"
    check_choice("LIQUIDSSM_JAX_SCAN", choice, STRATEGIES)
    platform = platform or jax.default_backend()
    if choice == "pallas":
        from .pallas import plan

        plan(platform)  # a clear error where the kernels cannot run
    if choice != "auto":
        return choice
    return "sequential" if platform == "cpu" else "pallas"


def xla_strategy(length: int | None = None, platform: str | None = None) -> str:
    """The XLA strategy for `platform` (the fallback where no Pallas kernel applies): CPU
    sequential; else associative up to CHUNK steps, chunked beyond."""
    if (platform or jax.default_backend()) == "cpu":
        return "sequential"
    return "associative" if length is not None and length <= CHUNK else "chunked"


def _combine(x, y):
    """(a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2."""
    return x[0] * y[0], y[0] * x[1] + y[1]


def scan0(a, b, method: str, reverse: bool = False):
    """h_t = a_t h_{t-1} + b_t along axis 0 (h_{t+1} when reverse), zero initial state.

    a broadcasts against b on the axes after 0. Returns h with b's shape."""
    if method == "associative":
        return lax.associative_scan(_combine, (a, b), reverse=reverse, axis=0)[1]

    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return lax.scan(step, jnp.zeros(b.shape[1:], b.dtype), (a, b), reverse=reverse)[1]


def _pad_time(x, total: int, value):
    """x padded along axis 0 to `total` steps with `value`."""
    extra = total - x.shape[0]
    if extra == 0:
        return x
    return jnp.concatenate([x, jnp.full((extra,) + x.shape[1:], value, x.dtype)])


def chunked_scan(a, b, h0, method: str, chunk: int):
    """h_t = a_t h_{t-1} + b_t along axis 0 from h_{-1} = h0, in chunks of `chunk` steps:
    `method` inside a chunk, lax.scan carrying the state between chunks."""
    L = b.shape[0]
    nc = -(-L // chunk)
    a = _pad_time(a, nc * chunk, 1).reshape((nc, chunk) + a.shape[1:])
    b = _pad_time(b, nc * chunk, 0).reshape((nc, chunk) + b.shape[1:])

    def body(h, ab):
        ac, bc = ab
        hc = scan0(ac, bc.at[0].add(ac[0] * h), method)
        return hc[-1], hc

    h = lax.scan(body, h0, (a, b))[1]
    return h.reshape((nc * chunk,) + h.shape[2:])[:L]


def _plan(length: int):
    """(method inside a chunk, chunk length) for a sequence of `length` steps."""
    s = scan_strategy(length)
    if s == "pallas":
        return s, length
    if s == "chunked":
        return "associative", min(CHUNK, length)
    return s, length


def _pallas_linear(a, b, c, H0):
    """liquidssm.jax.pallas.linear_scan on (L, ., *S) arrays (the state axes flattened)."""
    from .pallas import linear_scan

    L, batch, S = b.shape[0], b.shape[1], b.shape[2:]
    flat = lambda x: None if x is None else x.reshape(x.shape[:2] + (-1,))  # noqa: E731
    y, last = linear_scan(flat(a), flat(b), flat(c), flat(H0))
    return y.reshape((L, batch) + S), last.reshape(H0.shape)



def _time_major(a, b, c, h0):
    """Checked scan arguments (liquidssm.spec._checks) -> time-major, in one common dtype."""
    dtype = jnp.result_type(*[x for x in (a, b, c, h0) if x is not None])
    tm = lambda x: jnp.moveaxis(jnp.asarray(x).astype(dtype), 1, 0)  # noqa: E731
    return (tm(a), tm(b), None if c is None else tm(c),
            None if h0 is None else jnp.asarray(h0).astype(dtype), dtype)


def diag_scan(a, b, h0=None, *, reverse: bool = False, axis_name=None):
    """h_t = a_t h_{t-1} + b_t, h_{-1} = h0 (zeros if None); reverse: h_t = a_t h_{t+1} + b_t.

    a: (batch or 1, L, *S); b: (batch, L, *S); h0: (batch, *S). Returns h (batch, L, *S) in
    the common dtype of the inputs (real or complex).
    axis_name: call inside jax.shard_map with the time axis of a, b sharded over that mesh axis
    (h0 replicated): a, b are this shard's contiguous slice, the result is its slice of h
    (liquidssm.jax.parallel; shard_sequence wraps the shard_map)."""
    if diag_scan_args(a, b, h0, reverse, kind=JAX).empty:
        return _spec_scan.diag_scan.reference(a, b, h0, reverse=reverse)
    if axis_name is not None:
        return _sharded_diag_scan(a, b, h0, reverse, axis_name)
    a, b, _, h0, dtype = _time_major(a, b, None, h0)
    if reverse:
        a, b = a[::-1], b[::-1]
    if h0 is None:
        h0 = jnp.zeros(b.shape[1:], dtype)
    method, chunk = _plan(b.shape[0])
    if method == "pallas":
        h = _pallas_linear(a, b, None, h0[None])[0]
    else:
        h = chunked_scan(a, b, h0, method, chunk)
    return jnp.moveaxis(h[::-1] if reverse else h, 0, 1)


def _sharded_diag_scan(a, b, h0, reverse, axis_name):
    """diag_scan on one shard of the time axis (liquidssm.jax.parallel, one level)."""
    dtype = jnp.result_type(*[x for x in (a, b, h0) if x is not None])
    state = (b.shape[0],) + tuple(b.shape[2:])
    H0 = jnp.zeros((1,) + state, dtype) if h0 is None else jnp.asarray(h0).astype(dtype)[None]
    G = jnp.broadcast_to(jnp.prod(jnp.asarray(a).astype(dtype), axis=1), state)[None]

    def scan(H):
        h = diag_scan(a, b, H[0], reverse=reverse)
        return h, h[:, 0 if reverse else -1][None]

    return parallel.sequence_parallel(scan, G, H0, axis_name, reverse)[0]


def _sharded_liquid_scan(a, b, c, h0, p, reverse, axis_name):
    """liquid_scan on one shard of the time axis (liquidssm.jax.parallel, p levels)."""
    dtype = jnp.result_type(*[x for x in (a, b, c, h0) if x is not None])
    state = (b.shape[0], p) + tuple(b.shape[2:])
    h0 = jnp.zeros(state, dtype) if h0 is None else jnp.asarray(h0).astype(dtype)
    levels_first = lambda x: jnp.moveaxis(x, 1, 0)  # noqa: E731  (batch, p, ...) -> (p, batch, ...)
    unit = jnp.zeros(state, dtype).at[:, 0].set(1)
    G = liquid_scan(a, jnp.zeros(b.shape, dtype), c, unit, degree=p, reverse=reverse)[1]

    def scan(H):
        y, last = liquid_scan(a, b, c, jnp.moveaxis(H, 0, 1), degree=p, reverse=reverse)
        return y, levels_first(last)

    y, last = parallel.sequence_parallel(scan, levels_first(G), levels_first(h0), axis_name,
                                         reverse)
    return y, jnp.moveaxis(last, 0, 1)


def liquid_scan(a, b, c, h0=None, *, degree: int, reverse: bool = False, axis_name=None):
    """Levels m = 0..p-1 (p = degree): h0_t = a_t h0_{t-1} + b_t,
    hm_t = a_t hm_{t-1} + c_t h(m-1)_{t-1} (t+1 for t-1 when reverse).

    a, c: (batch or 1, L, *S); b: (batch, L, *S); h0: (batch, p, *S) (zeros if None).
    Returns (y = sum_m hm (batch, L, *S), h_last (batch, p, *S) after the last step taken).
    Each level is one diag scan with the chosen strategy.
    axis_name: call inside jax.shard_map with the time axis of a, b, c sharded over that mesh
    axis (h0 replicated): this shard's slice of y, and the global h_last (the same on every
    shard; liquidssm.jax.parallel)."""
    if liquid_scan_args(a, b, c, h0, degree, reverse, kind=JAX).empty:
        return _spec_scan.liquid_scan.reference(a, b, c, h0, degree=degree, reverse=reverse)
    if axis_name is not None:
        return _sharded_liquid_scan(a, b, c, h0, degree, reverse, axis_name)
    p = degree
    a, b, c, h0, dtype = _time_major(a, b, c, h0)
    if reverse:
        a, b, c = a[::-1], b[::-1], c[::-1]
    starts = [jnp.zeros(b.shape[1:], dtype)] * p if h0 is None else [h0[:, m] for m in range(p)]
    method, chunk = _plan(b.shape[0])
    if method == "pallas":
        y, last = _pallas_linear(a, b, c, jnp.stack(starts))
        return jnp.moveaxis(y[::-1] if reverse else y, 0, 1), jnp.moveaxis(last, 0, 1)
    levels = [chunked_scan(a, b, starts[0], method, chunk)]
    for m in range(1, p):
        prev = jnp.concatenate([starts[m - 1][None], levels[-1][:-1]])
        levels.append(chunked_scan(a, c * prev, starts[m], method, chunk))
    y = sum(levels[1:], levels[0])
    last = jnp.stack([h[-1] for h in levels], axis=1)
    return jnp.moveaxis(y[::-1] if reverse else y, 0, 1), last
