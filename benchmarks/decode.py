"""The decode step of a Mamba mixer, side by side in one process (issue 17), and generate's
tokens/s.

    OMP_NUM_THREADS=2 python benchmarks/decode.py [--threads 2] [--reps 15] [--steps 20]

One Mamba mixer (d_model 256, d_state 16, expand 2, float32), its weights the spec's
mamba.init(config, 0) loaded into each implementation: liquidssm.torch nn.Mamba.step (the decode
fast path under auto: its state update the numba state_step kernel where liquidssm[cpu] is
installed; the same with LIQUIDSSM_TORCH_IMPL=eager: the spec's torch ops; also its checked spec
step, the state passed as a plain dict), liquidssm.jax (the nnx module's step, jitted once: the
state a pytree), mambapy MambaBlock.step and transformers' MambaMixer with its DynamicCache (CPU
fallback). First every implementation decodes the same 12 tokens after a 4-token prompt from the
same weights and its outputs are checked against the spec (NumPy float64) to 1e-4 relative; then
per batch (1, 16) the torch implementations alternate, each timing `--steps` consecutive steps
per repetition (its own state carried), jax in a pass of its own after them (see main), and the
tables show the median and the fastest rep's microseconds per step (the fastest is what a loaded
machine still measures: descheduling only adds time).
Last, MambaLM.generate (d_model 256, 4 layers, vocab 256, 32 new tokens after 8) in tokens/s,
torch and jax. Prints the environment (threads, load average, versions) first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

D_MODEL, D_STATE, EXPAND = 256, 16, 2
PROMPT, CHECK_STEPS = 4, 12


def _spec():
    from liquidssm.spec import mamba

    config = mamba.Config(d_model=D_MODEL, d_state=D_STATE, expand=EXPAND)
    return mamba, config, mamba.init(config, 0)


def liquidssm_torch(config, params, impl=None, checked=False):
    """(init(batch) -> state, step(u (B, d_model) NumPy-made tensor, state) -> (y, state))."""
    import torch
    from liquidssm.torch import nn

    m = nn.Mamba.from_params(config, params, dtype=torch.float32)

    def step(u, state):
        if impl is not None:
            os.environ["LIQUIDSSM_TORCH_IMPL"] = impl
        try:
            return m.step(u, dict(state) if checked else state)
        finally:
            if impl is not None:
                os.environ.pop("LIQUIDSSM_TORCH_IMPL")

    def prefill(u):
        return m(u, return_state=True)

    return m.initial_state, step, prefill


def liquidssm_jax(config, params):
    from liquidssm.jax import nnx

    m = nnx.Mamba.from_params(config, params)
    fn = m.jit_step()

    def step(u, state):
        y, s = fn(u, state)
        return y.block_until_ready(), s

    return m.initial_state, step, lambda u: m(u, return_state=True)


def mambapy(config, params):
    import torch
    from mambapy.mamba import MambaBlock, MambaConfig

    cfg = MambaConfig(d_model=config.d_model, n_layers=1, d_state=config.d_state,
                      expand_factor=config.expand, d_conv=config.d_conv,
                      dt_rank=config.dt_rank)
    block = MambaBlock(cfg)
    block.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()})
    d, K = config.d_inner, config.d_conv

    def init(batch):
        return (torch.zeros(batch, d, config.d_state), torch.zeros(batch, d, K - 1))

    return init, lambda u, cache: block.step(u, cache), None


def transformers_mixer(config, params):
    import torch
    from transformers import MambaConfig
    from transformers.cache_utils import DynamicCache
    from transformers.models.mamba.modeling_mamba import MambaMixer

    hf = MambaConfig(hidden_size=config.d_model, state_size=config.d_state,
                     expand=config.expand, conv_kernel=config.d_conv,
                     time_step_rank=config.dt_rank, use_conv_bias=config.conv_bias,
                     use_bias=config.bias, num_hidden_layers=1)
    mixer = MambaMixer(hf, layer_idx=0).eval()
    mixer.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in params.items()})

    def prefill(u):
        cache = DynamicCache(config=hf)
        return mixer(u, cache=cache), cache

    def step(u, cache):
        return mixer(u[:, None], cache=cache)[:, 0], cache

    return None, step, prefill


def _check(name, impl, spec_y, u_np, to_array):
    """Decode the prompt (prefill where the implementation has one, else steps from zeros) and
    CHECK_STEPS steps; compare with the spec's forward (float64) to 1e-4 relative. Returns
    (state, relative error, seconds of the slowest of these steps: where the kernels compile,
    or load from numba's on-disk cache; a state from prefill takes the checked step once)."""
    init, step, prefill = impl
    u = to_array(u_np)
    ys = []
    if prefill is not None:
        y, state = prefill(u[:, :PROMPT])
        ys += [y[:, t] for t in range(PROMPT)]
        start = PROMPT
    else:
        state, start = init(u.shape[0]), 0
    slowest = 0.0
    for t in range(start, u.shape[1]):
        t0 = time.perf_counter()
        y, state = step(u[:, t], state)
        slowest = max(slowest, time.perf_counter() - t0)
        ys.append(y)
    got = np.stack([np.asarray(y, dtype=np.float64) for y in ys], axis=1)
    err = np.abs(got - spec_y).max() / np.abs(spec_y).max()
    if not err < 1e-4:
        raise AssertionError(f"{name}: relative error {err:.2e} against the spec")
    return state, err, slowest


def _env(threads):
    import torch

    versions = [f"torch {torch.__version__}"]
    for mod in ("jax", "numba", "mambapy", "transformers"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001  (a peer not installed: its rows are left out)
            pass
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch threads {threads}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
            f"load average {os.getloadavg()[0]:.2f}; " + ", ".join(versions))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--no-generate", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], help="leave out rows containing these")
    ap.add_argument("--jax-only", action="store_true", help="the jax rows (run as a child)")
    args = ap.parse_args(argv)
    if args.threads:
        # numba's own thread pool too (the prefill's numba kernels start it, read at import):
        # its idle worker made every row here 2-10x slower on 2 loaded cores
        os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(_env(torch.get_num_threads()))
    spec, config, params = _spec()
    impls = {
        "liquidssm.torch fast step": lambda: liquidssm_torch(config, params),
        "liquidssm.torch fast step, eager ops": lambda: liquidssm_torch(config, params,
                                                                        impl="eager"),
        "liquidssm.torch checked spec step": lambda: liquidssm_torch(config, params,
                                                                     checked=True),
        "liquidssm.jax jitted step": lambda: liquidssm_jax(config, params),
        "mambapy MambaBlock.step": lambda: mambapy(config, params),
        "transformers MambaMixer + cache": lambda: transformers_mixer(config, params),
    }
    made = {}
    # jax runs in a child process: in one process with an initialised XLA CPU client, every
    # torch step here (ours and the peers') ran 10-80x slower on 2 loaded cores
    impls = {k: v for k, v in impls.items() if ("jax" in k) == args.jax_only
             and not any(w in k for w in args.skip)}
    for name, make in impls.items():
        try:
            made[name] = make()
        except ImportError as e:
            print(f"skip {name}: {e}")
    for name in made:
        if "jax" in name:
            import jax.numpy as jnp

            conv = lambda a: jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
        else:
            conv = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        made[name] = (made[name], conv)

    rows = {}
    with torch.no_grad():
        for batch in args.batches:
            rng = np.random.default_rng(batch)
            u_np = rng.standard_normal((batch, PROMPT + CHECK_STEPS, D_MODEL))
            spec_y = spec.forward(config, params, u_np)
            states, inputs = {}, {}
            for name, (impl, conv) in made.items():
                states[name], err, slowest = _check(name, impl, spec_y, u_np, conv)
                # compile time apart: the slowest checked step (a kernel's first call)
                print(f"checked {name} (batch {batch}): max relative error {err:.1e}; slowest "
                      f"step {slowest * 1e3:.1f} ms")
                inputs[name] = [conv(rng.standard_normal((batch, D_MODEL)))
                                for _ in range(args.steps)]
            times = {name: [] for name in made}
            # the torch implementations alternate; jax is timed in its own pass after them
            # (XLA's CPU threads spin after a call and slow an alternating torch step ~5x on 2
            # loaded cores)
            groups = [[n for n in made if "jax" not in n], [n for n in made if "jax" in n]]
            for names in groups:
                for rep in range(args.reps if names else 0):
                    for name in names[rep % len(names):] + names[:rep % len(names)]:
                        step, state = made[name][0][1], states[name]
                        t0 = time.perf_counter()
                        for u in inputs[name]:
                            _, state = step(u, state)
                        times[name].append((time.perf_counter() - t0) / args.steps * 1e6)
                        states[name] = state
            for name in made:
                rows.setdefault(name, {})[batch] = (statistics.median(times[name]),
                                                    min(times[name]))
    for i, stat in enumerate(("median", "fastest")):
        # the fastest rep is the figure a loaded machine still gives: a rep that the scheduler
        # interrupts (other processes on the cores) only ever adds time
        print(f"\nMamba mixer decode step (d_model {D_MODEL}, d_state {D_STATE}, expand "
              f"{EXPAND}, float32), {stat} us per step of {args.reps} alternating reps x "
              f"{args.steps} steps")
        print("| implementation | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
        print("|---|" + "---|" * len(args.batches))
        for name, by in rows.items():
            print(f"| {name} | " + " | ".join(f"{by[b][i]:.0f}" for b in args.batches) + " |")
    if not args.no_generate:
        _generate(args.jax_only)
    if not args.jax_only and "jax" not in args.skip:
        import subprocess
        import sys

        child = [sys.executable, __file__, "--jax-only", "--reps", str(args.reps), "--steps",
                 str(args.steps), "--batches", *map(str, args.batches)]
        if args.no_generate:
            child.append("--no-generate")
        out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
        print("\njax, in a child process:\n" + "\n".join(
            line for line in out.splitlines() if line.startswith(("|", "liquidssm", "checked"))))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def _generate(jax_only):
    """MambaLM.generate tokens/s (greedy, batch 1), torch or jax; the ids repeat run to run, and
    the row prints a checksum of them (equal in both processes: the same greedy ids)."""
    import torch
    from liquidssm.spec import mamba_lm

    config = mamba_lm.Config(d_model=D_MODEL, n_layer=4, vocab_size=256)
    params = mamba_lm.init(config, 0)
    prompt = np.random.default_rng(0).integers(0, 256, (1, 8))
    new = 32
    out = {}
    from liquidssm.torch import nn

    runs = {}
    if not jax_only:
        tm = nn.MambaLM.from_params(config, params, dtype=torch.float32)
        runs["liquidssm.torch MambaLM.generate"] = lambda: tm.generate(
            torch.tensor(prompt), new).numpy()
    else:
        import jax.numpy as jnp
        from liquidssm.jax import nnx

        jm = nnx.MambaLM.from_params(config, params)
        runs["liquidssm.jax MambaLM.generate"] = lambda: np.asarray(
            jm.generate(jnp.asarray(prompt), new))
    for name, fn in runs.items():
        ids = fn()  # warm (jit compile)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            again = fn()
            ts.append(time.perf_counter() - t0)
        assert (again == ids).all()
        out[name] = (ids, new / statistics.median(ts))
    for name, (ids, tps) in out.items():
        print(f"{name}: {tps:.0f} tokens/s (4 layers, d_model {D_MODEL}, 8 + {new} tokens, "
              f"batch 1, ids checksum {int((ids * np.arange(1, ids.size + 1)).sum())})")


if __name__ == "__main__":
    main()
