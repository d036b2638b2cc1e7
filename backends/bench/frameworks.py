"""Per-framework timers (NumpyTimer, TorchTimer, JaxTimer): make arrays, prepare a timed
callable, time it, measure its memory (not the spec bindings of liquidssm.torch / liquidssm.jax).

`prepare(fn, args, grad)` returns a Prepared: `run()` evaluates fn(*args) (or, with grad, the
gradient of sum(fn(*args)[0] as float32) with respect to every floating array in args), with
compilation already done; `compile_ms` is the first call (JAX: lower + compile; torch / NumPy:
the first call, which includes any autotuning).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import timing

__all__ = ["Prepared", "framework"]


@dataclass
class Prepared:
    run: Callable[[], object]
    compile_ms: float
    peak_bytes: int | None
    mem_method: str


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _tree_leaves(tree):
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _tree_leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [x for v in tree for x in _tree_leaves(v)]
    return [] if tree is None else [tree]


class NumpyTimer:
    """The spec (liquidssm.numpy). float32 runs as NumPy float32; no bfloat16, no gradients."""

    name = "numpy"

    def __init__(self, impl: str, device: str):
        if device != "cpu":
            raise ValueError(f"device: expected 'cpu' for the numpy backend, got {device!r}")
        self.impl, self.device = impl, device
        self.module = importlib.import_module("liquidssm.numpy")

    def unsupported(self, case) -> str | None:
        if case.dtype != "float32":
            return f"NumPy has no {case.dtype}"
        if case.mode == "fwd+bwd":
            return "the NumPy spec has no autodiff"
        return None

    def array(self, x: np.ndarray, dtype: str = "float32"):
        return np.asarray(x, dtype=np.complex64 if np.iscomplexobj(x) else dtype)

    def tree(self, tree, dtype: str = "float32"):
        if isinstance(tree, dict):
            return {k: self.tree(v, dtype) for k, v in tree.items()}
        return self.array(tree, dtype)

    def params(self, mod, config):
        return self.tree(mod.init(config, 0))

    def initial_state(self, mod, config, batch):
        return self.tree(mod.initial_state(config, batch))

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def sync(self, out):
        return out

    def prepare(self, fn, args, grad: bool) -> Prepared:
        run = lambda: fn(*args)  # noqa: E731
        t0 = time.perf_counter()
        run()
        compile_ms = (time.perf_counter() - t0) * 1e3
        return Prepared(run, compile_ms, timing.tracemalloc_peak(run), "tracemalloc")

    def samples(self, run, budget) -> list[float]:
        return timing.wall_samples(run, self.sync, budget)


class TorchTimer:
    """liquidssm.torch with LIQUIDSSM_TORCH_IMPL = impl (set by the runner), on `device`."""

    name = "torch"

    def __init__(self, impl: str, device: str):
        import torch

        self.torch = torch
        self.impl, self.device = impl, torch.device(device)
        self.module = importlib.import_module("liquidssm.torch")
        self.cuda = self.device.type == "cuda"

    def unsupported(self, case) -> str | None:
        if self.impl == "triton" and not self.cuda:
            return "Triton kernels need a CUDA device (the CPU interpreter is not timed)"
        return None

    def array(self, x: np.ndarray, dtype: str = "float32"):
        t = self.torch.from_numpy(np.ascontiguousarray(x))
        dt = self.torch.complex64 if t.is_complex() else getattr(self.torch, dtype)
        return t.to(device=self.device, dtype=dt)

    def tree(self, tree, dtype: str = "float32"):
        if isinstance(tree, dict):
            return {k: self.tree(v, dtype) for k, v in tree.items()}
        return self.array(tree, dtype)

    def params(self, mod, config):
        return mod.init(config, 0, dtype=self.torch.float32, device=self.device)

    def initial_state(self, mod, config, batch):
        return mod.initial_state(config, batch, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().to("cpu", self.torch.float64).numpy()

    def sync(self, out):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        return out

    def prepare(self, fn, args, grad: bool) -> Prepared:
        torch = self.torch
        if grad:
            leaves = [x for x in _tree_leaves(args)
                      if isinstance(x, torch.Tensor) and x.is_floating_point()]
            for x in leaves:
                x.requires_grad_(True)

            def run():
                loss = _first(fn(*args)).float().sum()
                return torch.autograd.grad(loss, leaves, allow_unused=True)
        else:

            def run():
                with torch.no_grad():
                    return fn(*args)

        t0 = time.perf_counter()
        self.sync(run())
        compile_ms = (time.perf_counter() - t0) * 1e3
        if self.cuda:
            return Prepared(run, compile_ms, timing.cuda_peak(run, self.device), "cuda-allocator")
        return Prepared(run, compile_ms, timing.rss_peak(run, self.sync), "rss-hwm")

    def samples(self, run, budget) -> list[float]:
        if self.cuda:
            return timing.cuda_samples(run, budget)
        return timing.wall_samples(run, self.sync, budget)


class JaxTimer:
    """liquidssm.jax with LIQUIDSSM_JAX_SCAN = impl (set by the runner); every call is jitted."""

    name = "jax"

    def __init__(self, impl: str, device: str):
        import jax

        self.jax = jax
        self.impl = impl
        platform = "gpu" if device.startswith("cuda") else device
        index = int(device.split(":", 1)[1]) if ":" in device else 0  # cuda:i -> GPU i
        self.device = jax.devices(platform)[index]
        self.module = importlib.import_module("liquidssm.jax")

    def unsupported(self, case) -> str | None:
        return None

    def array(self, x: np.ndarray, dtype: str = "float32"):
        import jax.numpy as jnp

        dt = jnp.complex64 if np.iscomplexobj(x) else getattr(jnp, dtype)
        return self.jax.device_put(jnp.asarray(x, dtype=dt), self.device)

    def tree(self, tree, dtype: str = "float32"):
        if isinstance(tree, dict):
            return {k: self.tree(v, dtype) for k, v in tree.items()}
        return self.array(tree, dtype)

    def params(self, mod, config):
        return self.jax.device_put(mod.init(config, 0), self.device)

    def initial_state(self, mod, config, batch):
        return self.jax.device_put(mod.initial_state(config, batch), self.device)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def sync(self, out):
        return self.jax.block_until_ready(out)

    def prepare(self, fn, args, grad: bool) -> Prepared:
        jax, jnp = self.jax, self.jax.numpy
        if grad:
            loss = lambda *a: jnp.sum(_first(fn(*a)).astype(jnp.float32))  # noqa: E731
            f = jax.grad(loss, argnums=tuple(range(len(args))))
        else:
            f = fn
        t0 = time.perf_counter()
        compiled = jax.jit(f).lower(*args).compile()
        compile_ms = (time.perf_counter() - t0) * 1e3
        run = lambda: compiled(*args)  # noqa: E731
        peak = None
        analysis = compiled.memory_analysis()
        if analysis is not None:
            peak = int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)
        return Prepared(run, compile_ms, peak, "xla-memory-analysis")

    def samples(self, run, budget) -> list[float]:
        return timing.wall_samples(run, self.sync, budget)


_FRAMEWORKS = {"numpy": NumpyTimer, "torch": TorchTimer, "jax": JaxTimer}


def framework(backend: str, impl: str, device: str):
    if backend not in _FRAMEWORKS:
        raise ValueError(f"backend: expected one of {sorted(_FRAMEWORKS)}, got {backend!r}")
    return _FRAMEWORKS[backend](impl, device)
