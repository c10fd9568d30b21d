"""bench.e2e runs end to end on a tiny load: both modes relay, without errors (no timing)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.js_e2e import e2e_node
from tests.support.paths import ROOT

__all__ = ["e2e_node"]  # the session fixture (npm ci in clients/js), imported for pytest


def test_bench_e2e_smoke(e2e_node: str) -> None:
    tiny = ["--runs", "1", "--seconds", "1", "--warmup", "0", "--pairs", "2", "--no-docs"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.e2e", *tiny],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["plain", "end-to-end encrypted"]
    for row in rows[1:]:
        cells = [c.strip() for c in row.split("|")]
        assert cells[-2] == "0", row  # errors
        assert float(cells[2].split()[0].replace(",", "")) > 0, row  # round trips/s
