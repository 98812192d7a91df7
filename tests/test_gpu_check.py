"""benchmarks/gpu_check stays runnable: on the CPU with the tiny config it prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check"


def test_gpu_check_runs_on_cpu_with_the_tiny_config():
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--model",
            "bench-tiny-vit",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--batch",
            "8",
            "--max-batch",
            "16",
            "--projector-rounds",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("# NS-Net gpu_check: bench-tiny-vit (random weights)")
    rows = [ln for ln in lines if ln.startswith("| ") and "measurement" not in ln]
    rows = [r for r in rows if not r.startswith("| step")]
    projector = [r for r in rows if "SVD" in r or "projector" in r]
    rows = [r for r in rows if r not in projector]
    assert [r.split("|")[1].strip() for r in projector] == [
        "reduced SVD of V (float64)",
        "per-batch projector (this release)",
        "per-batch projector (first release)",
    ]
    assert float(projector[0].split("|")[3]) == 1.0
    names = [r.split("|")[1].strip() for r in rows]
    assert names == [
        "train step",
        "train step (largest batch)",
        "evaluation",
        "evaluation (largest batch)",
    ]
    batches = [int(r.split("|")[2]) for r in rows]
    assert batches == [8, 16, 8, 16]
    assert all(float(r.split("|")[3]) > 0 for r in rows)


def test_gpu_check_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        return
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "no CUDA device" in result.stderr
