"""The `liquidssm` command: info, check and bench (numpy only, in-process, tiny)."""

from __future__ import annotations

import json

import pytest
from liquidssm import cli
from liquidssm.bench import cases, report, runner


def test_info_lists_every_backend(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("liquidssm ")
    for name in ("numpy", "torch", "jax"):
        assert f"\n  {name}" in out


def test_check_runs_the_suite_and_prints_the_matrix(tmp_path, capsys):
    rc = cli.main(["check", "--backend", "numpy", "--report-dir", str(tmp_path), "--",
                   "-k", "test_outputs and s4d-lin-zoh-conv-L7"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "numpy" in out and "s4d" in out  # the matrix, printed
    table = json.loads((tmp_path / "report.json").read_text())["numpy"]["table"]
    assert table["s4d"]["outputs"]["status"] == "pass"


def test_bench_rejects_a_bad_device_and_backend():
    with pytest.raises(SystemExit, match="--device"):
        cli.main(["bench", "--device", "tpu"])
    with pytest.raises(SystemExit):
        cli.main(["bench", "--backend", "mxnet"])


def test_quick_numpy_rows_tables_and_plots(tmp_path):
    """One op and one layer of the quick sweep on the spec, in this process: tidy rows with
    quantiles in order, and the files the README shows."""
    rows = runner.run(backends=["numpy"], targets=["selective_scan", "s4d"], quick=True,
                      progress=False, in_process=True)
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, rows
    for r in ok:
        assert set(report.COLUMNS) - {"rel_err"} <= set(r)  # rel_err: peer rows only
        assert 0 < r["p20_ms"] <= r["p50_ms"] <= r["p80_ms"]
        assert r["backend"] == "numpy" and r["device"] == "cpu"
    assert {r["mode"] for r in ok if r["variant"] == "s4d"} >= {"fwd", "step"}
    paths = report.write(rows, tmp_path)
    assert (tmp_path / "rows.csv").exists() and (tmp_path / "rows.json").exists()
    assert "selective_scan" in (tmp_path / "tables.md").read_text()
    assert all(p.exists() for p in paths["plots"])


def test_sweeps_are_ordered_by_length():
    for name in cases.SWEEPS:
        sweep = cases.sweep(name)
        assert sweep
        series = {}
        for c in sweep:
            if c.axis == "length":
                series.setdefault((c.target, c.mode, c.dtype), []).append(c.length)
        assert all(ls == sorted(ls) for ls in series.values())


def test_version_is_the_package_version(capsys):
    import liquidssm

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"liquidssm {liquidssm.__version__}"


def test_an_unknown_option_of_check_prints_checks_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", "--fast"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: liquidssm check")
    assert "liquidssm check: error: unrecognized arguments: --fast" in err


def test_bench_help_says_where_output_goes_and_what_device_means(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: ./liquidssm-bench" in out
    assert "--device DEVICE where the backends run: cpu, or cuda" in out


def test_bench_from_missing_rows_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "nonexistent.json"
    proc = subprocess.run([sys.executable, "-m", "liquidssm.cli", "bench", "--from-rows",
                           str(missing), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"liquidssm bench: error: --from-rows {missing}: "
                                   "No such file or directory")
    (tmp_path / "bad.json").write_text('{"not": "rows"}')
    assert cli.main(["bench", "--from-rows", str(tmp_path / "bad.json")]) == 2
