"""Selective scan on PyTorch (eager, CPU or CUDA): extra peak memory of forward + backward, and
forward + backward time side by side with mambapy's parallel scan (pure PyTorch, PyPI `mambapy`).

    python benchmarks/torch_selective_scan.py memory [--b 2 --d 64 --n 16 --l 8192]
    python benchmarks/torch_selective_scan.py speed  [--b 2 --d 128 --n 16 --l 2048 --reps 15]

memory: the bytes allocated by forward + backward beyond the inputs (liquidssm.torch._memory
PeakMemory, op by op), next to the size of one (b, l, d, n) float32 tensor.
speed: both on the same float32 inputs, softplus(delta + bias) and the silu(z) gate inside the
timed call for both, called alternately; the outputs are checked equal to 1e-4 of their scale
first. mambapy's selective scan is (b, l, d) time-major: the layout change is made outside the
timed region.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def inputs(b, d, n, l, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    x = {
        "u": torch.randn(b, d, l, generator=g),
        "delta": torch.randn(b, d, l, generator=g) * 0.5 - 1.0,
        "A": -torch.exp(torch.randn(d, n, generator=g) * 0.5),
        "B": torch.randn(b, n, l, generator=g),
        "C": torch.randn(b, n, l, generator=g),
        "D": torch.randn(d, generator=g),
        "z": torch.randn(b, d, l, generator=g),
        "delta_bias": torch.randn(d, generator=g) * 0.1,
    }
    return {k: v.requires_grad_(requires_grad) for k, v in x.items()}


def ours(x):
    from liquidssm.torch import selective_scan

    return selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                          x["delta_bias"], delta_softplus=True)


def mambapy_job(x):
    """mambapy.mamba.MambaBlock.selective_scan (parallel pscan) on time-major views."""
    from mambapy.mamba import MambaBlock, MambaConfig

    d, n = x["A"].shape
    block = MambaBlock(MambaConfig(d_model=d // 2, n_layers=1, d_state=n, pscan=True))
    t = {k: x[k].transpose(1, 2).contiguous().detach().requires_grad_() for k in
         ("u", "delta", "B", "C", "z")}
    leaves = [*t.values(), x["A"], x["D"], x["delta_bias"]]

    def run():
        delta = F.softplus(t["delta"] + x["delta_bias"])
        y = block.selective_scan(t["u"], delta, x["A"], t["B"], t["C"], x["D"])
        return y * F.silu(t["z"])

    return run, leaves, lambda y: y.transpose(1, 2)


def _time_pair(f, g, reps):
    """Times (ms) of f and g called alternately, so that drift of a shared machine hits both."""
    f(), g()  # warm-up
    tf, tg = [], []
    for _ in range(reps):
        for fn, ts in ((f, tf), (g, tg)):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return tf, tg


def memory(a):
    from liquidssm.torch._memory import PeakMemory

    x = inputs(a.b, a.d, a.n, a.l)
    with PeakMemory() as m:
        out = ours(x)
        out.backward(torch.ones_like(out))
    one = a.b * a.l * a.d * a.n * 4 / 2**20
    print(f"torch {torch.__version__}, eager selective_scan, b={a.b} d={a.d} n={a.n} l={a.l}, "
          f"float32, delta_softplus, D, z, forward + backward")
    print(f"extra peak memory: {m.peak / 2**20:.1f} MiB "
          f"(one (b, l, d, n) float32 tensor: {one:.1f} MiB)")


def speed(a):
    x = inputs(a.b, a.d, a.n, a.l)
    run, leaves, back = mambapy_job(x)
    with torch.no_grad():
        y_ours = ours(x)
        y_peer = back(run())
    err = (y_ours - y_peer).abs().max() / y_ours.abs().max()
    assert err < 1e-4, f"outputs differ: {err:.2e}"
    ours_leaves = list(x.values())

    def fwd_bwd_ours():
        torch.autograd.grad(ours(x).sum(), ours_leaves)

    def fwd_bwd_peer():
        torch.autograd.grad(run().sum(), leaves)

    print(f"torch {torch.__version__} on {torch.get_num_threads()} CPU threads, b={a.b} d={a.d} "
          f"n={a.n} l={a.l}, float32, forward + backward; outputs agree to {err:.1e}")
    t_ours, t_peer = _time_pair(fwd_bwd_ours, fwd_bwd_peer, a.reps)
    print(f"{'implementation':34s} {'median ms':>10s} {'min ms':>9s}  ({a.reps} alternating reps)")
    for label, ts in (("liquidssm.torch (eager, chunked)", t_ours), ("mambapy (pscan)", t_peer)):
        print(f"{label:34s} {statistics.median(ts):10.1f} {min(ts):9.1f}")
    ratios = [p / o for o, p in zip(t_ours, t_peer)]
    print(f"mambapy / liquidssm: {statistics.median(ratios):.2f}x median of per-rep ratios, "
          f"{min(t_peer) / min(t_ours):.2f}x of the minima")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("memory", "speed"))
    p.add_argument("--b", type=int, default=2)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--l", type=int, default=None)
    p.add_argument("--reps", type=int, default=15)
    a = p.parse_args()
    a.d = a.d or (64 if a.what == "memory" else 128)
    a.l = a.l or (8192 if a.what == "memory" else 2048)
    (memory if a.what == "memory" else speed)(a)


if __name__ == "__main__":
    main()
