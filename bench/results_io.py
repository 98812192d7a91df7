"""The per-run result files: metrics.csv and predictions.csv, written and read.

Names from the data (test sets, generators, paths) pass through ``bench.text`` on the way
out, so a file never breaks on a name that is not UTF-8 and a spreadsheet never runs a
name as a formula; reading strips exactly what writing added. Stdlib only: the
leaderboard and ``bench table`` read runs without pandas.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.text import csv_cell, csv_uncell

PREDICTION_COLUMNS = ("path", "test_set", "generator", "label", "p_fake")
NUMBERS = ("n_real", "n_fake", "r_acc", "f_acc", "acc", "ap", "auc", "n_generators")
TEXT_COLUMNS = ("kind", "test_set", "generator", "note")


def column_key(test_set: str, generator: str) -> str:
    """How a generator is addressed in leaderboards: ``set/generator`` (bare if no set)."""
    return f"{test_set}/{generator}" if test_set else generator


@dataclass
class MetricsRow:
    kind: str  # "generator", "set mean" or "mean"
    test_set: str
    generator: str
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def key(self) -> str:
        return column_key(self.test_set, self.generator)


def write_metrics(path: Path, table: Any) -> None:
    """A metrics DataFrame (bench.metrics columns) as CSV; NaN as an empty cell."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(table.columns))
        for record in table.to_dict("records"):
            row = []
            for column in table.columns:
                value = record[column]
                if column in TEXT_COLUMNS:
                    row.append(csv_cell(str(value)))
                elif isinstance(value, float) and math.isnan(value):
                    row.append("")
                else:
                    row.append(value)
            writer.writerow(row)


def _number(text: str) -> float:
    return float(text) if text.strip() not in ("", "nan", "NaN") else math.nan


def read_metrics(path: Path) -> list[MetricsRow]:
    """metrics.csv rows; files from before test sets existed read as one unnamed set."""
    with open(path, newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    rows = []
    for rec in records:
        generator = csv_uncell(rec.get("generator") or "")
        # The first format had no kind: a summary row was told apart by its name.
        legacy_kind = "mean" if generator == "mean" else "generator"
        kind = rec.get("kind") or legacy_kind
        values = {k: _number(rec[k]) for k in NUMBERS if rec.get(k) is not None}
        rows.append(
            MetricsRow(
                kind=kind,
                test_set=csv_uncell(rec.get("test_set") or ""),
                generator=generator,
                values=values,
                note=rec.get("note") or "",
            )
        )
    return rows


class PredictionWriter:
    """predictions.csv, one row per (test set, generator, image), flushed batch by batch."""

    def __init__(self, path: Path):
        self._fh = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._fh)
        self._writer.writerow(PREDICTION_COLUMNS)

    def write(self, path: str, test_set: str, generator: str, label: int, p_fake: float) -> None:
        self._writer.writerow(
            [csv_cell(path), csv_cell(test_set), csv_cell(generator), int(label), f"{p_fake:.6f}"]
        )

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
