"""What the torch and JAX training loops share: the run's config, the model config per variant,
the learning-rate schedule, the step loop (batches, evaluation, metrics, checkpoints, resume),
metrics.csv and the learning-curve plot. No framework imports here.

A framework supplies a Trainer (torch_loop.Trainer, jax_loop.Trainer) with
    n_params: int
    train_step(step, x, y) -> float loss           (one AdamW update, clipped, scheduled)
    eval_batch(x, y) -> (loss_sum, correct, count)  (sums over the batch's targets)
    save(dir), load(dir)                            (model + optimizer state, exact)
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from liquidssm.spec import VARIANTS

__all__ = ["TrainConfig", "MODELS", "model_config", "lr_factor", "run", "summarize",
           "METRICS_COLUMNS", "plot_curves"]

#: the small-model SSM settings per variant (everything else: the spec's defaults)
SSM_DEFAULTS = {
    "s4d": dict(d_state=32),
    "s4": dict(d_state=32),
    "liquid_s4": dict(d_state=32),  # base s4d, liquid_kernel "scan", degree 2 (spec defaults)
    "s5": dict(d_state=32, blocks=4),
    "liquid_s5": dict(d_state=32, blocks=4),
    "mamba": dict(d_state=16),
    "liquid_mamba": dict(d_state=16),  # liquid scan + gated conv + SwiGLU FFN (spec defaults)
    "liquid_mamba-scan": dict(d_state=16, conv="plain", ffn="none"),
    "liquid_mamba-conv": dict(d_state=16, liquid_degree=1, ffn="none"),
    "liquid_mamba-ffn": dict(d_state=16, liquid_degree=1, conv="plain"),
    # LiquidMamba with one of its three changes taken out (the other two kept)
    "liquid_mamba-noscan": dict(d_state=16, liquid_degree=1),
    "liquid_mamba-noconv": dict(d_state=16, conv="plain"),
    "liquid_mamba-noffn": dict(d_state=16, ffn="none"),
}
#: the --model choices: the library's variants, LiquidMamba's ablations (Mamba plus one of its
#: changes: "-scan" the liquid scan, "-conv" the gated conv, "-ffn" the FFN; LiquidMamba less
#: one: "-noscan", "-noconv", "-noffn") and the Transformer baseline
MODELS = (*VARIANTS, *(m for m in SSM_DEFAULTS if "-" in m), "transformer")
#: S5 layers: LayerNorm (the spec's BatchNorm is its inference form, not updated in training)
BLOCK_DEFAULTS = {"s5": dict(norm="layer"), "liquid_s5": dict(norm="layer")}

METRICS_COLUMNS = ("step", "split", "loss", "metric", "value", "tokens_per_s", "wall_s")


@dataclass
class TrainConfig:
    """One run. lr / ssm_lr: peak rates of the regular and the SSM parameters (the SSM ones get
    no weight decay); warmup: steps of linear warm-up (default 10% of steps), then cosine decay
    to 0 at `steps`; clip: the global gradient norm limit (torch's clip_grad_norm_ formula);
    dtype: float32 | bfloat16 (float32 master weights, the forward with bfloat16 parameters; the
    library then computes in float32 by its dtype policy) | float64; eval_every: steps between
    evaluations (and checkpoints); eval_batches: at most this many batches per split (None:
    all). d_model / n_layers: the width and depth (target_params: the largest d_model, a
    multiple of 4, whose parameter count is <= it, instead)."""

    task: str
    model: str = "s4d"
    backend: str = "torch"
    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    ssm_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int | None = None
    clip: float = 1.0
    dtype: str = "float32"
    eval_every: int = 50
    eval_batches: int | None = None
    seed: int = 0
    d_model: int = 32
    n_layers: int = 2
    target_params: int | None = None
    out: str | None = None
    resume: bool = False
    progress: bool = True
    task_options: dict = field(default_factory=dict)
    #: JAX: devices of the data-parallel mesh (the batch sharded over them). torch runs data
    #: parallel when launched by torchrun (`liquidssm train --nproc N`: WORLD_SIZE processes)
    devices: int = 1

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {self.model!r}")
        if self.backend not in ("torch", "jax"):
            raise ValueError(f"backend: expected 'torch' or 'jax', got {self.backend!r}")
        if self.dtype not in ("float32", "bfloat16", "float64"):
            raise ValueError(f"dtype: expected float32, bfloat16 or float64, got {self.dtype!r}")
        for name in ("steps", "batch_size", "eval_every", "d_model", "n_layers", "devices"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if self.devices > 1 and self.backend != "jax":
            raise ValueError("devices: a JAX mesh option; torch runs data parallel under "
                             "torchrun (liquidssm train --nproc N)")
        shards = max(self.devices, int(os.environ.get("WORLD_SIZE", "1")))
        if self.batch_size % shards:
            raise ValueError(f"batch_size: expected a multiple of the {shards} data-parallel "
                             f"shards, got {self.batch_size}")

    @property
    def warmup_steps(self) -> int:
        return max(1, self.steps // 10) if self.warmup is None else self.warmup


def lr_factor(step, steps: int, warmup: int, xp=math):
    """The schedule's multiplier of the peak rate at update `step` (0-based): (step + 1) / warmup
    during warm-up, then 0.5 (1 + cos(pi (step - warmup) / (steps - warmup))). `xp`: math for a
    Python number, jax.numpy for a traced step (optax's schedule)."""
    if xp is math:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    s = xp.asarray(step, dtype=xp.result_type(float))
    t = xp.clip((s - warmup) / max(1, steps - warmup), 0.0, 1.0)
    return xp.where(s < warmup, (s + 1) / warmup, 0.5 * (1 + xp.cos(math.pi * t)))


def model_config(task, model: str, d_model: int, n_layers: int) -> dict:
    """The SequenceModel fields for `task` (a liquidssm.tasks.Task) and variant `model` (not
    "transformer"): input (d_input or vocab_size), head (classify: pool; sequence: sequence;
    lm: lm) and the variant's small settings (SSM_DEFAULTS; S4's l_max = the task's length)."""
    variant = model.split("-")[0]
    ssm = dict(SSM_DEFAULTS[model])
    if variant == "s4":
        ssm["l_max"] = task.length
    fields = dict(d_model=d_model, n_layers=n_layers, layer=variant, ssm=ssm,
                  block=dict(BLOCK_DEFAULTS.get(variant, {})))
    fields.update(_io(task))
    return fields


def _io(task) -> dict:
    io = dict(vocab_size=task.vocab_size) if task.tokens else dict(d_input=task.d_input)
    if task.kind == "lm":
        io["head"] = "lm"
    else:
        io.update(head="pool" if task.kind == "classify" else "sequence",
                  d_output=task.n_classes)
    return io


def count_params(task, model: str, d_model: int, n_layers: int) -> int:
    """The trainable parameter count (the spec's shapes; the Transformer's own formula)."""
    if model == "transformer":
        from .transformer import n_params

        return n_params(task, d_model, n_layers)
    from ..spec import sequence_model

    config = sequence_model.Config(**model_config(task, model, d_model, n_layers))
    from .._modules import is_statistic

    return sum(math.prod(s) for k, s in sequence_model.param_shapes(config).items()
               if not is_statistic(k))


def width_for(task, model: str, n_layers: int, target: int) -> int:
    """The largest d_model (a multiple of 4, 8..1024) with count_params <= target (8 if none)."""
    best = 8
    for d in range(8, 1025, 4):
        if count_params(task, model, d, n_layers) <= target:
            best = d
    return best


def summarize(kind: str, loss_sum: float, correct: float, count: float) -> tuple[float, float]:
    """(mean loss, metric): accuracy = correct / count, or bits per byte = mean loss / ln 2."""
    loss = loss_sum / max(count, 1)
    return loss, (loss / math.log(2) if kind == "lm" else correct / max(count, 1))


def _read_rows(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto]


def _write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def run(config: TrainConfig) -> dict:
    """Train `config` and return {"config", "n_params", "rows" (metrics rows), "final" (split ->
    (loss, metric)), "wall_s", "baseline"}; with config.out: metrics.csv, curves.png,
    checkpoint/ (model, optimizer, state.json) and run.json there. With resume and an existing
    checkpoint the run continues from its step: the result is that of an uninterrupted run."""
    from .. import tasks

    task = tasks.get(config.task, seed=config.seed, **config.task_options)
    d_model = config.d_model
    if config.target_params is not None:
        d_model = width_for(task, config.model, config.n_layers, config.target_params)
    if config.backend == "torch":
        from .torch_loop import Trainer
    else:
        from .jax_loop import Trainer
    trainer = Trainer(config, task, d_model)
    out = Path(config.out) if config.out else None
    # data parallel: every rank trains, rank 0 alone writes (every rank reads a checkpoint)
    write = getattr(trainer, "is_main", True)
    ckpt = out / "checkpoint" if out else None
    start, wall0, rows = 0, 0.0, []
    if out:
        if write:
            out.mkdir(parents=True, exist_ok=True)
        if config.resume and (ckpt / "state.json").exists():
            state = json.loads((ckpt / "state.json").read_text())
            trainer.load(ckpt)
            start, wall0 = state["step"], state["wall_s"]
            rows = _read_rows(out / "metrics.csv", start)
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc=f"{config.task} {config.model} "
                   f"{config.backend}", dynamic_ncols=True)
    t_start, tokens, interval_t, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0.0, 0
    for step in range(start, config.steps):
        x, y = task.train_batch(step, config.batch_size)
        t0 = time.perf_counter()
        loss = trainer.train_step(step, x, y)
        interval_t += time.perf_counter() - t0
        tokens += x.shape[0] * x.shape[1]
        loss_sum, n_loss = loss_sum + loss, n_loss + 1
        if not math.isfinite(loss):
            raise FloatingPointError(f"step {step}: the training loss is {loss}")
        tps = tokens / max(interval_t, 1e-9)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:.0f}")
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            wall = wall0 + time.perf_counter() - t_start
            rows.append(dict(step=done, split="train", loss=loss_sum / n_loss,
                             metric="", value="", tokens_per_s=tps, wall_s=wall))
            for split in task.eval_splits:
                sums = [0.0, 0.0, 0.0]
                for i, (ex, ey) in enumerate(task.eval_batches(split, config.batch_size)):
                    if config.eval_batches is not None and i >= config.eval_batches:
                        break
                    sums = [a + b for a, b in zip(sums, trainer.eval_batch(ex, ey))]
                el, ev = summarize(task.kind, *sums)
                rows.append(dict(step=done, split=split, loss=el, metric=task.metric, value=ev,
                                 tokens_per_s=tps, wall_s=wall))
            tokens, interval_t, loss_sum, n_loss = 0, 0.0, 0.0, 0
            if out and write:
                _write_rows(out / "metrics.csv", rows)
                tmp = out / "checkpoint.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                trainer.save(tmp)
                (tmp / "state.json").write_text(json.dumps(
                    {"step": done, "data_position": done * config.batch_size, "wall_s": wall}))
                shutil.rmtree(ckpt, ignore_errors=True)
                tmp.rename(ckpt)
    if bar is not None:
        bar.close()
    wall = wall0 + time.perf_counter() - t_start
    last = {r["split"]: (float(r["loss"]), float(r["value"]) if r["value"] != "" else None)
            for r in rows if int(r["step"]) == config.steps}
    result = {"config": asdict(config), "d_model": d_model, "n_params": trainer.n_params,
              "rows": rows, "final": last, "wall_s": wall,
              "baseline": task.baseline("test"), "metric": task.metric}
    if out and write:
        (out / "run.json").write_text(json.dumps({k: v for k, v in result.items()
                                                  if k != "rows"}, indent=1, default=str))
        try:
            plot_curves(out / "metrics.csv", out / "curves.png", title=f"{config.task} "
                        f"{config.model} ({config.backend})", baseline=result["baseline"])
        except ImportError:  # pragma: no cover - matplotlib is in the train extra
            pass
    return result


def plot_curves(csv_path, png_path, *, title="", baseline=None) -> None:
    """Loss (left) and metric (right) against step, one line per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in dict.fromkeys(r["split"] for r in rows):
        rs = [r for r in rows if r["split"] == split]
        steps = [int(r["step"]) for r in rs]
        a.plot(steps, [float(r["loss"]) for r in rs], marker=".", label=split)
        if rs[0]["value"] != "":
            b.plot(steps, [float(r["value"]) for r in rs], marker=".", label=split)
    metric = next((r["metric"] for r in rows if r["metric"]), "metric")
    if baseline is not None:
        b.axhline(baseline, color="gray", ls="--", label="trivial baseline")
    a.set(xlabel="step", ylabel="loss", title=title)
    b.set(xlabel="step", ylabel=metric)
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
