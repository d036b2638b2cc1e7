"""liquidssm.bench.report on made-up rows (no timing): the summary and load check of tables.md,
and the figures' legends, colours and axis labels, read from the figure objects and from the
PNGs' metadata."""

from __future__ import annotations

import json

import pytest
from liquidssm.bench import peers, report, runner

pytest.importorskip("matplotlib")

LENGTHS = (64, 128, 256)
#: (backend, impl, op, variant) -> p50 ms at length L = factor * L / 64
TIMES = {
    ("jax", "auto", "diag_scan", ""): 1.0, ("torch", "eager", "diag_scan", ""): 2.0,
    ("numpy", "spec", "diag_scan", ""): 8.0, ("mambapy", "pscan", "diag_scan", ""): 4.0,
    ("accelerated-scan", "ref", "diag_scan", ""): 5.0,
    ("jax", "auto", "layer", "s5"): 3.0, ("torch", "eager", "layer", "s5"): 1.5,
    ("s5-pytorch", "apply_ssm", "layer", "s5"): 6.0,
    ("jax", "auto", "layer", "s4d"): 2.0, ("torch", "eager", "layer", "s4d"): 2.5,
}


def make_rows(load_start=0.1, bw_start=20.0, bw_end=20.0, cpus=2):
    rows = []
    for (backend, impl, op, variant), factor in TIMES.items():
        for L in LENGTHS:
            p50 = factor * L / 64
            rows.append({c: None for c in report.COLUMNS} | {
                "op": op, "variant": variant, "backend": backend, "impl": impl, "mode": "fwd",
                "dtype": "float32", "batch": 1, "length": L, "channels": 16, "state": 8,
                "axis": "length", "status": "ok", "note": "", "p20_ms": p50, "p50_ms": p50,
                "p80_ms": p50, "reps": 3, "gbps": 1e-3 * L / p50 if op != "layer" else None,
                "rel_err": 1e-7, "device": "cpu", "device_name": "test cpu", "copy_gbps": 20.0,
                "cpus": cpus, "load_start": load_start, "load_end": 1.0,
                "host_copy_gbps_start": bw_start, "host_copy_gbps_end": bw_end,
                "versions": "", "commit": "x", "timestamp": "t"})
    rows += [dict(r, dtype="bfloat16") for r in rows if r["backend"] == "jax" and r["variant"]]
    s4d = [r for r in rows if r["variant"] == "s4d" and r["backend"] == "torch"]
    rows += [dict(r, mode="fwd+bwd") for r in s4d]
    rows += [dict(r, backend="jax", impl="auto", mode="fwd+bwd", status="skip", p50_ms=None,
                  note=runner.QUICK_SKIPS[("jax", "fwd+bwd")]) for r in s4d]
    return rows


def described(rows) -> dict:
    """{file name: report.describe(figure)} of the rows' figures (closed after)."""
    import matplotlib.pyplot as plt

    out = {}
    for name, fig in report.figures(rows):
        out[name] = report.describe(fig)
        plt.close(fig)
    return out


def test_every_implementation_and_peer_has_its_own_style():
    names = [f"{b}:{i}" for b, impls in runner.BACKENDS.items() if b != "peers" for i in impls]
    names += [f"{p.package}:{p.impl}" for p in peers.PEERS]
    assert set(names) <= set(report.STYLES), set(names) - set(report.STYLES)
    colours = [c for c, _ in report.STYLES.values()]
    assert len(set(colours)) == len(colours)
    assert set(report.PEER_BACKENDS) == {p.package for p in peers.PEERS}


def test_tables_open_with_the_summary_and_a_quiet_load_line():
    text = report.tables(make_rows())
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Summary"
    assert "machine load: quiet" in text and "Warning" not in text
    summary = text.split("## Summary")[1].split("## ")[0]
    lines = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines()
             if line.startswith("| ") and "---" not in line}
    # diag_scan at L=256: jax:auto 4 ms, best peer mambapy 16 ms -> 4x; s5: torch 6, s5-pytorch 24
    assert "| jax:auto | 4 | mambapy:pscan | 16 | 4.00x |" in lines["diag_scan"]
    assert "| torch:eager | 6 | s5-pytorch:apply_ssm | 24 | 4.00x |" in lines["s5"]
    assert "(no peer)" in lines["s4d"]
    # the quick skip of jax forward + backward is listed with its reason
    assert "not timed in --quick" in text.split("## Skipped and failed")[1]


@pytest.mark.parametrize("kw, why", [
    ({"load_start": 1.5}, "load average above 0.5 x 2 cpus"),
    ({"bw_end": 15.0}, "copy bandwidth changed by more than 20%"),
])
def test_a_loaded_machine_is_flagged_prominently(kw, why):
    text = report.tables(make_rows(**kw))
    first = text.split("## Summary")[0]  # before anything else
    assert "Warning: the machine was loaded" in first and "not authoritative" in first
    assert f"machine load: LOADED: {why}" in text
    assert all("not authoritative" in d["title"] for d in described(make_rows(**kw)).values())
    assert all("not authoritative" not in d["title"] for d in described(make_rows()).values())


def test_rows_without_load_figures_say_so():
    rows = [{k: v for k, v in r.items() if not k.startswith(("load", "host", "cpus"))}
            for r in make_rows()]
    text = report.tables(rows)
    assert "machine load: not recorded" in text and "Warning" not in text


def _check_description(desc):
    """Every line of every panel: its STYLES colour and marker; the legend: every line label
    once; axes: length in tokens, a y label with a unit or a ratio."""
    labels = set()
    for ax in desc["axes"]:
        assert ax["xlabel"] == "length (tokens)"
        assert ax["ylabel"] in ("time (ms)", "achieved GB/s (minimal traffic / time)",
                                "best peer time / our time"), ax
        for label, (colour, marker) in ax["lines"].items():
            labels.add(label)
            if label.startswith(("copy bandwidth", "= best peer")):
                continue
            assert [colour, marker] == list(report.STYLES[label.split()[0]]), (label, ax)
    assert sorted(desc["legend"]) == sorted(labels)
    return labels


def test_figures_one_style_per_implementation_legend_outside():
    import matplotlib.pyplot as plt

    figs = dict(report.figures(make_rows()))
    assert set(figs) == {"ops_time.png", "ops_bandwidth.png", "layers_fwd_time.png",
                         "layers_fwd_bwd_time.png", "choose.png"}
    for name, fig in figs.items():
        desc = report.describe(fig)
        _check_description(desc)
        fig.canvas.draw()
        legend = fig.legends[0].get_window_extent()
        right = max(ax.get_window_extent().x1 for ax in fig.axes if ax.get_visible())
        assert legend.x0 >= right, name  # outside every panel
        plt.close(fig)
    figs = described(make_rows())
    grad = figs["layers_fwd_bwd_time.png"]
    assert grad["legend"] == ["torch:eager"]  # jax:auto was skipped: a note says so
    why = runner.QUICK_SKIPS[("jax", "fwd+bwd")]
    assert grad["notes"] == [f"not shown: jax:auto (skip: {why})"]
    assert figs["ops_time.png"]["notes"] == []
    bw = figs["ops_bandwidth.png"]
    assert bw["legend"][-1] == "copy bandwidth (20 GB/s)"  # reference lines after the series
    choose = figs["choose.png"]
    titles = [ax["title"] for ax in choose["axes"]]
    assert titles[:2] == ["s4d forward", "s5 forward"]
    assert "diag_scan (op) forward" in titles
    speedup = {ax["title"]: ax for ax in choose["axes"] if "speed-up" in ax["title"]}
    assert set(speedup) == {"diag_scan: speed-up over the best peer",
                            "s5: speed-up over the best peer"}
    assert set(speedup["s5: speed-up over the best peer"]["lines"]) == {
        "jax:auto", "torch:eager", "= best peer"}
    s5 = next(ax for ax in choose["axes"] if ax["title"] == "s5 forward")
    assert "s5-pytorch:apply_ssm" in s5["lines"]  # the peer drawn with ours
    assert "jax:auto bfloat16" in figs["layers_fwd_time.png"]["legend"]
    assert "jax:auto bfloat16" not in choose["legend"]  # float32 only


def test_speedup_values_are_best_peer_over_ours():
    series = report._speedup_series(make_rows(), "diag_scan")
    assert series[("jax:auto", "float32")] == [(L, 4.0) for L in LENGTHS]
    assert series[("numpy:spec", "float32")] == [(L, 0.5) for L in LENGTHS]


def test_png_metadata_records_consistent_series(tmp_path):
    from PIL import Image

    paths = report.plots(make_rows(), tmp_path)
    assert {p.name for p in paths} == {"ops_time.png", "ops_bandwidth.png", "choose.png",
                                       "layers_fwd_time.png", "layers_fwd_bwd_time.png"}
    colour_of = {}
    for p in paths:
        desc = json.loads(Image.open(p).text["liquidssm:plot"])
        _check_description(desc)
        for ax in desc["axes"]:
            for label, (colour, _) in ax["lines"].items():
                assert colour_of.setdefault(label, colour) == colour, (p.name, label)
    assert colour_of["jax:auto"] != colour_of["torch:eager"]
