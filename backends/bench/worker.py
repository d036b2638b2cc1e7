"""Worker process: read one group's job (JSON) from stdin, print one `ROW <json>` line per case.

Run by runner.spawn_group as `python -m liquidssm.bench.worker`; not a public entry point.
"""

from __future__ import annotations

import json
import sys

from .cases import Case
from .runner import ROW_PREFIX, run_group
from .timing import Budget


def main() -> None:
    job = json.load(sys.stdin)
    out = sys.stdout

    def emit(row):
        out.write(ROW_PREFIX + json.dumps(row) + "\n")
        out.flush()

    cases = [Case(**c) for c in job["cases"]]
    run_group(job["backend"], job["impl"], job["device"], cases, Budget(**job["budget"]),
              job["copy_gbps"], emit, job["max_call_s"])


if __name__ == "__main__":
    main()
