"""The leaderboard: upserted index, tables rebuilt from each run's metrics.csv."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from bench import leaderboard
from bench.errors import BenchError

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
HEADER = "generator,n_real,n_fake,r_acc,f_acc,acc,ap,auc\n"

# Per-run metrics.csv bodies, written as the runner writes them (NaN as an empty cell).
CNNSPOT_OLD = HEADER + (
    "progan,10,10,1.0,0.992,0.996,1.0,1.0\n"
    "stylegan,10,10,0.98,0.704,0.842,0.9312,0.9401\n"
    "mean,20,20,0.99,0.848,0.919,0.9656,0.97005\n"
)
CNNSPOT_NEW = HEADER + (
    "progan,10,10,1.0,0.994,0.997,1.0,1.0\n"
    "stylegan,10,10,0.99,0.732,0.861,0.95,0.96\n"
    "mean,20,20,0.995,0.863,0.929,0.975,0.98\n"
)
NSNET = HEADER + (
    "progan,10,10,1.0,0.998,0.999,1.0,1.0\n"
    "stylegan,10,10,0.99,0.912,0.951,0.9876,0.9911\n"
    "dalle,0,10,,0.623,0.623,,\n"
    "mean,20,30,0.995,0.8443,0.8577,0.9938,0.99555\n"
)
CNNSPOT_SDV4 = HEADER + (
    "progan,10,10,0.9,0.524,0.712,0.8,0.81\n"
    "wukong,10,10,0.96,0.948,0.954,0.99,0.99\n"
    "mean,20,20,0.93,0.736,0.833,0.895,0.9\n"
)


def add_run(out: Path, run_id: str, body: str, label: str, train: str) -> None:
    run = out / "runs" / run_id
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(body)
    leaderboard.record(out, label, train, run_id)


def index_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "leaderboard_index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Three rows; cnnspot/progan was re-run, which replaced its first run in place."""
    out = tmp_path / "out"
    add_run(out, "r1", CNNSPOT_OLD, "cnnspot", "progan")
    add_run(out, "r2", NSNET, "nsnet+lora+mask", "progan")
    add_run(out, "r3", CNNSPOT_NEW, "cnnspot", "progan")
    add_run(out, "r4", CNNSPOT_SDV4, "cnnspot", "sdv4")
    return out


def test_record_upserts_by_label_and_train(tmp_path):
    out = tmp_path / "out"
    add_run(out, "r1", CNNSPOT_OLD, "cnnspot", "progan")
    add_run(out, "r2", NSNET, "nsnet+lora+mask", "progan")
    assert [r["run_id"] for r in index_rows(out)] == ["r1", "r2"]
    assert leaderboard.build_table(out)["progan"].tolist() == [99.6, 99.9]

    add_run(out, "r3", CNNSPOT_NEW, "cnnspot", "progan")
    rows = index_rows(out)
    assert list(rows[0]) == ["label", "train", "run_id", "finished_at"]
    assert [(r["label"], r["train"], r["run_id"]) for r in rows] == [
        ("cnnspot", "progan", "r3"),
        ("nsnet+lora+mask", "progan", "r2"),
    ]
    assert datetime.fromisoformat(rows[0]["finished_at"]).utcoffset().total_seconds() == 0
    table = leaderboard.build_table(out)
    assert len(table) == 2
    assert table["progan"].tolist() == [99.7, 99.9]


def test_record_leaves_no_temp_files(tmp_path):
    out = tmp_path / "out"
    leaderboard.record(out, "a", "progan", "r1")
    leaderboard.record(out, "a", "progan", "r2")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_table_columns_and_values(out):
    table = leaderboard.build_table(out)
    assert list(table.columns) == [
        "detector",
        "train",
        "progan",
        "stylegan",
        "dalle",
        "wukong",
        "mean",
    ]
    assert table["detector"].tolist() == ["cnnspot", "nsnet+lora+mask", "cnnspot"]
    assert table["train"].tolist() == ["progan", "progan", "sdv4"]
    assert table["mean"].tolist() == [92.9, 85.8, 83.3]
    assert math.isnan(table.loc[0, "dalle"])


def test_metric_selection(out):
    ap = leaderboard.build_table(out, metric="ap")
    assert ap["stylegan"].tolist()[:2] == [95.0, 98.8]
    r_acc = leaderboard.build_table(out, metric="r_acc")
    assert math.isnan(r_acc.loc[1, "dalle"])  # a fakes-only generator has no R.Acc
    assert r_acc.loc[1, "mean"] == 99.5


def test_unknown_metric_lists_the_valid_ones(out):
    with pytest.raises(BenchError, match="acc, r_acc, f_acc, ap, auc"):
        leaderboard.build_table(out, metric="f1")


def test_missing_run_folder_is_skipped_with_warning(out, capsys):
    leaderboard.record(out, "ghost", "progan", "r9")
    table = leaderboard.build_table(out)
    assert "ghost" not in table["detector"].tolist()
    assert len(table) == 3
    err = capsys.readouterr().err
    assert "r9" in err and "missing" in err


def test_empty_output_folder_gives_empty_table(tmp_path):
    table = leaderboard.build_table(tmp_path)
    assert list(table.columns) == ["detector", "train", "mean"] and table.empty


def test_markdown_matches_golden(out):
    csv_path, md_path = leaderboard.write(out)
    assert md_path == out / "leaderboard.md"
    assert md_path.read_text(encoding="utf-8") == GOLDEN.read_text(encoding="utf-8")


def test_markdown_heading_for_ranking_metric(out):
    _, md_path = leaderboard.write(out, metric="auc")
    assert md_path.read_text(encoding="utf-8").splitlines()[0] == "# Leaderboard: AUC (%)"


def test_csv_output(out):
    csv_path, _ = leaderboard.write(out)
    assert csv_path == out / "leaderboard.csv"
    assert csv_path.read_text().splitlines() == [
        "detector,train,progan,stylegan,dalle,wukong,mean",
        "cnnspot,progan,99.7,86.1,,,92.9",
        "nsnet+lora+mask,progan,99.9,95.1,62.3,,85.8",
        "cnnspot,sdv4,71.2,,,95.4,83.3",
    ]


def test_import_is_cheap():
    code = "import sys, bench.leaderboard; print(sorted({'pandas', 'tabulate'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
