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
    # S4D's recurrent mode uses diag_scan; its conv mode (the FFT) and its step (the direct
    # update x = Abar x + Bbar u of the decode fast path, spec.s4d._step) do not
    assert {"check_outputs", "check_chunked"} <= failed["s4d-inv-bilinear-rec-L16-b2"]
    assert "s4d-lin-zoh-conv-L7-b2" not in failed, failed.get("s4d-lin-zoh-conv-L7-b2")


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


# ------------------------------------------------------------------------------------------
# blocks and models


def test_every_block_and_model_is_a_target_with_cases():
    import liquidssm
    from liquidssm.conformance import cases, report

    assert cases.BLOCKS == liquidssm.BLOCKS and cases.MODELS == liquidssm.MODELS
    assert cases.VARIANTS == liquidssm.VARIANTS
    for t in cases.MODULES:
        assert t in report.TARGETS and t in checks.ERROR_SCENARIOS
        assert any(c.target == t and c.grad for c in CASES), t
        assert any(c.target == t and c.streaming and c.state for c in CASES), t


def test_sequence_model_cases_cover_its_choices():
    from liquidssm.conformance import runner
    from liquidssm.spec import sequence_model

    cfgs = [runner.config(c) for c in CASES if c.target == "sequence_model"]
    # every kind of layer (S4 block, S5 layer, Mamba block, LiquidMamba)
    assert {sequence_model.LAYERS[c.layer] for c in cfgs} == set(sequence_model.LAYERS.values())
    assert {c.head for c in cfgs} == set(sequence_model.HEADS)
    assert {c.norm_f for c in cfgs} == set(sequence_model.NORMS)
    assert {c.tokens for c in cfgs} == {True, False}
    assert {c.tie_embeddings for c in cfgs if c.head == "lm"} == {True, False}
    assert max(c.n_layers for c in cfgs) == 2


def test_nested_configs_round_trip_through_the_manifest():
    """The manifest stores every module case's full Config as JSON; it rebuilds the Config."""
    from liquidssm.conformance import _config, runner

    entries = fixtures.load_manifest()["cases"]
    for case in CASES:
        if not case.is_module:
            continue
        cfg = runner.config(case)
        d = json.loads(json.dumps(_config.to_dict(cfg)))
        assert _config.from_dict(d) == cfg, case.name
        assert _config.from_dict(entries[case.name]["config"], case.target) == cfg, case.name
    nested = _config.to_dict(runner.config(next(c for c in CASES if c.target == "s4_block")))
    assert nested["__config__"] == "s4_block" and nested["ssm"]["__config__"] == "s4d"
    with pytest.raises(ValueError, match="expected 's5_layer'"):
        _config.from_dict(nested, "s5_layer")


def test_a_broken_block_is_caught(monkeypatch):
    """The S4 block's feed-forward off by 1e-3: every case built on it fails its outputs, the
    Mamba block's do not."""
    import liquidssm.spec.s4_block as s4_block

    good = s4_block.feedforward
    monkeypatch.setattr(s4_block, "feedforward", lambda *a, **k: good(*a, **k) * (1 + OFF))
    chosen = [c for c in CASES if c.length <= 16 and c.target in (
        "s4_block", "mamba_block", "sequence_model")]
    failed = _outcomes(NumpyAdapter(), "float64", chosen)
    for c in chosen:
        uses_s4_block = c.target == "s4_block" or c.config.get("layer") in ("s4d", "s4",
                                                                          "liquid_s4")
        assert ("check_outputs" in failed.get(c.name, ())) == uses_s4_block, c.name
    assert any(c.target == "sequence_model" and c.name in failed for c in chosen)
