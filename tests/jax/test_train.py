"""The JAX loop: cross-framework training equivalence (the same config, seed and batches in
torch and JAX, float64: the same loss at every step), a smoke run, the SSM labels, exact resume.
x64 is on (tests/jax/conftest.py)."""

import jax
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from liquidssm import _modules, tasks  # noqa: E402
from liquidssm.train import TrainConfig, jax_loop, run, torch_loop  # noqa: E402

STEPS = 30
TINY = {"induction": dict(n=20, length=16)}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _config(model, backend, **kw):
    fields = dict(task="digits", model=model, backend=backend, steps=STEPS, batch_size=4,
                  eval_every=STEPS, d_model=8, n_layers=1, dtype="float64", lr=1e-2,
                  ssm_lr=2e-3, weight_decay=0.1, warmup=5, clip=0.5, progress=False)
    fields.update(kw)
    return TrainConfig(**fields)


@pytest.mark.parametrize("model", ["s4d", "mamba", "liquid_s5"])
def test_torch_and_jax_train_alike_float64(model):
    """30 AdamW steps (warm-up, cosine, clipping active at 0.5, weight decay, the SSM group):
    the per-step losses agree to 1e-9 relative (measured: 3.4e-16 s4d, 2.2e-16 mamba, 3.9e-16
    liquid_s5, i.e. rounding, on the 2-core CPU). Float64
    differences come from summation order only; they grow with the steps as the parameters'
    trajectories separate slightly, so 1e-9 leaves room while still catching any difference in
    the optimizer, schedule, clipping or grouping (those change the loss at 1e-3 or more)."""
    task = tasks.get("digits")
    t = torch_loop.Trainer(_config(model, "torch"), task, 8)
    j = jax_loop.Trainer(_config(model, "jax"), task, 8)
    assert t.n_params == j.n_params
    worst = 0.0
    for step in range(STEPS):
        x, y = task.train_batch(step, 4)
        lt, lj = t.train_step(step, x, y), j.train_step(step, x, y)
        worst = max(worst, abs(lt - lj) / abs(lt))
    print(f"{model}: largest relative loss difference over {STEPS} steps: {worst:.2e}")
    assert worst < 1e-9
    ex, ey = next(task.eval_batches("test", 8))
    np.testing.assert_allclose(t.eval_batch(ex, ey), j.eval_batch(ex, ey), rtol=1e-9)


def test_ssm_labels_match_torch_groups():
    task = tasks.get("induction", **TINY["induction"])
    cfg = dict(task="induction", steps=2, d_model=8, n_layers=1, task_options=TINY["induction"])
    for model in ("s4d", "s5", "mamba", "liquid_mamba"):
        j = jax_loop.Trainer(TrainConfig(model=model, backend="jax", **cfg), task, 8)
        t = torch_loop.Trainer(TrainConfig(model=model, backend="torch", **cfg), task, 8)
        labels = jax_loop.ssm_labels(j.params, _modules.ssm_leaves(t.model.config))
        n_ssm = sum(int(np.prod(p.shape)) for p, lab in zip(
            jax.tree_util.tree_leaves(j.params), jax.tree_util.tree_leaves(labels))
            if lab == "ssm")
        assert n_ssm == t.ssm_params > 0, model


@pytest.mark.parametrize("model", ["s4d", "transformer"])
def test_jax_smoke_and_resume(model, tmp_path, monkeypatch):
    """Interrupt after the step-3 checkpoint, resume: the same rows as an uninterrupted run
    (digits, one eval batch: every jitted function compiles for one shape only)."""
    kw = dict(task="digits", model=model, backend="jax", steps=6, eval_every=3,
              batch_size=2, eval_batches=1, d_model=8, n_layers=1, progress=False)
    full = run(TrainConfig(out=str(tmp_path / "a"), **kw))
    task = tasks.get("digits")
    original = task.train_batch

    def interrupted(step, batch_size):
        if step == 4:
            raise KeyboardInterrupt
        return original(step, batch_size)

    monkeypatch.setattr(task, "train_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(TrainConfig(out=str(tmp_path / "b"), **kw))
    monkeypatch.setattr(task, "train_batch", original)
    resumed = run(TrainConfig(out=str(tmp_path / "b"), resume=True, **kw))
    key = ("step", "split", "loss", "value")
    assert [tuple(str(r[k]) for k in key) for r in resumed["rows"]] == \
        [tuple(str(r[k]) for k in key) for r in full["rows"]]
    assert np.isfinite(full["final"]["test"][0])


#: tiny task options (as tests/torch/test_train.py)
SMOKE = {"listops": dict(n=4), "listops-short": dict(n=20), "selective-copy": dict(n=20),
         "induction": dict(n=20, length=16), "bytes": dict(length=32, eval_windows=2)}


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_jax_smoke_every_task(name, tmp_path):
    """Every task trains with the JAX loop: two steps of a tiny S4D, finite losses on every
    split, metrics.csv and the checkpoint written."""
    if name == "gunpoint":
        import importlib.metadata

        try:
            importlib.metadata.distribution("aeon")
        except importlib.metadata.PackageNotFoundError:
            pytest.skip("the aeon wheel's data files (pip install --no-deps aeon)")
    result = run(TrainConfig(task=name, model="s4d", backend="jax", steps=2, batch_size=2,
                             eval_every=2, eval_batches=1, d_model=8, n_layers=1,
                             progress=False, out=str(tmp_path), task_options=SMOKE.get(name, {})))
    task = tasks.get(name, **SMOKE.get(name, {}))
    assert {r["split"] for r in result["rows"]} == {"train", *task.eval_splits}
    assert all(np.isfinite(float(r["loss"])) for r in result["rows"])
    assert (tmp_path / "metrics.csv").exists()
    assert (tmp_path / "checkpoint" / "model" / "config.json").exists()


_CLI = ["-m", "liquidssm.cli", "train", "digits", "--model", "mamba", "--backend", "jax",
        "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--dtype", "float64",
        "--d-model", "8", "--no-progress"]


def _losses(path):
    import csv

    with open(path / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_data_parallel_devices_train_as_one(tmp_path):
    """`liquidssm train --backend jax --devices 4` (4 host devices, the batch sharded over a
    ('data',) mesh) writes the one-device losses (float64); the sharding is real."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu")
    for name, extra in (("one", []), ("four", ["--devices", "4"])):
        r = subprocess.run([sys.executable, *_CLI, "--out", str(tmp_path / name), *extra],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    one, four = _losses(tmp_path / "one"), _losses(tmp_path / "four")
    assert len(one) == len(four) == 6
    assert max(abs(a - b) for a, b in zip(one, four)) < 1e-12
    probe = ("import jax; from liquidssm.train.jax_loop import _data_parallel; "
             "s = _data_parallel(4); print(len(jax.devices()), s.mesh.devices.size, s.spec)")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.split()[:2] == ["4", "4"] and "data" in r.stdout, r.stdout + r.stderr


def test_devices_beyond_the_machine_is_a_clear_error():
    with pytest.raises(ValueError, match="devices: expected at most the 1 cpu devices"):
        jax_loop._data_parallel(len(jax.devices()) + 1 if len(jax.devices()) > 1 else 2)
    with pytest.raises(ValueError, match="devices: a JAX mesh option"):
        TrainConfig(task="digits", backend="torch", devices=2)
    with pytest.raises(ValueError, match="batch_size: expected a multiple of the 3"):
        TrainConfig(task="digits", backend="jax", devices=3, batch_size=8)
