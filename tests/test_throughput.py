"""benchmarks/throughput stays runnable: a tiny run prints its three tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput"


def test_throughput_runs_and_reports_every_stage():
    args = ["--sizes", "256", "--formats", "png", "--rounds", "1", "--photos", "1"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for stage in ("decode", "Patch Selection (train)", "Patch Selection (eval)", "collate"):
        assert f"| {stage}" in out
    assert "per-patch loop / Patch Selection (train)" in out
    assert "| 0.15 s |" in out and "| 0.3 s |" in out
    assert "command: benchmarks/throughput --sizes 256" in out
