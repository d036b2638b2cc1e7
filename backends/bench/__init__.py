"""liquidssm.bench: the benchmark harness behind `liquidssm bench`.

    rows = run(backends=["numpy", "torch"], quick=True)   # one dict per measurement
    write(rows, "out/")                                   # rows.csv/json, tables.md, *.png

cases (what is measured), frameworks (per-backend timing and memory), peers (other libraries),
runner (one worker process per backend:impl), report (tables and plots).
"""

from .report import COLUMNS, write
from .runner import BACKENDS, run

__all__ = ["BACKENDS", "COLUMNS", "run", "write"]
