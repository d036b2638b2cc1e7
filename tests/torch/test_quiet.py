"""torch.compile of a liquidssm module prints nothing of liquidssm's making, and the eager path
loads no part of torch's compiler stack (issue 19)."""

import json
import subprocess
import sys
import warnings

import liquidssm.torch.nn as M
import pytest
import torch

#: the marks of the two warning sources issue 19 saw: dynamo meeting array_api_compat's
#: lru_cache-wrapped helpers inside the traced region, and torch.jit.script_method
NOISY = ("functools.lru_cache", "array_api_compat", "script_method")
#: where a warning of liquidssm's own making would be raised from
OURS = ("liquidssm", "/spec/", "/backends/")


def _ours_or_noisy(w) -> bool:
    return any(s in str(w.message) for s in NOISY) or any(s in w.filename for s in OURS)


def test_compile_is_quiet(monkeypatch):
    """A small Mamba (the spec's argument checks, dispatch to a primitive, the conv state) under
    torch.compile: no warning from the namespace lookups, the checks or liquidssm itself. Dynamo
    warns once per message and process: its cache is emptied so earlier tests cannot hide one."""
    monkeypatch.setenv("LIQUIDSSM_TORCH_IMPL", "eager")
    monkeypatch.setattr(torch._dynamo.utils, "warn_once_cache", set())
    torch._dynamo.reset()
    m = M.Mamba(d_model=4, d_state=2)
    u = torch.randn(1, 3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = torch.compile(m, backend="aot_eager")(u)
    torch.testing.assert_close(y, m(u))
    bad = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if _ours_or_noisy(w)]
    assert not bad, "\n".join(bad)


_PROBE = """
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import torch
    base = set(sys.modules)
    import liquidssm.torch.nn as M
    M.S4D(d_model=3, d_state=4)(torch.randn(1, 5, 3))
    M.Mamba(d_model=4, d_state=2)(torch.randn(1, 5, 4, requires_grad=True)).sum().backward()
    M.LiquidMamba(d_model=4, d_state=2)(torch.randn(1, 5, 4)).sum().backward()
print(json.dumps({"dynamo_after_import_torch": "torch._dynamo" in base,
                  "new": sorted(set(sys.modules) - base),
                  "warnings": [str(w.message)[:200] for w in caught]}))
"""


@pytest.mark.parametrize("impl", ["eager", "numba"])
def test_eager_path_loads_no_compiler(impl):
    """`import liquidssm.torch`, an S4D forward and Mamba / LiquidMamba forwards and backwards
    in a fresh process (LIQUIDSSM_TORCH_IMPL=eager, or numba: its kernels run through a
    torch.autograd.Function outside torch.compile, not the custom ops, whose first call imports
    torch._dynamo) import neither torch._dynamo nor torch._inductor, and warn nothing."""
    if impl == "numba":
        pytest.importorskip("numba")
    env = {"LIQUIDSSM_TORCH_IMPL": impl, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ, **env})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert not out["dynamo_after_import_torch"]  # else the check below tests nothing
    heavy = [m for m in out["new"] if m.startswith(("torch._dynamo", "torch._inductor"))]
    assert not heavy, heavy[:10]
    assert not out["warnings"], out["warnings"]
