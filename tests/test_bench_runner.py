"""liquidssm.bench.runner: the progress bar's total, the quick sweep's lengths and skip rows,
and the machine-load figures in every row (numpy / peers only, in this process, tiny)."""

from __future__ import annotations

import os

import pytest
from liquidssm.bench import cases, runner


class _Bar:
    """Stands in for tqdm: records the total and the updates."""

    made: list = []

    def __init__(self, total, **kw):
        self.total, self.n = total, 0
        _Bar.made.append(self)

    def set_postfix_str(self, s):
        pass

    def update(self, n):
        self.n += n

    def close(self):
        pass


def test_progress_total_counts_every_row_peers_included(monkeypatch):
    """The peers group emits one row per peer of a case's target (skips included), more rows
    than cases: the bar's total is the number of rows."""
    pytest.importorskip("torch")
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    _Bar.made.clear()
    rows = runner.run(backends=["numpy", "peers"], targets=["diag_scan"], quick=True,
                      progress=True, in_process=True)
    (bar,) = _Bar.made
    n_cases = len(cases.sweep("quick-cpu", ["diag_scan"]))
    assert bar.total == bar.n == len(rows) > 2 * n_cases
    sweep = cases.sweep("quick-cpu", ["diag_scan"])
    assert runner.expected_rows("peers", sweep) == len(rows) - n_cases
    assert runner.expected_rows("numpy", sweep) == n_cases


def test_quick_sweeps_have_three_lengths_per_series():
    for name in ("quick-cpu", "quick-cuda"):
        series = {}
        for c in cases.sweep(name):
            if c.axis == "length" and c.mode != "step" and c.dtype == "float32":
                series.setdefault((c.target, c.mode), set()).add(c.length)
        assert series and all(len(ls) >= 3 for ls in series.values()), (name, series)
    assert max(c.length for c in cases.sweep("quick-cpu")) <= 256  # quick stays quick


def test_quick_jax_forward_backward_is_a_skip_row_with_the_reason():
    pytest.importorskip("jax")
    rows = runner.run(backends=["jax"], targets=["s4d", "mamba"], modes=["fwd+bwd"], quick=True,
                      progress=False, in_process=True)
    assert len(rows) == len(cases.sweep("quick-cpu", ["s4d", "mamba"], ["fwd+bwd"])) > 0
    for r in rows:
        assert (r["backend"], r["impl"], r["status"]) == ("jax", "auto", "skip")
        assert "--quick" in r["note"] and "forward + backward" in r["note"]


def test_rows_carry_the_load_at_the_start_and_the_end():
    rows = runner.run(backends=["numpy"], targets=["s4d"], modes=["step"], quick=True,
                      progress=False, in_process=True)
    assert rows
    for r in rows:
        assert r["cpus"] == os.cpu_count()
        assert r["load_start"] >= 0 and r["load_end"] >= 0
        assert r["host_copy_gbps_start"] > 0 and r["host_copy_gbps_end"] > 0
