"""Implementation registry: which code runs a primitive
(LIQUIDSSM_TORCH_IMPL=auto|eager|triton|numba).

The choices and their code are liquidssm.registry's torch records (Implementation.module, its
packages, devices and kernels); nothing here names one. auto: the first record, in registry
order, whose packages are installed, that runs on the input's device and has a kernel for the
primitive (today: the Triton kernels for CUDA tensors, the numba kernels for CPU tensors), else
eager PyTorch. An explicit choice that cannot be honoured raises a RuntimeError naming the
variable, the choices and the reason.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch

from .. import registry

ENV = registry.BACKENDS["torch"].select_env


def _choices() -> tuple[str, ...]:
    """auto and the registered torch implementations, read when a choice is made."""
    return ("auto", *registry.names("torch"))


#: auto, then the registered implementations (at import; the choice itself reads _choices())
CHOICES = _choices()


__all__ = ["ENV", "CHOICES", "requested", "implementation", "primitive"]


def requested() -> str:
    """The value of LIQUIDSSM_TORCH_IMPL (default auto), validated."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    choices = _choices()
    if value not in choices:
        raise ValueError(f"{ENV}: expected one of {list(choices)}, got {value!r}")
    return value


def _problem(record, x, name: str, explicit: bool) -> str | None:
    """Why implementation `record` cannot run primitive `name` on tensor x, or None if it can.
    An explicit choice may run a GPU kernel in its interpreter (record.interpret_env set) and
    runs the implementation's module for every primitive (which falls back to eager where it
    has no kernel); auto needs a kernel (record.kernels, or the module's own function)."""
    missing = record.missing()
    if missing:
        return (f"the package {missing[0]!r} is not installed "
                f"(pip install 'liquidssm[{record.extra}]')")
    device = getattr(getattr(x, "device", None), "type", "cpu")
    interpreted = explicit and record.interpret_env and all(
        os.environ.get(k) == v for k, v in record.interpret_env.items())
    if device not in record.devices and not interpreted:
        where = " or ".join(d.upper() if d != "cpu" else "the CPU" for d in record.devices)
        hint = "".join(f" ({k}={v} runs the kernels on the CPU)"
                       for k, v in record.interpret_env.items())
        if "cuda" in record.devices and not torch.cuda.is_available():
            return f"CUDA is not available{hint}"
        return f"the input is on {device}, not on {where}{hint}"
    if not explicit and record.kernels is not None and name not in record.kernels:
        return f"{record.module} has no kernel for {name}"
    module = importlib.import_module(record.module)
    if not getattr(module, "available", lambda: True)():
        return f"{record.module}.available() is False"
    if not callable(getattr(module, name, None)):
        return f"{record.module} has no {name}"
    return None


def implementation(x=None, name: str = "selective_scan") -> str:
    """The name of the implementation of primitive `name` for input tensor x: an explicit
    LIQUIDSSM_TORCH_IMPL (a RuntimeError saying why when it cannot run), or auto's choice: the
    first registered implementation that runs on x's device with a kernel for `name`, else
    eager."""
    choice = requested()
    if choice == "eager":
        return "eager"
    if choice != "auto":
        record = registry.get(f"torch:{choice}")
        problem = _problem(record, x, name, explicit=True)
        if problem is not None:
            raise RuntimeError(f"{ENV}={choice!r}: cannot run the {record.summary} {name}: "
                               f"{problem} (choices: {list(_choices())}; 'auto' falls back to "
                               f"eager)")
        return choice
    for record in registry.implementations("torch"):  # in order; those with code of their own
        if record.module is None:
            continue
        if _problem(record, x, name, explicit=False) is None:
            return record.name
    return "eager"


def primitive(name: str, eager, *, follows: str | None = None, on: int = 0):
    """`eager`, or <name> of the chosen implementation's module (its registry record's
    `module`: liquidssm.torch.triton, liquidssm.cpu._torch) where `implementation` chooses it
    (for primitive `follows` when given, on the input that is positional argument `on`; a
    module without a function <name> runs `eager`: the decode steps' unchecked state updates
    follow selective_state_update).

    The choice is made once per (LIQUIDSSM_TORCH_IMPL, TRITON_INTERPRET, device type) and kept
    (a choice that cannot be honoured raises every time): later calls are a dict read that
    torch.compile traces without a graph break. A first choice inside torch.compile runs
    untraced (torch.compiler.disable): it imports the kernels' modules (numba's own import-time
    functions would otherwise each be compiled: minutes of compile time)."""
    chosen = {}

    def choose(x):
        impl = implementation(x, follows or name)
        if impl == "eager":
            return eager
        module = importlib.import_module(registry.get(f"torch:{impl}").module)
        if follows is None:
            return getattr(module, name)
        fn = getattr(module, name, None)  # not a function (absent, or a submodule): eager
        return fn if callable(fn) else eager

    @functools.wraps(eager)
    def run(*args, **kwargs):
        x = args[on] if len(args) > on else None
        key = (os.environ.get(ENV), os.environ.get("TRITON_INTERPRET"),
               getattr(getattr(x, "device", None), "type", None))
        fn = chosen.get(key)
        if fn is None:
            compiling = torch.compiler.is_compiling()
            fn = chosen[key] = (torch.compiler.disable(choose) if compiling else choose)(x)
        return fn(*args, **kwargs)

    run.eager = eager
    return run
