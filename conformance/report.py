"""The conformance report: target (variant / block / model / primitive) x backend x check, as
markdown and JSON.

Each pytest session writes <dir>/<backend>.json (its records) and then re-renders
<dir>/report.md and <dir>/report.json from every backend file in <dir>, so running the
sessions one after another (nox) leaves one report of every backend. Re-render by hand with
`python -m liquidssm.conformance.report [dir]`.

A cell is "pass" (every test passed; "pass (k skipped)" if some were skipped), "FAIL n/m"
(n of the m tests that ran failed) or "skip" (nothing ran; the reasons are listed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .cases import BLOCKS, MODELS, PRIMITIVES, VARIANTS
from .checks import CHECKS

TARGETS = VARIANTS + BLOCKS + MODELS + PRIMITIVES


def summarise(records: list[dict]) -> dict:
    """{target: {check: {passed, failed, skipped, status, reasons, failures}}}."""
    table: dict = {}
    for r in records:
        cell = table.setdefault(r["target"], {}).setdefault(
            r["check"], {"passed": 0, "failed": 0, "skipped": 0, "reasons": [], "failures": []}
        )
        cell[r["outcome"]] += 1
        if r["outcome"] == "skipped" and r["reason"] not in cell["reasons"]:
            cell["reasons"].append(r["reason"])
        if r["outcome"] == "failed":
            cell["failures"].append({"test": r["test"], "message": r["reason"]})
    for checks in table.values():
        for cell in checks.values():
            cell["status"] = status(cell)
    return table


def status(cell: dict) -> str:
    ran = cell["passed"] + cell["failed"]
    if cell["failed"]:
        return f"FAIL {cell['failed']}/{ran}"
    if cell["passed"]:
        return "pass" + (f" ({cell['skipped']} skipped)" if cell["skipped"] else "")
    return "skip"


def _short(status_text: str) -> str:
    return status_text.split(" (")[0]


def markdown(backends: dict) -> str:
    """backends: {name: {"dtypes": [...], "device": ..., "table": summarise(...)}}."""
    names = sorted(backends)
    lines = ["# liquidssm conformance report", ""]
    lines += ["Backends: " + ", ".join(
        f"{n} ({backends[n].get('device', 'cpu')}; {', '.join(backends[n].get('dtypes', []))})"
        for n in names), ""]
    lines += ["## Summary: target x backend (the checks that failed or did not run)", ""]
    lines += ["| target | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for t in TARGETS:
        row = []
        for n in names:
            checks = backends[n]["table"].get(t, {})
            failed = [c for c in CHECKS if checks.get(c, {}).get("failed")]
            skipped = [c for c in CHECKS if _short(checks.get(c, {}).get("status", "")) == "skip"]
            if not checks:
                row.append("not run")
            elif failed:
                row.append("FAIL: " + ", ".join(failed))
            else:
                row.append("pass" + (f" (skip: {', '.join(skipped)})" if skipped else ""))
        lines.append(f"| {t} | " + " | ".join(row) + " |")
    for n in names:
        table = backends[n]["table"]
        lines += ["", f"## {n}: target x check", ""]
        lines += ["| target | " + " | ".join(CHECKS) + " |", "|---" * (len(CHECKS) + 1) + "|"]
        for t in TARGETS:
            cells = [table.get(t, {}).get(c, {}).get("status", "-") for c in CHECKS]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        reasons = sorted({(c, r) for t in table for c, cell in table[t].items()
                          for r in cell["reasons"]})
        if reasons:
            lines += ["", "Skip reasons:", ""] + [f"- {c}: {r}" for c, r in reasons]
        fails = [(t, c, f) for t in TARGETS for c in CHECKS
                 for f in table.get(t, {}).get(c, {}).get("failures", [])]
        if fails:
            lines += ["", "Failures:", ""]
            lines += [f"- `{f['test']}`: {f['message']}" for _, _, f in fails]
    return "\n".join(lines) + "\n"


def write(directory: Path, backend: str, meta: dict, records: list[dict]) -> str:
    """Write <dir>/<backend>.json and re-render report.md / report.json; returns the markdown."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in backend)
    (directory / f"{safe}.json").write_text(
        json.dumps({**meta, "backend": backend, "records": records}, indent=1) + "\n"
    )
    return render(directory)


def render(directory: Path) -> str:
    directory = Path(directory)
    backends = {}
    for path in sorted(directory.glob("*.json")):
        if path.name == "report.json":
            continue
        data = json.loads(path.read_text())
        if "records" not in data:
            continue
        backends[data["backend"]] = {
            "dtypes": data.get("dtypes", []),
            "device": data.get("device", "cpu"),
            "table": summarise(data["records"]),
        }
    text = markdown(backends)
    (directory / "report.md").write_text(text)
    (directory / "report.json").write_text(json.dumps(backends, indent=1) + "\n")
    return text


def terminal_matrix(backend: str, records: list[dict]) -> str:
    """The compact matrix printed at the end of a session (one backend)."""
    table = summarise(records)
    width = max(len(t) for t in TARGETS)
    cw = max(12, *(len(c) for c in CHECKS))
    head = f"{'':{width}}  " + "  ".join(f"{c:<{cw}}" for c in CHECKS)
    rows = [f"conformance of backend {backend!r}", head]
    for t in TARGETS:
        cells = [_short(table.get(t, {}).get(c, {}).get("status", "-")) for c in CHECKS]
        rows.append(f"{t:<{width}}  " + "  ".join(f"{c:<{cw}}" for c in cells))
    return "\n".join(rows)


if __name__ == "__main__":
    print(render(Path(sys.argv[1] if len(sys.argv) > 1 else "conformance-report")))
