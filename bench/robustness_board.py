"""`bench robustness`: the sweeps of every run in a results folder, as one table.

One row per leaderboard row (the run the index names for it), one column per level:
`clean`, then `jpeg=95`, `jpeg=75`, ... (each perturbation's levels from mild to strong);
the cell is the metric (x100, one decimal) of one generator or of the mean over generators.
Runs without a sweep are left out with a note. The same data draws the robustness curves
(bench.plots.robustness_curves): one line per detector, one panel per perturbation.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import leaderboard
from bench.errors import BenchError
from bench.perturb import CLEAN, format_level

CLEAN_COLUMN = "clean"


@dataclass
class PerturbationAxis:
    """A perturbation's levels in order from mild to strong, and what a level is."""

    name: str
    levels: list[str] = field(default_factory=list)
    level_name: str = "level"
    stronger: str = "higher"

    def add(self, level: str) -> None:
        if level not in self.levels:
            self.levels.append(level)
            self.levels.sort(key=float, reverse=self.stronger == "lower")

    def columns(self) -> list[str]:
        return [f"{self.name}={level}" for level in self.levels]


@dataclass
class SweepRow:
    label: str
    train: str
    run_id: str
    cells: dict[str, float]  # column -> metric in [0, 1] (NaN when undefined)


@dataclass
class Board:
    metric: str
    generator: str
    rows: list[SweepRow] = field(default_factory=list)
    axes: dict[str, PerturbationAxis] = field(default_factory=dict)
    without: list[str] = field(default_factory=list)  # labels of rows whose run has no sweep

    def columns(self) -> list[str]:
        return [CLEAN_COLUMN, *(c for axis in self.axes.values() for c in axis.columns())]


def run_records(run_dir: Path) -> list[dict[str, Any]]:
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(config.get("perturbations") or [])


def run_cells(
    run_dir: Path, metric: str, generator: str, board: Board | None = None
) -> dict[str, float]:
    """{column: value} of one run's robustness.csv; levels are added to ``board``'s axes."""
    from bench.robustness import read_robustness

    table = read_robustness(run_dir)
    if metric not in table.columns:
        raise BenchError(f"{run_dir / 'robustness.csv'} has no {metric!r} column")
    chosen = table[table["generator"] == generator]
    records = {r["name"]: r for r in run_records(run_dir)}
    cells: dict[str, float] = {}
    for perturbation, level, value in zip(
        chosen["perturbation"], chosen["level"], chosen[metric].astype(float), strict=True
    ):
        if perturbation == CLEAN:
            cells[CLEAN_COLUMN] = value
            continue
        level = format_level(float(level))
        if board is not None:
            record = records.get(perturbation, {})
            axis = board.axes.setdefault(
                perturbation,
                PerturbationAxis(
                    perturbation,
                    level_name=record.get("level_name", "level"),
                    stronger=record.get("stronger", "higher"),
                ),
            )
            axis.add(level)
        cells[f"{perturbation}={level}"] = value
    return cells


def collect(out_dir: str | Path, metric: str = "acc", generator: str = "mean") -> Board:
    """Every leaderboard row whose current run has a robustness.csv."""
    from bench.metrics import METRICS

    if metric not in METRICS:
        raise BenchError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    board = Board(metric, generator)
    for entry in leaderboard.read_index(out_dir):
        run_dir = leaderboard.run_dir(out_dir, entry["run_id"])
        if not (run_dir / "robustness.csv").is_file():
            board.without.append(entry["label"])
            continue
        cells = run_cells(run_dir, metric, generator, board)
        board.rows.append(SweepRow(entry["label"], entry["train"], entry["run_id"], cells))
    return board


def _percent(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(100.0 * value, 1)


def to_frame(board: Board) -> Any:
    import pandas as pd

    columns = board.columns()
    records = [
        {
            "detector": row.label,
            "train": row.train,
            **{c: _percent(row.cells.get(c)) for c in columns},
        }
        for row in board.rows
    ]
    return pd.DataFrame(records, columns=["detector", "train", *columns])


def heading(board: Board) -> str:
    from bench.metrics import METRIC_NAMES, THRESHOLD_METRICS

    where = "mean over generators" if board.generator == "mean" else f"generator {board.generator}"
    at = " at threshold 0.5" if board.metric in THRESHOLD_METRICS else ""
    return f"# Robustness: {METRIC_NAMES[board.metric]} (%){at}, {where}"


def to_markdown(board: Board) -> str:
    frame = to_frame(board)
    cells = frame.astype(object).where(frame.notna(), None)
    numparse = {"disable_numparse": [0, 1]} if len(cells) else {}
    body = cells.to_markdown(
        index=False,
        tablefmt="github",
        floatfmt=".1f",
        missingval=leaderboard.MISSING,
        **numparse,
    )
    notes = [
        "Each column is one pass over the test sets: `clean`, then every perturbation level "
        "(`NAME=LEVEL`, from mild to strong), applied to each image before the detector's "
        "own preprocessing. – : level not in that run's sweep."
    ]
    if board.without:
        notes.append(f"Rows without a sweep (left out): {', '.join(board.without)}.")
    return f"{heading(board)}\n\n{body}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def write(out_dir: str | Path, metric: str = "acc", generator: str = "mean") -> list[Path]:
    """OUT/robustness.csv, OUT/robustness.md and OUT/plots/robustness_<metric>.png."""
    board = collect(out_dir, metric, generator)
    if not board.rows:
        raise BenchError(
            f"no run in {out_dir} has a robustness sweep (run `bench run ... --perturb "
            f"jpeg=95,75,50,30` or `bench sweep RUN_DIR --perturb ...`)"
        )
    out = Path(out_dir)
    csv_path, md_path = out / "robustness.csv", out / "robustness.md"
    from bench.report import write_text

    write_text(csv_path, to_frame(board).to_csv(index=False, float_format="%.1f"))
    write_text(md_path, to_markdown(board))
    if board.without:
        print(f"bench: note: no sweep in the runs of {', '.join(board.without)}", file=sys.stderr)
    from bench.plots import board_curves

    png = board_curves(board, out / "plots" / f"robustness_{metric}.png")
    return [csv_path, md_path, png]
