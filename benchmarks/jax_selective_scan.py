"""Selective scan forward + backward on JAX: each scan strategy against a plain
`lax.associative_scan` over all (b, l, d, n) elements (autodiff through it).

Prints one row per implementation: median / min time of jit(grad) in ms and the peak temporary
memory XLA plans for it (compiled memory_analysis: temp + output bytes).
Usage: python benchmarks/jax_selective_scan.py [--b 2 --d 128 --n 16 --l 2048 --reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax


def plain_associative(u, delta, A, B, C):
    """The baseline: materialise (b, l, d, n) Abar, Bbar u; one associative scan; autodiff."""
    dt = jnp.transpose(delta, (0, 2, 1))[..., None]  # (b, l, d, 1)
    ut = jnp.transpose(u, (0, 2, 1))[..., None]
    Abar = jnp.exp(dt * A)  # (b, l, d, n)
    Bu = dt * jnp.transpose(B, (0, 2, 1))[:, :, None, :] * ut

    def combine(x, y):
        return x[0] * y[0], y[0] * x[1] + y[1]

    h = lax.associative_scan(combine, (Abar, Bu), axis=1)[1]
    y = jnp.sum(h * jnp.transpose(C, (0, 2, 1))[:, :, None, :], axis=-1)
    return jnp.transpose(y, (0, 2, 1))


def liquidssm_scan(u, delta, A, B, C):
    from liquidssm.jax import selective_scan

    return selective_scan(u, delta, A, B, C)


def measure(fn, args, reps):
    loss = lambda *a: jnp.sum(fn(*a) * jnp.cos(a[0]))  # noqa: E731
    g = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))
    compiled = g.lower(*args).compile()
    mem = compiled.memory_analysis()
    peak = None if mem is None else mem.temp_size_in_bytes + mem.output_size_in_bytes
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), min(times), peak


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--b", type=int, default=2)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--l", type=int, default=2048)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--strategies", default="auto,sequential,chunked,associative")
    a = p.parse_args()
    import liquidssm.jax.scans as scans

    k = jax.random.split(jax.random.PRNGKey(0), 5)
    b, d, n, l = a.b, a.d, a.n, a.l
    args = (
        jax.random.normal(k[0], (b, d, l)),
        jax.nn.softplus(jax.random.normal(k[1], (b, d, l)) - 4.0),
        -jnp.exp(jax.random.normal(k[2], (d, n))),
        jax.random.normal(k[3], (b, n, l)),
        jax.random.normal(k[4], (b, n, l)),
    )
    print(f"device {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__},"
          f" b={b} d={d} n={n} l={l}, float32, forward+backward (grad w.r.t. u, delta, A, B, C)")
    print(f"(b*l*d*n elements = {b * l * d * n:,}; one float32 copy = {b*l*d*n*4/2**20:.1f} MiB)")
    print(f"{'implementation':44s} {'median ms':>10s} {'min ms':>9s} {'peak MiB':>9s}")
    ms, mn, peak = measure(plain_associative, args, a.reps)
    print(f"{'plain lax.associative_scan (autodiff)':44s} {ms:10.1f} {mn:9.1f} "
          f"{peak / 2**20 if peak is not None else float('nan'):9.1f}")
    for s in a.strategies.split(","):
        os.environ["LIQUIDSSM_JAX_SCAN"] = s
        label = f"liquidssm {s} -> {scans.scan_strategy(l)} (chunk {scans.CHUNK})"
        ms, mn, peak = measure(liquidssm_scan, args, a.reps)
        print(f"{label:44s} {ms:10.1f} {mn:9.1f} "
              f"{peak / 2**20 if peak is not None else float('nan'):9.1f}")
    os.environ.pop("LIQUIDSSM_JAX_SCAN", None)


if __name__ == "__main__":
    main()
