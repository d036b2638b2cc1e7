"""The NumPy backend: the specification itself, exposed through the common API.

Arrays are NumPy (float64, or float32: the spec casts parameters and states to u's dtype, so
init's float64 parameters with float32 u return float32); the functions are the spec's, unchanged.

LIQUIDSSM_NUMPY_IMPL (auto | the registry's numpy records: spec, array_api_strict, numba)
chooses what the scan primitives (diag_scan, liquid_scan, selective_scan, liquid_selective_scan)
and selective_state_update run: numba runs liquidssm.cpu's forward kernels on NumPy arrays (the
registry record's module), every other value the spec (the reference; auto too, so that the
NumPy backend stays the reference). The variants, blocks and models call the spec's primitives
and so run the spec either way.
"""

import functools
import importlib
import os

from liquidssm import registry
from liquidssm import spec as _spec
from liquidssm.spec import (  # noqa: F401
    dense_scan,
    liquid_mamba,
    liquid_s4,
    liquid_s5,
    mamba,
    mamba_block,
    mamba_lm,
    s4,
    s4_block,
    s4d,
    s5,
    s5_layer,
    sequence_model,
)

name = "numpy"

ENV = registry.BACKENDS["numpy"].select_env


def implementation(name: str = "selective_scan") -> str:
    """The numpy record that runs primitive `name` now: "numba" where LIQUIDSSM_NUMPY_IMPL=numba
    and the record has its kernel (a RuntimeError when numba is not installed), else "spec"."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    choices = ("auto", *registry.names("numpy"))
    if value not in choices:
        raise ValueError(f"{ENV}: expected one of {list(choices)}, got {value!r}")
    if value != "numba":
        return "spec"
    record = registry.get("numpy:numba")
    missing = record.missing()
    if missing:
        raise RuntimeError(f"{ENV}='numba': the package {missing[0]!r} is not installed "
                           f"(pip install 'liquidssm[{record.extra}]')")
    return "numba" if name in record.kernels else "spec"


def _primitive(name: str):
    """The spec's primitive `name`, or the numba record's where `implementation` chooses it
    (the variable is read on every call)."""
    reference = getattr(_spec, name)

    @functools.wraps(reference)
    def run(*args, **kwargs):
        if implementation(name) == "spec":
            return reference(*args, **kwargs)
        module = importlib.import_module(registry.get("numpy:numba").module)
        return getattr(module, name)(*args, **kwargs)

    return run


diag_scan = _primitive("diag_scan")
liquid_scan = _primitive("liquid_scan")
selective_scan = _primitive("selective_scan")
liquid_selective_scan = _primitive("liquid_selective_scan")
selective_state_update = _primitive("selective_state_update")
