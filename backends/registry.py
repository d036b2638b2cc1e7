"""The registry: one record per backend and per implementation, and one per benchmark peer.

Everything that lists backends or implementations reads these records: the front package
(`liquidssm.BACKENDS`), `liquidssm info` and `liquidssm check`, the conformance adapters, the
noxfile's sessions, the benchmark groups and their plot styles, and the implementation choice
itself (LIQUIDSSM_TORCH_IMPL's and LIQUIDSSM_JAX_SCAN's valid values). Adding an implementation
is one `Implementation(...)` record here plus its code (and a conformance adapter class when its
arrays or settings differ from its backend's).

This file imports nothing but the standard library: the noxfile loads it by path, before
liquidssm is installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

__all__ = ["Backend", "Implementation", "Peer", "BACKENDS", "IMPLEMENTATIONS", "PEERS",
           "implementations", "names", "get", "conformance", "styles"]


@dataclass(frozen=True)
class Backend:
    """A framework binding, chosen with LIQUIDSSM_BACKEND=<name>."""

    name: str
    module: str  # what `liquidssm.<name>` imports
    package: str  # the import it needs
    extra: str | None  # the pip extra that installs it
    select_env: str | None  # the variable that chooses among its implementations
    auto: str = ""  # what its default, auto, runs


@dataclass(frozen=True)
class Implementation:
    """One implementation of a backend's primitives.

    name: the value of the backend's select_env that runs it (`auto` is the default rule).
    needs: imports it needs beyond its backend's package; extra: the pip extra with them.
    devices: device types it runs on natively (its kernels' targets).
    bench: device types `liquidssm bench` times it on; bench_cases: which of a sweep's cases
    ("all"; "scan": those that run a scan, where it differs from its backend's default; "other":
    the rest, the scan cases being timed per strategy); quick: timed by `bench --quick`.
    conformance: its conformance / nox session name (None: covered by another session);
    adapter: the class in liquidssm.conformance.adapters; extras: the session's pip extras;
    interpret_env: what a CPU-only machine sets to run it in an interpreter (tests only);
    tests: its own test paths, run by its session.
    style: (colour, marker) of its series in every plot.
    Capabilities: dtypes it computes in, complex_a (complex A in its own kernels), liquid_degree
    ("any": every p), deterministic_backward (bitwise repeatable gradients), kernels (the
    primitives it has its own code for; None: all; the rest run its backend's default).
    module: where its primitives live, under the backend's names (None: the backend's own
    code). torch's `auto` takes the first record, in registry order, that runs on the input's
    device and has the primitive's kernel (liquidssm.torch._impl).
    """

    backend: str
    name: str
    summary: str
    style: tuple[str, str]
    needs: tuple[str, ...] = ()
    extra: str | None = None
    devices: tuple[str, ...] = ("cpu",)
    bench: tuple[str, ...] = ()
    bench_cases: str = "all"
    quick: bool = True
    conformance: str | None = None
    adapter: str | None = None
    extras: str = "test"
    interpret_env: dict = field(default_factory=dict)
    tests: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ("float64", "float32")
    complex_a: bool = True
    liquid_degree: str = "any"
    deterministic_backward: bool = True
    kernels: tuple[str, ...] | None = None
    module: str | None = None

    @property
    def key(self) -> str:
        """'backend:name', the label of its benchmark rows and plot series."""
        return f"{self.backend}:{self.name}"

    @property
    def select(self) -> dict:
        """The environment that selects it."""
        env = BACKENDS[self.backend].select_env
        return {env: self.name} if env else {}

    @property
    def packages(self) -> tuple[str, ...]:
        """Every import it needs: its backend's package, then its own."""
        return (BACKENDS[self.backend].package, *self.needs)

    def missing(self) -> list[str]:
        """The packages it needs that do not import here (empty: installed)."""
        return [p for p in self.packages if importlib.util.find_spec(p) is None]


@dataclass(frozen=True)
class Peer:
    """Another library that `liquidssm bench` times on the same shapes (liquidssm.bench.peers
    holds how to call it)."""

    package: str  # the distribution (pip install <package>)
    module: str  # what must import
    name: str  # its implementation
    devices: tuple[str, ...]
    style: tuple[str, str]

    @property
    def key(self) -> str:
        return f"{self.package}:{self.name}"


BACKENDS = {b.name: b for b in (
    Backend("numpy", "liquidssm.numpy", "numpy", None, "LIQUIDSSM_NUMPY_IMPL",
            "spec (the reference); numba only when chosen"),
    Backend("torch", "liquidssm.torch", "torch", "torch", "LIQUIDSSM_TORCH_IMPL",
            "triton for CUDA tensors, numba for CPU tensors, where installed and they have the "
            "primitive's kernel; else eager"),
    Backend("jax", "liquidssm.jax", "jax", "jax", "LIQUIDSSM_JAX_SCAN",
            "sequential on CPU; pallas on GPU / TPU where a kernel applies, else associative up "
            "to 64 steps and chunked beyond (liquidssm.jax.scans)"),
)}

_GPU = ("cpu", "cuda", "tpu")
_FLOATS = ("float64", "float32", "bfloat16")

IMPLEMENTATIONS = (
    Implementation("numpy", "spec", "sequential NumPy reference", ("#7f7f7f", "s"),
                   bench=("cpu",), conformance="numpy", adapter="NumpyAdapter"),
    Implementation("numpy", "array_api_strict", "the spec on array_api_strict arrays",
                   ("#c49c94", "s"), needs=("array_api_strict",), extra="test",
                   conformance="array_api_strict", adapter="ArrayApiStrictAdapter"),
    Implementation("numpy", "numba", "numba CPU forward kernels (liquidssm.cpu) on NumPy arrays",
                   ("#c7a59f", "v"), needs=("numba",), extra="cpu",
                   conformance="numpy-numba", adapter="NumpyNumbaAdapter", extras="test,cpu",
                   tests=("tests/test_numpy_numba.py",),
                   kernels=("selective_scan", "liquid_selective_scan", "diag_scan", "liquid_scan",
                            "selective_state_update"),
                   module="liquidssm.cpu._numpy"),
    Implementation("torch", "eager", "PyTorch operations", ("#d62728", "o"),
                   devices=("cpu", "cuda"), bench=("cpu", "cuda"), conformance="torch",
                   adapter="TorchAdapter", extras="test,torch,hf,train", tests=("tests/torch",),
                   dtypes=_FLOATS),
    Implementation("torch", "triton", "Triton kernels (liquidssm.torch.triton)",
                   ("#ff7f0e", "^"), needs=("triton",), extra="triton", devices=("cuda",),
                   bench=("cuda",), bench_cases="scan", conformance="torch-triton",
                   adapter="TorchTritonAdapter", extras="test,triton",
                   interpret_env={"TRITON_INTERPRET": "1"},
                   tests=("tests/torch/test_triton.py", "tests/torch/test_triton_parallel.py"),
                   dtypes=("float32", "bfloat16"), module="liquidssm.torch.triton"),
    Implementation("torch", "numba", "numba CPU kernels (liquidssm.cpu)", ("#8c564b", "v"),
                   needs=("numba",), extra="cpu", bench=("cpu",), bench_cases="scan",
                   conformance="torch-numba", adapter="TorchNumbaAdapter",
                   extras="test,torch,cpu",
                   # its kernels, and the tests that run them on purpose (distributed, quiet)
                   tests=("tests/torch/test_numba.py", "tests/torch/test_data_parallel.py",
                          "tests/torch/test_sequence_parallel.py", "tests/torch/test_quiet.py"),
                   kernels=("selective_scan", "liquid_selective_scan", "diag_scan", "liquid_scan",
                            "selective_state_update"),
                   module="liquidssm.cpu._torch"),
    # its session installs torch and transformers too: tests/jax/test_cross_framework.py,
    # test_readme.py and test_train.py (the cross-framework training equivalence)
    Implementation("jax", "auto", "the platform's strategy (above)",
                   ("#1f77b4", "o"), devices=_GPU, bench=_GPU, bench_cases="other",
                   conformance="jax", adapter="JaxAdapter", extras="test,jax,torch,hf,train",
                   tests=("tests/jax",), dtypes=_FLOATS),
    Implementation("jax", "sequential", "lax.scan over time", ("#17becf", "<"), devices=_GPU,
                   bench=_GPU, bench_cases="scan", quick=False, dtypes=_FLOATS),
    Implementation("jax", "associative", "lax.associative_scan", ("#9467bd", ">"),
                   devices=_GPU, bench=_GPU, bench_cases="scan", quick=False, dtypes=_FLOATS),
    Implementation("jax", "chunked", "sequential within chunks, associative across",
                   ("#393b79", "D"), devices=_GPU, bench=_GPU, bench_cases="scan",
                   quick=False, dtypes=_FLOATS),
    Implementation("jax", "pallas", "Pallas kernels (liquidssm.jax.pallas)", ("#e377c2", "P"),
                   devices=("cuda", "tpu"), bench=("cuda", "tpu"), bench_cases="scan",
                   quick=False, conformance="jax-pallas", adapter="JaxPallasAdapter",
                   extras="test,jax", interpret_env={"LIQUIDSSM_PALLAS_INTERPRET": "1"},
                   tests=("tests/jax/test_pallas.py", "tests/jax/test_pallas_lowering.py"),
                   dtypes=("float32", "bfloat16")),
)

PEERS = (
    Peer("mambapy", "mambapy", "pscan", ("cpu", "cuda"), ("#2ca02c", "X")),
    Peer("accelerated-scan", "accelerated_scan", "ref", ("cpu", "cuda"), ("#bcbd22", "*")),
    Peer("accelerated-scan", "accelerated_scan", "triton", ("cuda",), ("#ad494a", "h")),
    Peer("accelerated-scan", "accelerated_scan", "warp", ("cuda",), ("#637939", "p")),
    Peer("mamba_ssm", "mamba_ssm", "cuda", ("cuda",), ("#000000", "d")),
    Peer("s5-pytorch", "s5", "apply_ssm", ("cpu", "cuda"), ("#e7969c", "8")),
    # not a library: issue 17's CPU roofline reference (liquidssm.bench.peers.fused_loop)
    Peer("numba", "numba", "fused-loop", ("cpu",), ("#7b4173", "1")),
)


def implementations(backend: str | None = None) -> tuple[Implementation, ...]:
    """The records of `backend` (all when None), in registry order."""
    return tuple(i for i in IMPLEMENTATIONS if backend is None or i.backend == backend)


def names(backend: str) -> tuple[str, ...]:
    """The implementation names of `backend`: the valid values of its select_env."""
    return tuple(i.name for i in implementations(backend))


def get(key: str) -> Implementation:
    """The record of 'backend:name'; a KeyError lists the known keys."""
    for i in IMPLEMENTATIONS:
        if i.key == key:
            return i
    raise KeyError(f"no implementation {key!r}; known: {[i.key for i in IMPLEMENTATIONS]}")


def conformance() -> dict[str, Implementation]:
    """Conformance session name -> its implementation record, in registry order."""
    return {i.conformance: i for i in IMPLEMENTATIONS if i.conformance}


def styles() -> dict[str, tuple[str, str]]:
    """'backend:impl' or 'peer:impl' -> (colour, marker), for every implementation and peer."""
    return {r.key: r.style for r in (*IMPLEMENTATIONS, *PEERS)}
