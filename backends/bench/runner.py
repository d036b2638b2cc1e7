"""Run a sweep: one worker process per (backend, implementation), rows streamed back.

Each group runs in its own `python -m liquidssm.bench.worker` process with
LIQUIDSSM_TORCH_IMPL / LIQUIDSSM_JAX_SCAN set to its implementation (a fresh process also keeps
one group's memory out of the next one's measurements); a crash in one group becomes an error
row and the others still run.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .. import registry
from . import cases as _cases
from . import peers as _peers
from . import timing
from .timing import Budget

__all__ = ["BACKENDS", "groups", "expected_rows", "measure", "run_group", "run",
           "environment"]

#: backend -> the implementations `bench` can time (registry records with bench devices), and
#: the peers group
BACKENDS = {**{name: tuple(i.name for i in registry.implementations(name) if i.bench)
               for name in registry.BACKENDS}, "peers": ("-",)}
ROW_PREFIX = "ROW "

BUDGETS = {
    "quick": Budget(warmup=1, min_reps=3, max_reps=10, min_seconds=0.05),
    "full": Budget(warmup=1, min_reps=3, max_reps=30, min_seconds=0.3),
}
#: a length series stops (the longer lengths become skip rows) once a call takes longer
MAX_CALL_S = {"quick": 5.0, "full": 3.0}


def _packages(backend: str, impl: str) -> tuple[str, ...]:
    return ("torch",) if backend == "peers" else registry.get(f"{backend}:{impl}").packages


def installed(backend: str, impl: str | None = None) -> bool:
    """Whether `backend` (and implementation `impl` of it) can be imported here."""
    if backend == "peers":
        return importlib.util.find_spec("torch") is not None
    return not registry.get(f"{backend}:{impl or BACKENDS[backend][0]}").missing()


def _device_type(device: str) -> str:
    return device.split(":")[0]


def groups(backends, device: str, quick: bool = False) -> list[tuple[str, str]]:
    """(backend, impl) pairs to run on `device`, in order: each registered implementation timed
    on this device type (Implementation.bench) whose packages are installed; quick: only those
    marked quick (compiling every JAX strategy would not fit in 2 minutes). Unknown backends
    are an error."""
    out = []
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {b!r}")
        if b == "peers":
            out.append((b, "-"))
            continue
        for impl in registry.implementations(b):
            if _device_type(device) not in impl.bench or (quick and not impl.quick):
                continue
            if impl.needs and not installed(b, impl.name):
                continue
            out.append((b, impl.name))
    return out


#: (backend, mode) -> why a quick run does not time it (a skip row says so)
QUICK_SKIPS = {
    ("jax", "fwd+bwd"): "not timed in --quick: compiling jax forward + backward for every variant "
                        "and length takes minutes of CPU (the full sweep times it)",
}


def group_cases(backend: str, impl: str, cases: list, quick: bool = False) -> list:
    """The cases a group measures. peers: the targets some peer implements, fp32 forward.
    Others: as their record's bench_cases says (jax: the explicit strategies take the cases
    that run a scan, "auto" the others; quick: all of them, QUICK_SKIPS turning some into skip
    rows; torch: eager all, numba and triton the scan cases)."""
    if backend == "peers":
        targets = {p.target for p in _peers.PEERS}
        return [c for c in cases
                if c.target in targets and c.mode == "fwd" and c.dtype == "float32"]
    which = registry.get(f"{backend}:{impl}").bench_cases
    if which == "other" and quick:  # the strategies are not timed: this one takes every case
        which = "all"
    if which == "all":
        return list(cases)
    return [c for c in cases if _cases.uses_scan(c) == (which == "scan")]


def expected_rows(backend: str, cases: list) -> int:
    """How many rows a group emits for `cases`: one per case, one per peer of its target for
    the peers group."""
    if backend != "peers":
        return len(cases)
    return sum(p.target == c.target for c in cases for p in _peers.PEERS)


def _row(case, backend, impl, **kw) -> dict:
    op = case.target if case.kind == "op" else "layer"
    variant = case.target if case.kind == "layer" else ""
    row = {"op": op, "variant": variant, "backend": backend, "impl": impl,
           **{k: v for k, v in asdict(case).items() if k not in ("target", "kind")}}
    row.update(status="ok", note="")
    row.update(kw)
    return row


def _stats(fw, case, prep, samples, copy_gbps) -> dict:
    p20, p50, p80 = timing.percentiles(samples)
    tokens = case.batch * (1 if case.mode == "step" else case.length)
    nbytes = _cases.bytes_moved(case)
    gbps = nbytes / (p50 * 1e-3) / 1e9 if nbytes else None
    return {
        "p20_ms": p20, "p50_ms": p50, "p80_ms": p80, "reps": len(samples),
        "compile_ms": prep.compile_ms, "tokens_per_s": tokens / (p50 * 1e-3),
        "gbps": gbps, "bw_fraction": gbps / copy_gbps if gbps and copy_gbps else None,
        "peak_mem_mb": None if prep.peak_bytes is None else prep.peak_bytes / 2**20,
        "mem_method": prep.mem_method,
    }


def build(fw, case):
    """(fn, args) for the case on framework adaptor `fw` (inputs made here, outside timing)."""
    m = fw.module
    if case.kind == "op":
        if case.target in ("s4d_kernel", "s4_kernel"):
            mod = getattr(m, case.target.split("_")[0])
            cfg = _cases.variant_config(mod, mod.__name__.rsplit(".", 1)[-1], case)
            return (lambda p: mod.kernel(cfg, p, case.length)), (fw.params(mod, cfg),)
        raw = _cases.op_inputs(case)
        keep32 = ("A", "D", "delta_bias")  # mamba keeps these in float32 at any input dtype
        x = {k: fw.array(v, "float32" if k in keep32 else case.dtype) for k, v in raw.items()}
        if case.target == "fft_conv":
            from liquidssm.spec._common import causal_fft_conv

            return causal_fft_conv, (x["u"], x["K"])
        if case.target == "diag_scan":
            return m.diag_scan, (x["a"], x["b"])
        if case.target == "liquid_scan":
            return (lambda a, b, c: m.liquid_scan(a, b, c, degree=2)), (x["a"], x["b"], x["c"])
        names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
        prim = getattr(m, case.target)
        kw = {"liquid_degree": 2} if case.target == "liquid_selective_scan" else {}
        fn = lambda *a: prim(*a, delta_softplus=True, **kw)  # noqa: E731
        return fn, tuple(x[k] for k in names)
    mod = getattr(m, case.target)
    cfg = _cases.variant_config(mod, case.target, case)
    params = fw.params(mod, cfg)
    rng = __import__("numpy").random.default_rng(0)
    if case.mode == "step":
        u_t = fw.array(rng.normal(size=(case.batch, case.channels)), case.dtype)
        state = fw.initial_state(mod, cfg, case.batch)
        return (lambda p, s, x: mod.step(cfg, p, s, x)), (params, state, u_t)
    u = fw.array(rng.normal(size=(case.batch, case.length, case.channels)), case.dtype)
    return (lambda p, x: mod.forward(cfg, p, x)), (params, u)


def _error(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text[:300]


def measure(fw, case, budget: Budget, copy_gbps: float | None) -> dict:
    """One row: the case timed on adaptor `fw` (status ok | skip | error, with the reason)."""
    reason = fw.unsupported(case)
    work = case.batch * case.length * case.channels * case.state
    if reason is None and fw.name == "numpy" and work > _cases.NUMPY_MAX_WORK:
        reason = f"the NumPy spec runs small sizes only (B*L*H*N <= {_cases.NUMPY_MAX_WORK})"
    if reason:
        return _row(case, fw.name, fw.impl, status="skip", note=reason)
    try:
        fn, args = build(fw, case)
        prep = fw.prepare(fn, args, grad=case.mode == "fwd+bwd")
        samples = fw.samples(prep.run, budget)
    except Exception as err:  # a backend that cannot run the case: recorded, not fatal
        return _row(case, fw.name, fw.impl, status="error", note=_error(err))
    return _row(case, fw.name, fw.impl, **_stats(fw, case, prep, samples, copy_gbps))


def measure_peers(case, device: str, budget: Budget, copy_gbps):
    """Rows for every peer of the case's target: skip (absent), mismatch, error or timed."""
    import numpy as np
    import torch

    from .frameworks import Prepared, TorchTimer

    cuda = device.startswith("cuda")
    fw = TorchTimer("eager", device)
    inputs = _peers.peer_inputs(case)
    ref = None
    for peer in [p for p in _peers.PEERS if p.target == case.target]:
        name = peer.package
        reason = _peers.available(peer, cuda)
        if reason:
            yield _row(case, name, peer.impl, status="skip", note=reason)
            continue
        try:
            fn = peer.build(torch, fw.device, case, inputs)
            if ref is None:
                ref = _peers.reference(case, inputs)
            t0 = time.perf_counter()  # the first call: compilation / autotuning included
            with torch.no_grad():
                out = fn()
                fw.sync(out)
            compile_ms = (time.perf_counter() - t0) * 1e3
            got = fw.to_numpy(out)
            err = float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))
            if not err <= _peers.AGREE_RTOL:
                yield _row(case, name, peer.impl, status="mismatch", rel_err=err,
                           note=f"output differs from the spec: rel err {err:.2e}")
                continue
            run = torch.no_grad()(fn)
            peak = (timing.cuda_peak(run, fw.device) if cuda else timing.rss_peak(run, fw.sync))
            prep = Prepared(run, compile_ms, peak, "cuda-allocator" if cuda else "rss-hwm")
            samples = fw.samples(run, budget)
        except Exception as e:
            yield _row(case, name, peer.impl, status="error", note=_error(e))
            continue
        stats = _stats(fw, case, prep, samples, copy_gbps)
        yield _row(case, name, peer.impl, rel_err=err, **stats)


def _series(case):
    return (case.target, case.kind, case.mode, case.dtype, case.axis)


def run_group(backend, impl, device, cases, budget: Budget, copy_gbps, emit,
              max_call_s: float = math.inf) -> None:
    """Measure `cases` for one (backend, impl) in this process; emit(row) for each. A length
    series whose call took more than max_call_s skips its longer lengths."""
    if backend == "peers":
        for case in cases:
            for row in measure_peers(case, device, budget, copy_gbps):
                emit(row)
        return
    from .frameworks import framework

    if backend != "peers":  # read at call / trace time
        os.environ.update(registry.get(f"{backend}:{impl}").select)
    try:
        fw = framework(backend, impl, device)
    except Exception as err:
        for case in cases:
            emit(_row(case, backend, impl, status="error", note=_error(err)))
        return
    slow: dict[tuple, float] = {}
    for case in cases:
        if case.axis == "length" and _series(case) in slow:
            note = (f"a shorter length took {slow[_series(case)]:.1f} s per call "
                    f"(> {max_call_s} s): longer lengths skipped")
            emit(_row(case, backend, impl, status="skip", note=note))
            continue
        row = measure(fw, case, budget, copy_gbps)
        call_s = (row.get("p50_ms") or 0) / 1e3
        if call_s > max_call_s:
            slow[_series(case)] = call_s
        emit(row)


def _worker_env(backend, impl) -> dict:
    env = dict(os.environ)
    if backend != "peers":
        env.update(registry.get(f"{backend}:{impl}").select)
    env.pop("TRITON_INTERPRET", None)  # timings are of compiled kernels, never the interpreter
    return env


def spawn_group(backend, impl, device, cases, budget, copy_gbps, emit, max_call_s) -> None:
    """run_group in a worker process; rows arrive as they finish. A worker that dies turns its
    unmeasured cases into error rows carrying the last lines of its stderr."""
    job = {"backend": backend, "impl": impl, "device": device, "copy_gbps": copy_gbps,
           "budget": asdict(budget), "max_call_s": max_call_s,
           "cases": [asdict(c) for c in cases]}
    # stderr goes to a file: a pipe read only after stdout could fill up and block the worker
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "liquidssm.bench.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True, env=_worker_env(backend, impl))
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        done = 0
        for line in proc.stdout:
            if line.startswith(ROW_PREFIX):
                emit(json.loads(line[len(ROW_PREFIX):]))
                done += 1
        rc = proc.wait()
        err.seek(0)
        stderr = err.read()
    if done < len(cases):
        why = f"worker exited with {rc}: " + " | ".join(stderr.strip().splitlines()[-3:])
        for case in cases[done:]:
            emit(_row(case, backend, impl, status="error", note=why[:300]))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cpus)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cpus)"


def environment(device: str) -> dict:
    """Fields shared by every row of a run: device, its copy bandwidth, versions, commit."""
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
        copy = timing.cuda_copy_gbps(torch.device(device))
    else:
        name, copy = cpu_name(), timing.cpu_copy_gbps()
    dists = ["liquidssm", "numpy", "torch", "jax", "jaxlib", "triton", "mambapy",
             "accelerated-scan", "s5-pytorch", "mamba_ssm"]
    versions = {d: v for d in dists if (v := _version(d))}
    versions["python"] = platform.python_version()
    return {
        "device": device, "device_name": name, "copy_gbps": copy, "cpus": os.cpu_count(),
        "versions": ";".join(f"{k}={v}" for k, v in versions.items()),
        "commit": _commit(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run(*, backends=None, targets=None, modes=None, device="cpu", quick=False, progress=True,
        in_process=False) -> list[dict]:
    """All rows of a sweep (quick or full, for `device`) over the installed `backends`."""
    chosen = list(backends) if backends else [b for b in BACKENDS if installed(b)]
    for b in chosen:
        if b in BACKENDS and not installed(b):
            raise ValueError(f"backend: {b!r} needs the packages {_packages(b, BACKENDS[b][0])}, "
                             f"not installed")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    sweep = _cases.sweep(("quick-" if quick else "") + kind, targets, modes)
    plan = [(b, i, group_cases(b, i, sweep, quick)) for b, i in groups(chosen, device, quick)]
    plan = [(b, i, c) for b, i, c in plan if c]
    start = timing.machine_load()  # before any work of ours: load average, host copy GB/s
    env = {**environment(device), "load_start": start["load"],
           "host_copy_gbps_start": start["copy_gbps"]}
    budget = BUDGETS["quick" if quick else "full"]
    cap = MAX_CALL_S["quick" if quick else "full"]
    rows: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(expected_rows(b, c) for b, _, c in plan)
        bar = tqdm(total=total, unit="row", dynamic_ncols=True)

    def emit(row):
        rows.append({**row, **env})
        if bar is not None:
            bar.set_postfix_str(f"{row['backend']}:{row['impl']} {row['op']} {row['variant']}")
            bar.update(1)

    for backend, impl, group in plan:
        skipped = {c: QUICK_SKIPS.get((backend, c.mode)) if quick else None for c in group}
        for case in group:
            if skipped[case]:
                emit(_row(case, backend, impl, status="skip", note=skipped[case]))
        timed = [c for c in group if not skipped[c]]
        if not timed:
            continue
        if in_process:
            run_group(backend, impl, device, timed, budget, env["copy_gbps"], emit, cap)
        else:
            spawn_group(backend, impl, device, timed, budget, env["copy_gbps"], emit, cap)
    if bar is not None:
        bar.close()
    end = timing.machine_load()
    for r in rows:
        r.update(load_end=end["load"], host_copy_gbps_end=end["copy_gbps"])
    return rows
