"""A length-1M selective scan split over 1, 2 and 4 processes (liquidssm.torch's process_group=,
gloo on 127.0.0.1): forward + backward time and each process's peak memory.

    python benchmarks/sequence_parallel.py [--length 1048576 --b 1 --d 8 --n 4 --reps 3]
                                           [--shards 1,2,4] [--out benchmarks/results/parallel]

Every rank builds the same full inputs from one seed and keeps its contiguous slice of the time
axis (building them and the check are outside the timed region and the memory figures: the
resident-set high-water mark is reset before the timed calls (/proc/self/clear_refs) and read
after them: the peak resident set of a rank during the calls, and that minus the resident set
before them). One timed call:
forward (selective_scan with softplus(delta + bias), D and the silu(z) gate, return_last_state)
and backward of sum(out) + sum(last); the median over `reps` calls after one warm-up call is the
slowest rank's. Before timing, the sharded outputs gathered on rank 0 are checked against one
process's (float32, 1e-4 of their scale). Writes rows.csv / rows.json / table.md under --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

_CHILD = "--child"


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset the resident-set high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(length, b, d, n, reps, check):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    import liquidssm.torch as lt

    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    full = {"u": torch.randn(b, d, length, generator=g),
            "delta": torch.randn(b, d, length, generator=g) * 0.5 - 1.0,
            "B": torch.randn(b, n, length, generator=g),
            "C": torch.randn(b, n, length, generator=g),
            "z": torch.randn(b, d, length, generator=g)}
    A = -torch.exp(torch.randn(d, n, generator=g) * 0.5)
    D, bias = torch.randn(d, generator=g), torch.randn(d, generator=g) * 0.1
    part = {k: v.chunk(world, dim=-1)[rank].contiguous() for k, v in full.items()}
    group = dist.group.WORLD if world > 1 else None

    def call(x, pg):
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        out, last = lt.selective_scan(leaves["u"], leaves["delta"], A, leaves["B"], leaves["C"],
                                      D, leaves["z"], bias, delta_softplus=True,
                                      return_last_state=True, process_group=pg)
        (out.sum() + last.sum()).backward()
        return out.detach(), last.detach()

    err = None
    if check and world > 1:
        out, last = call(part, group)
        parts = [torch.empty_like(out) for _ in range(world)]
        dist.all_gather(parts, out)
        if rank == 0:
            ref, ref_last = call(full, None)
            got = torch.cat(parts, dim=-1)
            err = max(float((got - ref).abs().max() / ref.abs().max()),
                      float((last - ref_last).abs().max() / ref_last.abs().max()))
        del full
    else:
        del full
    call(part, group)  # warm-up (numba compile, allocator)
    gc.collect()
    _reset_peak()
    base = _status_mb("VmRSS")
    times = []
    for _ in range(reps):
        dist.barrier() if world > 1 else None
        t0 = time.perf_counter()
        call(part, group)
        times.append(time.perf_counter() - t0)
    peak = _status_mb("VmHWM")  # the peak during the timed calls
    mine = torch.tensor([statistics.median(times), peak - base, peak])
    if world > 1:
        allv = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(allv, mine)
    else:
        allv = [mine]
    if rank == 0:
        worst = torch.stack(allv).max(0).values
        print(json.dumps({"shards": world, "median_s": float(worst[0]),
                          "extra_rss_mb": float(worst[1]), "peak_rss_mb": float(worst[2]),
                          "rel_err": err, "impl": lt.implementation(part["u"])}))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, default=2**20)
    p.add_argument("--b", type=int, default=1)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--shards", default="1,2,4")
    p.add_argument("--out", default="benchmarks/results/parallel")
    args = p.parse_args()
    import torch

    rows = []
    for k in map(int, args.shards.split(",")):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
               "WORLD_SIZE": str(k), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        cmd = [sys.executable, __file__, _CHILD, str(args.length), str(args.b), str(args.d),
               str(args.n), str(args.reps), "1"]
        procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in range(k)]
        outs = [q.communicate() for q in procs]
        for q, (_, err) in zip(procs, outs):
            if q.returncode != 0:
                raise SystemExit(err[-2000:])
        row = json.loads(outs[0][0].strip().splitlines()[-1])
        if row["rel_err"] is not None and row["rel_err"] > 1e-4:
            raise SystemExit(f"{k} shards differ from one process: {row['rel_err']:.2e}")
        row.update(length=args.length, b=args.b, d=args.d, n=args.n, reps=args.reps,
                   torch=torch.__version__, cpus=os.cpu_count(), machine=platform.machine(),
                   load_start=os.getloadavg()[0])
        rows.append(row)
        print(row, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    cols = list(rows[0])
    (out / "rows.csv").write_text("\n".join([",".join(cols)] + [
        ",".join(str(r[c]) for c in cols) for r in rows]) + "\n")
    lines = [f"# Sequence-parallel selective scan, length {args.length}, (b, d, n) = "
             f"({args.b}, {args.d}, {args.n}), float32, forward + backward", "",
             f"torch {torch.__version__}, gloo on 127.0.0.1, {os.cpu_count()} cpus, one thread "
             f"per rank, implementation {rows[0]['impl']}; slowest rank's median of "
             f"{args.reps} calls", "",
             "| shards | time (s) | peak RSS per rank (MiB) | RSS added by the calls (MiB) | "
             "rel err vs one process |", "|---|---|---|---|---|"]
    for r in rows:
        err = "-" if r["rel_err"] is None else f"{r['rel_err']:.1e}"
        lines.append(f"| {r['shards']} | {r['median_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['extra_rss_mb']:.0f} | {err} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _CHILD:
        child(*map(int, sys.argv[2:8]))
    else:
        main()
