"""CPU selective scan, side by side in one process: liquidssm.cpu (numba), liquidssm.torch eager,
mambapy's pscan, liquidssm.jax `auto`, a plain jax.jit(lax.scan) over l, and the roofline
reference of issue 17: one fused numba loop (prange over b x d, the state in a local array,
forward only, no checkpoints, no checks, B / C pre-transposed to (b, l, n) outside the timing).

The op: out = (C_t . h_t + D u) silu(z), h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t,
Delta = softplus(delta + bias), B / C input-dependent (b, n, l); float32. Outputs (and, for
forward + backward, the gradients of u) are checked equal first; then forward, and forward +
backward (the gradients of every input), are timed with the implementations alternating within
each rep; the table gives medians. The numba kernels' first call (compile, or load from numba's
on-disk cache) is reported apart. Prints the load average at start and end: on a shared machine
the figures move with it.
With --liquid P (P >= 2) the op is the liquid selective scan of degree P (BL tied to B, no
lcontract): hm_t = exp(Delta_t A) hm_{t-1} + Delta_t B_t u_t h(m-1)_{t-1}, y_t = C_t . sum_m hm_t;
its rows are numba, torch eager, liquidssm.jax auto and a plain jax.jit(lax.scan) of the levels
(mambapy has no liquid scan).
Usage: python benchmarks/cpu_selective_scan.py [--b 2 --d 128 --n 16 --l 2048 --reps 15]
       [--threads T]  (torch and numba threads; XLA's are not limited) [--liquid P]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def inputs(b, d, n, l, seed=0):
    g = np.random.default_rng(seed)
    f = lambda *s: g.standard_normal(s).astype(np.float32)  # noqa: E731
    return dict(u=f(b, d, l), delta=0.5 * f(b, d, l), A=-np.exp(0.5 * f(d, n)), B=f(b, n, l),
                C=f(b, n, l), D=f(d), z=f(b, d, l), delta_bias=0.5 * f(d))


#: the liquid degree (--liquid; 1: the selective scan)
DEGREE = 1


# --- torch implementations: fn(dict of tensors) -> out (b, d, l)

def numba_scan(x):
    from liquidssm.cpu import _torch as N

    if DEGREE > 1:
        return N.liquid_selective_scan(**x, delta_softplus=True, liquid_degree=DEGREE)
    return N.selective_scan(**x, delta_softplus=True)


def eager_scan(x):
    from liquidssm.torch import selective as E

    if DEGREE > 1:
        return E.liquid_selective_scan(**x, delta_softplus=True, liquid_degree=DEGREE)
    return E.selective_scan(**x, delta_softplus=True)


def mambapy_scan(x):
    """mambapy's selective_scan (MambaBlock, pscan=True) on (b, l, d) inputs, as it computes it."""
    from mambapy.pscan import pscan

    u, z = x["u"].transpose(1, 2), x["z"].transpose(1, 2)  # (b, l, d)
    dt = F.softplus(x["delta"].transpose(1, 2) + x["delta_bias"])
    dA = torch.exp(dt.unsqueeze(-1) * x["A"])  # (b, l, d, n)
    BX = dt.unsqueeze(-1) * x["B"].transpose(1, 2).unsqueeze(2) * u.unsqueeze(-1)
    hs = pscan(dA, BX)
    y = (hs @ x["C"].transpose(1, 2).unsqueeze(-1)).squeeze(3) + x["D"] * u
    return (y * F.silu(z)).transpose(1, 2)


# --- jax implementations: fn(u, delta, A, B, C, D, z, bias) -> out

def jax_auto(u, delta, A, B, C, D, z, bias):
    from liquidssm import jax as J

    if DEGREE > 1:
        return J.liquid_selective_scan(u, delta, A, B, C, D, z, bias, True,
                                       liquid_degree=DEGREE)
    return J.selective_scan(u, delta, A, B, C, D, z, bias, True)


def jax_plain(u, delta, A, B, C, D, z, bias):
    """jax.lax.scan over l of the (b, d, n) state, autodiff through it (no custom vjp)."""
    import jax
    import jax.numpy as jnp

    dt = jax.nn.softplus(delta + bias[:, None])

    def step(h, xs):  # h: (P, b, d, n) levels
        dtt, ut, Bt, Ct = xs  # (b, d), (b, d), (b, n), (b, n)
        a = jnp.exp(dtt[..., None] * A)
        x = (dtt * ut)[..., None] * Bt[:, None, :]  # Delta u B (also c_t, BL = B tied)
        h = jnp.concatenate([(a * h[0] + x)[None], a * h[1:] + x * h[:-1]])
        return h, jnp.einsum("bdn,bn->bd", h.sum(0), Ct)

    xs = (jnp.moveaxis(dt, 2, 0), jnp.moveaxis(u, 2, 0), jnp.moveaxis(B, 2, 0),
          jnp.moveaxis(C, 2, 0))
    h0 = jnp.zeros((DEGREE,) + u.shape[:2] + A.shape[1:], u.dtype)
    _, y = jax.lax.scan(step, h0, xs)
    y = jnp.moveaxis(y, 0, 2) + D[:, None] * u
    return y * jax.nn.silu(z)


def fused_reference(x_np):
    """The forward as one plain numba loop (liquidssm.bench.peers.fused_loop, also a row of
    `liquidssm bench`): (forward runner, None: no backward)."""
    from liquidssm.bench.peers import fused_loop

    return fused_loop(x_np, DEGREE), None


def torch_runners(fn, x_np, g_np):
    x = {k: torch.from_numpy(v.copy()) for k, v in x_np.items()}
    g = torch.from_numpy(g_np)

    def fwd():
        with torch.no_grad():
            return fn(x)

    def fwd_bwd():
        leaves = {k: v.detach().requires_grad_() for k, v in x.items()}
        out = fn(leaves)
        out.backward(g)
        return leaves["u"].grad

    return (lambda: fwd().numpy()), (lambda: fwd_bwd().numpy())


def jax_runners(fn, x_np, g_np):
    import jax
    import jax.numpy as jnp

    args = [jnp.asarray(x_np[k]) for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    gj = jnp.asarray(g_np)
    f = jax.jit(fn)
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * gj), argnums=tuple(range(8))))
    return (lambda: np.asarray(jax.block_until_ready(f(*args)))), (
        lambda: np.asarray(jax.block_until_ready(grad(*args))[0]))


def _numba_threads():
    import numba

    return numba.get_num_threads()


def env_line():
    def v(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return "-"

    return (f"{platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
            f"torch {v('torch')} (threads {torch.get_num_threads()}), numba {v('numba')} "
            f"(threads {_numba_threads()}), "
            f"jax {v('jax')}, mambapy {v('mambapy')}, numpy {v('numpy')}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k, dflt in (("b", 2), ("d", 128), ("n", 16), ("l", 2048), ("reps", 15), ("threads", 0),
                    ("liquid", 1)):
        p.add_argument(f"--{k}", type=int, default=dflt)
    a = p.parse_args()
    global DEGREE
    DEGREE = a.liquid
    if a.threads:
        import numba

        torch.set_num_threads(a.threads)
        numba.set_num_threads(a.threads)
    load0 = os.getloadavg()
    x = inputs(a.b, a.d, a.n, a.l)
    g = np.random.default_rng(1).standard_normal((a.b, a.d, a.l)).astype(np.float32)

    t0 = time.perf_counter()
    first_fwd, first_bwd = torch_runners(numba_scan, x, g)
    first_fwd()
    t1 = time.perf_counter()
    first_bwd()
    t2 = time.perf_counter()
    print(f"numba first call (compile or load from cache): forward {1e3 * (t1 - t0):.0f} ms, "
          f"backward {1e3 * (t2 - t1):.0f} ms")

    impls = {"liquidssm.cpu (numba)": torch_runners(numba_scan, x, g),
             "liquidssm.torch eager": torch_runners(eager_scan, x, g)}
    try:
        import mambapy.pscan  # noqa: F401

        if DEGREE == 1:
            impls["mambapy pscan"] = torch_runners(mambapy_scan, x, g)
    except ImportError:
        print("mambapy not installed: row left out")
    try:
        impls["liquidssm.jax auto"] = jax_runners(jax_auto, x, g)
        impls["plain jax.jit(lax.scan)"] = jax_runners(jax_plain, x, g)
    except ImportError:
        print("jax not installed: rows left out")

    impls["fused numba loop (reference, forward only)"] = fused_reference(x)

    ref_f, ref_b = (r() for r in impls["liquidssm.cpu (numba)"])
    for name, (f, b) in impls.items():  # also the warm-up (jit compiles here)
        for mode, ref, got in (("forward", ref_f, f()), ("grad u", ref_b, b and b())):
            if got is None:
                continue
            err = np.abs(got - ref).max() / np.abs(ref).max()
            assert err < 1e-4, f"{name} {mode}: relative max error {err:.1e} against numba"
    print("outputs and gradients of u agree (relative max error < 1e-4)")

    times = {(name, m): [] for name in impls for m in (0, 1)}
    for _ in range(a.reps):
        for m in (0, 1):
            for name, runners in impls.items():
                if runners[m] is None:
                    continue
                t = time.perf_counter()
                runners[m]()
                times[(name, m)].append(1e3 * (time.perf_counter() - t))
    load1 = os.getloadavg()
    print(f"\n{env_line()}")
    op = f"liquid selective scan p={DEGREE}" if DEGREE > 1 else "selective scan"
    print(f"{op}, b={a.b} d={a.d} n={a.n} l={a.l} float32, {a.reps} alternating reps; load average "
          f"(1, 5, 15 min) at start {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}, at end "
          f"{load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}\n")
    print("| implementation | forward ms | forward + backward ms |\n|---|---|---|")
    for name in impls:
        med = [f"{statistics.median(times[(name, m)]):.1f}" if times[(name, m)] else "-"
               for m in (0, 1)]
        print(f"| {name} | {med[0]} | {med[1]} |")


if __name__ == "__main__":
    main()
