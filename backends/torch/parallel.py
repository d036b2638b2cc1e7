"""Sequence-parallel torch scans: `process_group=` on diag_scan, liquid_scan, selective_scan and
liquid_selective_scan.

Each rank of the group passes its contiguous slice of the time axis (ranks in sequence order by
their rank in the group; every rank the same batch, channels and replicated arguments) and gets
its slice of the output; a returned last state is the global one, the same on every rank. The
algebra is the spec's (liquidssm.spec.parallel): per slice a scan from the zero state gives h, a
scan of the homogeneous recurrence from the unit levels (or the closed form exp(sum Delta A) /
prod a for one level) gives G, an all-gather of the (G, h) pairs (autograd-aware: its backward
is an all-reduce of the cotangents) gives every slice its initial levels, and the slice's scan
reruns from them: three scans of the slice (two for one level), one gather of O(ranks * b d n p)
values. Backward is autograd through these steps: the gradients
of time-sliced arguments are the rank's slice; those of replicated arguments (A, D, delta_bias,
constant B / C, h0) are the rank's partial sums, to be summed over the group (as DDP does for
parameters). Every rank must run the forward and the backward (they are collectives).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from liquidssm.spec import parallel as levels

__all__ = ["Shards", "sequence_parallel", "diag_scan", "liquid_scan", "selective_scan",
           "liquid_selective_scan"]


class _AllGather(torch.autograd.Function):
    """x -> (ranks, *x.shape), stacked in rank order; backward: the sum over ranks of the
    cotangents of this rank's entry (an all-reduce, which every backend has; gloo has no
    reduce-scatter)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


class _AllReduce(torch.autograd.Function):
    """x -> the sum of x over the ranks; backward: the sum over ranks of the cotangents (every
    rank's output depends on every rank's x)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class Shards:
    """liquidssm.spec.parallel.Shards over a torch.distributed process group: the models'
    `process_group=` (liquidssm.torch.nn), or `shards=Shards(group)` of the bound forwards. Rank
    r of the group holds slice r of the sequence. previous_tail and last are one all_gather
    (autograd-aware) of the (b, c, width) tails / of x; total an all_reduce."""

    def __init__(self, group):
        self.group = group
        self.scan_options = {"process_group": group}

    def previous_tail(self, x, width, first=None):
        tails = _AllGather.apply(x[..., x.shape[-1] - width:], self.group)
        first = torch.zeros_like(tails[0]) if first is None else first.to(tails.dtype)
        # every rank's result depends on the gather (its backward is a collective)
        return torch.cat([first[None], tails[:-1]])[dist.get_rank(self.group)]

    def last(self, x):
        return _AllGather.apply(x, self.group)[-1]

    def total(self, x):
        return _AllReduce.apply(x, self.group)


def sequence_parallel(scan, G, H0, group, reverse=False):
    """scan(H) -> (out, last levels) runs this rank's slice from levels H (p, ...); G (p, ...) is
    the slice's decay polynomial; H0 the caller's initial levels. Returns (out from the true
    initial levels, the global last levels)."""
    _, h = scan(torch.zeros_like(H0))
    Gs, hs = _AllGather.apply(G, group), _AllGather.apply(h, group)
    starts, final = levels.entries_and_final(Gs, hs, H0, reverse)
    out, _ = scan(starts[dist.get_rank(group)])
    return out, final


def diag_scan(scan, a, b, h0=None, *, reverse=False, group):
    """h (batch, L_slice, ...) of the one-device diag_scan at this rank's steps; `scan` is the
    one-device primitive."""
    dtype = torch.result_type(a, b) if h0 is None else torch.promote_types(
        torch.result_type(a, b), h0.dtype)
    state = (b.shape[0],) + tuple(b.shape[2:])
    H0 = (torch.zeros(state, dtype=dtype, device=b.device) if h0 is None else h0.to(dtype))[None]
    G = torch.broadcast_to(torch.prod(a.to(dtype), dim=1), state)[None]

    def run(H):
        h = scan(a, b, H[0], reverse=reverse)
        return h, h[:, 0 if reverse else -1][None]

    return sequence_parallel(run, G, H0, group, reverse)[0]


def liquid_scan(scan, a, b, c, h0=None, *, degree, reverse=False, group):
    """(y (batch, L_slice, ...), the global last levels (batch, p, ...)) of the one-device
    liquid_scan."""
    dtype = torch.result_type(a, b)
    dtype = torch.promote_types(dtype, c.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    p = degree
    state = (b.shape[0], p) + tuple(b.shape[2:])
    h0 = torch.zeros(state, dtype=dtype, device=b.device) if h0 is None else h0.to(dtype)
    unit = torch.movedim(levels.unit_levels(torch.movedim(torch.zeros_like(h0), 1, 0)), 0, 1)
    G = scan(a, torch.zeros_like(b, dtype=dtype), c, unit, degree=p, reverse=reverse)[1]

    def run(H):
        y, last = scan(a, b, c, torch.movedim(H, 0, 1), degree=p, reverse=reverse)
        return y, torch.movedim(last, 1, 0)

    y, last = sequence_parallel(run, torch.movedim(G, 1, 0), torch.movedim(h0, 1, 0), group,
                                reverse)
    return y, torch.movedim(last, 0, 1)


def _selective(scan, liquid, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
               initial_state, return_last_state, p, BL, lcontract, group):
    b, d, n = u.shape[0], u.shape[1], A.shape[1]
    sdt = (torch.complex128 if u.dtype == torch.float64 else torch.complex64) if A.is_complex() \
        else (torch.float64 if u.dtype == torch.float64 else torch.float32)
    levels_shape = (b, p, d, n)
    if initial_state is None:
        H0 = torch.zeros(levels_shape, dtype=sdt, device=u.device)
    else:
        H0 = (initial_state if liquid else initial_state[:, None]).to(sdt)
    kw = dict(liquid_degree=p, BL=BL if BL is not None else B, lcontract=lcontract) if liquid \
        else {}

    def call(B_, H, D_=D, z_=z):
        init = torch.movedim(H, 0, 1) if liquid else H[0]
        out, last = scan(u, delta, A, B_, C, D_, z_, delta_bias, delta_softplus, init, True,
                         **kw)
        return out, (torch.movedim(last, 1, 0) if liquid else last[None])

    if liquid:  # the homogeneous levels from the unit levels: zero B (BL passed explicitly)
        unit = levels.unit_levels(torch.movedim(torch.zeros(levels_shape, dtype=sdt,
                                                            device=u.device), 1, 0))
        G = call(torch.zeros_like(B), unit, None, None)[1]
    else:
        dt = delta if delta_bias is None else delta + delta_bias[:, None]
        dt = torch.nn.functional.softplus(dt) if delta_softplus else dt
        G = torch.exp(torch.sum(dt.to(sdt.to_real() if sdt.is_complex else sdt), dim=-1)
                      [..., None] * A.to(sdt))[None]
    out, last = sequence_parallel(lambda H: call(B, H), G, torch.movedim(H0, 1, 0), group)
    if not return_last_state:
        return out
    return out, (torch.movedim(last, 0, 1) if liquid else last[0])


def selective_scan(scan, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus=False, initial_state=None, return_last_state=False, *, group):
    """The one-device selective_scan's output at this rank's steps (u, delta, z and per-step
    B / C sliced along l), and the global last state."""
    return _selective(scan, False, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                      initial_state, return_last_state, 1, None, "none", group)


def liquid_selective_scan(scan, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_last_state=False, *,
                          liquid_degree=1, BL=None, lcontract="none", group):
    """As selective_scan, p = liquid_degree levels (initial / last state (b, p, d, n))."""
    return _selective(scan, True, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                      initial_state, return_last_state, liquid_degree, BL, lcontract, group)
