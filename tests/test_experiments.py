"""The quality-experiment runner (liquidssm.train.experiments) without training: `run` is
replaced by a stub that returns one value per evaluated split."""

import csv

import pytest

pytest.importorskip("liquidssm.train.experiments")
from liquidssm.train import experiments  # noqa: E402
from liquidssm.train.common import TrainConfig  # noqa: E402


def test_one_row_per_test_split_and_dtype(tmp_path, monkeypatch):
    calls = []

    def fake_run(config):
        calls.append((config.task, config.dtype, config.out))
        final = {s: (1.0, 0.5 + 0.1 * i) for i, s in
                 enumerate(("val", "test", "test_4x", "test_16x"))}
        return {"n_params": 10, "d_model": 8, "final": final, "wall_s": 1.0,
                "metric": "accuracy"}

    plan = [TrainConfig(task="induction", model="s4d", steps=3, task_options=dict(n=40)),
            TrainConfig(task="induction", model="s4d", steps=3, dtype="float64",
                        task_options=dict(n=40))]
    monkeypatch.setattr(experiments, "run", fake_run)
    monkeypatch.setitem(experiments.PLANS, "stub", lambda: plan)
    experiments.main(str(tmp_path), "stub")
    with (tmp_path / "rows.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["split"], r["dtype"]) for r in rows] == [
        (s, d) for d in ("float32", "float64") for s in ("test", "test_4x", "test_16x")]
    assert [float(r["value"]) for r in rows[:3]] == [0.6, 0.7, 0.8]
    # each split's own trivial baseline
    assert {r["split"]: r["baseline"] for r in rows[:3]}.keys() == {"test", "test_4x",
                                                                     "test_16x"}
    assert calls[1][2].endswith("-float64") and not calls[0][2].endswith("-float64")
    table = (tmp_path / "table.md").read_text()
    assert "| induction | test_16x | s4d | torch | float64 |" in table
    # done runs are skipped: a second pass trains nothing
    experiments.main(str(tmp_path), "stub")
    assert len(calls) == 2


def test_liquid_mamba_ablations_keep_exactly_the_changes_their_names_say():
    """'-X': Mamba plus LiquidMamba's change X only; '-noX': LiquidMamba without X only (X in
    scan = liquid_degree > 1, conv = the gated conv, ffn = an FFN after the mixer)."""
    from liquidssm.spec import liquid_mamba
    from liquidssm.train.common import MODELS, SSM_DEFAULTS

    def changes(ssm):
        c = liquid_mamba.Config(d_model=8, **ssm)
        return {k for k, on in (("scan", c.liquid_degree > 1), ("conv", c.conv == "gated"),
                                ("ffn", c.ffn != "none")) if on}

    assert changes(SSM_DEFAULTS["liquid_mamba"]) == {"scan", "conv", "ffn"}
    names = [m for m in MODELS if m.startswith("liquid_mamba-")]
    assert len(names) == 6
    for name in names:
        part = name.split("-")[1]
        expected = ({"scan", "conv", "ffn"} - {part[2:]}) if part.startswith("no") else {part}
        assert changes(SSM_DEFAULTS[name]) == expected, name
