"""The `liquidssm` command.

    liquidssm --version             the package version
    liquidssm info                  backends and implementations installed, versions, devices
    liquidssm check [--backend B]   the conformance suite per installed backend; prints the matrix
    liquidssm bench [--quick] [--backend B ...] [--variant V ...] [--mode M ...]
                    [--device cpu|cuda] [--out DIR]    rows (CSV, JSON), tables.md and plots
                    (in ./liquidssm-bench unless --out says otherwise)
    liquidssm train TASK --model VARIANT --backend torch|jax [--steps N] [--seed S] [--out DIR]
                    [--nproc N (torch) | --devices N (jax)]
                    train on a task (liquidssm.tasks): metrics.csv, curves.png, checkpoint/
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from . import registry

__all__ = ["main"]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _devices(backend: str) -> str:
    if backend == "torch":
        import torch

        return ", ".join(["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                                    for i in range(torch.cuda.device_count())])
    if backend == "jax":
        import jax

        return ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
    return "cpu"


def _impl_line(impl: registry.Implementation) -> str:
    """One implementation: its name and summary, installed or how to install it, devices."""
    missing = impl.missing()
    if missing:
        return (f"    {impl.name:16} {impl.summary}: not installed ({', '.join(missing)}; "
                f"pip install 'liquidssm[{impl.extra}]')")
    versions = "".join(f", {p} {_version(p)}" for p in impl.needs if _version(p))
    return f"    {impl.name:16} {impl.summary}{versions}; runs on {', '.join(impl.devices)}"


def info_lines() -> list[str]:
    import liquidssm
    from liquidssm.spec import SPEC_VERSION

    active = os.environ.get("LIQUIDSSM_BACKEND") or "numpy (LIQUIDSSM_BACKEND unset)"
    lines = [
        f"liquidssm {liquidssm.__version__} (spec {SPEC_VERSION}), Python "
        f"{sys.version.split()[0]}, numpy {_version('numpy')}",
        f"active backend: {active}",
        "backends:",
    ]
    for name, b in registry.BACKENDS.items():
        if importlib.util.find_spec(b.package) is None:
            lines.append(f"  {name:6} not installed (pip install 'liquidssm[{b.extra}]')")
            continue
        try:
            devices = _devices(name)
        except Exception as err:  # a broken install: say so, keep going
            lines.append(f"  {name:6} {b.package} {_version(b.package)}: cannot load: {err}")
            continue
        chosen = f" (chosen by {b.select_env}; default auto: {b.auto})" if b.select_env else ""
        lines.append(f"  {name:6} {b.package} {_version(b.package)}; devices: {devices}; "
                     f"implementations{chosen}:")
        lines += [_impl_line(i) for i in registry.implementations(name)]
    peers = ", ".join(f"{p} {_version(p) or '(not installed)'}"
                      for p in dict.fromkeys(p.package for p in registry.PEERS))
    lines.append(f"benchmark peers: {peers}")
    return lines


def cmd_info(args) -> int:
    print("\n".join(info_lines()))
    return 0


def cmd_check(args) -> int:
    """pytest --pyargs liquidssm.conformance --backend B per backend, then the matrix."""
    sessions = registry.conformance()
    names = args.backend or [n for n, i in sessions.items() if not i.missing()]
    report_dir = Path(args.report_dir)
    failed = []
    for name in names:
        impl = sessions[name]
        if impl.missing():
            print(f"== {name}: skipped ({', '.join(impl.packages)} not all installed)")
            continue
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
               "liquidssm.conformance", "--backend", name, "--device", args.device,
               "--report-dir", str(report_dir), *args.pytest_args]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        # on the CPU a GPU kernel runs in its interpreter; on a GPU, compiled
        env = {**impl.select, **(impl.interpret_env if args.device == "cpu" else {})}
        rc = subprocess.run(cmd, env={**os.environ, **env},
                            stdout=None if args.verbose else subprocess.DEVNULL).returncode
        print(f"== {name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    matrix = report_dir / "report.md"
    if matrix.exists():
        print(matrix.read_text())
    else:
        print(f"no matrix: {matrix} was not written")
        return 1
    if failed:
        print(f"conformance failed for: {', '.join(failed)}")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from liquidssm.bench import report, runner

    out = Path(args.out)
    if args.from_rows:
        try:
            rows = report.read_rows(Path(args.from_rows))
        except (OSError, ValueError) as err:  # missing, unreadable or not rows: one line, exit 2
            why = err.strerror if isinstance(err, OSError) and err.strerror else err
            print(f"liquidssm bench: error: --from-rows {args.from_rows}: {why}",
                  file=sys.stderr)
            return 2
    else:
        t0 = time.perf_counter()
        try:
            rows = runner.run(backends=args.backend, targets=args.variant, modes=args.mode,
                              device=args.device, quick=args.quick,
                              progress=not args.no_progress)
        except ValueError as err:
            raise SystemExit(f"liquidssm bench: {err}") from None
        print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    paths = report.write(rows, out)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skip", "error", "mismatch")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    print(f"wrote {paths['rows'][0]}, {paths['rows'][1]}, {paths['tables']}")
    for p in paths["plots"]:
        print(f"wrote {p}")
    return 0


def _torchrun(nproc: int) -> int:
    """Rerun this `liquidssm train` command under torchrun with nproc processes (on 127.0.0.1;
    gloo on CPU, nccl on CUDA); its exit status."""
    import socket

    argv, skip = [], False
    for a in sys.argv[1:]:  # the same command without --nproc
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "liquidssm.cli", *argv]
    return subprocess.run(cmd).returncode


def cmd_train(args) -> int:
    from liquidssm.train import TrainConfig, run

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        if args.backend != "torch":
            raise SystemExit("liquidssm train: --nproc is torch's (JAX: --devices N)")
        return _torchrun(args.nproc)
    if args.devices > 1 and args.backend == "jax" and "jax" not in sys.modules:
        flag = f"--xla_force_host_platform_device_count={args.devices}"  # CPU only; harmless
        if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    try:
        config = TrainConfig(
            task=args.task, model=args.model, backend=args.backend, steps=args.steps,
            batch_size=args.batch_size, lr=args.lr, ssm_lr=args.ssm_lr,
            weight_decay=args.weight_decay, warmup=args.warmup, clip=args.clip, dtype=args.dtype,
            eval_every=args.eval_every or max(1, args.steps // 5),
            eval_batches=args.eval_batches, seed=args.seed, d_model=args.d_model,
            n_layers=args.n_layers, target_params=args.params, out=args.out,
            resume=args.resume, progress=not args.no_progress, devices=args.devices)
        result = run(config)
    except (ValueError, ImportError) as err:
        raise SystemExit(f"liquidssm train: {err}") from None
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun rank 0 reports
    print(f"{args.task} {args.model} ({args.backend}): {result['n_params']} parameters "
          f"(d_model {result['d_model']}), {args.steps} steps in {result['wall_s']:.0f} s")
    for split, (loss, value) in result["final"].items():
        extra = "" if value is None else f", {result['metric']} {value:.4f}"
        print(f"  {split:9} loss {loss:.4f}{extra}")
    print(f"  trivial baseline ({result['metric']}, test): {result['baseline']:.4f}")
    print(f"wrote {args.out}/metrics.csv, curves.png, checkpoint/")
    return 0


def parser() -> argparse.ArgumentParser:
    import liquidssm
    from liquidssm.bench.cases import MODES, OPS, VARIANTS
    from liquidssm.bench.runner import BACKENDS

    p = argparse.ArgumentParser(prog="liquidssm", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"liquidssm {liquidssm.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    p.subcommands = sub.choices  # name -> its parser (main reports unknown options with it)
    sub.add_parser("info", help="backends, implementations, versions and devices")

    c = sub.add_parser("check", help="run the conformance suite per installed backend")
    c.add_argument("--backend", action="append", choices=list(registry.conformance()),
                   help="backend to check (repeatable; default: every installed one)")
    c.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    c.add_argument("--report-dir", default="conformance-report",
                   help="where the suite writes report.md / report.json")
    c.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    c.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")

    b = sub.add_parser("bench", help="benchmark the backends (rows, tables, plots)")
    b.add_argument("--quick", action="store_true",
                   help="the smoke sweep: three short lengths, tiny shapes (about 2 min on 2 "
                        "cores)")
    b.add_argument("--backend", action="append", choices=list(BACKENDS),
                   help="backend to time (repeatable; default: every installed one)")
    b.add_argument("--variant", action="append", choices=[*VARIANTS, *OPS], metavar="TARGET",
                   help=f"variant or op to time (repeatable; default all): "
                        f"{', '.join([*VARIANTS, *OPS])}")
    b.add_argument("--mode", action="append", choices=list(MODES),
                   help="layer mode (repeatable; default all; ops are always fwd)")
    b.add_argument("--device", default="cpu",
                   help="where the backends run: cpu, or cuda / cuda:i for a GPU (torch and jax "
                        "on it; numpy is CPU only); default cpu")
    b.add_argument("--out", default="liquidssm-bench",
                   help="output folder for rows.csv, rows.json, tables.md and the PNG plots "
                        "(default: ./liquidssm-bench, under the current directory)")
    b.add_argument("--from-rows", metavar="ROWS_JSON",
                   help="re-render tables and plots from a rows.json instead of measuring")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")

    from liquidssm.tasks import TASKS
    from liquidssm.train import MODELS

    t = sub.add_parser("train", help="train a model on a task (metrics, plots, checkpoint)")
    t.add_argument("task", choices=list(TASKS))
    t.add_argument("--model", default="s4d", choices=list(MODELS))
    t.add_argument("--backend", default="torch", choices=("torch", "jax"))
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--seed", type=int, default=0, help="the data splits' and the weights' seed")
    t.add_argument("--out", default="liquidssm-run", help="output folder")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--ssm-lr", type=float, default=1e-3,
                   help="learning rate of the SSM parameters (no weight decay)")
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--warmup", type=int, default=None, help="warm-up steps (default steps/10)")
    t.add_argument("--clip", type=float, default=1.0, help="global gradient-norm limit")
    t.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float64"))
    t.add_argument("--eval-every", type=int, default=None, help="default steps/5")
    t.add_argument("--eval-batches", type=int, default=None,
                   help="at most this many batches per evaluated split (default all)")
    t.add_argument("--d-model", type=int, default=32)
    t.add_argument("--n-layers", type=int, default=2)
    t.add_argument("--params", type=int, default=None,
                   help="choose d_model: the widest with at most this many parameters")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    t.add_argument("--nproc", type=int, default=1,
                   help="torch: data parallel over N processes (torchrun, DDP; gloo on CPU)")
    t.add_argument("--devices", type=int, default=1,
                   help="JAX: data parallel over N devices (on a CPU: N host devices)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise SystemExit(f"liquidssm bench: --device: expected cpu or cuda[:i], got {device!r}")
    if importlib.util.find_spec("torch") is None:
        raise SystemExit(f"liquidssm bench: --device {device} needs torch (to find the GPU)")
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"liquidssm bench: --device: {device!r} requested, but CUDA is not "
                         "available on this machine")


def main(argv=None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra:  # an unknown option of a subcommand: that subcommand's usage, not the top-level one
        p.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "info":
        return cmd_info(args)
    if args.command == "check":
        return cmd_check(args)
    if args.command == "train":
        return cmd_train(args)
    _check_device(args.device)
    return cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
