"""The quality experiments (benchmarks/results/quality/): run a list of TrainConfigs one after
another, append one row per finished run to rows.csv, then write table.md and plot.png.

    python -m liquidssm.train.experiments OUT_DIR PLAN   (PLAN: "small", see PLANS)

rows.csv columns: task, model, backend, n_params, d_model, steps, seed, metric, value,
baseline, wall_s, device, commit, split, dtype (value: the metric on `split` after the last
step; one row per test split: "test", and the longer "test_{k}x" splits of the length
extrapolation tasks; dtype: the training dtype).
"""

from __future__ import annotations

import csv
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from liquidssm.spec import VARIANTS

from .common import TrainConfig, run

COLUMNS = ("task", "model", "backend", "n_params", "d_model", "steps", "seed", "metric",
           "value", "baseline", "wall_s", "device", "commit", "split", "dtype")
DIGITS_MODELS = ("s4d", "liquid_s4", "mamba", "liquid_mamba", "transformer", "s5", "liquid_s5")
BYTES_MODELS = ("mamba", "liquid_mamba", "transformer")


def _small(seeds=(0,)):
    """Sized for ~45 min on 2 shared CPU cores (a fraction of one core per process): digits at
    ~16k parameters, 60 steps of 16 (peak lr 3e-2, SSM 5e-3: a short budget needs a high rate);
    bytes at ~40k parameters, 40 steps of 8 windows of 128."""
    plan = []
    for seed in seeds:
        plan += [TrainConfig(task="digits", model=m, steps=60, batch_size=16, eval_every=30,
                             target_params=16000, n_layers=2, seed=seed, lr=3e-2, ssm_lr=5e-3,
                             progress=False) for m in DIGITS_MODELS]
    for seed in seeds:
        plan += [TrainConfig(task="bytes", model=m, steps=40, batch_size=8, eval_every=20,
                             target_params=40000, n_layers=2, seed=seed, lr=1e-2, ssm_lr=2e-3,
                             progress=False, task_options=dict(length=128, eval_windows=16))
                 for m in BYTES_MODELS]
    return plan


ALL_MODELS = (*VARIANTS, "transformer")
ABLATIONS = ("liquid_mamba-scan", "liquid_mamba-conv", "liquid_mamba-ffn")
LEAVE_ONE_OUT = ("liquid_mamba-noscan", "liquid_mamba-noconv", "liquid_mamba-noffn")


def _medium():
    """Sized for ~45 min of one quiet CPU core (torch threads 1), default rates (lr 3e-3, SSM
    1e-3, batch 32): digits (length 64, ~15k parameters, 500 steps, seeds 0 and 1) for every
    model, in torch and (s4d, mamba, seed 0) in JAX; gunpoint (length 150, ~15k, 200 steps);
    selective-copy (~40k, 300 steps); bytes (windows of 128, ~40k, 300 steps, seeds 0, 1 and 2
    for mamba / liquid_mamba / transformer, seed 0 for LiquidMamba's three ablations); then
    the third seeds and longer selective-copy runs listed at the end."""
    def cfg(task, model, steps, params, seed=0, backend="torch", **kw):
        return TrainConfig(task=task, model=model, backend=backend, steps=steps, seed=seed,
                           target_params=params, n_layers=2, eval_every=steps // 2,
                           progress=False, **kw)
    bytes_opts = dict(task_options=dict(length=128, eval_windows=32))
    # in order of priority (a run cut short by the time budget loses the later ones): one seed of
    # everything first, then the second seeds and the ablations
    plan = [cfg("digits", m, 500, 15000, 0) for m in ALL_MODELS]
    plan += [cfg("bytes", m, 300, 40000, 0, **bytes_opts)
             for m in ("mamba", "liquid_mamba", "transformer")]
    plan += [cfg("gunpoint", m, 200, 15000) for m in ALL_MODELS]
    plan += [cfg("selective-copy", m, 300, 40000, eval_batches=4)
             for m in ("s4d", "mamba", "liquid_mamba", "transformer")]
    plan += [cfg("digits", m, 500, 15000, 0, "jax") for m in ("s4d", "mamba")]
    plan += [cfg("digits", m, 500, 15000, 1) for m in ALL_MODELS]
    plan += [cfg("bytes", m, 300, 40000, seed, **bytes_opts) for seed in (1, 2)
             for m in ("mamba", "liquid_mamba", "transformer")]
    plan += [cfg("bytes", m, 300, 40000, 0, **bytes_opts) for m in ABLATIONS]
    # added on 2026-12-02: a third digits seed, second and third seeds of gunpoint and
    # selective-copy, two more bytes seeds, and selective-copy at 5x the steps (does the Mamba
    # family beat the copy baseline with a longer budget?)
    plan += [cfg("digits", m, 500, 15000, 2) for m in ALL_MODELS]
    plan += [cfg("bytes", m, 300, 40000, seed, **bytes_opts) for seed in (3, 4)
             for m in ("mamba", "liquid_mamba", "transformer")]
    plan += [cfg("selective-copy", m, 1500, 40000, eval_batches=4)
             for m in ("mamba", "liquid_mamba", "transformer")]
    plan += [cfg("gunpoint", m, 200, 15000, seed) for seed in (1, 2) for m in ALL_MODELS]
    plan += [cfg("selective-copy", m, 300, 40000, seed, eval_batches=4) for seed in (1, 2)
             for m in ("s4d", "mamba", "liquid_mamba", "transformer")]
    # added in the third session of 2026-12-02 (reordered in the fourth: every variant on every
    # task first, then more seeds and budgets): induction with its 4x / 16x extrapolation
    # splits, ListOps at 16-128 tokens, digits-long (length 1024), selective copy and induction
    # for the remaining variants, more seeds of the 1500-step selective copy, float64 against
    # float32 (the same digits runs), the second and third seeds of ListOps and of LiquidMamba's
    # ablations
    rest = ("s4", "liquid_s4", "s5", "liquid_s5")
    plan += [cfg("induction", m, 300, 40000, eval_batches=4)
             for m in ("s4d", "mamba", "liquid_mamba", "transformer")]
    plan += [cfg("listops-short", m, 300, 15000, eval_batches=4) for m in ALL_MODELS]
    # no model beat the induction baseline in 300 steps (n = 2000 or 20000): 5x the budget
    plan += [cfg("induction", m, 1500, 40000, eval_batches=4)
             for m in ("transformer", "mamba", "liquid_mamba", "s4d")]
    plan += [cfg("digits-long", m, 200, 15000, eval_batches=4)
             for m in ("s4d", "liquid_s4", "mamba", "liquid_mamba", "transformer",
                       "s4", "s5", "liquid_s5")]
    plan += [cfg("selective-copy", m, 300, 40000, eval_batches=4) for m in rest]
    plan += [cfg("induction", m, 300, 40000, eval_batches=4) for m in rest]
    plan += [cfg("selective-copy", m, 1500, 40000, seed, eval_batches=4) for seed in (1, 2)
             for m in ("mamba", "liquid_mamba")]
    plan += [cfg("digits", m, 500, 15000, 0, dtype="float64")
             for m in ("s4d", "liquid_s4", "mamba", "liquid_mamba")]
    plan += [cfg("listops-short", m, 300, 15000, seed, eval_batches=4) for seed in (1, 2)
             for m in ALL_MODELS]
    plan += [cfg("bytes", m, 300, 40000, seed, **bytes_opts) for seed in (1, 2)
             for m in ABLATIONS]
    # added on 2026-12-03: the second and third seeds of the 1500-step induction runs and of
    # digits-long (one seed each before; the models in the order of their run time here)
    plan += [cfg("induction", m, 1500, 40000, seed, eval_batches=4) for seed in (1, 2)
             for m in ("transformer", "mamba", "liquid_mamba", "s4d")]
    # LiquidMamba stays at the induction baseline where Mamba reaches 1.0: which of its three
    # changes does that? (each one alone learns the task: then LiquidMamba less one of them)
    plan += [cfg("induction", m, 1500, 40000, eval_batches=4) for m in ABLATIONS]
    plan += [cfg("induction", m, 1500, 40000, eval_batches=4) for m in LEAVE_ONE_OUT]
    plan += [cfg("digits-long", m, 200, 15000, seed, eval_batches=4)
             for m in ("s4d", "s4", "s5", "liquid_s5", "transformer", "liquid_mamba",
                       "liquid_s4", "mamba") for seed in (1, 2)]
    return plan


def _listops():
    """ListOps at the LRA's lengths (500-2000 tokens, padded to 2000), 5000 examples (3500 for
    training), ~15k parameters as listops-short, 1000 steps of 16 (~4.6 epochs), evaluated on 8
    batches per split; seed 0, every model (4-40 min each on a shared core of this machine,
    Liquid-S4 over an hour)."""
    return [TrainConfig(task="listops", model=m, steps=1000, seed=0, batch_size=16,
                        target_params=15000, n_layers=2, eval_every=250, eval_batches=8,
                        progress=False, task_options=dict(n=5000))
            for m in ("s4d", "transformer", "s5", "liquid_s5", "s4", "mamba", "liquid_mamba",
                      "liquid_s4")]


def _width():
    """Induction (1500 steps, seed 0, the medium plan's settings) at fixed widths instead of a
    parameter budget: LiquidMamba (d_model 28 at <= 40k parameters: its FFN takes them) fails
    where Mamba (44) learns; of its ablations only the gated conv with the FFN fails (d_model 28).
    Is it the width? The gated conv alone and Mamba at 28, LiquidMamba and gated conv + FFN at
    44; then seeds 1-2 of LiquidMamba at 44, LiquidMamba at 28 for 4000 steps (does it leave
    the loss plateau later, or not at all?), seeds 1-2 of gated conv + FFN at 28 and a second
    4000-step seed. Written to its own directory (the runs' keys do not hold d_model)."""
    return [TrainConfig(task="induction", model=m, steps=steps, seed=seed, d_model=w,
                        n_layers=2, eval_every=750, eval_batches=4, progress=False)
            for m, w, seed, steps in (("liquid_mamba-conv", 28, 0, 1500), ("mamba", 28, 0, 1500),
                                      ("liquid_mamba", 44, 0, 1500),
                                      ("liquid_mamba-noscan", 44, 0, 1500),
                                      ("liquid_mamba", 44, 1, 1500), ("liquid_mamba", 44, 2, 1500),
                                      ("liquid_mamba", 28, 0, 4000),
                                      ("liquid_mamba-noscan", 28, 1, 1500),
                                      ("liquid_mamba-noscan", 28, 2, 1500),
                                      ("liquid_mamba", 28, 1, 4000))]


PLANS = {"small": _small, "medium": _medium, "listops": _listops, "width": _width}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return ""


def device() -> str:
    return f"cpu {platform.machine()} ({os.cpu_count()} cores, shared)"


def main(out: str, plan: str = "small") -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.csv"
    done = set()
    if rows_path.exists():
        with rows_path.open() as f:
            done = {_key(r) for r in csv.DictReader(f)}
    for config in PLANS[plan]():
        key = _key(vars(config))
        if key in done:
            continue
        config.out = str(out / "runs" / run_name(key))
        config.resume = True
        result = run(config)
        from .. import tasks

        task = tasks.get(config.task, seed=config.seed, **config.task_options)
        new = not rows_path.exists()
        with rows_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            for split in [s for s in task.eval_splits if s.startswith("test")]:
                row = dict(task=config.task, model=config.model, backend=config.backend,
                           n_params=result["n_params"], d_model=result["d_model"],
                           steps=config.steps, seed=config.seed, metric=result["metric"],
                           value=result["final"][split][1], baseline=task.baseline(split),
                           wall_s=round(result["wall_s"], 1), device=device(),
                           commit=_commit(), split=split, dtype=config.dtype)
                w.writerow(row)
                print(row, flush=True)
        report(out)


def _key(r) -> tuple:
    """What identifies a run: task, model, backend, seed, steps, dtype (rows or a config)."""
    return (r["task"], r["model"], r["backend"], str(r["seed"]), str(r["steps"]),
            r.get("dtype") or "float32")


def run_name(key) -> str:
    """The run's directory under runs/ (float32 runs keep their original names)."""
    task, model, backend, seed, steps, dtype = key
    return (f"{task}-{model}-{backend}-s{seed}-{steps}steps"
            + ("" if dtype == "float32" else f"-{dtype}"))


def report(out) -> None:
    """table.md (mean +- std over seeds per task and model) and plot.png from rows.csv."""
    out = Path(out)
    with (out / "rows.csv").open() as f:
        rows = list(csv.DictReader(f))
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["model"], r["backend"], r["steps"], r["dtype"],
                           r["split"]), []).append(r)
    lines = ["| task | split | model | backend | dtype | params | steps | wall s | metric | "
             "mean +- std (seeds) | trivial baseline | device | commits |", "|---" * 13 + "|"]
    for (task, model, backend, _, dtype, split), rs in groups.items():
        v = [float(r["value"]) for r in rs]
        spread = f" +- {statistics.stdev(v):.4f}" if len(v) > 1 else ""
        lines.append(f"| {task} | {split} | {model} | {backend} | {dtype} | {rs[0]['n_params']} "
                     f"| {rs[0]['steps']} "
                     f"| {statistics.mean(float(r['wall_s']) for r in rs):.0f} | "
                     f"{rs[0]['metric']} | {statistics.mean(v):.4f}{spread} ({len(v)}) | "
                     f"{float(rs[0]['baseline']):.4f} | {rs[0]['device']} | "
                     f"{' '.join(dict.fromkeys(r['commit'] for r in rs))} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rs = [(k, g) for k, g in groups.items() if k[0] == task]
        names = [f"{k[1]} ({k[2]}, {k[3]} steps" + ("" if k[4] == "float32" else f", {k[4]}")
                 + ("" if k[5] == "test" else f", {k[5]}") + ")" for k, _ in rs]
        means = [statistics.mean(float(r["value"]) for r in g) for _, g in rs]
        ax.bar(range(len(rs)), means)
        ax.axhline(float(rs[0][1][0]["baseline"]), color="gray", ls="--",
                   label="trivial baseline")
        ax.set_xticks(range(len(rs)), names, rotation=45, ha="right", fontsize=8)
        ax.set(title=task, ylabel=rs[0][1][0]["metric"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "plot.png", dpi=100)
    plt.close(fig)
    precision_plot(out, rows, plt)


def precision_plot(out, rows, plt) -> None:
    """precision.png: the test loss curves of each float64 run beside the float32 run of the
    same task, model, backend, seed and steps (from their runs/*/metrics.csv)."""
    pairs = []
    for r in rows:
        if r["dtype"] != "float64" or r["split"] != "test":
            continue
        key = _key(r)
        dirs = [out / "runs" / run_name(key[:5] + (dtype,)) for dtype in ("float32", "float64")]
        if all((d / "metrics.csv").exists() for d in dirs):
            pairs.append((key, dirs))
    if not pairs:
        return
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 3.2), squeeze=False)
    for ax, (key, dirs) in zip(axes[0], pairs):
        for d, dtype in zip(dirs, ("float32", "float64")):
            with (d / "metrics.csv").open() as f:
                curve = [(int(m["step"]), float(m["loss"])) for m in csv.DictReader(f)
                         if m["split"] == "test"]
            ax.plot(*zip(*curve), marker="o", label=dtype)
        ax.set(title=f"{key[0]} {key[1]} seed {key[3]}", xlabel="step", ylabel="test loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "precision.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main(*sys.argv[1:])
