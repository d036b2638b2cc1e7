"""S4's recurrent form (mode="recurrent": the dense DPLR recurrence) under jax.jit, and eager torch.

Prints one row per length: the time jax takes to trace + lower the jitted forward, the time XLA
takes to compile it, and the median / min time of the compiled forward (float32), then the same
forward in eager torch. Recorded before / after the dense_scan primitive in benchmarks/README.md.
Usage: python benchmarks/s4_recurrent.py [--h 8 --n 32 --b 1 --l 4096 [1024 ...] --reps 5
       --no-torch]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import numpy as np
from liquidssm.spec import s4


def _stats(fn, reps):
    fn()  # warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def jax_row(cfg, params, u, reps):
    import liquidssm.jax as ljax

    p = ljax.params_from_spec(params)
    uj = ljax.FRAMEWORK.from_numpy(u)
    fwd = jax.jit(lambda p, u: ljax.s4.forward(cfg, p, u))
    t0 = time.perf_counter()
    lowered = fwd.lower(p, uj)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    med, mn = _stats(lambda: jax.block_until_ready(compiled(p, uj)), reps)
    return 1e3 * (t1 - t0), 1e3 * (t2 - t1), med, mn


def torch_row(cfg, params, u, reps):
    import liquidssm.torch as lt
    import torch

    p = lt.params_from_spec(params)
    ut = torch.as_tensor(u)
    with torch.no_grad():
        return _stats(lambda: lt.s4.forward(cfg, p, ut), reps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--h", type=int, default=8)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--b", type=int, default=1)
    ap.add_argument("--l", type=int, nargs="+", default=[4096])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    import torch

    print(f"# {platform.machine()} {platform.processor() or ''}, {jax.device_count()} jax "
          f"device(s) {jax.devices()[0].platform}, jax {jax.__version__}, torch "
          f"{torch.__version__}, numpy {np.__version__}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"# S4 mode=recurrent, d_model {a.h}, d_state {a.n}, batch {a.b}, float32")
    cfg = s4.Config(d_model=a.h, d_state=a.n, mode="recurrent")
    params = s4.init(cfg, seed=0)
    print("| L | jax trace + lower s | XLA compile s | jax run median ms | min ms | "
          "torch eager median ms | min ms |")
    print("|---|---|---|---|---|---|---|")
    for L in a.l:
        u = np.random.default_rng(0).standard_normal((a.b, L, a.h)).astype(np.float32)
        lower, comp, med, mn = jax_row(cfg, params, u, a.reps)
        tmed, tmn = (float("nan"),) * 2 if a.no_torch else torch_row(cfg, params, u, a.reps)
        print(f"| {L} | {lower / 1e3:.2f} | {comp / 1e3:.2f} | {med:.1f} | {mn:.1f} | "
              f"{tmed:.1f} | {tmn:.1f} |", flush=True)


if __name__ == "__main__":
    main()
