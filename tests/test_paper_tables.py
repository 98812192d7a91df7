"""The paper's tables as data: every printed mean is recomputed from its row's cells.

A row whose printed mean does not match its cells must be listed in
benchmarks/paper/known_mismatches.csv, and every listed row must still mismatch: a
transcription error shows up as a new mismatch, a fixed one as a stale entry.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

PAPER = Path(__file__).resolve().parents[1] / "benchmarks" / "paper"
#: |printed - round(mean, 1)| may be this much: one unit of the printed last digit.
TOLERANCE = 0.1 + 1e-9
#: Columns that are not generators.
NOT_CELLS = {"method", "base", "delta"}


def read(name: str) -> list[dict[str, str]]:
    with open(PAPER / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def index() -> dict[str, dict[str, str]]:
    return {row["table"]: row for row in read("index.csv")}


def cell_columns(row: dict[str, str], mean_column: str, mean_over: str) -> list[str]:
    cells = [c for c in row if c not in NOT_CELLS and c != mean_column]
    return [c for c in cells if c != "Real"] if mean_over == "fakes" else cells


def recompute(row: dict[str, str], mean_column: str, mean_over: str) -> float:
    cells = cell_columns(row, mean_column, mean_over)
    return sum(float(row[c]) for c in cells) / len(cells)


def adds_up(printed: float, mean: float) -> bool:
    return abs(printed - round(mean, 1)) <= TOLERANCE


def mismatches(table: str, mean_over: str | None = None) -> dict[tuple[str, str, str], float]:
    """{(table, method, printed): recomputed} for the rows that do not add up."""
    info = index()[table]
    mean_over = mean_over or info["mean_over"]
    found = {}
    for row in read(info["file"]):
        mean = recompute(row, info["mean_column"], mean_over)
        if not adds_up(float(row[info["mean_column"]]), mean):
            found[(table, row["method"], row[info["mean_column"]])] = mean
    return found


MEAN_TABLES = ["1", "2", "3", "5", "6", "7", "8"]


def test_index_lists_every_csv() -> None:
    listed = {row["file"] for row in index().values()}
    on_disk = {p.name for p in PAPER.glob("table*.csv")}
    assert listed == on_disk
    assert sorted(index()) == [str(n) for n in range(1, 9)]


@pytest.mark.parametrize("table", MEAN_TABLES)
def test_cells_are_numbers_with_one_decimal(table: str) -> None:
    info = index()[table]
    rows = read(info["file"])
    assert rows, f"table {table} is empty"
    for row in rows:
        for column in cell_columns(row, info["mean_column"], "real_and_fakes"):
            value = row[column]
            assert value.count(".") == 1 and len(value.split(".")[1]) == 1, (row, column)
            assert 0.0 <= float(value) <= 100.0, (row, column)


def test_mismatches_are_exactly_the_documented_ones() -> None:
    found: dict[tuple[str, str, str], float] = {}
    for table in MEAN_TABLES:
        found.update(mismatches(table))
    known = {(r["table"], r["method"], r["printed"]): r for r in read("known_mismatches.csv")}
    new = sorted(set(found) - set(known))
    stale = sorted(set(known) - set(found))
    assert not new, f"rows whose printed mean does not add up (transcription error?): {new}"
    assert not stale, f"documented mismatches that now add up (fixed? remove them): {stale}"
    for key, mean in found.items():
        assert abs(float(known[key]["recomputed"]) - mean) < 0.006, (key, mean)
        assert known[key]["note"].strip(), key


def test_table1_mean_includes_the_real_column() -> None:
    """More of Table 1's rows add up over Real + 17 fakes than over the 17 fakes alone."""
    with_real = len(mismatches("1", "real_and_fakes"))
    fakes_only = len(mismatches("1", "fakes"))
    assert with_real == 4 and fakes_only == 8


def test_table3_average_includes_the_real_row() -> None:
    assert not mismatches("3", "real_and_fakes")
    assert len(mismatches("3", "fakes")) == 9


@pytest.mark.parametrize("table", ["7", "8"])
def test_plug_and_play_deltas(table: str) -> None:
    """Each printed delta is the row's printed mean minus its base row's printed mean."""
    info = index()[table]
    rows = read(info["file"])
    by_method = {}
    for row in rows:
        if row["base"]:
            base = by_method[row["base"]]  # the base is printed above its "+" row
            delta = float(row[info["mean_column"]]) - float(base[info["mean_column"]])
            assert row["delta"].startswith(("+", "-")), row
            assert abs(delta - float(row["delta"])) < 0.05, (row["method"], delta)
        else:
            assert not row["delta"], row
            by_method[row["method"]] = row
    assert sum(1 for r in rows if r["base"]) == len(rows) // 2


@pytest.mark.parametrize("table", ["7", "8"])
def test_plug_and_play_baselines_repeat_table1(table: str) -> None:
    """The "without" rows of Tables 7 and 8 are Table 1's cells for the same methods."""
    table1 = {r["method"]: r for r in read(index()["1"]["file"])}
    info = index()[table]
    for row in read(info["file"]):
        method = row["method"]
        if method not in table1:
            continue
        for column in cell_columns(row, info["mean_column"], "fakes"):
            assert row[column] == table1[method][column], (table, method, column)


def test_table4_rows_follow_the_ablation_text() -> None:
    rows = read(index()["4"]["file"])
    switches = [
        tuple(r[k] == "true" for k in ("patch_selection", "nullspace", "contrastive")) for r in rows
    ]
    for r in rows:
        assert {r["patch_selection"], r["nullspace"], r["contrastive"]} <= {"true", "false"}
    means = {s: float(r["mean_acc"]) for s, r in zip(switches, rows, strict=True)}
    baseline = means[(False, False, False)]
    assert baseline == 81.2
    assert round(means[(True, False, False)] - baseline, 1) == 1.6  # "a 1.6% increase"
    assert round(means[(False, True, False)] - baseline, 1) == 4.1  # "a 4.1% improvement"
    assert round(means[(False, False, True)] - baseline, 1) == 3.0  # "improves ... by 3%"
    assert round(means[(True, True, True)] - means[(True, False, True)], 1) == 5.7  # "5.7% drop"
    table1 = {r["method"]: r for r in read(index()["1"]["file"])}
    assert means[(True, True, True)] == float(table1["Ours"]["mAcc."])  # Table 1's 93.2
