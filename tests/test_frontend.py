"""The front package: backend choice from LIQUIDSSM_BACKEND, lazy imports, clear errors."""

import os
import subprocess
import sys

import pytest


def run(code, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)


def test_default_backend_is_numpy_and_imports_no_framework():
    r = run(
        "import sys, liquidssm; print(liquidssm.backend());"
        "liquidssm.s4d; print('torch' in sys.modules, 'jax' in sys.modules)",
        LIQUIDSSM_BACKEND="",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["numpy", "False", "False"]


def test_numpy_backend_exports_the_spec():
    # the scan primitives are the spec's behind LIQUIDSSM_NUMPY_IMPL (unset: the spec itself)
    r = run(
        "import numpy as np, liquidssm, liquidssm.spec as s;"
        "assert liquidssm.s4d is s.s4d and liquidssm.selective_state_update.__wrapped__ is "
        "s.selective_state_update and liquidssm.selective_scan.__wrapped__ is s.selective_scan;"
        "a, b = np.full((1, 5, 2), 0.5), np.arange(20.0).reshape(2, 5, 2);"
        "assert liquidssm.numpy.implementation('diag_scan') == 'spec';"
        "assert np.array_equal(liquidssm.diag_scan(a, b), s.diag_scan.reference(a, b))",
        LIQUIDSSM_BACKEND="numpy", LIQUIDSSM_NUMPY_IMPL="",
    )
    assert r.returncode == 0, r.stderr


def test_unknown_backend_names_the_choices():
    r = run("import liquidssm; liquidssm.backend()", LIQUIDSSM_BACKEND="tensorflow")
    assert r.returncode != 0
    assert "LIQUIDSSM_BACKEND" in r.stderr and "'jax', 'numpy', 'torch'" in r.stderr
    assert "'tensorflow'" in r.stderr


def test_uninstalled_backend_names_the_extra(monkeypatch):
    import importlib.util

    import liquidssm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "jax" else real(n))
    monkeypatch.setenv("LIQUIDSSM_BACKEND", "jax")
    with pytest.raises(ImportError, match=r"pip install 'liquidssm\[jax\]'"):
        liquidssm._choose()


def test_unknown_attribute():
    import liquidssm

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        liquidssm.nope  # noqa: B018
