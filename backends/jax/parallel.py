"""Sequence-parallel scans: the time axis split over the devices of one mesh axis.

The recurrences of liquidssm are affine in the state. For a liquid scan of degree p the state is
the p levels H = (H_0, ..., H_{p-1}) and one step is H_m <- a H_m + c H_{m-1} + [m = 0] b
(c = 0, p = 1 for diag_scan / selective_scan). Over a slice of time steps the map from the levels
entering the slice to the levels leaving it is
    H_out = G * H_in + h,      (G * H)_m = sum_{j <= m} G_{m-j} H_j,
where h = the slice's last levels when started from zero, and G_k = level k of the last state of
the slice's homogeneous recurrence (b = 0) started from the unit levels (1, 0, ..., 0): a level
j only drives the levels above it, in the same way for every j, so the matrix is lower-triangular
Toeplitz and its first column G (p, ...) describes it. G_0 is the slice's total decay
(prod_t a_t; exp(sum_t Delta_t A) for a selective scan). `*` is the product of polynomials in
the level index truncated to degree p, so the maps compose with the same product:
    (G2, h2) after (G1, h1) = (G2 * G1, G2 * h1 + h2).
A sharded scan (one call per shard, inside jax.shard_map with the time axis sharded over
`axis_name`, shards in time order by jax.lax.axis_index; the reverse scans take them in the
opposite order):
    1. each shard computes its slice's (G, h) (a scan from the zero state, and G);
    2. one all_gather of these pairs, (shards, p, ...) each: O(shards * b d n p) values per scan,
       independent of the sequence length;
    3. each shard folds the pairs of the shards before it onto the caller's initial state
       (exclusive prefix): its true initial levels; the fold over every shard gives the global
       last state, the same on every shard;
    4. each shard reruns its slice from its initial levels (exact: the same scan as on one device,
       started where the one-device scan would be at that step).
Backward is JAX autodiff through these steps (the all_gather transposes to a reduce-scatter).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

__all__ = ["compose", "sequence_parallel", "shard_sequence"]


def _mul(x, y):
    """Product of level polynomials (axis 0 = level m < p) truncated to p levels."""
    p = x.shape[0]
    return jnp.stack([sum(x[j] * y[m - j] for j in range(m + 1)) for m in range(p)])


def compose(first, second):
    """The affine level map `second` applied after `first`: each is (G, h), H -> G * H + h."""
    (g1, h1), (g2, h2) = first, second
    return _mul(g2, g1), _mul(g2, h1) + h2


def apply(f, H):
    """The level map f = (G, h) applied to levels H."""
    return _mul(f[0], H) + f[1]


def unit_levels(like):
    """The levels (1, 0, ..., 0) with like's shape (p, ...) and dtype."""
    return jnp.zeros_like(like).at[0].set(1)


def entry_and_final(G, h, H0, axis_name, reverse=False):
    """(this shard's initial levels, the global last levels) from the shard's slice map (G, h)
    (p, ...) and the caller's initial levels H0 (p, ...); see the module docstring."""
    Gs, hs = lax.all_gather(G, axis_name), lax.all_gather(h, axis_name)
    k = Gs.shape[0]
    order = range(k - 1, -1, -1) if reverse else range(k)
    starts, H = [None] * k, H0
    for s in order:  # time order of the shards
        starts[s] = H
        H = apply((Gs[s], hs[s]), H)
    return jnp.stack(starts)[lax.axis_index(axis_name)], H


def sequence_parallel(scan, G, H0, axis_name, reverse=False):
    """A sharded scan: scan(H) -> (out, last levels) runs this shard's slice from levels H
    (p, ...); G (p, ...) is the slice's decay polynomial; H0 the caller's initial levels.
    Returns (out from the true initial levels, the global last levels)."""
    _, h = scan(jnp.zeros_like(H0))
    start, final = entry_and_final(G, h, H0, axis_name, reverse)
    out, _ = scan(start)
    return out, final


# ---------------------------------------------------------------------------------------------
# Calling a primitive under shard_map.

#: time axis of each time-varying argument (B, C, BL only when given per step, ndim >= 3)
_TIME_AXES = {
    "diag_scan": {"a": 1, "b": 1},
    "liquid_scan": {"a": 1, "b": 1, "c": 1},
    "selective_scan": {"u": 2, "delta": 2, "z": 2, "B": -1, "C": -1},
    "liquid_selective_scan": {"u": 2, "delta": 2, "z": 2, "B": -1, "C": -1, "BL": -1},
}


def _spec(ndim, axis, axis_name):
    parts = [None] * ndim
    parts[axis] = axis_name
    return P(*parts)


def shard_sequence(primitive, mesh, axis_name):
    """`primitive` (liquidssm.jax's diag_scan, liquid_scan, selective_scan or
    liquid_selective_scan) as a function of the same arguments that runs it under jax.shard_map
    over `mesh` with the time axis of its time-varying arguments split into contiguous slices
    over the mesh axis `axis_name` (the other arguments replicated), i.e. primitive(...,
    axis_name=axis_name) on each shard. The output is sharded along time like the inputs; last
    states are replicated. Raises ValueError unless the length divides by the shard count.
    Gradients taken outside (jax.grad of a function of the result) are the full gradients."""
    name = primitive.__name__
    if name not in _TIME_AXES:
        raise ValueError(f"shard_sequence: unknown primitive {name!r}, expected one of "
                         f"{sorted(_TIME_AXES)}")
    axes, shards = _TIME_AXES[name], mesh.shape[axis_name]
    signature = inspect.signature(primitive)

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if bound.arguments.get("axis_name") is not None:
            raise ValueError("shard_sequence: pass no axis_name (it is the mesh axis given)")
        arrays = {k: v for k, v in bound.arguments.items() if hasattr(v, "ndim")}
        static = {k: v for k, v in bound.arguments.items() if k not in arrays}
        static.pop("axis_name", None)
        specs = {}
        for k, x in arrays.items():
            timed = k in axes and (x.ndim >= 3 or k not in ("B", "C", "BL"))
            specs[k] = _spec(x.ndim, axes[k], axis_name) if timed else P()
        ref = arrays["b" if "b" in axes else "u"]
        length = ref.shape[axes["b" if "b" in axes else "u"]]
        if length % shards:
            raise ValueError(f"{name}: sequence length {length} is not divisible by the "
                             f"{shards} shards of mesh axis {axis_name!r}")
        timed_out = _spec(ref.ndim, axes["b" if "b" in axes else "u"], axis_name)
        if name == "liquid_scan":
            out_specs = (timed_out, P())
        elif name == "diag_scan" or not static["return_last_state"]:
            out_specs = timed_out
        else:
            out_specs = (timed_out, P())

        def body(arrays):
            return primitive(**arrays, **static, axis_name=axis_name)

        return jax.shard_map(body, mesh=mesh, in_specs=(specs,), out_specs=out_specs,
                             check_vma=False)(arrays)

    return call
