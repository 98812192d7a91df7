"""The files of a run folder, written so that a failure never loses or half-writes one.

config.json and state.safetensors are replaced atomically; on a full disk the status is
still recorded, by rewriting config.json inside the space it already holds. Text files
name paths as they are; a name that is not valid UTF-8 is written with its undecodable
bytes as ``\\xNN`` escapes, so the file stays UTF-8.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.errors import BenchError, Terminated
from bench.fileio import (
    ESCAPE_UNDECODABLE,
    atomic_write_bytes,
    atomic_write_text,
    rewrite_in_place,
)

#: How text files of a run encode names that are not valid UTF-8 (surrogate escapes).
TEXT_ERRORS = ESCAPE_UNDECODABLE
SKIPPED_FILE = "skipped.txt"
SKIPPED_COLUMNS = ("split", "path", "reason")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically; ``json`` escapes non-ASCII (and surrogates), so any name can be written."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str), fsync=False)


def record_status(path: Path, config: dict[str, Any]) -> bool:
    """Write config.json; on a full disk, rewrite it in place. False if neither worked."""
    try:
        write_json(path, config)
        return True
    except OSError:
        pass
    compact = json.dumps(config, separators=(",", ":"), default=str).encode()
    small = {k: config[k] for k in ("label", "status", "error", "started_at") if k in config}
    return rewrite_in_place(
        path,
        [
            json.dumps(config, indent=2, default=str).encode(),
            compact,
            json.dumps(small).encode(),
        ],
    )


def failure_status(exc: BaseException) -> tuple[str, str]:
    """(status, error) for config.json: interrupted by a signal, or failed with a reason."""
    if isinstance(exc, Terminated):
        return "interrupted", "SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "SIGINT"
    text = " ".join(str(exc).split())
    return "failed", f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def echo_failure(exc: BaseException) -> bool:
    """Whether the run log should repeat a failure on stderr (the CLI prints these itself)."""
    return not isinstance(exc, BenchError | OSError | KeyboardInterrupt)


def write_skipped(
    run_dir: Path,
    unreadable: dict[str, str],
    splits: dict[str, str],
    listed: list[tuple[str, str, str]] | tuple = (),
) -> None:
    """skipped.txt: tab-separated split, path, reason of every file that was not used.

    ``listed`` are (split, path, reason) of the entries the data listing did not read (other
    splits, not images, cycles, ...); ``unreadable`` the files that could not be decoded.
    """
    if not unreadable and not listed:
        return
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(SKIPPED_COLUMNS)
    writer.writerows(listed)
    for path, reason in unreadable.items():
        writer.writerow([splits.get(path, "-"), path, reason])
    atomic_write_text(run_dir / SKIPPED_FILE, buf.getvalue(), errors=TEXT_ERRORS, fsync=False)


def save_state(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """state.safetensors, atomically (a full disk leaves no half-written file)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors, metadata=metadata), fsync=False)


class RunLog:
    """Appends to OUT/runs/<id>/log.txt and echoes to stderr."""

    def __init__(self, path: Path, echo: bool = True):
        self.path = path
        self.echo = echo

    def __call__(self, message: str, *, echo: bool | None = None) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        with open(self.path, "a", encoding="utf-8", errors=TEXT_ERRORS) as fh:
            fh.write(line + "\n")
        if self.echo if echo is None else echo:
            print(line, file=sys.stderr)


def split_of_paths(train_samples: list, test_samples: list) -> dict[str, str]:
    """path -> "train", "test" or "train+test": which split a skipped file belongs to."""
    splits = {s.path: "train" for s in train_samples}
    for s in test_samples:
        splits[s.path] = "train+test" if s.path in splits else "test"
    return splits


def report_skipped(
    run_dir: Path, read_log: Any, splits: dict, log: Any, training: bool, listed: Any = ()
) -> None:
    """(Re)write skipped.txt with every unreadable file so far, and say so in the log."""
    if not read_log.unreadable:
        return
    write_skipped(run_dir, read_log.unreadable, splits, listed)
    if training:
        count = sum(1 for p in read_log.unreadable if "train" in splits.get(p, ""))
        log(f"skipped {count} unreadable training images (listed in skipped.txt)")


def record_failure(
    run_dir: Path,
    config: dict,
    exc: BaseException,
    log: Any,
    read_log: Any,
    splits: dict,
    listed: Any = (),
) -> None:
    """Status and reason into config.json, as far as the disk allows; the CLI prints the error."""
    config["status"], config["error"] = failure_status(exc)
    config["failed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with contextlib.suppress(OSError):
        write_skipped(run_dir, read_log.unreadable, splits, listed)
    if not record_status(run_dir / "config.json", config):
        print(f"bench: could not record the failure in {run_dir / 'config.json'}", file=sys.stderr)
    with contextlib.suppress(OSError):
        log(f"{config['status']}: {config['error']}", echo=echo_failure(exc))


def quiet(message: str, *, echo: bool | None = None) -> None:
    """The log of a process other than 0: process 0 writes the run's log."""


def note_checkpoints(checkpoints: Any, config: dict, previous: Any, log: Any) -> None:
    """Record where a resumed run went on from; say when a detector's loop keeps none."""
    if checkpoints is None:
        return
    if checkpoints.resumed_at is not None:
        config["resumed_at_step"] = checkpoints.resumed_at
    elif previous is not None:
        log(
            "resumed without a checkpoint: training started over"
            + ("" if checkpoints.used else " (this detector's own loop writes none)")
        )


def finish_run(spec: Any, out: Path, key: str, train_name: str, run_dir: Path, log: Any) -> None:
    """The leaderboard row and tables (under one lock: parallel runs lose no row), plots."""
    from bench import leaderboard

    paths = leaderboard.record_and_write(
        out,
        config=key,
        seed=spec.seed,
        label=spec.label,
        train=train_name,
        run_id=run_dir.name,
        metric=spec.metric,
    )
    log(f"leaderboard: {', '.join(str(p) for p in paths)}")
    if spec.plots:
        from bench.plots import plot_run_logged

        plot_run_logged(run_dir, spec.metric, log)
