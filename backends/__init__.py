"""liquidssm: S4, S5, Mamba and their liquid variants behind one interface.

The backend is chosen once, at first use, from the environment variable LIQUIDSSM_BACKEND
(numpy | torch | jax; default numpy). `liquidssm.s5`, `liquidssm.selective_scan`, ... resolve to
the active backend's objects; `liquidssm.numpy`, `liquidssm.torch`, `liquidssm.jax` can also be
imported directly. Importing liquidssm imports neither torch nor jax unless that backend is chosen.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from .registry import BACKENDS
from .spec import BLOCKS, MODELS, PRIMITIVES, VARIANTS

__version__ = "0.1.0"

_active: str | None = None


def _choose() -> str:
    name = os.environ.get("LIQUIDSSM_BACKEND", "numpy").strip().lower() or "numpy"
    if name not in BACKENDS:
        raise ValueError(
            f"LIQUIDSSM_BACKEND: expected one of {sorted(BACKENDS)}, got {name!r}"
        )
    record = BACKENDS[name]
    needs, extra = record.package, record.extra
    if importlib.util.find_spec(needs) is None:
        raise ImportError(
            f"LIQUIDSSM_BACKEND={name!r} needs the package {needs!r}, which is not installed; "
            f"install it with: pip install 'liquidssm[{extra}]' "
            f"(valid backends: {sorted(BACKENDS)})"
        )
    return name


def backend() -> str:
    """The name of the active backend (chosen from LIQUIDSSM_BACKEND at first use)."""
    global _active
    if _active is None:
        _active = _choose()
    return _active


def __getattr__(name):
    if name in BACKENDS:
        return importlib.import_module(BACKENDS[name].module)
    if name in VARIANTS or name in BLOCKS or name in MODELS or name in PRIMITIVES:
        return getattr(importlib.import_module(BACKENDS[backend()].module), name)
    raise AttributeError(f"module 'liquidssm' has no attribute {name!r}")
