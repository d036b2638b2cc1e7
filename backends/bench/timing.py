"""Timing, peak memory and copy bandwidth, per framework.

A measurement times a prepared zero-argument callable `fn` (inputs built outside, compilation done
outside or in the first call): samples t_1..t_r in ms, reported as the 20th / 50th / 80th
percentiles. Synchronisation: `block_until_ready` (JAX), CUDA events or
`triton.testing.do_bench` (torch on CUDA), the wall clock around the call otherwise.

Peak memory is the extra memory the call needs beyond its prepared inputs, in bytes:
    numpy        tracemalloc peak during one call (NumPy reports its buffers to tracemalloc)
    torch cpu    growth of the process's resident high-water mark (VmHWM, reset through
                 /proc/self/clear_refs) during one call, after malloc_trim(0) returns free heap
                 pages; approximate: page granularity, and heap pages freed during the call but
                 not reused still count (measured 16 MB for a call whose live peak is 12 MB)
    torch cuda   torch.cuda.max_memory_allocated() - memory_allocated() before the call
    jax          compiled.memory_analysis(): temp_size_in_bytes + output_size_in_bytes
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Budget", "percentiles", "wall_samples", "cuda_samples", "rss_peak",
           "tracemalloc_peak", "cuda_peak", "cpu_copy_gbps", "cuda_copy_gbps", "machine_load"]


@dataclass(frozen=True)
class Budget:
    """Repetitions: at least min_reps timed calls after `warmup` untimed ones, more until
    min_seconds of timed calls, never more than max_reps."""

    warmup: int = 2
    min_reps: int = 5
    max_reps: int = 50
    min_seconds: float = 0.5


def percentiles(samples_ms) -> tuple[float, float, float]:
    """(p20, p50, p80) of the samples, linear interpolation."""
    s = np.asarray(samples_ms, dtype=np.float64)
    if s.size == 0:
        raise ValueError("samples_ms: expected at least one sample, got none")
    p20, p50, p80 = np.percentile(s, [20, 50, 80])
    return float(p20), float(p50), float(p80)


def wall_samples(fn: Callable, sync: Callable, budget: Budget) -> list[float]:
    """Wall-clock ms of `sync(fn())`, repeated per `budget` (warm-up calls untimed)."""
    for _ in range(budget.warmup):
        sync(fn())
    samples: list[float] = []
    total = 0.0
    while len(samples) < budget.max_reps and (
        len(samples) < budget.min_reps or total < budget.min_seconds
    ):
        t0 = time.perf_counter()
        sync(fn())
        dt = time.perf_counter() - t0
        samples.append(dt * 1e3)
        total += dt
    return samples


def cuda_samples(fn: Callable, budget: Budget) -> list[float]:
    """ms per call of a torch CUDA callable: every time triton.testing.do_bench measured when
    triton is installed (it flushes L2 between calls), else CUDA events around each call."""
    import torch

    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    if do_bench is not None:
        times = do_bench(fn, warmup=25, rep=max(50, int(budget.min_seconds * 1e3)),
                         return_mode="all")
        return [float(v) for v in times]
    for _ in range(budget.warmup):
        fn()
    torch.cuda.synchronize()
    samples: list[float] = []
    while len(samples) < budget.max_reps and (
        len(samples) < budget.min_reps or sum(samples) < budget.min_seconds * 1e3
    ):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return samples


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if m is None:
        raise OSError(f"/proc/self/status has no {key}")
    return int(m.group(1)) * 1024


def _malloc_trim() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def rss_peak(fn: Callable, sync: Callable) -> int | None:
    """Growth of the resident high-water mark during one call (Linux only; None elsewhere)."""
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        base = _status_bytes("VmRSS")
        sync(fn())
        return max(0, _status_bytes("VmHWM") - base)
    except OSError:
        return None


def tracemalloc_peak(fn: Callable) -> int:
    """tracemalloc's peak traced bytes during one call, minus the bytes traced before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return max(0, tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


def cuda_peak(fn: Callable, device) -> int:
    import torch

    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - base)


def cpu_copy_gbps(nbytes: int = 64 << 20, reps: int = 5) -> float:
    """Host memory bandwidth: (read + write) bytes / time of the best of `reps` array copies."""
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def cuda_copy_gbps(device, nbytes: int = 512 << 20) -> float:
    """Device memory bandwidth: (read + write) bytes / median time of a device-to-device copy."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = percentiles(cuda_samples(lambda: dst.copy_(src), Budget()))[1]
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def machine_load() -> dict:
    """{"load": the 1-minute load average (None where the OS has none), "copy_gbps": the host
    copy bandwidth of a 64 MB NumPy copy}: taken at the start and the end of a run, a loaded
    machine shows as a high load or as a bandwidth that changed between the two."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = None
    return {"load": load, "copy_gbps": cpu_copy_gbps()}
