"""The `bench` flags for running at scale; `bench.cli` adds them.

`bench run --num-processes N` (accelerate's launcher runs the same command N times),
`--resume RUN_DIR`, `--checkpoint-every N`, `--log-with NAME`; `bench table --plan`,
`--jobs N`, `--devices LIST`. Every value is checked before any work: a bad one is a
one-line error with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from typing import Any

from bench.errors import BenchError

#: `bench run` flags that --resume cannot take: the run folder holds its own settings.
RESUME_CONFLICTS = (
    "detector",
    "addon",
    "train",
    "test",
    "opt",
    "config",
    "preset",
    "out",
    "seed",
    "name",
    "seen",
    "max_per_class",
    "batch_size",
    "epochs",
    "metric",
    "precision",
    "perturb",
    "train_name",
)
TRACKER_CHOICES = ("tensorboard", "wandb", "mlflow")


def add_scale_flags(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="run as N data-parallel processes on this machine (through accelerate's launcher; "
        "one GPU each with --device cuda, or N CPU processes)",
    )
    run.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="go on with a run that stopped, from its last checkpoint, in its own folder",
    )
    run.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="write a training checkpoint every N steps too (every epoch's end always has one)",
    )
    run.add_argument(
        "--log-with",
        choices=TRACKER_CHOICES,
        default=None,
        help="log loss, learning rate, data wait and metrics to an experiment tracker",
    )
    run.add_argument(
        "--train-name",
        default=None,
        metavar="NAME",
        help="the training set's name on the leaderboard (default: its folder)",
    )


def add_table_flags(tb: argparse.ArgumentParser) -> None:
    tb.add_argument(
        "--plan",
        action="store_true",
        help="write the unfinished rows as `bench run` commands (OUT/plan/SPEC.sh and a Slurm "
        "array script SPEC.sbatch) instead of running them",
    )
    tb.add_argument(
        "--jobs", type=int, default=None, metavar="N", help="run N rows at once on this machine"
    )
    tb.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="each row's run writes a training checkpoint every N steps too",
    )
    tb.add_argument(
        "--devices",
        default=None,
        metavar="LIST",
        help="devices the parallel rows take in turn, e.g. cuda:0,cuda:1 (default: --device)",
    )


def check_num_processes(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 4096:
        raise BenchError(f"--num-processes must be a whole number from 1 to 4096, got {value!r}")


def resumed_spec(args: argparse.Namespace) -> Any:
    """The RunSpec stored in RUN_DIR/config.json, with the flags a resume may change."""
    from bench.run_resume import read_run_config, spec_of

    given = [name for name in RESUME_CONFLICTS if getattr(args, name, None) not in (None, [])]
    if given:
        flags = " ".join(f"--{name.replace('_', '-')}" for name in given)
        raise BenchError(f"--resume takes the run's own settings; drop {flags}")
    check_num_processes(args.num_processes)
    spec = spec_of(read_run_config(args.resume))
    spec.progress = not args.quiet
    if args.device is not None:
        spec.device = args.device
    if args.workers is not None:
        spec.workers = args.workers
    if args.checkpoint_every is not None:
        spec.checkpoint_every = args.checkpoint_every
    if args.log_with is not None:
        spec.log_with = args.log_with
    if args.no_plots:
        spec.plots = False
    return spec


def launched(args: argparse.Namespace, spec: Any) -> int | None:
    """With --num-processes N > 1 outside a launcher: run this command N times through
    accelerate's launcher and return its exit status; None: run here."""
    from bench.distributed import launch_command, world_from_env

    check_num_processes(args.num_processes)
    if not args.num_processes or args.num_processes == 1 or world_from_env() > 1:
        return None
    if spec.device.startswith("cuda:"):
        raise BenchError(
            f"--device {spec.device} with --num-processes {args.num_processes} would put every "
            "process on one GPU: give --device cuda (process i takes cuda:i) or --device cpu"
        )
    if spec.device == "mps":
        raise BenchError("--num-processes cannot share --device mps")
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        raise BenchError("--num-processes needs the 'accelerate' package (pip install accelerate)")
    # the demo, if used, is built already (cmd_run built it): each process finds it cached
    command = launch_command(
        args.num_processes, spec.device, without_flag(args.argv, "--num-processes")
    )
    return subprocess.run(command, env=dict(os.environ)).returncode


def without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` less ``flag VALUE`` and ``flag=VALUE``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == flag:
            skip = True
            continue
        if item.startswith(flag + "="):
            continue
        out.append(item)
    return out


def parse_devices(text: str | None, device: str) -> list[str]:
    """``cuda:0,cuda:1`` -> each checked; None: the table's --device."""
    from bench.run_checks import check_device

    if text is None:
        return [device]
    devices = [check_device(d) for d in text.split(",") if d.strip()]
    if not devices:
        raise BenchError(f"--devices names no device: {text!r}")
    return devices
