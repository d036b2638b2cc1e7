"""Sequence-parallel scans: the time axis split over the devices of one mesh axis.

The algebra (each slice's affine level map (G, h), their composition, the fold that gives each
slice its initial levels) is the spec's: liquidssm.spec.parallel, whose docstring gives the math.
This module adds the JAX collective (one all_gather of the (G, h) pairs over `axis_name`; shards
in time order by jax.lax.axis_index, the reverse scans taking them in the opposite order) and
shard_sequence, which runs a primitive under jax.shard_map. Backward is JAX autodiff through
these steps (the all_gather transposes to a reduce-scatter).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P
from liquidssm.spec import parallel as levels

__all__ = ["Shards", "entry_and_final", "sequence_parallel", "shard_sequence", "param_specs",
           "shard_params"]


class Shards:
    """liquidssm.spec.parallel.Shards over a mesh axis, inside jax.shard_map with the sequence
    split over `axis_name` (shard lax.axis_index holds slice that of the sequence): the nnx
    classes' `axis_name=`, or `shards=Shards(axis_name)` of the bound forwards.
    previous_tail is one lax.ppermute of the (b, c, width) tails to the next shard; last an
    all_gather; total a psum."""

    def __init__(self, axis_name):
        self.axis_name = axis_name
        self.scan_options = {"axis_name": axis_name}

    def previous_tail(self, x, width, first=None):
        n = lax.psum(1, self.axis_name)  # the shard count (a Python int)
        tail = lax.ppermute(x[..., x.shape[-1] - width:], self.axis_name,
                            [(i, i + 1) for i in range(n - 1)])  # zeros on shard 0
        if first is None:
            return tail
        return jnp.where(lax.axis_index(self.axis_name) == 0, first.astype(tail.dtype), tail)

    def last(self, x):
        return lax.all_gather(x, self.axis_name)[-1]

    def total(self, x):
        return lax.psum(x, self.axis_name)


def entry_and_final(G, h, H0, axis_name, reverse=False):
    """(this shard's initial levels, the global last levels) from the shard's slice map (G, h)
    (p, ...) and the caller's initial levels H0 (p, ...) (liquidssm.spec.parallel)."""
    Gs, hs = lax.all_gather(G, axis_name), lax.all_gather(h, axis_name)
    starts, final = levels.entries_and_final(Gs, hs, H0, reverse)
    return starts[lax.axis_index(axis_name)], final


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


# ---------------------------------------------------------------------------------------------
# FSDP-style parameter sharding.


def _param_spec(shape, axis_name, size):
    """Split the largest axis that `size` divides (the first of equal ones); replicate when no
    axis does (scalars, vectors shorter than the mesh axis)."""
    axes = [i for i, n in enumerate(shape) if n % size == 0 and n >= size]
    if not axes:
        return P()
    best = max(axes, key=lambda i: (shape[i], -i))
    return _spec(len(shape), best, axis_name)


def param_specs(params, axis_name, size):
    """A PartitionSpec per array of the pytree `params` (a params dict, an nnx.State) for
    FSDP-style training over the `size` devices of mesh axis `axis_name`: each parameter split
    along its largest axis divisible by `size`, the others replicated. Any model class's
    parameters take these specs (jit then gathers what each op needs: the math is unchanged)."""
    return jax.tree.map(lambda x: _param_spec(tuple(x.shape), axis_name, size), params)


def shard_params(params, mesh, axis_name):
    """params placed on `mesh` with param_specs (jax.device_put with NamedShardings)."""
    from jax.sharding import NamedSharding

    specs = param_specs(params, axis_name, mesh.shape[axis_name])
    return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params, specs)
