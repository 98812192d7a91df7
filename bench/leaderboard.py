"""A leaderboard that grows run by run: one row per configuration, seeds averaged.

`OUT/leaderboard_index.csv` lists every recorded run under its configuration key (the hash
of what decides its result, ``bench.run_identity``) and seed. Re-running a configuration
with the same seed replaces that run; any other configuration, or another seed, adds one,
so an ablation never loses a row. The tables are rebuilt from the runs' own metrics.csv:
one row per configuration, each cell the mean over its seeds (± the standard deviation
across seeds when there are several), written per metric to `leaderboard_<metric>.csv` and
`.md`, so the file says which metric it holds and no metric overwrites another.
Import-light: pandas and tabulate are imported only where a table is built.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.fileio import new_file_mode
from bench.text import csv_cell, csv_uncell, md_cell, printable

if TYPE_CHECKING:
    import pandas as pd

INDEX_NAME = "leaderboard_index.csv"
INDEX_COLUMNS = ("config", "seed", "label", "train", "run_id", "finished_at")
LOCK_SUFFIX = ".lock"
MISSING = "–"  # how the Markdown table shows a generator a run did not test
SEEN_MARK = "*"
TEXT_COLUMNS = ("detector", "train", "seeds")
TAIL_COLUMNS = ("mean", "mean_std", "n_generators", "seen", "config")


def index_path(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / INDEX_NAME


def run_dir(out_dir: str | os.PathLike[str], run_id: str) -> Path:
    return Path(out_dir) / "runs" / run_id


def table_paths(out_dir: str | os.PathLike[str], metric: str) -> tuple[Path, Path]:
    """`leaderboard_<metric>.csv` and `.md`: the metric is in the file's name."""
    base = Path(out_dir) / f"leaderboard_{metric}"
    return base.with_suffix(".csv"), base.with_suffix(".md")


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
    with open(path.with_name(path.name + LOCK_SUFFIX), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_index(out_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The index rows in order; an index from before configuration keys is read too."""
    path = index_path(out_dir)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [dict(row) for row in csv.DictReader(fh)]
    for row in rows:
        row["label"] = csv_uncell(row.get("label") or "")
        row["train"] = csv_uncell(row.get("train") or "")
        if not row.get("config"):  # first index format: one row per (label, train)
            row["config"] = f"legacy:{row['label']}|{row['train']}"
            run_id = row.get("run_id")  # none (or empty): no run folder to read a seed from
            row["seed"] = str(_run_config(out_dir, run_id).get("seed", "")) if run_id else ""
    return rows


def record(
    out_dir: str | os.PathLike[str],
    *,
    config: str,
    seed: int | str,
    label: str,
    train: str,
    run_id: str,
) -> None:
    """Make `run_id` the run of (config, seed); a re-run keeps the row's position."""
    with _locked(index_path(out_dir)):
        _record_unlocked(out_dir, _entry(config, seed, label, train, run_id))


def record_and_write(
    out_dir: str | os.PathLike[str],
    *,
    config: str,
    seed: int | str,
    label: str,
    train: str,
    run_id: str,
    metric: str = "acc",
) -> list[Path]:
    """``record`` and ``write_all`` under one lock: runs finishing at once into one OUT
    (`bench table --jobs`, a Slurm array) each leave their row in the index, and no table
    is redrawn from an index read before another run's row landed."""
    with _locked(index_path(out_dir)):
        _record_unlocked(out_dir, _entry(config, seed, label, train, run_id))
        return write_all(out_dir, metric=metric)


def _entry(config: str, seed: int | str, label: str, train: str, run_id: str) -> dict[str, str]:
    return {
        "config": config,
        "seed": str(seed),
        "label": label,
        "train": train,
        "run_id": run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _record_unlocked(out_dir: str | os.PathLike[str], entry: dict[str, str]) -> None:
    """The index with ``entry`` in (config, seed)'s place; the caller holds the lock."""
    rows = read_index(out_dir)
    for i, row in enumerate(rows):
        if (row["config"], row["seed"]) == (entry["config"], entry["seed"]):
            rows[i] = entry
            break
    else:
        rows.append(entry)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row | {"label": csv_cell(row["label"]), "train": csv_cell(row["train"])})
    _atomic_write_text(index_path(out_dir), buf.getvalue())


def _check_metric(metric: str) -> None:
    from bench.metrics import METRICS

    if metric not in METRICS:
        raise BenchError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _warn(message: str) -> None:
    print(f"warning: {printable(message)}", file=sys.stderr)


def _run_config(out_dir: str | os.PathLike[str], run_id: str) -> dict[str, Any]:
    try:
        return json.loads((run_dir(out_dir, run_id) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@dataclass
class RunResult:
    """One run's numbers for one metric, as fractions; NaN where undefined."""

    run_id: str
    seed: str
    cells: dict[str, float]
    mean: float
    n_generators: int
    seen: set[str] = field(default_factory=set)
    single: set[str] = field(default_factory=set)
    identity: dict[str, Any] | None = None


def _load_run(
    out_dir: str | os.PathLike[str], entry: dict[str, str], metric: str
) -> RunResult | None:
    """A run's scores, or None (with a warning) when its metrics are missing or unusable."""
    from bench.results_io import column_key, read_metrics

    run_id = entry["run_id"]
    path = run_dir(out_dir, run_id) / "metrics.csv"
    if not path.is_file():
        _warn(f"skipping run {run_id}: {path} is missing")
        return None
    try:
        rows = read_metrics(path)
    except (OSError, ValueError, KeyError) as err:
        _warn(f"skipping run {run_id}: cannot read {path}: {err}")
        return None
    generators = [r for r in rows if r.kind == "generator"]
    means = [r for r in rows if r.kind == "mean"]
    if not means or any(metric not in r.values for r in generators):
        _warn(f"skipping run {run_id}: {path} has no mean row or no {metric!r} column")
        return None
    config = _run_config(out_dir, run_id)
    n_gen = means[0].values.get("n_generators", math.nan)
    return RunResult(
        run_id=run_id,
        seed=entry.get("seed", ""),
        cells={r.key: r.values[metric] for r in generators},
        mean=means[0].values[metric],
        n_generators=len(generators) if math.isnan(n_gen) else int(n_gen),
        seen={column_key(t, g) for t, g in config.get("seen", [])},
        single={
            r.key for r in generators if not (r.values.get("n_real") and r.values.get("n_fake"))
        },
        identity=config.get("identity"),
    )


@dataclass
class Row:
    label: str
    train: str
    config: str
    runs: list[RunResult]


def collect_rows(
    out_dir: str | os.PathLike[str],
    metric: str = "acc",
    by_seed: bool = False,
    label: str | None = None,
    config: str | None = None,
) -> list[Row]:
    """Rows in order of first appearance; labels made distinct where configurations differ."""
    from bench.run_identity import differences

    groups: dict[str, Row] = {}
    for entry in read_index(out_dir):
        result = _load_run(out_dir, entry, metric)
        if result is None:
            continue
        key = entry["config"] + (f"#{entry['seed']}" if by_seed else "")
        row = groups.setdefault(key, Row(entry["label"], entry["train"], entry["config"], []))
        row.label, row.train = entry["label"], entry["train"]  # the latest run names the row
        row.runs.append(result)
    rows = list(groups.values())
    clashes: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        clashes.setdefault((row.label, row.train), []).append(row)
    for same in clashes.values():
        configs = list(dict.fromkeys(r.config for r in same))
        if len(configs) < 2:
            continue
        identities = [
            next(r for r in same if r.config == c).runs[0].identity or {} for c in configs
        ]
        shown = dict(zip(configs, differences(identities), strict=True))
        for row in same:
            row.label = f"{row.label} ({shown[row.config] or 'config=' + row.config})"
    if by_seed:
        for row in rows:
            row.label = f"{row.label} (seed={row.runs[0].seed})"
    if label:
        rows = [r for r in rows if label.lower() in r.label.lower()]
    if config:
        rows = [r for r in rows if r.config.startswith(config)]
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    present = [v for v in values if not math.isnan(v)]
    if not present:
        return math.nan, math.nan
    mean = sum(present) / len(present)
    if len(present) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in present) / (len(present) - 1)
    return mean, math.sqrt(var)


def build_table(
    out_dir: str | os.PathLike[str], metric: str = "acc", **filters: Any
) -> pd.DataFrame:
    """`detector, train, seeds, <set/generator...>, mean, mean_std, n_generators, seen, config`.

    Cells are `metric` x100 at one decimal, the mean over the row's seeds; the standard
    deviation across seeds (sample std, n-1) of each cell is in ``table.attrs["std"]``.
    """
    import pandas as pd

    _check_metric(metric)
    rows = collect_rows(out_dir, metric, **filters)
    columns: dict[str, None] = {}
    for row in rows:
        for run in row.runs:
            columns.update(dict.fromkeys(run.cells))
    records, stds, seen, single = [], [], [], set()
    for row in rows:
        record = {"detector": row.label, "train": row.train}
        record["seeds"] = " ".join(r.seed for r in row.runs)
        std = {}
        for col in columns:
            record[col], std[col] = _mean_std([r.cells.get(col, math.nan) for r in row.runs])
        record["mean"], record["mean_std"] = _mean_std([r.mean for r in row.runs])
        std["mean"] = record["mean_std"]
        record["n_generators"] = row.runs[0].n_generators
        marks = sorted(set().union(*(r.seen for r in row.runs)) & set(columns))
        record["seen"] = "; ".join(marks)
        record["config"] = row.config
        seen.append(set(marks))
        single.update(*(r.single for r in row.runs))
        records.append(record)
        stds.append(std)
    names = [*TEXT_COLUMNS, *columns, *TAIL_COLUMNS]
    table = pd.DataFrame(records, columns=names)
    numeric = [*columns, "mean", "mean_std"]
    table[numeric] = (table[numeric].astype(float) * 100).round(1)
    table.attrs = {
        "std": [{k: round(v * 100, 1) for k, v in s.items()} for s in stds],
        "seen": seen,
        "single": sorted(single & set(columns)),
        "generators": list(columns),
        "metric": metric,
    }
    return table


def to_csv(table: pd.DataFrame) -> str:
    """The table as CSV with every text cell safe to open in a spreadsheet."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in table.columns])
    for record in table.to_dict("records"):
        cells = []
        for column in table.columns:
            value = record[column]
            if isinstance(value, float):
                cells.append("" if math.isnan(value) else f"{value:.1f}")
            else:
                cells.append(csv_cell(str(value)))
        writer.writerow(cells)
    return buf.getvalue()


def _heading(metric: str, threshold: float) -> str:
    from bench.metrics import METRIC_NAMES, THRESHOLD_METRICS

    heading = f"# Leaderboard: {METRIC_NAMES[metric]} (%)"
    if metric in THRESHOLD_METRICS:
        heading += f" at threshold {threshold:g}"
    return heading


def _md_value(value: float, std: float | None, seen: bool) -> str:
    if math.isnan(value):
        return MISSING
    text = f"{value:.1f}" + (f" ± {std:.1f}" if std is not None and not math.isnan(std) else "")
    return text + (SEEN_MARK if seen else "")


def to_markdown(table: pd.DataFrame, metric: str, threshold: float = 0.5) -> str:
    """GitHub Markdown: "mean ± std" cells over seeds, seen generators marked, one decimal."""
    from tabulate import tabulate

    generators = table.attrs.get("generators", [])
    stds = table.attrs.get("std", [{}] * len(table))
    seens = table.attrs.get("seen", [set()] * len(table))
    head = ["detector", "train", "seeds", *generators, "mean", "n_gen", "config"]
    body = []
    for i, record in enumerate(table.to_dict("records")):
        cells = [md_cell(str(record[c])) for c in TEXT_COLUMNS]
        cells += [_md_value(record[g], stds[i].get(g), g in seens[i]) for g in generators]
        cells += [_md_value(record["mean"], stds[i].get("mean"), False)]
        cells += [str(record["n_generators"]), record["config"]]
        body.append(cells)
    text = tabulate(
        body,
        headers=[md_cell(h) for h in head],
        tablefmt="github",
        disable_numparse=True,
        colalign=["left"] * 3 + ["right"] * (len(head) - 3),
    )
    notes = [
        "Cells: the mean over the row's seeds, ± the standard deviation across seeds when "
        "there are several; mean: over the generators with both classes (n_gen of them)."
    ]
    if any(seens):
        notes.append(f"{SEEN_MARK} generator seen in training.")
    if table.attrs.get("single"):
        names = ", ".join(md_cell(s) for s in table.attrs["single"])
        notes.append(f"One class only (AP/AUC undefined, not in the mean): {names}.")
    return (
        f"{_heading(metric, threshold)}\n\n{text}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    )


def write(
    out_dir: str | os.PathLike[str], metric: str = "acc", threshold: float = 0.5
) -> tuple[Path, Path]:
    """Redraw `leaderboard_<metric>.csv` and `.md`; `threshold` only labels the heading."""
    table = build_table(out_dir, metric)
    csv_path, md_path = table_paths(out_dir, metric)
    _atomic_write_text(csv_path, to_csv(table))
    _atomic_write_text(md_path, to_markdown(table, metric, threshold))
    return csv_path, md_path


def write_all(out_dir: str | os.PathLike[str], metric: str = "acc") -> list[Path]:
    """Redraw `metric`'s tables and every other metric's already in OUT, so none goes stale."""
    from bench.metrics import METRICS

    paths = list(write(out_dir, metric))
    for other in METRICS:
        if other != metric and table_paths(out_dir, other)[0].exists():
            paths.extend(write(out_dir, other))
    return paths
