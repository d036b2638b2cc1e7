"""Sequence-parallel torch scans (process_group=, liquidssm.torch.parallel) on 4 gloo processes:
outputs, last states and gradients equal one process's, float64."""

import pytest
from _ranks import run_ranks

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover - depends on the build
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORLD = 4

_RANK = r'''
import json, os
import torch
import torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD"]))
import liquidssm.torch as lt

rank, world = dist.get_rank(), dist.get_world_size()
b, d, n, L, p = 2, 3, 4, 8 * world, 2
g = torch.Generator().manual_seed(0)
rn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
decay = lambda *s: 0.5 + 0.5 * torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731


def sel(fn, **kw):
    return lambda x, pg: fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                            x["delta_bias"], True, x["h0"], True, process_group=pg, **kw)


def sel_args(B, C, h0, **extra):
    args = {"u": (rn(b, d, L), 2), "delta": (rn(b, d, L), 2), "A": (-decay(d, n), None),
            "B": B, "C": C, "D": (rn(d), None), "z": (rn(b, d, L), 2),
            "delta_bias": (rn(d), None), "h0": (h0, None)}
    return {**args, **extra}


# name -> (fn(arrays, process_group) -> outputs, {arg: (array, time axis or None)},
#          time axis of each output (None: replicated))
CASES = {
    "diag_scan": (lambda x, pg: (lt.diag_scan(x["a"], x["b"], x["h0"], process_group=pg),),
                  {"a": (decay(b, L, d, n), 1), "b": (rn(b, L, d, n), 1),
                   "h0": (rn(b, d, n), None)}, (1,)),
    "diag_scan-reverse": (
        lambda x, pg: (lt.diag_scan(x["a"], x["b"], reverse=True, process_group=pg),),
        {"a": (decay(b, L, d), 1), "b": (rn(b, L, d), 1)}, (1,)),
    "liquid_scan": (
        lambda x, pg: lt.liquid_scan(x["a"], x["b"], x["c"], x["h0"], degree=p,
                                     process_group=pg),
        {"a": (decay(b, L, d), 1), "b": (rn(b, L, d), 1), "c": (rn(b, L, d), 1),
         "h0": (rn(b, p, d), None)}, (1, None)),
    "selective_scan-varBC": (sel(lt.selective_scan),
                             sel_args((rn(b, n, L), 2), (rn(b, 1, n, L), 3), rn(b, d, n)),
                             (2, None)),
    "selective_scan-constBC": (sel(lt.selective_scan),
                               sel_args((rn(d, n), None), (rn(d, n), None), rn(b, d, n)),
                               (2, None)),
    "liquid_selective_scan-p2": (
        sel(lt.liquid_selective_scan, liquid_degree=p, lcontract="tanh"),
        sel_args((rn(b, n, L), 2), (rn(b, n, L), 2), rn(b, p, d, n)), (2, None)),
    "liquid_selective_scan-p3-BL": (
        lambda x, pg: lt.liquid_selective_scan(
            x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
            None, True, liquid_degree=3, BL=x["BL"], lcontract="lecun", process_group=pg),
        sel_args((rn(b, n, L), 2), (rn(d, n), None), None, BL=(rn(b, n, L), 2)), (2, None)),
}


def part(x, axis):
    if axis is None:
        return x
    size = x.shape[axis] // world
    return x.narrow(axis, rank * size, size)


def run(fn, arrays, out_axes, pg):
    leaves = {k: (None if v is None else (part(v, ax) if pg else v).clone().requires_grad_())
              for k, (v, ax) in arrays.items()}
    outs = fn(leaves, pg)
    cots = torch.Generator().manual_seed(1)
    loss = 0
    for o, ax in zip(outs, out_axes):
        full = list(o.shape)
        if pg and ax is not None:
            full[ax] *= world
        c = torch.randn(full, generator=cots, dtype=torch.float64)
        if pg and ax is not None:
            c = part(c, ax)
        # a replicated output is the same on every rank: each rank counts 1 / world of it
        loss = loss + (o * c).sum() * (1 / world if pg and ax is None else 1)
    names = [k for k, v in leaves.items() if v is not None]
    grads = torch.autograd.grad(loss, [leaves[k] for k in names])
    return outs, dict(zip(names, grads))


def gather(x, axis):
    if axis is None:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=axis)


errors = {}
for name, (fn, arrays, out_axes) in CASES.items():
    ref_outs, ref_grads = run(fn, arrays, out_axes, None)
    outs, grads = run(fn, arrays, out_axes, dist.group.WORLD)
    err = 0.0
    for o, r, ax in zip(outs, ref_outs, out_axes):
        err = max(err, float((gather(o.detach(), ax) - r.detach()).abs().max()))
    for k, gk in grads.items():
        ax = arrays[k][1]
        if ax is None:  # replicated: each rank's partial sum
            gk = gk.clone()
            dist.all_reduce(gk)
        err = max(err, float((gather(gk, ax) - ref_grads[k]).abs().max()))
    errors[name] = err
if rank == 0:
    print(json.dumps(errors))
dist.destroy_process_group()
'''


@pytest.mark.parametrize("impl", ["eager", "numba"])
def test_sharded_scans_equal_one_process(impl):
    """4 ranks, each a contiguous quarter of the sequence: the gathered outputs and time-sliced
    gradients, the global last states and the summed gradients of the replicated arguments
    equal the one-process results to 1e-10 (float64)."""
    if impl == "numba":
        pytest.importorskip("numba")
    errors = run_ranks(_RANK, WORLD, LIQUIDSSM_TORCH_IMPL=impl, timeout=600)
    assert len(errors) == 7
    bad = {k: v for k, v in errors.items() if not v <= 1e-10}
    assert not bad, bad
