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


_MODELS = r'''
import json, os
import torch
import torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD"]))
from liquidssm.torch import nn as lnn

rank, world = dist.get_rank(), dist.get_world_size()
b, m = 2, 4
f64 = torch.float64
g = torch.Generator().manual_seed(0)
rn = lambda *s: torch.randn(*s, generator=g, dtype=f64)  # noqa: E731


def perturbed(model):
    """Every parameter moved off its init (D = 1, zero biases would hide terms)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def mamba_state(d, K, n, p=None):
    ssm = rn(b, d, n) if p is None else rn(b, p, d, n)
    return {"conv_state": (rn(b, d, K), None), "ssm_state": (ssm, None)}


def lm_tokens(L):
    return {"tokens": (torch.randint(0, 11, (b, L), generator=g), 1)}


# name -> (model, {input: (tensor, time axis or None)}, {forward keywords}, output time axes
# (None: replicated; the state dict's entries follow y))
def cases():
    out = {}
    for Ls in (5, 3):  # slice length > d_conv - 1 = 3, and exactly the halo
        L = Ls * world
        out[f"Mamba L_slice={Ls}"] = (
            perturbed(lnn.Mamba(d_model=m, d_state=3, d_conv=4, dtype=f64)),
            {"u": (rn(b, L, m), 1)}, {}, (1,))
        out[f"LiquidMamba gated p=2 untied L_slice={Ls}"] = (
            perturbed(lnn.LiquidMamba(d_model=m, d_state=3, d_conv=4, liquid_degree=2,
                                      conv="gated", tied=False, lcontract="tanh", dtype=f64)),
            {"u": (rn(b, L, m), 1)}, {}, (1,))
    L = 5 * world
    out["Mamba state in and out"] = (
        perturbed(lnn.Mamba(d_model=m, d_state=3, d_conv=4, dtype=f64)),
        {"u": (rn(b, L, m), 1), "state": mamba_state(2 * m, 4, 3)}, {"return_state": True},
        (1, None, None))
    out["LiquidMamba state in and out"] = (
        perturbed(lnn.LiquidMamba(d_model=m, d_state=3, d_conv=3, liquid_degree=2,
                                  conv="gated", dtype=f64)),
        {"u": (rn(b, L, m), 1), "state": mamba_state(2 * m, 3, 3, 2)}, {"return_state": True},
        (1, None, None))
    s5 = dict(d_model=m, d_state=8, blocks=2, dtype=f64)
    out["S5 state in and out, timesteps"] = (
        perturbed(lnn.S5(**s5)),
        {"u": (rn(b, L, m), 1), "timesteps": (0.5 + torch.rand(b, L, generator=g,
                                                                 dtype=f64), 1),
         "state": {"x": (torch.complex(rn(b, 4), rn(b, 4)), None)}},
        {"return_state": True}, (1, None))
    out["S5 bidirectional"] = (perturbed(lnn.S5(**s5, bidirectional=True)),
                               {"u": (rn(b, L, m), 1)}, {}, (1,))
    out["LiquidS5 state in and out"] = (
        perturbed(lnn.LiquidS5(**s5, liquid_degree=2, lcontract="tanh")),
        {"u": (rn(b, L, m), 1), "state": {"x": (torch.complex(rn(b, 2, 4), rn(b, 2, 4)),
                                                None)}},
        {"return_state": True}, (1, None))
    out["LiquidS5 bidirectional untied"] = (
        perturbed(lnn.LiquidS5(**s5, liquid_degree=2, tied=False, bidirectional=True)),
        {"u": (rn(b, L, m), 1)}, {}, (1,))
    out["S5Layer liquid_s5 full_glu"] = (
        perturbed(lnn.S5Layer(lnn.S5Layer.Config(
            ssm=lnn.LiquidS5.Config(d_model=m, d_state=8, blocks=2), activation="full_glu"),
            dtype=f64)), {"u": (rn(b, L, m), 1)}, {}, (1,))
    out["MambaBlock"] = (perturbed(lnn.MambaBlock(lnn.MambaBlock.Config(
        mixer=lnn.Mamba.Config(d_model=m, d_state=3)), dtype=f64)),
        {"u": (rn(b, L, m), 1)}, {}, (1,))
    out["MambaLM 2 layers untied, state out"] = (
        perturbed(lnn.MambaLM(d_model=m, n_layer=2, vocab_size=11, tie_embeddings=False,
                              ssm_cfg={"d_state": 3}, dtype=f64)),
        lm_tokens(L), {"return_state": True}, (1,) + (None,) * 4)
    out["SequenceModel liquid_mamba 2 layers lm"] = (
        perturbed(lnn.SequenceModel(d_model=m, n_layers=2, layer="liquid_mamba",
                                    ssm={"d_state": 3, "conv": "gated"}, vocab_size=11,
                                    head="lm", dtype=f64)), lm_tokens(L), {}, (1,))
    out["SequenceModel s5 2 layers pool"] = (
        perturbed(lnn.SequenceModel(d_model=m, n_layers=2, layer="s5",
                                    ssm={"d_state": 8, "blocks": 2}, d_input=3, d_output=2,
                                    head="pool", dtype=f64)),
        {"u": (rn(b, L, 3), 1)}, {}, (None,))
    out["SequenceModel liquid_s4 scan"] = (
        perturbed(lnn.SequenceModel(d_model=m, n_layers=1, layer="liquid_s4",
                                    ssm={"d_state": 8}, d_input=3, d_output=2,
                                    head="sequence", dtype=f64)),
        {"u": (rn(b, L, 3), 1)}, {}, (1,))
    out["S4D recurrent state out"] = (
        perturbed(lnn.S4D(d_model=m, d_state=8, mode="recurrent", dtype=f64)),
        {"u": (rn(b, L, m), 1)}, {"return_state": True}, (1, None))
    return out


def part(x, axis):
    if axis is None:
        return x
    size = x.shape[axis] // world
    return x.narrow(axis, rank * size, size)


def leaves_of(inputs, pg):
    """{name: tensor or {key: tensor}}: this rank's part, floating ones requiring grad."""
    def leaf(v, ax):
        v = (part(v, ax) if pg else v).clone()
        return v.requires_grad_() if v.is_floating_point() or v.is_complex() else v
    return {k: {kk: leaf(*vv) for kk, vv in v.items()} if isinstance(v, dict) else leaf(*v)
            for k, v in inputs.items()}


def flat(x):
    if isinstance(x, dict):
        return [t for k in sorted(x) for t in flat(x[k])]
    if isinstance(x, tuple):
        return [t for v in x for t in flat(v)]
    return [x]


def run(model, inputs, kw, out_axes, pg):
    leaves = leaves_of(inputs, pg)
    args = dict(leaves)
    u = args.pop("u", None)
    u = args.pop("tokens") if u is None else u
    outs = flat(model(u, **args, **kw, **({"process_group": pg} if pg else {})))
    assert len(outs) == len(out_axes), (len(outs), out_axes)
    cots = torch.Generator().manual_seed(1)
    loss = 0
    for o, ax in zip(outs, out_axes):
        full = list(o.shape)
        if pg and ax is not None:
            full[ax] *= world
        c = torch.randn(full, generator=cots, dtype=f64)
        if o.is_complex():
            c = torch.complex(c, torch.randn(full, generator=cots, dtype=f64))
        if pg and ax is not None:
            c = part(c, ax)
        # a replicated output is the same on every rank: each rank counts 1 / world of it
        w = 1 / world if pg and ax is None else 1
        loss = loss + torch.real(o * c.conj()).sum() * w
    names = [k for k, _ in model.named_parameters()]
    xs = {k: t for k, t in zip(names, model.parameters())}
    for k, v in leaves.items():
        for kk, t in (v.items() if isinstance(v, dict) else [("", v)]):
            if t.requires_grad:
                xs[f"{k}{'.' + kk if kk else ''}"] = t
    grads = torch.autograd.grad(loss, list(xs.values()))
    axes = {}
    for k, v in inputs.items():
        for kk, (_, ax) in (v.items() if isinstance(v, dict) else [("", v)]):
            axes[f"{k}{'.' + kk if kk else ''}"] = ax
    return outs, {k: (gk, axes.get(k)) for k, gk in zip(xs, grads)}


def gather(x, axis):
    if axis is None:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=axis)


errors = {}
for name, (model, inputs, kw, out_axes) in cases().items():
    ref_outs, ref_grads = run(model, inputs, kw, out_axes, None)
    outs, grads = run(model, inputs, kw, out_axes, dist.group.WORLD)
    err = 0.0
    for o, r, ax in zip(outs, ref_outs, out_axes):
        err = max(err, float((gather(o.detach(), ax) - r.detach()).abs().max()))
    assert set(grads) == set(ref_grads) and len(grads) > 1, name
    for k, (gk, ax) in grads.items():
        if ax is None:  # parameters, replicated inputs: each rank's partial sum
            gk = gk.clone()
            dist.all_reduce(gk)
        err = max(err, float((gather(gk, ax) - ref_grads[k][0]).abs().max()))
    errors[name] = err

# a slice shorter than the halo of the causal convolution; a variant with no sharded form
msgs = {}
for name, model, u in (("halo", lnn.Mamba(d_model=m, d_conv=4, dtype=f64), rn(b, 2, m)),
                       ("s4d conv", lnn.S4D(d_model=m, dtype=f64), rn(b, 5, m)),
                       ("s4", lnn.S4(d_model=m, dtype=f64), rn(b, 5, m))):
    try:
        model(u, process_group=dist.group.WORLD)
        msgs[name] = "no error"
    except ValueError as e:
        msgs[name] = str(e)
if rank == 0:
    print(json.dumps({"errors": errors, "messages": msgs}))
dist.destroy_process_group()
'''


def test_sharded_models_equal_one_process():
    """Whole models with process_group= on 4 ranks (Mamba, LiquidMamba, S5 / LiquidS5 also
    bidirectional, S5Layer, MambaBlock, MambaLM and SequenceModels of 2 layers, slices longer
    than the conv halo and exactly it, states in and out): the gathered outputs, the global
    states, the input gradients and the parameter gradients summed over the ranks equal one
    process's to 1e-10 (float64); a slice shorter than the halo and the FFT-convolution S4D /
    S4 are clear ValueErrors."""
    out = run_ranks(_MODELS, WORLD, timeout=600)
    errors, msgs = out["errors"], out["messages"]
    print(errors)
    assert len(errors) == 17
    bad = {k: v for k, v in errors.items() if not v <= 1e-10}
    assert not bad, bad
    assert msgs["halo"].startswith("u: expected each slice") and "length >= 3" in msgs["halo"]
    assert msgs["s4d conv"].startswith("shards: S4D mode='conv'"), msgs
    assert msgs["s4"].startswith("shards: S4"), msgs
