"""torch.compile on CPU: first-call (compile) time and steady-state time of compiled vs eager
liquidssm.torch.nn modules, per implementation (LIQUIDSSM_TORCH_IMPL), forward under no_grad.

    python benchmarks/torch_compile.py [--modules Mamba,LiquidMamba] [--impls eager,numba]
                                       [--b 2 --l 128 --d 16 --reps 20 --threads 1]

Each (module, implementation) runs in a fresh process (so the first compiled call includes the
whole compile, with an empty in-memory cache; inductor's on-disk cache is disabled with
TORCHINDUCTOR_FORCE_DISABLE_CACHES=1). The compiled output is checked equal to the eager one
(float32, 1e-5 of its scale) before timing; then eager and compiled calls alternate, `reps` each,
and the medians are printed with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_CHILD = "--child"


def child(module: str, b: int, l: int, d: int, reps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    import liquidssm.torch.nn as nn

    torch.manual_seed(0)
    m = getattr(nn, module)(d_model=d)
    u = torch.randn(b, l, d)
    compiled = torch.compile(m)
    with torch.no_grad():
        ref = m(u)
        t0 = time.perf_counter()
        out = compiled(u)
        first_s = time.perf_counter() - t0
        compiled(u)  # a recompile (if any) happens here, outside the timed calls
        err = float((out - ref).abs().max() / ref.abs().max())
        if err > 1e-5:
            raise SystemExit(f"{module}: compiled differs from eager by {err:.2e} (relative)")
        eager_ms, compiled_ms = [], []
        for _ in range(reps):
            for fn, times in ((m, eager_ms), (compiled, compiled_ms)):
                t0 = time.perf_counter()
                fn(u)
                times.append((time.perf_counter() - t0) * 1e3)
    return {"module": module, "impl": os.environ.get("LIQUIDSSM_TORCH_IMPL", "auto"),
            "first_call_s": first_s, "eager_ms": statistics.median(eager_ms),
            "compiled_ms": statistics.median(compiled_ms), "rel_err": err}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modules", default="Mamba,LiquidMamba")
    p.add_argument("--impls", default="eager,numba")
    p.add_argument("--b", type=int, default=2)
    p.add_argument("--l", type=int, default=128)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, threads {args.threads}, "
          f"input ({args.b}, {args.l}, {args.d}) float32, load {os.getloadavg()[0]:.2f}")
    print("| module | impl | first compiled call (s) | eager (ms) | compiled (ms) | rel err |")
    print("|---|---|---|---|---|---|")
    for module in args.modules.split(","):
        for impl in args.impls.split(","):
            env = {**os.environ, "LIQUIDSSM_TORCH_IMPL": impl,
                   "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
            cmd = [sys.executable, __file__, _CHILD, module, str(args.b), str(args.l),
                   str(args.d), str(args.reps), str(args.threads)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"| {module} | {impl} | error: {res.stderr.strip().splitlines()[-1]} |")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"| {module} | {impl} | {r['first_call_s']:.1f} | {r['eager_ms']:.2f} | "
                  f"{r['compiled_ms']:.2f} | {r['rel_err']:.1e} |", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _CHILD:
        module, *nums = sys.argv[2:]
        print(json.dumps(child(module, *map(int, nums))))
    else:
        main()
