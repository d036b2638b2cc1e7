"""The conformance suite itself: it catches a broken backend, and its fixtures are current."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from liquidssm.conformance import checks, fixtures
from liquidssm.conformance.adapters import NumpyAdapter, Unsupported
from liquidssm.conformance.cases import CASES, DTYPE_CASES
from liquidssm.spec import _dispatch
from liquidssm.spec.scan import diag_scan

ROOT = Path(__file__).resolve().parents[1]
OFF = 1e-3  # the broken primitive's relative error


def _break_diag_scan(set_attr, set_item):
    """Make diag_scan on NumPy arrays return (1 + 1e-3) times the right answer, everywhere the
    spec calls it (through the dispatch a real backend uses to register its primitives)."""
    framework_of = _dispatch.framework_of

    def off(*args, **kwargs):
        return diag_scan.reference(*args, **kwargs) * (1 + OFF)

    set_attr(_dispatch, "framework_of",
             lambda x: "broken" if isinstance(x, np.ndarray) else framework_of(x))
    set_item(_dispatch._IMPLEMENTATIONS, ("broken", "diag_scan"), off)


class BrokenAdapter(NumpyAdapter):
    """The numpy backend with diag_scan off by 1e-3 (for the subprocess run below)."""

    name = "broken-numpy"

    def __init__(self, device="cpu"):
        super().__init__(device)
        _break_diag_scan(setattr, dict.__setitem__)


def _outcomes(adapter, dtype, cases):
    """{case name: set of failed checks} over outputs / step / chunked."""
    failed = {}
    for case in cases:
        for check in (checks.check_outputs, checks.check_step, checks.check_chunked):
            try:
                check(adapter, case, dtype)
            except Unsupported:
                pass
            except AssertionError:
                failed.setdefault(case.name, set()).add(check.__name__)
    return failed


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_primitive_off_by_1e_3_is_caught(monkeypatch, dtype):
    _break_diag_scan(monkeypatch.setattr, monkeypatch.setitem)
    chosen = [c for c in CASES if c.length <= 64 and (
        c.target in ("diag_scan", "s5", "s4d", "mamba", "selective_scan"))]
    failed = _outcomes(NumpyAdapter(), dtype, chosen)
    for c in chosen:
        if c.target == "diag_scan":  # the broken primitive itself, in every case
            assert "check_outputs" in failed.get(c.name, ()), c.name
        # S5 runs on diag_scan, but only part of y (D u is the rest): a 1e-3 scan error moves
        # y by 6e-6 .. 2e-4 (measured), caught by the float64 tolerance (1e-9), not float32's
        if c.target == "s5" and dtype == "float64":
            assert "check_outputs" in failed.get(c.name, ()), c.name
        if c.target in ("mamba", "selective_scan"):  # they do not use it: no false alarm
            assert c.name not in failed, (c.name, failed.get(c.name))
    # S4D's conv mode uses the FFT, but its recurrent mode and step use diag_scan
    assert "check_outputs" in failed["s4d-inv-bilinear-rec-L16-b2"]
    assert "check_step" in failed["s4d-lin-zoh-conv-L7-b2"]


def test_the_dtype_check_catches_a_float64_parameter_promotion(monkeypatch):
    """Without the spec's cast of parameters and states to u's dtype, float64 init parameters
    turn a float32 Mamba forward into float64 (the bug the check was written for)."""
    from liquidssm.spec import liquid_mamba, mamba

    case = next(c for c in DTYPE_CASES if c.target == "mamba")
    checks.check_dtypes(NumpyAdapter(), case, "float32")
    for mod in (mamba, liquid_mamba):
        monkeypatch.setattr(mod, "cast_arrays", lambda arrays, dtype: arrays)
    with pytest.raises(AssertionError, match="dtype float64, expected float32"):
        checks.check_dtypes(NumpyAdapter(), case, "float32")
    checks.check_dtypes(NumpyAdapter(), case, "float64")  # float64 in: nothing to promote


def test_the_suite_run_by_pytest_reports_the_broken_backend(tmp_path):
    """The documented command line, with a custom adapter: it fails and the report says where."""
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--pyargs", "liquidssm.conformance",
        "--backend", "tests.test_conformance_meta:BrokenAdapter", "--report-dir", str(tmp_path),
        "-k", "test_outputs and float64 and (diag_scan or mamba-L7)",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "liquidssm conformance" in res.stdout  # the printed matrix
    report = json.loads((tmp_path / "report.json").read_text())["broken-numpy"]["table"]
    n_diag = sum(c.target == "diag_scan" for c in CASES)
    assert report["diag_scan"]["outputs"]["failed"] == n_diag
    assert report["mamba"]["outputs"]["status"] == "pass"
    assert "FAIL" in (tmp_path / "report.md").read_text()


def test_fixtures_match_a_regeneration(capsys):
    """The committed fixtures are what the spec computes now (regenerate with
    `python -m liquidssm.conformance.fixtures` when the spec changes)."""
    code = fixtures.main(["--check"])
    assert code == 0, capsys.readouterr().out[-3000:]


def test_fixture_comparison_sees_a_change():
    case = next(c for c in CASES if c.target == "diag_scan")
    old = fixtures.load(case.name)
    new = dict(old)
    new["out/0"] = old["out/0"] * (1 + 1e-9)
    assert fixtures.compare(new, old)
    assert not fixtures.compare(dict(old), old)


def test_bfloat16_rounding_is_nearest_even():
    """fixtures.round_to: bfloat16 keeps 8 significant bits; ties go to the even neighbour."""
    ulp = 2.0**-7  # spacing of bfloat16 in [1, 2)
    x = np.array([1.0, 1 + ulp / 2, 1 + 1.5 * ulp, 1 + 0.51 * ulp, -3.0e-30, 65504.0])
    got = fixtures.round_to(x, "bfloat16")
    np.testing.assert_array_equal(got[:4], [1.0, 1.0, 1 + 2 * ulp, 1 + ulp])
    assert abs(got[4] / x[4] - 1) < 2**-8 and got[5] == 65536.0
    np.testing.assert_array_equal(fixtures.round_to(x, "float16")[:1], [1.0])
