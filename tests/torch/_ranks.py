"""Run a script as the ranks of a gloo process group on 127.0.0.1 (the distributed torch tests)."""

import json
import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script: str, world: int, timeout: float = 300, **env) -> dict:
    """`python -c script` as ranks 0..world-1 (RANK, WORLD, MASTER_ADDR / MASTER_PORT set, one
    thread each); every rank must exit 0; returns the JSON rank 0 prints last."""
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD": str(world), "OMP_NUM_THREADS": "1", **env}
    procs = [subprocess.Popen([sys.executable, "-c", script], env={**base, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    results = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    return json.loads(results[0][0].strip().splitlines()[-1])
