"""A leaderboard that grows run by run: one row per (detector+addons, train set).

`OUT/leaderboard_index.csv` says which run is current for each row; the tables are rebuilt
from the runs' own `metrics.csv`, so they can be redrawn for any metric at any time.
Import-light: pandas and tabulate are imported only where a table is built.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.fileio import new_file_mode

if TYPE_CHECKING:
    import pandas as pd

INDEX_NAME = "leaderboard_index.csv"
INDEX_COLUMNS = ("label", "train", "run_id", "finished_at")
MISSING = "–"  # how the Markdown table shows a generator a run did not test


def index_path(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / INDEX_NAME


def run_dir(out_dir: str | os.PathLike[str], run_id: str) -> Path:
    return Path(out_dir) / "runs" / run_id


def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and os.replace: a crash leaves the old file whole, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp makes 0600; a shared folder needs the umask's
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the index, so parallel runs cannot drop each other's rows."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; runs there are rarely parallel
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_index(out_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The index rows in order; empty when nothing has been recorded yet."""
    path = index_path(out_dir)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [dict(row) for row in csv.DictReader(fh)]


def record(out_dir: str | os.PathLike[str], label: str, train: str, run_id: str) -> None:
    """Make `run_id` the current run for (label, train); a re-run keeps the row's position."""
    path = index_path(out_dir)
    entry = {
        "label": label,
        "train": train,
        "run_id": run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with _locked(path):
        rows = read_index(out_dir)
        for i, row in enumerate(rows):
            if (row.get("label"), row.get("train")) == (label, train):
                rows[i] = entry
                break
        else:
            rows.append(entry)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write_text(path, buf.getvalue())


def _check_metric(metric: str) -> None:
    from bench.metrics import METRICS

    if metric not in METRICS:
        raise BenchError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _run_scores(
    out_dir: str | os.PathLike[str], run_id: str, metric: str
) -> dict[str, float] | None:
    """{generator: metric} of one run, or None (with a warning) when its metrics are unusable."""
    import pandas as pd

    path = run_dir(out_dir, run_id) / "metrics.csv"
    if not path.is_file():
        _warn(f"skipping run {run_id}: {path} is missing")
        return None
    try:
        # Generator names stay strings ("1", "NA" and "None" are names here, not numbers/NaN).
        frame = pd.read_csv(path, dtype={"generator": str}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as err:
        _warn(f"skipping run {run_id}: cannot read {path}: {err}")
        return None
    if "generator" not in frame.columns or metric not in frame.columns:
        _warn(f"skipping run {run_id}: {path} has no 'generator' or {metric!r} column")
        return None
    return dict(zip(frame["generator"], frame[metric].astype(float), strict=True))


def build_table(out_dir: str | os.PathLike[str], metric: str = "acc") -> pd.DataFrame:
    """`detector, train, <generators...>, mean` with `metric` x100 at one decimal."""
    import pandas as pd

    _check_metric(metric)
    rows = []
    generators: dict[str, None] = {}  # insertion-ordered set: order of first appearance
    for entry in read_index(out_dir):
        scores = _run_scores(out_dir, entry["run_id"], metric)
        if scores is None:
            continue
        for generator in scores:
            if generator != "mean":
                generators.setdefault(generator)
        rows.append({"detector": entry["label"], "train": entry["train"], **scores})
    columns = ["detector", "train", *generators, "mean"]
    table = pd.DataFrame(rows, columns=columns)
    numeric = columns[2:]
    table[numeric] = (table[numeric].astype(float) * 100).round(1)
    return table


def _heading(metric: str, threshold: float) -> str:
    from bench.metrics import METRIC_NAMES, THRESHOLD_METRICS

    heading = f"# Leaderboard: {METRIC_NAMES[metric]} (%)"
    if metric in THRESHOLD_METRICS:
        heading += f" at threshold {threshold:g}"
    return heading


def to_markdown(table: pd.DataFrame, metric: str, threshold: float = 0.5) -> str:
    """GitHub-flavoured Markdown, one decimal, untested generators shown as an en dash."""
    cells = table.astype(object).where(table.notna(), None)
    # A detector or train set named "1" stays text; tabulate fails on this option with no rows.
    text_columns = {"disable_numparse": [0, 1]} if len(cells) else {}
    body = cells.to_markdown(
        index=False, tablefmt="github", floatfmt=".1f", missingval=MISSING, **text_columns
    )
    return f"{_heading(metric, threshold)}\n\n{body}\n"


def write(
    out_dir: str | os.PathLike[str], metric: str = "acc", threshold: float = 0.5
) -> tuple[Path, Path]:
    """Redraw `leaderboard.csv` and `leaderboard.md`; `threshold` only labels the heading."""
    table = build_table(out_dir, metric)
    csv_path = Path(out_dir) / "leaderboard.csv"
    md_path = Path(out_dir) / "leaderboard.md"
    _atomic_write_text(csv_path, table.to_csv(index=False, float_format="%.1f"))
    _atomic_write_text(md_path, to_markdown(table, metric, threshold))
    return csv_path, md_path
