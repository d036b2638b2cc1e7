"""Implementation registry: which code runs a primitive
(LIQUIDSSM_TORCH_IMPL=auto|eager|triton|numba).

auto: the Triton kernels (liquidssm.torch.triton) for CUDA tensors when CUDA, the `triton`
package and the kernel are available; the numba kernels (liquidssm.cpu) for CPU tensors when
numba is installed and liquidssm.cpu has a kernel for the primitive; else eager PyTorch.
An explicit choice that cannot be honoured raises a RuntimeError naming the variable, the
choices and the reason.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch

from .. import registry

ENV = registry.BACKENDS["torch"].select_env
#: auto, then the registered implementations
CHOICES = ("auto", *registry.names("torch"))
_NUMBA, _TRITON = registry.get("torch:numba"), registry.get("torch:triton")

__all__ = ["ENV", "CHOICES", "requested", "implementation", "primitive"]


def requested() -> str:
    """The value of LIQUIDSSM_TORCH_IMPL (default auto), validated."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV}: expected one of {list(CHOICES)}, got {value!r}")
    return value


def _triton_problem(x, name: str, explicit: bool) -> str | None:
    """Why the Triton `name` cannot run on tensor x, or None if it can."""
    if importlib.util.find_spec("triton") is None:
        return f"the package 'triton' is not installed (pip install 'liquidssm[{_TRITON.extra}]')"
    interpret = explicit and os.environ.get("TRITON_INTERPRET") == "1"
    if not interpret:
        if not torch.cuda.is_available():
            return "CUDA is not available (TRITON_INTERPRET=1 runs the kernels on the CPU)"
        if not getattr(x, "is_cuda", False):
            return f"the input is on {getattr(x, 'device', 'no device')}, not on a CUDA device"
    kernels = importlib.import_module("liquidssm.torch.triton")
    if not getattr(kernels, "available", lambda: False)():
        return "liquidssm.torch.triton.available() is False"
    if not callable(getattr(kernels, name, None)):
        return f"liquidssm.torch.triton has no {name}"
    return None


def _numba_problem(x) -> str | None:
    """Why the numba kernels cannot run on tensor x, or None if they can."""
    if importlib.util.find_spec("numba") is None:
        return f"the package 'numba' is not installed (pip install 'liquidssm[{_NUMBA.extra}]')"
    if getattr(getattr(x, "device", None), "type", "cpu") != "cpu":
        return f"the input is on {x.device}, not on the CPU"
    return None


def implementation(x=None, name: str = "selective_scan") -> str:
    """'eager', 'triton' or 'numba': the implementation of primitive `name` for input tensor x.

    Explicit numba runs liquidssm.cpu's version of every primitive (which itself runs eager
    where it has no kernel, e.g. complex A); auto picks it only where it has a kernel."""
    choice = requested()
    if choice == "eager":
        return "eager"
    if choice == "numba" or (choice == "auto" and not getattr(x, "is_cuda", False)):
        problem = _numba_problem(x)
        if choice == "numba" and problem is not None:
            raise RuntimeError(f"{ENV}='numba': cannot run the numba {name}: {problem} "
                               f"(choices: {list(CHOICES)}; 'auto' falls back to eager)")
        if choice == "numba":
            return "numba"
        if problem is None and name in registry.get("torch:numba").kernels:
            return "numba"
    problem = _triton_problem(x, name, choice == "triton")
    if problem is None:
        return "triton"
    if choice == "triton":
        raise RuntimeError(
            f"{ENV}='triton': cannot run the Triton {name}: {problem} "
            f"(choices: {list(CHOICES)}; 'auto' falls back to eager)"
        )
    return "eager"


def primitive(name: str, eager):
    """`eager`, or liquidssm.torch.triton.<name> / liquidssm.cpu._torch.<name> where
    `implementation` chooses Triton / numba.

    The choice is made once per (LIQUIDSSM_TORCH_IMPL, TRITON_INTERPRET, device type) and kept
    (a choice that cannot be honoured raises every time): later calls are a dict read that
    torch.compile traces without a graph break. A first choice inside torch.compile runs
    untraced (torch.compiler.disable): it imports the kernels' modules (numba's own import-time
    functions would otherwise each be compiled: minutes of compile time)."""
    modules = {"triton": "liquidssm.torch.triton", "numba": "liquidssm.cpu._torch"}
    chosen = {}

    def choose(x):
        impl = implementation(x, name)
        return eager if impl == "eager" else getattr(importlib.import_module(modules[impl]), name)

    @functools.wraps(eager)
    def run(*args, **kwargs):
        x = args[0] if args else None
        key = (os.environ.get(ENV), os.environ.get("TRITON_INTERPRET"),
               getattr(getattr(x, "device", None), "type", None))
        fn = chosen.get(key)
        if fn is None:
            compiling = torch.compiler.is_compiling()
            fn = chosen[key] = (torch.compiler.disable(choose) if compiling else choose)(x)
        return fn(*args, **kwargs)

    run.eager = eager
    return run
