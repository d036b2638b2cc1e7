"""liquidssm train with the torch loop: a smoke run of every task (two steps of a tiny model:
finite losses, metrics.csv, plot, checkpoint), the SSM parameter groups, exact resume after an
interruption, the command line. Quality is measured in benchmark runs, never here."""

import csv
import importlib.metadata

import numpy as np
import pytest
import torch
from liquidssm import tasks
from liquidssm.cli import main
from liquidssm.train import TrainConfig, run

pytest.importorskip("sklearn")

#: tiny task options (the smoke runs build small splits)
TINY = {"listops": dict(n=4), "listops-short": dict(n=20), "selective-copy": dict(n=20),
        "induction": dict(n=20, length=16), "bytes": dict(length=32, eval_windows=2)}


def _tiny(task, model="s4d", **kw):
    fields = dict(task=task, model=model, backend="torch", steps=2, batch_size=2, eval_every=2,
                  eval_batches=1, d_model=8, n_layers=1, progress=False,
                  task_options=TINY.get(task, {}))
    fields.update(kw)
    return TrainConfig(**fields)


@pytest.mark.parametrize("name", [n for n in tasks.TASKS if n != "gunpoint"] + ["gunpoint"])
def test_smoke_every_task(name, tmp_path):
    if name == "gunpoint":
        try:
            importlib.metadata.distribution("aeon")
        except importlib.metadata.PackageNotFoundError:
            pytest.skip("the aeon wheel's data files (pip install --no-deps aeon)")
    result = run(_tiny(name, out=str(tmp_path)))
    task = tasks.get(name, **TINY.get(name, {}))
    splits = {r["split"] for r in result["rows"]}
    assert splits == {"train", *task.eval_splits}
    assert all(np.isfinite(float(r["loss"])) for r in result["rows"])
    with open(tmp_path / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header == ["step", "split", "loss", "metric", "value", "tokens_per_s", "wall_s"]
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "checkpoint" / "model" / "config.json").exists()


@pytest.mark.parametrize("model", ["liquid_s4", "s5", "liquid_mamba", "transformer"])
def test_smoke_models(model, tmp_path):
    result = run(_tiny("selective-copy", model, out=str(tmp_path)))
    assert np.isfinite(result["final"]["test"][0])


def test_ssm_groups_no_weight_decay():
    from liquidssm.train.torch_loop import Trainer

    t = tasks.get("induction", **TINY["induction"])
    tr = Trainer(_tiny("induction", "mamba", lr=0.1, ssm_lr=0.01, weight_decay=0.3), t, 8)
    regular, ssm = tr.opt.param_groups
    names = {id(p): n for n, p in tr.model.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[-1] for p in ssm["params"]} == {"A_log", "D"}
    assert (ssm["weight_decay"], ssm["base_lr"]) == (0.0, 0.01)
    assert (regular["weight_decay"], regular["base_lr"]) == (0.3, 0.1)
    tr.train_step(0, *t.train_batch(0, 2))  # warm-up step 0 of 0.2 * steps: factor 1/1
    assert ssm["lr"] == pytest.approx(0.01) and regular["lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("model", ["s4d", "transformer"])
def test_resume_is_exact(model, tmp_path, monkeypatch):
    """Interrupt after the step-3 checkpoint (the batch of step 4 raises), resume: the same
    metrics rows and final weights as an uninterrupted run."""
    full = run(_tiny("induction", model, steps=6, eval_every=3, out=str(tmp_path / "a")))
    task = tasks.get("induction", **TINY["induction"])
    original = task.train_batch

    def interrupted(step, batch_size):
        if step == 4:
            raise KeyboardInterrupt
        return original(step, batch_size)

    monkeypatch.setattr(task, "train_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(_tiny("induction", model, steps=6, eval_every=3, out=str(tmp_path / "b")))
    monkeypatch.setattr(task, "train_batch", original)
    resumed = run(_tiny("induction", model, steps=6, eval_every=3, out=str(tmp_path / "b"),
                        resume=True))
    key = ("step", "split", "loss", "value")
    assert [tuple(str(r[k]) for k in key) for r in resumed["rows"]] == \
        [tuple(str(r[k]) for k in key) for r in full["rows"]]
    a = torch.load(tmp_path / "a" / "checkpoint" / "optimizer.pt")
    b = torch.load(tmp_path / "b" / "checkpoint" / "optimizer.pt")
    for sa, sb in zip(a["state"].values(), b["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def test_cli(tmp_path, capsys):
    assert main(["train", "digits", "--model", "s4d", "--backend", "torch", "--steps", "2",
                 "--d-model", "8", "--n-layers", "1", "--batch-size", "2", "--eval-batches",
                 "1", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "trivial baseline (accuracy, test)" in out and (tmp_path / "metrics.csv").exists()
    with pytest.raises(SystemExit) as err:
        main(["train", "digits", "--model", "s6", "--out", str(tmp_path)])
    assert err.value.code == 2 and "invalid choice: 's6'" in capsys.readouterr().err


def test_nproc_trains_as_one_process(tmp_path):
    """`liquidssm train --nproc 2` (torchrun, DDP over 2 gloo processes, each half of every
    batch) writes the one-process losses and accuracies (float64); only rank 0 writes."""
    import os
    import subprocess
    import sys

    cli = [sys.executable, "-m", "liquidssm.cli", "train", "digits", "--model", "mamba",
           "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--dtype", "float64",
           "--d-model", "8", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        r = subprocess.run([*cli, "--out", str(tmp_path / name), *extra], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.count("wrote ") == 1  # one report, rank 0's

    def rows(name):
        with open(tmp_path / name / "metrics.csv") as f:
            return [(float(r["loss"]), r["value"]) for r in csv.DictReader(f)]

    one, two = rows("one"), rows("two")
    assert len(one) == len(two) == 6
    for (la, va), (lb, vb) in zip(one, two):
        assert abs(la - lb) < 1e-12 and va == vb
