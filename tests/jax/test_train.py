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
