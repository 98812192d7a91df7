"""The leaderboard: rows keyed by configuration, seeds averaged, names made safe.

Every run's metrics.csv is computed here from hand-picked predictions (2 reals and 3
fakes per generator, so each accuracy is a multiple of 20 %) and the expected cells are
worked out by hand in the comments.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from bench import leaderboard
from bench.errors import BenchError
from bench.metrics import per_generator_metrics
from bench.results_io import write_metrics

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"


def identity(detector: str = "cnnspot", **options) -> dict:
    return {
        "label": detector,
        "detector": detector,
        "addons": [],
        "options": {detector: {"lr": 0.1, **options}},
        "train": "/d/train",
        "test": [["T", "/d/test"]],
        "max_per_class": None,
    }


def gen(test_set: str, generator: str, reals: list[float], fakes: list[float]) -> list[tuple]:
    return [(test_set, generator, 0, p) for p in reals] + [
        (test_set, generator, 1, p) for p in fakes
    ]


def add_run(
    out: Path,
    run_id: str,
    rows: list[tuple],
    *,
    label: str = "cnnspot",
    train: str = "progan",
    config: str = "c1",
    seed: int = 0,
    ident: dict | None = None,
    seen: list[list[str]] | None = None,
) -> None:
    """A finished run folder (metrics.csv from the rows, config.json) and its index entry."""
    run = out / "runs" / run_id
    run.mkdir(parents=True)
    sets, gens, labels, probs = zip(*rows, strict=True)
    write_metrics(run / "metrics.csv", per_generator_metrics(gens, labels, probs, test_sets=sets))
    meta = {"identity": ident or identity(), "seen": seen or [], "seed": seed}
    (run / "config.json").write_text(json.dumps(meta), encoding="utf-8")
    leaderboard.record(out, config=config, seed=seed, label=label, train=train, run_id=run_id)


# progan 5/5 right, stylegan 3/5 (real 0.6 and fake 0.3 wrong): run mean 0.8
SEED0 = gen("T", "progan", [0.1, 0.2], [0.9, 0.8, 0.7]) + gen(
    "T", "stylegan", [0.1, 0.6], [0.9, 0.8, 0.3]
)
# progan 4/5 (real 0.7 wrong), stylegan 4/5 (fake 0.3 wrong): run mean 0.8
SEED1 = gen("T", "progan", [0.1, 0.7], [0.9, 0.8, 0.7]) + gen(
    "T", "stylegan", [0.1, 0.2], [0.9, 0.8, 0.3]
)
# lr=0.01: progan 5/5, stylegan 3/5 (fakes 0.3, 0.2 wrong): run mean 0.8
LR001 = gen("T", "progan", [0.1, 0.2], [0.9, 0.8, 0.7]) + gen(
    "T", "stylegan", [0.1, 0.2], [0.9, 0.3, 0.2]
)
# nsnet: T/progan 5/5; T/dalle fakes only, 1/2; U/mean (a generator named "mean") 4/5.
# The mean leaves dalle out: (1.0 + 0.8) / 2 = 0.9.
NSNET = (
    gen("T", "progan", [0.1, 0.2], [0.9, 0.8, 0.7])
    + gen("T", "dalle", [], [0.9, 0.2])
    + gen("U", "mean", [0.4, 0.6], [0.7, 0.8, 0.9])
)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """cnnspot with two seeds, cnnspot with another lr, nsnet; the first seed-0 run re-run."""
    out = tmp_path / "out"
    add_run(out, "r0", LR001, config="c1", seed=0)  # replaced below by r1 (same config, seed)
    add_run(out, "r1", SEED0, config="c1", seed=0)
    add_run(out, "r2", SEED1, config="c1", seed=1)
    add_run(out, "r3", LR001, config="c2", ident=identity(lr=0.01))
    add_run(
        out,
        "r4",
        NSNET,
        label="nsnet",
        config="c3",
        ident=identity("nsnet"),
        seen=[["T", "progan"]],
    )
    return out


def index_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "leaderboard_index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_index_keeps_one_run_per_configuration_and_seed(out):
    rows = index_rows(out)
    assert list(rows[0]) == ["config", "seed", "label", "train", "run_id", "finished_at"]
    assert [(r["config"], r["seed"], r["run_id"]) for r in rows] == [
        ("c1", "0", "r1"),  # r0 replaced in place: same configuration, same seed
        ("c1", "1", "r2"),
        ("c2", "0", "r3"),
        ("c3", "0", "r4"),
    ]
    assert datetime.fromisoformat(rows[0]["finished_at"]).utcoffset().total_seconds() == 0


def test_record_leaves_no_temp_files(tmp_path):
    out = tmp_path / "out"
    leaderboard.record(out, config="a", seed=0, label="a", train="t", run_id="r1")
    leaderboard.record(out, config="a", seed=0, label="a", train="t", run_id="r2")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_rows_average_seeds_and_name_what_differs(out):
    table = leaderboard.build_table(out)
    assert list(table.columns) == [
        "detector",
        "train",
        "seeds",
        "T/progan",
        "T/stylegan",
        "T/dalle",
        "U/mean",
        "mean",
        "mean_std",
        "n_generators",
        "seen",
        "config",
    ]
    assert table["detector"].tolist() == ["cnnspot (lr=0.1)", "cnnspot (lr=0.01)", "nsnet"]
    assert table["seeds"].tolist() == ["0 1", "0", "0"]
    # cnnspot lr=0.1: progan (100 + 80) / 2, stylegan (60 + 80) / 2, mean (80 + 80) / 2
    assert table.loc[0, ["T/progan", "T/stylegan", "mean", "mean_std"]].tolist() == [
        90.0,
        70.0,
        80.0,
        0.0,
    ]
    # sample standard deviation over the two seeds: |100 - 80| / sqrt(2) = 14.1
    assert table.attrs["std"][0]["T/progan"] == 14.1
    assert math.isnan(table.loc[1, "mean_std"])  # one seed: no spread to show
    assert table.loc[2, ["T/progan", "T/dalle", "U/mean", "mean"]].tolist() == [
        100.0,
        50.0,
        80.0,
        90.0,
    ]
    assert table["n_generators"].tolist() == [2, 2, 2]
    assert table["seen"].tolist() == ["", "", "T/progan"]


def test_by_seed_and_filters(out):
    table = leaderboard.build_table(out, by_seed=True)
    assert table["detector"].tolist() == [
        "cnnspot (lr=0.1) (seed=0)",
        "cnnspot (lr=0.1) (seed=1)",
        "cnnspot (lr=0.01) (seed=0)",
        "nsnet (seed=0)",
    ]
    assert table["T/progan"].tolist()[:2] == [100.0, 80.0]
    assert leaderboard.build_table(out, label="nsn")["detector"].tolist() == ["nsnet"]
    assert leaderboard.build_table(out, config="c2")["detector"].tolist() == ["cnnspot (lr=0.01)"]


def test_an_ablation_sequence_loses_no_configuration(tmp_path):
    """Options, seeds and epochs changed run after run: one row per configuration."""
    from bench.run_identity import config_key

    out = tmp_path / "out"
    runs = [(30, 24, 0), (1, 24, 0), (30, 24, 1), (30, 8, 0), (1, 24, 0)]  # the last re-runs #2
    for i, (epochs, bins, seed) in enumerate(runs):
        ident = identity("logreg", epochs=epochs, bins=bins)
        add_run(
            out, f"r{i}", SEED0, label="logreg", config=config_key(ident), seed=seed, ident=ident
        )
    table = leaderboard.build_table(out)
    assert table["detector"].tolist() == [
        "logreg (bins=24, epochs=30)",
        "logreg (bins=24, epochs=1)",
        "logreg (bins=8, epochs=30)",
    ]
    assert table["seeds"].tolist() == ["0 1", "0", "0"]
    assert [r["run_id"] for r in index_rows(out)] == ["r0", "r4", "r2", "r3"]


def test_metric_selection_and_the_metric_in_the_file_name(out):
    ap = leaderboard.build_table(out, metric="ap")
    # Seed 1's progan ties a real and a fake at 0.7: precision 1, 1, 3/4 at recall 1/3, 2/3,
    # 1 gives AP 11/12; the mean with seed 0's 1.0 is 23/24 = 95.8 %.
    assert ap["T/progan"].tolist() == [95.8, 100.0, 100.0]
    assert math.isnan(ap.loc[2, "T/dalle"])  # fakes only: AP undefined
    acc_csv, acc_md = leaderboard.write(out, "acc")
    ap_csv, ap_md = leaderboard.write(out, "ap")
    assert (acc_csv.name, ap_csv.name, ap_md.name) == (
        "leaderboard_acc.csv",
        "leaderboard_ap.csv",
        "leaderboard_ap.md",
    )
    assert acc_csv.read_text() != ap_csv.read_text()
    assert acc_md.read_text().startswith("# Leaderboard: Acc (%)")
    # A run drawn in acc refreshes every metric's file already there.
    assert sorted(p.name for p in leaderboard.write_all(out, "acc")) == [
        "leaderboard_acc.csv",
        "leaderboard_acc.md",
        "leaderboard_ap.csv",
        "leaderboard_ap.md",
    ]


def test_unknown_metric_lists_the_valid_ones(out):
    with pytest.raises(BenchError, match="acc, r_acc, f_acc, ap, auc"):
        leaderboard.build_table(out, metric="f1")


def test_missing_run_folder_is_skipped_with_warning(out, capsys):
    leaderboard.record(out, config="ghost", seed=0, label="ghost", train="t", run_id="r9")
    table = leaderboard.build_table(out)
    assert "ghost" not in table["detector"].tolist() and len(table) == 3
    err = capsys.readouterr().err
    assert "r9" in err and "missing" in err


def test_empty_output_folder_gives_empty_table(tmp_path):
    table = leaderboard.build_table(tmp_path)
    assert table.empty and list(table.columns)[:3] == ["detector", "train", "seeds"]


def test_markdown_matches_golden(out):
    _, md_path = leaderboard.write(out)
    text = md_path.read_text(encoding="utf-8")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    assert "| 90.0 ± 14.1 |" in text and "100.0*" in text


def test_csv_output(out):
    csv_path, _ = leaderboard.write(out)
    lines = csv_path.read_text().splitlines()
    assert lines[0] == (
        "detector,train,seeds,T/progan,T/stylegan,T/dalle,U/mean,mean,mean_std,n_generators,seen,config"
    )
    assert lines[1] == "cnnspot (lr=0.1),progan,0 1,90.0,70.0,,,80.0,0.0,2,,c1"
    assert lines[3] == "nsnet,progan,0,100.0,,50.0,80.0,90.0,,2,T/progan,c3"


def test_names_cannot_break_csv_or_markdown(tmp_path):
    """Formulas are neutralised for spreadsheets; | and line breaks stay inside a cell."""
    out = tmp_path / "out"
    rows = gen("=1+2", "@SUM(A1)", [0.1, 0.2], [0.9, 0.8, 0.7]) + gen(
        "set", "a|b\nc", [0.1, 0.2], [0.9, 0.8, 0.7]
    )
    add_run(out, "r1", rows, label="=cmd()", train="-t")
    csv_path, md_path = leaderboard.write(out)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        header, row = list(csv.reader(fh))
    assert header[3:5] == ["'=1+2/@SUM(A1)", "set/a|b\nc"]
    assert row[:2] == ["'=cmd()", "'-t"]
    table_lines = [
        ln for ln in md_path.read_text(encoding="utf-8").splitlines() if ln.startswith("|")
    ]
    assert len(table_lines) == 3  # header, rule, one row: no line break escaped the table
    assert all(ln.count(" | ") == table_lines[0].count(" | ") for ln in table_lines[::2])
    assert "set/a\\|b\\nc" in table_lines[0]
    # Reading the run back strips exactly what was added.
    assert leaderboard.build_table(out)["detector"].tolist() == ["=cmd()"]


def test_legacy_index_and_metrics_are_still_read(tmp_path):
    out = tmp_path / "out"
    run = out / "runs" / "old"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "generator,n_real,n_fake,r_acc,f_acc,acc,ap,auc\n"
        "progan,10,10,1.0,0.992,0.996,1.0,1.0\nmean,10,10,1.0,0.992,0.996,1.0,1.0\n"
    )
    (out / "leaderboard_index.csv").write_text(
        "label,train,run_id,finished_at\ncnnspot,progan,old,2025-01-01T00:00:00+00:00\n"
    )
    table = leaderboard.build_table(out)
    assert table.loc[0, ["detector", "progan", "mean"]].tolist() == ["cnnspot", 99.6, 99.6]


def test_import_is_cheap():
    code = "import sys, bench.leaderboard; print(sorted({'pandas', 'tabulate'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
