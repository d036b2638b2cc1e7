"""Benchmark of the Triton scans (liquidssm.torch.triton) on a GPU, with a correctness check.

    python benchmarks/triton_scan.py                 # GPU: check, then time (one JSON row each)
    python benchmarks/triton_scan.py --interpret     # CPU: correctness check only, under
                                                     # TRITON_INTERPRET=1 (tiny shapes, float32)
Rows: op, impl, mode, dtype, shape, p20/p50/p80 ms, device, versions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--interpret", action="store_true",
                   help="run the correctness check on CPU with TRITON_INTERPRET=1, no timing")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--reps", type=int, default=20)
    return p.parse_args()


def inputs(torch, b, d, l, n, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(device=device, dtype=dtype)

    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1).to(device)
    return dict(u=r(b, d, l), delta=r(b, d, l, scale=0.5), A=A, B=r(b, n, l), C=r(b, n, l),
                D=torch.ones(d, device=device), z=r(b, d, l),
                delta_bias=torch.full((d,), -2.0, device=device))


def check(torch, tr, device):
    """Triton vs the spec (float64 NumPy) on a small float32 problem, forward and backward."""
    import numpy as np
    from liquidssm.spec import selective as spec

    tr.configure(chunk=8)
    args = inputs(torch, 2, 4, 19, 5, torch.float32, device)
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    out = tr.selective_scan(**leaves, delta_softplus=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    npa = {k: v.detach().cpu().double().numpy() for k, v in args.items()}
    ref = spec.selective_scan(**npa, delta_softplus=True)
    grads = spec.selective_scan_vjp(**npa, delta_softplus=True, dout=dout.cpu().double().numpy())
    errs = {"out": float(np.abs(out.detach().cpu().numpy() - ref).max())}
    for k, v in leaves.items():
        errs["d" + k] = float(np.abs(v.grad.cpu().numpy() - grads[k]).max())
    worst = max(errs.values())
    print(json.dumps({"check": "selective_scan float32 vs spec", "max_abs_err": errs}))
    tr.configure(chunk=64)
    return worst < 1e-3  # float32 over 19 steps: measured ~1e-5


def timeit(torch, fn, reps):
    import statistics

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    q = statistics.quantiles(times, n=10)
    return q[1], statistics.median(times), q[7]


def main():
    opts = parse()
    if opts.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton
    import liquidssm.torch.triton as tr
    import torch
    import triton

    device = "cpu" if opts.interpret else "cuda"
    if not tr.available() or (not opts.interpret and not torch.cuda.is_available()):
        sys.exit("no CUDA device: run with --interpret for the CPU correctness check")
    ok = check(torch, tr, device)
    if not ok:
        sys.exit("correctness check failed")
    if opts.interpret:
        return
    dtype = getattr(torch, opts.dtype)
    b, d, l, n = opts.batch, opts.dim, opts.length, opts.state
    args = inputs(torch, b, d, l, n, dtype, device)
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    base = dict(dtype=opts.dtype, shape=[b, d, l, n], device=torch.cuda.get_device_name(),
                torch=torch.__version__, triton=triton.__version__)

    def fwd():
        with torch.no_grad():
            tr.selective_scan(**args, delta_softplus=True)

    def fwd_bwd():
        out = tr.selective_scan(**leaves, delta_softplus=True)
        out.backward(torch.ones_like(out))

    a = torch.rand(b, l, d * n // 16, device=device)
    x = torch.randn_like(a)
    for op, mode, fn in (("selective_scan", "fwd", fwd), ("selective_scan", "fwd+bwd", fwd_bwd),
                         ("diag_scan", "fwd", lambda: tr.diag_scan(a, x))):
        p20, p50, p80 = timeit(torch, fn, opts.reps)
        print(json.dumps(dict(op=op, impl="triton", mode=mode, p20_ms=p20, p50_ms=p50,
                              p80_ms=p80, **base)))


if __name__ == "__main__":
    main()
