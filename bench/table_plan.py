"""`bench table --plan` and `--jobs`: a table's rows as independent `bench run` commands.

A row is one `bench run` into the table's OUT; nothing ties the rows together but OUT,
whose leaderboard index is written under a lock, so they can run in any order, at once,
on other machines or as a Slurm array. `--plan` writes them as a shell script (``sh
SCRIPT`` runs them all, ``sh SCRIPT K`` row K) and a Slurm array script that runs one row
per task; `--jobs N` runs them here, N at a time; `bench table SPEC` then draws the
table from the finished runs. Every command is read back through `bench run`'s own
parser and must give the row's configuration key, so a script never runs another
configuration than the table's. A row that stopped with a checkpoint is resumed.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.fileio import atomic_write_text

PLAN_DIR = "plan"


@dataclass
class PlannedRow:
    number: int
    label: str
    argv: list[str]  # `bench` arguments, "run" first, without --device
    device: str


def run_argv(spec: Any) -> list[str]:
    """`bench run` arguments that rebuild ``spec`` (a RunSpec), with --device last."""
    argv = ["run", "--detector", spec.detector]
    for addon in spec.addons:
        argv += ["--addon", addon]
    if spec.train:
        argv += ["--train", spec.train]
    for test in spec.test:
        argv += ["--test", test]
    if spec.preset:
        argv += ["--preset", spec.preset]
    argv += ["--out", str(Path(spec.out).resolve()), "--seed", str(spec.seed)]
    argv += ["--name", spec.label, "--metric", spec.metric]
    if spec.train_name:
        argv += ["--train-name", spec.train_name]
    if spec.max_per_class is not None:
        argv += ["--max-per-class", str(spec.max_per_class)]
    if spec.workers is not None:
        argv += ["--workers", str(spec.workers)]
    for seen in spec.seen:
        argv += ["--seen", seen]
    for component, options in spec.options.items():
        for key, value in options.items():
            argv += ["--opt", f"{component}.{key}={toml_literal(value)}"]
    for name, options in spec.perturb.items():
        options = dict(options)
        levels = options.pop("levels", None)
        if levels is None:
            argv += ["--perturb", name]
        else:
            shown = levels if isinstance(levels, str) else ",".join(str(v) for v in levels)
            argv += ["--perturb", f"{name}={shown}"]
        for key, value in options.items():
            argv += ["--opt", f"{name}.{key}={toml_literal(value)}"]
    if spec.checkpoint_every is not None:
        argv += ["--checkpoint-every", str(spec.checkpoint_every)]
    if not spec.plots:
        argv.append("--no-plots")
    return argv


def toml_literal(value: Any) -> str:
    """``value`` as the TOML literal `--opt` reads back to the same value."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value else "nan"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise BenchError(f"cannot write option value {value!r} as a `bench run` flag")


def check_round_trip(argv: list[str], spec: Any, registry: Any) -> None:
    """The command, read by `bench run`'s parser, gives the row's configuration and sweep."""
    from bench.cli import build_parser, spec_from_args
    from bench.runner import resolve_components
    from bench.tables import row_key

    args = build_parser().parse_args([*argv, "--device", spec.device])
    again = spec_from_args(args)
    same = row_key(again, registry) == row_key(spec, registry)
    sweeps = [
        [item.record() for item in resolve_components(registry, s).sweep.items]
        for s in (again, spec)
    ]
    if not same or sweeps[0] != sweeps[1] or again.label != spec.label:
        raise BenchError(
            f"row {spec.label}: its `bench run` command would run another configuration"
        )


def planned_rows(spec: Any, rows: list, out_dir: Path, registry: Any) -> list[PlannedRow]:
    """The rows with no finished run: a fresh `bench run`, or `--resume` of a stopped one."""
    from bench.run_resume import unfinished_run
    from bench.tables import reusable_run, row_key

    planned = []
    for number, row, run_spec, reason in rows:
        if reason or reusable_run(out_dir, run_spec, registry) is not None:
            continue
        stopped = unfinished_run(out_dir, row_key(run_spec, registry), run_spec.seed)
        if stopped is not None:
            argv = ["run", "--resume", str(stopped.resolve())]
            if run_spec.checkpoint_every is not None:
                argv += ["--checkpoint-every", str(run_spec.checkpoint_every)]
        else:
            argv = run_argv(run_spec)
            check_round_trip(argv, run_spec, registry)
        planned.append(PlannedRow(number, row.label, argv, run_spec.device))
    return planned


def write_plan(
    spec: Any, preset: str, out_dir: Path, planned: list[PlannedRow], progress: bool
) -> list[Path]:
    """OUT/plan/<spec>.sh and <spec>.sbatch; returns their paths."""
    from bench.tables import log

    folder = out_dir.resolve() / PLAN_DIR
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    script, array = folder / f"{spec.name}.sh", folder / f"{spec.name}.sbatch"
    assemble = shlex.join(
        ["bench", "table", str(spec.path), "--preset", preset, "--out", str(out_dir.resolve())]
    )
    cases = "\n".join(
        f"    {p.number}) $BENCH {shlex.join([*p.argv, '--device', p.device])} ;;  # {shlex.quote(p.label)}"
        for p in planned
    )
    numbers = " ".join(str(p.number) for p in planned)
    text = SCRIPT.format(
        name=spec.name,
        preset=preset,
        n=len(planned),
        assemble=assemble,
        cases=cases or "    none) ;;",
        numbers=numbers,
    )
    atomic_write_text(script, text, fsync=False)
    script.chmod(0o755)
    text = SBATCH.format(
        name=spec.name,
        array=",".join(str(p.number) for p in planned) or "0",
        logs=folder / "logs",
        script=script,
        assemble=assemble,
        n=len(planned),
    )
    atomic_write_text(array, text, fsync=False)
    log(f"{len(planned)} unfinished row(s) of {spec.name} planned: {script}, {array}", progress)
    return [script, array]


SCRIPT = """#!/bin/sh
# The {n} unfinished row(s) of table {name} (preset {preset}), one `bench run` each,
# written by `bench table --plan`. The rows are independent: run them in any order, at
# once, or on other machines that see the same --out. Then draw the table:
#   {assemble}
#   sh THIS_SCRIPT        every row, one after the other
#   sh THIS_SCRIPT K      row K only (the Slurm array script runs one row per task)
# BENCH=... picks the command (default: bench), e.g. BENCH="python -m bench.cli".
BENCH=${{BENCH:-bench}}
row() {{
  case "$1" in
{cases}
    *) echo "no row $1 in this plan (rows: {numbers})" >&2; return 2 ;;
  esac
}}
if [ $# -gt 0 ]; then row "$1"; exit $?; fi
failed=0
for k in {numbers}; do row "$k" || failed=$((failed + 1)); done
if [ "$failed" -gt 0 ]; then echo "$failed row(s) failed" >&2; exit 1; fi
"""

SBATCH = """#!/bin/bash
# One Slurm array task per unfinished row of table {name} ({n} row(s)); each takes one
# GPU and writes its run into the table's --out. Submit with `sbatch THIS_SCRIPT`; when
# the tasks are done, draw the table with
#   {assemble}
# A task stopped by the time limit or preemption (SIGTERM) keeps its checkpoint: plan
# again and the new script resumes it (`bench run --resume`). Adjust the resources below.
#SBATCH --job-name=bench-{name}
#SBATCH --array={array}
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
#SBATCH --output={logs}/{name}-row%a-%A.log
exec sh {script} "$SLURM_ARRAY_TASK_ID"
"""


def run_parallel(
    planned: list[PlannedRow], out_dir: Path, jobs: int, devices: list[str], progress: bool
) -> None:
    """Run the planned rows here, ``jobs`` at a time, the k-th started on devices[k % n];
    each row's output goes to OUT/plan/logs/. Failures show when the table is drawn."""
    from bench.tables import log

    logs = out_dir.resolve() / PLAN_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def one(k: int, row: PlannedRow) -> int:
        device = devices[k % len(devices)]
        argv = [*row.argv, "--device", device, "--quiet"]
        path = logs / f"row{row.number}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        log(f"row {row.number} ({row.label}) on {device}: started (log {path})", progress)
        with open(path, "w", encoding="utf-8") as fh:
            status = subprocess.run(
                [sys.executable, "-m", "bench.cli", *argv], stdout=fh, stderr=subprocess.STDOUT
            ).returncode
        log(
            f"row {row.number} ({row.label}): {'done' if status == 0 else f'failed ({status})'}",
            progress,
        )
        return status

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, range(len(planned)), planned))
