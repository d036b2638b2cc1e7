"""Every liquidssm.torch.nn class trains under DDP and FSDP2 (`fully_shard`) on 2 gloo processes
exactly as one process on the same global batch (float64: losses and parameters after two SGD
steps); the Mamba family also through the Triton kernels (in the Triton interpreter, float32) and
under torch.compile."""

from pathlib import Path

import pytest
from _ranks import run_ranks

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover - depends on the build
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORLD = 2
HERE = Path(__file__).resolve().parent

_RANK = r'''
import json, os, sys
import numpy as np
import torch
import torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD"]))
sys.path.insert(0, os.environ["TESTS"])
from test_nn import CASES, _input, _module  # the one table of every module class
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

rank, world = dist.get_rank(), dist.get_world_size()
STEPS, LR = 2, 0.05
DTYPE = getattr(torch, os.environ.get("DTYPE", "float64"))
KEYS = os.environ["KEYS"].split(",") if os.environ.get("KEYS") else list(CASES)
COMPILE = os.environ.get("COMPILE")  # a torch.compile backend: the wrapped model compiled


def loss_of(model, x):
    out = model(x)
    return (out.float() if out.dtype != torch.float64 else out).pow(2).mean()


def full_params(model):
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in model.named_parameters()}


def train(key, mode):
    """Losses (global mean) of STEPS SGD steps and the parameters after them."""
    cls, config = CASES[key]
    model = _module(key).to(DTYPE)
    x = torch.as_tensor(_input(config, seed=5))
    if x.is_floating_point():
        x = x.to(DTYPE)
    if mode != "one":
        x = x.chunk(world)[rank]  # each rank its part of the global batch
    if mode == "ddp":
        model = DDP(model)
    elif mode == "fsdp":
        fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    run = torch.compile(model, backend=COMPILE, fullgraph=False) if COMPILE else model
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_of(run, x)
        loss.backward()
        opt.step()
        loss = loss.detach().clone()
        if mode != "one":  # the global batch's loss: the mean of the ranks' equal-size parts
            dist.all_reduce(loss)
            loss = loss / world
        losses.append(float(loss))
    inner = model.module if mode == "ddp" else model
    return losses, full_params(inner)


errors = {}
for key in KEYS:
    ref_losses, ref_params = train(key, "one")
    for mode in ("ddp", "fsdp"):
        losses, params = train(key, mode)
        err = max(abs(a - b) for a, b in zip(losses, ref_losses))
        err = max([err] + [float((params[k] - v).abs().max()) for k, v in ref_params.items()])
        moved = max(float((v - _module(key).to(DTYPE).state_dict()[k]).abs().max())
                    for k, v in ref_params.items())
        errors[f"{key}-{mode}"] = (err, moved)
if rank == 0:
    print(json.dumps(errors))
dist.destroy_process_group()
'''


@pytest.mark.parametrize("impl", ["eager", "numba"])
def test_ddp_and_fsdp2_train_as_one_process(impl):
    """For every module class of tests/torch/test_nn.py's table, two SGD steps under DDP and
    under FSDP2 on 2 ranks (each half the batch) give the one-process losses and parameters
    to 1e-12, and the steps did move the parameters."""
    if impl == "numba":
        pytest.importorskip("numba")
    errors = run_ranks(_RANK, WORLD, TESTS=str(HERE), LIQUIDSSM_TORCH_IMPL=impl, timeout=600)
    from test_nn import CASES

    assert len(errors) == 2 * len(CASES)
    bad = {k: e for k, (e, moved) in errors.items() if not e <= 1e-12}
    assert not bad, bad
    still = [k for k, (e, moved) in errors.items() if not moved > 1e-6]
    assert not still, f"the parameters did not move: {still}"


#: the classes that run the selective scans (the Triton and numba kernels' models)
MAMBA_FAMILY = ("mamba", "liquid_mamba", "mamba_lm")


@pytest.mark.parametrize("impl", ["eager", "numba"])
def test_ddp_and_fsdp2_under_torch_compile(impl):
    """torch.compile (the aot_eager backend: dynamo, AOT autograd and the custom ops' fakes
    without a C++ compiler) of a DDP- or FSDP2-wrapped Mamba / LiquidMamba: the one-process
    compiled result to 1e-12 (float64; measured <= 1.2e-16)."""
    if impl == "numba":
        pytest.importorskip("numba")
    keys = ("mamba", "liquid_mamba")
    errors = run_ranks(_RANK, WORLD, TESTS=str(HERE), LIQUIDSSM_TORCH_IMPL=impl,
                       COMPILE="aot_eager", KEYS=",".join(keys), timeout=600)
    assert len(errors) == 2 * len(keys)
    bad = {k: e for k, (e, moved) in errors.items() if not (e <= 1e-12 and moved > 1e-6)}
    assert not bad, errors
