"""Sequence parallelism: the algebra that splits a scan's time axis into slices (the math of
liquidssm.jax's `axis_name=` and liquidssm.torch's `process_group=`; the backends add only the
collective that gathers one small pair per slice).

Every recurrence of liquidssm is affine in its state. For a liquid scan of degree p the state is
the p levels H = (H_0, ..., H_{p-1}) and one step is H_m <- a H_m + c H_{m-1} + [m = 0] b
(c = 0, p = 1 for diag_scan / selective_scan). Over a slice of time steps the map from the levels
entering the slice to the levels leaving it is

    H_out = G * H_in + h,      (G * H)_m = sum_{j <= m} G_{m-j} H_j,

where h = the slice's last levels when started from zero, and G_k = level k of the last state of
the slice's homogeneous recurrence (b = 0) started from the unit levels (1, 0, ..., 0): a level
j drives the levels above it in the same way for every j, so the map is lower-triangular Toeplitz
and its first column G (p, ...) describes it. G_0 is the slice's total decay (prod_t a_t;
exp(sum_t Delta_t A) for a selective scan). `*` is the product of polynomials in the level index
truncated to p terms, so maps compose with the same product:

    (G2, h2) after (G1, h1) = (G2 * G1, G2 * h1 + h2).

A sharded scan: (1) each slice computes its (G, h); (2) one all-gather of these pairs,
O(slices * b d n p) values, independent of the length; (3) each slice folds the pairs of the
slices before it onto the caller's initial levels (`entries_and_final`): its true initial levels,
and the fold over all slices gives the global last levels; (4) each slice reruns its scan from
its initial levels: exactly the one-device scan, started where it would be at that step.
Gradients: autodiff through these steps (the all-gather's transpose sums the cotangents).

Whole models (the forwards' `shards=`): a model's other operations are pointwise in time except
the causal depthwise convolution of the Mamba mixers (width K = d_conv: output t reads inputs
t - K + 1 .. t, so a slice needs the previous slice's last K - 1 pre-conv inputs, its halo), a
returned conv / S5 state (the last slice's), and the pool head's mean over time (a sum over
slices). A backend passes these as one object, the `Shards` protocol below (liquidssm.torch's
process_group=, liquidssm.jax's axis_name=); the spec's forwards call it and nothing else
crosses slices. With shards=None every forward is the one-device one.
"""

from __future__ import annotations

from typing import Protocol

from ._common import namespace

__all__ = ["Shards", "level_product", "compose", "apply", "unit_levels", "entries_and_final"]


class Shards(Protocol):
    """The sequence split into contiguous slices, one per rank / shard in time order; each
    slice's forward runs with the same object. Every method is a collective (every slice calls
    it, in the same order) and differentiable (gradients flow back to the slices they came
    from).

    scan_options: the keyword arguments that make the scan primitives (diag_scan, liquid_scan,
        selective_scan, liquid_selective_scan) run their sharded form, e.g. {"process_group": g}
        or {"axis_name": "seq"}.
    previous_tail(x, width, first=None): x (b, c, L_slice) with L_slice >= width -> the previous
        slice's x[..., L_slice - width:] (b, c, width); on the first slice `first` (b, c, width),
        zeros when None.
    last(x): the last slice's x (any shape, the same on every slice), on every slice.
    total(x): the sum of x over the slices (the same shape on every slice), on every slice.
    """

    scan_options: dict

    def previous_tail(self, x, width: int, first=None): ...

    def last(self, x): ...

    def total(self, x): ...


def level_product(x, y):
    """Product of level polynomials x, y (axis 0 = level m < p, same shapes) truncated to p
    levels: out_m = sum_{j <= m} x_j y_{m-j}."""
    xp = namespace(x, y)
    p = x.shape[0]
    return xp.stack([sum(x[j] * y[m - j] for j in range(m + 1)) for m in range(p)])


def compose(first, second):
    """The level map `second` applied after `first`; each is (G, h): H -> G * H + h."""
    (g1, h1), (g2, h2) = first, second
    return level_product(g2, g1), level_product(g2, h1) + h2


def apply(f, H):
    """The level map f = (G, h) applied to levels H (p, ...)."""
    return level_product(f[0], H) + f[1]


def unit_levels(like):
    """The levels (1, 0, ..., 0) with like's shape (p, ...), dtype and device."""
    xp = namespace(like)
    return xp.concat([xp.ones_like(like[:1]), xp.zeros_like(like[1:])], axis=0)


def entries_and_final(Gs, hs, H0, reverse: bool = False):
    """Gs, hs (slices, p, ...): every slice's map, slices indexed in sequence order; H0 (p, ...):
    the caller's initial levels. Returns (starts (slices, p, ...): the levels entering each
    slice, the levels leaving the last one). A reverse scan runs the slices last to first."""
    xp = namespace(Gs, hs, H0)
    k = Gs.shape[0]
    starts, H = [None] * k, H0
    for s in (range(k - 1, -1, -1) if reverse else range(k)):
        starts[s] = H
        H = apply((Gs[s], hs[s]), H)
    return xp.stack(starts), H
