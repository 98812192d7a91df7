"""Going on with a run that stopped: `bench run --resume RUN_DIR` and `bench table`.

A run folder holds its own settings (config.json's ``spec``) and, while it trains, a
checkpoint (``bench.checkpoint``). Resuming rebuilds the run from those settings in the
same folder, checks that the data and options still give the same configuration key,
and goes on from the checkpoint. A lock held by the running process (released by the
kernel even on SIGKILL) keeps two processes from resuming, or running, one folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench.checkpoint import CHECKPOINT_NAME
from bench.errors import BenchError
from bench.text import printable

LOCK_NAME = ".running.lock"


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """config.json of a run folder that can be resumed; one-line errors otherwise."""
    path = Path(run_dir) / "config.json"
    where = printable(str(run_dir))
    if not Path(run_dir).is_dir():
        raise BenchError(f"--resume {where}: no such folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BenchError(f"--resume {where}: not a run folder (no readable config.json)") from None
    if not isinstance(config, dict) or not isinstance(config.get("spec"), dict):
        raise BenchError(f"--resume {where}: not a run folder (config.json has no run settings)")
    if config.get("status") == "finished":
        raise BenchError(f"--resume {where}: the run finished already; nothing to resume")
    return config


def spec_of(config: dict[str, Any]) -> Any:
    """The RunSpec a run was started with (fields added since then take their defaults)."""
    from bench.runner import RunSpec

    known = {f.name for f in fields(RunSpec)}
    return RunSpec(**{k: v for k, v in config["spec"].items() if k in known})


class RunLock:
    """An exclusive lock on a run folder for as long as a process works in it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.handle: Any = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks
            return self
        handle = open(self.path, "a")  # noqa: SIM115 - held until release()
        try:
            # a POSIX lock: DataLoader workers forked meanwhile do not inherit it, so it
            # ends with this process (even on SIGKILL), not with its last worker
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise BenchError(
                f"run {printable(self.path.parent.name)} is in progress in another process"
            ) from None
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing drops the lock; the file stays (no unlink race)
            self.handle = None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (tries it without waiting)."""
        try:
            self.acquire()
        except BenchError:
            return True
        self.release()
        return False


def unfinished_run(out_dir: Path, key: str, seed: int) -> Path | None:
    """The newest run in OUT/runs of this configuration and seed that stopped with a
    checkpoint and that no process is working in, if any (``bench table`` resumes it)."""
    runs = Path(out_dir) / "runs"
    if not runs.is_dir():
        return None
    for run_dir in sorted(runs.iterdir(), reverse=True):  # run ids start with a UTC stamp
        if not (run_dir / CHECKPOINT_NAME).is_file():
            continue
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (config.get("config"), config.get("seed")) != (key, seed):
            continue
        if config.get("status") != "finished" and not RunLock(run_dir).held_elsewhere():
            return run_dir
    return None
