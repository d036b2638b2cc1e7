"""Rows -> files: rows.csv, rows.json, tables.md and PNG plots (matplotlib, log-log).

Tables: first a summary (the machine-load check; per op and variant, the fastest implementation
here and its speed-up over the best peer); the environment; median time (p50 ms, p20-p80 in the
CSV) per case and backend:impl, for ops and each layer mode; achieved GB/s and fraction of the
measured copy bandwidth (ops); peak memory; peers (our p50 / peer p50 on the same shapes);
skipped and failed cases.
Plots (`figures`): time vs length per backend:impl (ops; layers per mode), achieved GB/s of the
ops vs length, and choose.png; one colour and marker per backend:impl everywhere (STYLES).
Machine load: loaded when load_start > LOAD_FRACTION * cpus or the host copy bandwidth changed
by more than BANDWIDTH_CHANGE between the start and the end of the run.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from .. import registry
from .cases import DTYPES

__all__ = ["COLUMNS", "write", "write_rows", "read_rows", "tables", "plots"]

COLUMNS = [
    "op", "variant", "backend", "impl", "mode", "dtype", "batch", "length", "channels", "state",
    "axis", "status", "note", "p20_ms", "p50_ms", "p80_ms", "reps", "compile_ms", "tokens_per_s",
    "gbps", "bw_fraction", "peak_mem_mb", "mem_method", "rel_err", "device", "device_name",
    "copy_gbps", "cpus", "load_start", "load_end", "host_copy_gbps_start", "host_copy_gbps_end",
    "versions", "commit", "timestamp",
]
_SHAPE = ("batch", "length", "channels", "state")
#: the backends of peer rows: the peer packages
PEER_BACKENDS = tuple(sorted({p.package for p in registry.PEERS}))
LENGTH_LABEL = "length (tokens)"
#: one (colour, marker) per backend:impl, the same in every panel of every figure: the
#: registry's, for every implementation and peer
STYLES = registry.styles()
#: a machine counts as loaded when its load average exceeds this fraction of its cores, or its
#: host copy bandwidth changed by more than this fraction between the start and the end
LOAD_FRACTION = 0.5
BANDWIDTH_CHANGE = 0.2


def style(impl: str) -> tuple[str, str]:
    """(colour, marker) of a backend:impl; grey crosses for one STYLES does not know."""
    return STYLES.get(impl, ("#c7c7c7", "x"))


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
    """The rows of a rows.json; OSError if it cannot be read, ValueError if it holds no rows."""
    with open(path) as f:
        rows = json.load(f)
    need = {"op", "variant", "backend", "impl", "mode", "status"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) and need <= set(r)
                                             for r in rows):
        raise ValueError("expected a JSON list of benchmark rows (as bench writes rows.json)")
    return rows


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
    impls = sorted({_impl(r) for r in rows}, key=lambda s: (s.split(":")[0] in PEER_BACKENDS, s))
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
        if r["status"] == "ok" and r["backend"] not in PEER_BACKENDS:
            ours[(_name(r), r["mode"], r["dtype"], *(r[k] for k in _SHAPE))][_impl(r)] = r
    body = []
    for p in rows:
        if p["backend"] not in PEER_BACKENDS:
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


def load_check(rows: list[dict]) -> tuple[bool | None, str]:
    """(loaded, one line saying why): loaded when the load average at the start exceeded
    LOAD_FRACTION * cpus or the host copy bandwidth changed by more than BANDWIDTH_CHANGE between
    the start and the end; None when the rows carry no load figures (an older run). The end's
    load average includes the run's own work, so only the start's is tested."""
    r0 = rows[0]
    cpus, l0, l1 = r0.get("cpus"), r0.get("load_start"), r0.get("load_end")
    b0, b1 = r0.get("host_copy_gbps_start"), r0.get("host_copy_gbps_end")
    if cpus is None or l0 is None or not b0 or not b1:
        return None, "machine load: not recorded (rows from a run before the load check)"
    change = b1 / b0 - 1
    busy = l0 > LOAD_FRACTION * cpus
    drift = abs(change) > BANDWIDTH_CHANGE
    verdict = ("LOADED: " + " and ".join(w for w, on in (
        (f"load average above {LOAD_FRACTION:g} x {cpus} cpus", busy),
        (f"copy bandwidth changed by more than {BANDWIDTH_CHANGE:.0%}", drift)) if on)
               if busy or drift else "quiet")
    line = (f"machine load: {verdict} (load average {l0:.2f} at the start on {cpus} cpus, "
            f"{_fmt(l1)} at the end, which includes this run; host copy bandwidth "
            f"{b0:.1f} GB/s at the start, {b1:.1f} at the end, {change:+.0%})")
    return busy or drift, line


def summary(rows: list[dict]) -> list[str]:
    """Per op and variant (and layer mode), float32, at its longest length: the fastest
    implementation here, and the best peer on the same shape with its speed-up."""
    ours, peers = defaultdict(list), defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and r["axis"] == "length" and r["dtype"] == "float32":
            key = (r["op"] == "layer", _name(r), r["mode"])
            (peers if r["backend"] in PEER_BACKENDS else ours)[key].append(r)
    body = []
    for key in sorted(ours):
        length = max(r["length"] for r in ours[key])
        best = min((r for r in ours[key] if r["length"] == length), key=lambda r: r["p50_ms"])
        at = [p for p in peers.get(key, []) if p["length"] == length]
        peer = min(at, key=lambda p: p["p50_ms"]) if at else None
        shape = "x".join(str(best[k]) for k in _SHAPE)
        body.append([key[1], key[2], shape, _impl(best), _fmt(best["p50_ms"]),
                     _impl(peer) if peer else "(no peer)", _fmt(peer["p50_ms"]) if peer else "",
                     f"{peer['p50_ms'] / best['p50_ms']:.2f}x" if peer else ""])
    head = ["target", "mode", "BxLxHxN", "fastest here", "p50 ms", "best peer", "peer p50 ms",
            "speed-up (peer / ours)"]
    return _table(head, body) if body else ["(no timed rows)", ""]


def tables(rows: list[dict]) -> str:
    """The markdown report of a run's rows."""
    if not rows:
        return "# liquidssm benchmarks\n\n(no rows)\n"
    r0 = rows[0]
    loaded, load_line = load_check(rows)
    out = ["# liquidssm benchmarks", ""]
    if loaded:
        out += ["> **Warning: the machine was loaded during this run; these figures are not "
                "authoritative.** Other work competed for the cores and the memory bandwidth "
                "(see the machine-load line); rerun on a quiet machine before quoting them.", ""]
    out += ["## Summary", "", f"- {load_line}",
            "- per target, float32, at its longest length: the fastest implementation here and "
            "the best peer on the same shape (speed-up > 1: ours is faster)", "",
            *summary(rows)]
    out += [
        "## Environment", "",
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
                      if r["status"] not in ("ok",) and r["backend"] not in PEER_BACKENDS})
    if reasons:
        out += ["## Skipped and failed", "",
                *_table(["backend:impl", "target", "status", "reason"], reasons)]
    return "\n".join(out)


def _length_series(rows, names, mode, value="p50_ms", dtypes=DTYPES):
    """{name: {(impl, dtype): [(length, value)]}} for the length sweep of `mode`."""
    series = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (r["status"] == "ok" and r["axis"] == "length" and r["mode"] == mode
                and _name(r) in names and r.get(value) is not None and r["dtype"] in dtypes):
            series[_name(r)][(_impl(r), r["dtype"])].append((r["length"], r[value]))
    return series


def _speedup_series(rows, name):
    """{(our impl, dtype): [(length, best peer p50 / our p50)]} over the float32 forward length
    sweep of `name`, at the lengths where some peer ran."""
    best = {}
    for r in rows:
        if (r["status"] == "ok" and r["backend"] in PEER_BACKENDS and _name(r) == name
                and r["axis"] == "length" and r["mode"] == "fwd" and r["dtype"] == "float32"):
            best[r["length"]] = min(best.get(r["length"], math.inf), r["p50_ms"])
    series = defaultdict(list)
    for r in rows:
        if (r["status"] == "ok" and r["backend"] not in PEER_BACKENDS and _name(r) == name
                and r["axis"] == "length" and r["mode"] == "fwd" and r["dtype"] == "float32"
                and r["length"] in best):
            series[(_impl(r), r["dtype"])].append((r["length"], best[r["length"]] / r["p50_ms"]))
    return series


def _panel(ax, series, title, ylabel, hline=None) -> None:
    """Lines of `series` ({(impl, dtype): [(length, y)]}) on log-log axes, styled by STYLES;
    bfloat16 dashed with hollow markers. hline: (y, label), a dotted black reference line."""
    from matplotlib.ticker import NullFormatter

    for (impl, dtype), pts in sorted(series.items()):
        pts = sorted(pts)
        color, marker = style(impl)
        label = impl if dtype == "float32" else f"{impl} {dtype}"
        f32 = dtype == "float32"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker,
                markersize=4, linestyle="-" if f32 else "--",
                markerfacecolor=color if f32 else "none", label=label)
    if hline is not None:
        ax.axhline(hline[0], color="black", linestyle=":", linewidth=1, label=hline[1])
    ax.set_xscale("log", base=2)
    lengths = sorted({p[0] for pts in series.values() for p in pts})
    if lengths:
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(LENGTH_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def figure(panels, title, note=""):
    """A matplotlib Figure: one panel per (series, panel title, y label, hline) in `panels`,
    3 per row, one legend (every series of every panel) outside the axes, on the right, and
    `note` (say, what is not shown and why) under the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    for ax, (series, name, ylabel, hline) in zip(axes.flat, panels):
        _panel(ax, series, name, ylabel, hline)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    ours = [k for k in handles if ":" in k]  # reference lines ("copy bandwidth ...") last
    order = sorted(ours, key=lambda lab: (lab.split(":")[0] in PEER_BACKENDS, lab))
    order += [k for k in handles if ":" not in k]
    fig.suptitle(title)
    fig.tight_layout()
    if note:
        fig.text(0.01, 0, note, ha="left", va="top", fontsize=8, wrap=True)
    fig.legend([handles[k] for k in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, title="backend:impl (dashed, hollow: bfloat16)", title_fontsize=8)
    return fig


def describe(fig) -> dict:
    """What a figure shows, read back from its objects: the legend's entries and, per panel, the
    title, axis labels and {line label: [colour, marker]} (stored in the PNG's metadata)."""
    from matplotlib.colors import to_hex

    axes = [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
             "lines": {ln.get_label(): [to_hex(ln.get_color()), ln.get_marker()]
                       for ln in ax.get_lines()}}
            for ax in fig.axes if ax.get_visible()]
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    return {"title": fig._suptitle.get_text() if fig._suptitle else "", "legend": legend,
            "axes": axes, "notes": [t.get_text() for t in fig.texts if t is not fig._suptitle]}


def _not_shown(rows, names, mode) -> str:
    """'not shown: impl (reason); ...' for the implementations with rows of `names` in `mode`
    but none timed (all skipped or failed)."""
    why = {}
    for r in rows:
        if r["mode"] == mode and _name(r) in names and r["status"] != "ok":
            why.setdefault(_impl(r), f"{r['status']}: {r['note']}")
    timed = {_impl(r) for r in rows if r["mode"] == mode and _name(r) in names
             and r["status"] == "ok"}
    gone = [f"{i} ({w})" for i, w in sorted(why.items()) if i not in timed]
    return "not shown: " + "; ".join(gone) if gone else ""


def figures(rows: list[dict]) -> list[tuple[str, object]]:
    """(file name, Figure) for every plot the rows can fill: ops time and achieved GB/s, layer
    forward and forward + backward time, and choose.png (which backend for each variant here:
    forward time with the peers, and the speed-up over the best peer of every target with peers)."""
    dev = rows[0]["device"] if rows else ""
    ops = sorted({_name(r) for r in rows if r["op"] != "layer"})
    layers = sorted({_name(r) for r in rows if r["op"] == "layer"})
    copy = rows[0].get("copy_gbps") if rows else None
    copy_line = None if not copy else (copy, f"copy bandwidth ({copy:.0f} GB/s)")
    time_y, bw_y = "time (ms)", "achieved GB/s (minimal traffic / time)"
    jobs = []
    s = _length_series(rows, ops, "fwd")
    jobs.append(("ops_time.png", f"ops, forward: median time ({dev})",
                 [(s[n], n, time_y, None) for n in sorted(s)], _not_shown(rows, ops, "fwd")))
    s = _length_series(rows, ops, "fwd", "gbps")
    jobs.append(("ops_bandwidth.png", f"ops, forward: achieved bandwidth ({dev})",
                 [(s[n], n, bw_y, copy_line) for n in sorted(s)], _not_shown(rows, ops, "fwd")))
    for mode in ("fwd", "fwd+bwd"):
        s = _length_series(rows, layers, mode)
        jobs.append((f"layers_{mode.replace('+', '_')}_time.png",
                     f"layers, {mode}: median time ({dev})",
                     [(s[n], n, time_y, None) for n in sorted(s)],
                     _not_shown(rows, layers, mode)))
    s = _length_series(rows, layers, "fwd", dtypes=("float32",))
    with_peers = sorted({_name(r) for r in rows
                         if r["backend"] in PEER_BACKENDS and r["status"] == "ok"})
    ops_s = _length_series(rows, with_peers, "fwd", dtypes=("float32",))
    panels = [(s[n], f"{n} forward", time_y, None) for n in sorted(s)]
    panels += [(ops_s[n], f"{n} (op) forward", time_y, None) for n in with_peers if n in ops]
    for n in with_peers:
        sp = _speedup_series(rows, n)
        if sp:
            panels.append((sp, f"{n}: speed-up over the best peer", "best peer time / our time",
                           (1.0, "= best peer")))
    jobs.append(("choose.png", f"which backend for which variant, forward, float32 ({dev}); "
                 "lower time is better, speed-up > 1: ours is faster", panels,
                 _not_shown(rows, layers + with_peers, "fwd")))
    loaded = bool(rows) and load_check(rows)[0]
    warn = "\nthe machine was LOADED during the run: not authoritative" if loaded else ""
    return [(fname, figure(panels, title + warn, note)) for fname, title, panels, note in jobs
            if panels]


def plots(rows: list[dict], out: Path) -> list[Path]:
    """PNG files written to `out` (see `figures`); each carries describe(fig) as JSON in its
    "liquidssm:plot" text chunk."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, fig in figures(rows):
        meta = {"Title": fname, "liquidssm:plot": json.dumps(describe(fig))}
        fig.savefig(out / fname, dpi=110, bbox_inches="tight", metadata=meta)
        plt.close(fig)
        written.append(out / fname)
    return written


def write(rows: list[dict], out) -> dict:
    """rows.csv, rows.json, tables.md and the plots under `out`; returns the paths written."""
    out = Path(out)
    write_rows(rows, out)
    (out / "tables.md").write_text(tables(rows))
    return {"rows": [out / "rows.csv", out / "rows.json"], "tables": out / "tables.md",
            "plots": plots(rows, out)}
