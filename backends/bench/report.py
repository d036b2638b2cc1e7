"""Rows -> files: rows.csv, rows.json, tables.md and PNG plots (matplotlib, log-log).

Tables: the environment; median time (p50 ms, p20-p80 in the CSV) per case and backend:impl,
for ops and each layer mode; achieved GB/s and fraction of the measured copy bandwidth (ops);
peak memory; peers (our p50 / peer p50 on the same shapes); skipped and failed cases.
Plots: time vs length per backend:impl (ops; layers per mode), and the bandwidth fraction of the
ops vs length.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

__all__ = ["COLUMNS", "write", "write_rows", "read_rows", "tables", "plots"]

COLUMNS = [
    "op", "variant", "backend", "impl", "mode", "dtype", "batch", "length", "channels", "state",
    "axis", "status", "note", "p20_ms", "p50_ms", "p80_ms", "reps", "compile_ms", "tokens_per_s",
    "gbps", "bw_fraction", "peak_mem_mb", "mem_method", "rel_err", "device", "device_name",
    "copy_gbps", "versions", "commit", "timestamp",
]
_SHAPE = ("batch", "length", "channels", "state")
_PEER_BACKENDS = ("mambapy", "accelerated-scan", "mamba_ssm", "s5-pytorch")


def write_rows(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    full = [{c: r.get(c) for c in COLUMNS} for r in rows]
    with open(out / "rows.json", "w") as f:
        json.dump(full, f, indent=1)
    with open(out / "rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in full)


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return json.load(f)


def _name(r) -> str:
    return r["op"] if r["op"] != "layer" else r["variant"]


def _impl(r) -> str:
    return f"{r['backend']}:{r['impl']}"


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _table(header, body) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return lines + [""]


def _pivot(rows, value, fmt=_fmt) -> list[str]:
    """One line per (name, mode, dtype, shape), one column per backend:impl."""
    impls = sorted({_impl(r) for r in rows}, key=lambda s: (s.split(":")[0] in _PEER_BACKENDS, s))
    cells = defaultdict(dict)
    for r in rows:
        key = (_name(r), r["mode"], r["dtype"], *(r[k] for k in _SHAPE))
        cell = fmt(r.get(value)) if r["status"] == "ok" else r["status"]
        cells[key][_impl(r)] = cell
    body = [[*k[:3], "x".join(str(v) for v in k[3:]), *(cells[k].get(i, "") for i in impls)]
            for k in sorted(cells)]
    return _table(["target", "mode", "dtype", "BxLxHxN", *impls], body)


def _peers_table(rows) -> list[str]:
    ours = defaultdict(dict)
    for r in rows:
        if r["status"] == "ok" and r["backend"] not in _PEER_BACKENDS:
            ours[(_name(r), r["mode"], r["dtype"], *(r[k] for k in _SHAPE))][_impl(r)] = r
    body = []
    for p in rows:
        if p["backend"] not in _PEER_BACKENDS:
            continue
        key = (_name(p), p["mode"], p["dtype"], *(p[k] for k in _SHAPE))
        shape = "x".join(str(v) for v in key[3:])
        if p["status"] != "ok":
            body.append([_impl(p), key[0], shape, p["status"], "", "", "", p["note"]])
            continue
        for impl, r in sorted(ours.get(key, {}).items()):
            body.append([_impl(p), key[0], shape, _fmt(p["p50_ms"]), impl, _fmt(r["p50_ms"]),
                         _fmt(r["p50_ms"] / p["p50_ms"]), f"rel err {p['rel_err']:.1e}"])
    head = ["peer", "target", "BxLxHxN", "peer p50 ms", "ours", "our p50 ms", "ours / peer",
            "agreement with the spec"]
    return _table(head, body) if body else ["(no peer rows)", ""]


def tables(rows: list[dict]) -> str:
    """The markdown report of a run's rows."""
    if not rows:
        return "# liquidssm benchmarks\n\n(no rows)\n"
    r0 = rows[0]
    out = [
        "# liquidssm benchmarks", "",
        f"- device: `{r0['device']}`, {r0['device_name']}; measured copy bandwidth "
        f"{_fmt(r0['copy_gbps'])} GB/s (read + write)",
        f"- commit `{r0['commit']}`, {r0['timestamp']}",
        f"- versions: {r0['versions']}",
        "- cells: median ms over the repetitions (p20 / p80, compile time, tokens/s in rows.csv);"
        " `skip` / `error` reasons at the end",
        "",
    ]
    ops = [r for r in rows if r["op"] != "layer"]
    if ops:
        out += ["## Ops: time (p50 ms)", "", *_pivot(ops, "p50_ms")]
        out += ["## Ops: achieved GB/s (minimal traffic / p50)", "", *_pivot(ops, "gbps")]
        out += ["## Ops: fraction of the copy bandwidth", "",
                *_pivot(ops, "bw_fraction", lambda x: "" if x is None else f"{x:.3f}")]
    for mode in ("fwd", "fwd+bwd", "step"):
        sel = [r for r in rows if r["op"] == "layer" and r["mode"] == mode]
        if sel:
            out += [f"## Layers, {mode}: time (p50 ms)", "", *_pivot(sel, "p50_ms")]
    out += ["## Peak memory (MB beyond the inputs; method per backend in rows.csv)", "",
            *_pivot(rows, "peak_mem_mb")]
    out += ["## Compile / first call (ms)", "", *_pivot(rows, "compile_ms")]
    out += ["## Peers (same shapes, outputs checked against the spec first)", "",
            *_peers_table(rows)]
    reasons = sorted({(_impl(r), _name(r), r["status"], r["note"]) for r in rows
                      if r["status"] not in ("ok",) and r["backend"] not in _PEER_BACKENDS})
    if reasons:
        out += ["## Skipped and failed", "",
                *_table(["backend:impl", "target", "status", "reason"], reasons)]
    return "\n".join(out)


def _length_series(rows, names, mode, value="p50_ms"):
    """{name: {(impl, dtype): [(length, value)]}} for the length sweep of `mode`."""
    series = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (r["status"] == "ok" and r["axis"] == "length" and r["mode"] == mode
                and _name(r) in names and r.get(value) is not None):
            series[_name(r)][(_impl(r), r["dtype"])].append((r["length"], r[value]))
    return series


def _figure(series, title, ylabel, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(series)
    if not names:
        return False
    cols = min(3, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.5 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for (impl, dtype), pts in sorted(series[name].items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                    linestyle="-" if dtype == "float32" else "--", label=f"{impl} {dtype}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("length")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plots(rows: list[dict], out: Path) -> list[Path]:
    """PNG files written to `out` (time vs length per backend, log-log; bandwidth fraction)."""
    out.mkdir(parents=True, exist_ok=True)
    dev = rows[0]["device"] if rows else ""
    ops = sorted({_name(r) for r in rows if r["op"] != "layer"})
    layers = sorted({_name(r) for r in rows if r["op"] == "layer"})
    jobs = [(_length_series(rows, ops, "fwd"), f"ops, forward ({dev})", "p50 ms", "ops_time.png"),
            (_length_series(rows, ops, "fwd", "bw_fraction"),
             f"ops: fraction of the copy bandwidth ({dev})", "fraction", "ops_bandwidth.png")]
    for mode in ("fwd", "fwd+bwd"):
        jobs.append((_length_series(rows, layers, mode), f"layers, {mode} ({dev})", "p50 ms",
                     f"layers_{mode.replace('+', '_')}_time.png"))
    written = []
    for series, title, ylabel, fname in jobs:
        if _figure(series, title, ylabel, out / fname):
            written.append(out / fname)
    return written


def write(rows: list[dict], out) -> dict:
    """rows.csv, rows.json, tables.md and the plots under `out`; returns the paths written."""
    out = Path(out)
    write_rows(rows, out)
    (out / "tables.md").write_text(tables(rows))
    return {"rows": [out / "rows.csv", out / "rows.json"], "tables": out / "tables.md",
            "plots": plots(rows, out)}
