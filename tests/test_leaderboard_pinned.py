"""Issue 17 (mutation testing): the leaderboard's index, tables and files, pinned.

Each test holds one behaviour that a surviving mutant of ``bench/leaderboard.py`` changed
without any test noticing. Expected cells are worked out by hand from hand-picked
predictions (2 reals and 3 fakes per generator, so every accuracy is a multiple of 20 %),
as in tests/test_leaderboard.py, whose helpers write the run folders.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import leaderboard
from tests.test_leaderboard import add_run, gen, identity

# 5/5 right on each generator it names
PERFECT = gen("T", "progan", [0.1, 0.2], [0.9, 0.8, 0.7])
# progan 3/5 (real 0.6, fake 0.3 wrong)
THREE_OF_FIVE = gen("T", "progan", [0.1, 0.6], [0.9, 0.8, 0.3])
# progan 4/5 (fake 0.3 wrong)
FOUR_OF_FIVE = gen("T", "progan", [0.1, 0.2], [0.9, 0.8, 0.3])


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ----------------------------------------------------------------------- the index file


def test_record_and_write_records_the_row_and_draws_that_metric(tmp_path):
    """The runner's entry point: one index row with every field, and the metric's tables."""
    out = tmp_path / "out"
    run = out / "runs" / "r1"
    run.mkdir(parents=True)
    from bench.metrics import per_generator_metrics
    from bench.results_io import write_metrics

    sets, gens, labels, probs = zip(*THREE_OF_FIVE, strict=True)
    write_metrics(run / "metrics.csv", per_generator_metrics(gens, labels, probs, test_sets=sets))
    (run / "config.json").write_text(json.dumps({"identity": identity()}), encoding="utf-8")
    paths = leaderboard.record_and_write(
        out, config="cfg", seed=7, label="lab", train="tr", run_id="r1", metric="r_acc"
    )
    assert [p.relative_to(out).as_posix() for p in paths] == [
        "leaderboard_r_acc.csv",
        "leaderboard_r_acc.md",
    ]
    row = leaderboard.read_index(out)[0]
    assert {k: row[k] for k in ("config", "seed", "label", "train", "run_id")} == {
        "config": "cfg",
        "seed": "7",
        "label": "lab",
        "train": "tr",
        "run_id": "r1",
    }
    # R.Acc: reals 0.1 right, 0.6 wrong: 50.0
    assert lines_of(out / "leaderboard_r_acc.csv")[1] == "lab,tr,7,50.0,50.0,,1,,cfg"
    # The default metric is accuracy: 3 of 5.
    paths = leaderboard.record_and_write(
        out, config="cfg", seed=7, label="lab", train="tr", run_id="r1"
    )
    assert sorted(p.name for p in paths) == [
        "leaderboard_acc.csv",
        "leaderboard_acc.md",
        "leaderboard_r_acc.csv",
        "leaderboard_r_acc.md",
    ]
    assert lines_of(out / "leaderboard_acc.csv")[1] == "lab,tr,7,60.0,60.0,,1,,cfg"


def test_index_cells_are_neutralised_for_spreadsheets_and_read_back_exactly(tmp_path):
    out = tmp_path / "out"
    leaderboard.record(out, config="c", seed=0, label="=cmd()", train="+t", run_id="r")
    with open(out / "leaderboard_index.csv", newline="", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))[0]
    assert (raw["label"], raw["train"]) == ("'=cmd()", "'+t")
    assert [(r["label"], r["train"]) for r in leaderboard.read_index(out)] == [("=cmd()", "+t")]


def test_a_carriage_return_in_a_label_survives_the_index(tmp_path):
    """The index is read with newline="": a quoted "\\r" is kept, not turned into "\\n"."""
    out = tmp_path / "out"
    leaderboard.record(out, config="c", seed=0, label="two\rlines", train="x\r\ny", run_id="r")
    row = leaderboard.read_index(out)[0]
    assert (row["label"], row["train"]) == ("two\rlines", "x\r\ny")


def test_empty_label_and_train_read_back_empty(tmp_path):
    out = tmp_path / "out"
    leaderboard.record(out, config="c", seed=0, label="", train="", run_id="r")
    row = leaderboard.read_index(out)[0]
    assert (row["label"], row["train"], row["seed"]) == ("", "", "0")


def test_a_column_the_index_does_not_know_is_dropped_not_fatal(tmp_path):
    """An index with a column from elsewhere (a hand edit, a newer version) still takes rows."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "leaderboard_index.csv").write_text(
        "config,seed,label,train,run_id,finished_at,note\nc,0,a,t,r1,2026-01-01T00:00:00+00:00,hi\n",
        encoding="utf-8",
    )
    leaderboard.record(out, config="d", seed=1, label="b", train="t", run_id="r2")
    assert lines_of(out / "leaderboard_index.csv")[:2] == [
        "config,seed,label,train,run_id,finished_at",
        "c,0,a,t,r1,2026-01-01T00:00:00+00:00",
    ]
    assert [r["run_id"] for r in leaderboard.read_index(out)] == ["r1", "r2"]


def test_a_legacy_index_takes_each_runs_seed_from_its_config(tmp_path):
    out = tmp_path / "out"
    for run_id, meta in (("old", {"seed": 3}), ("bare", {})):
        (out / "runs" / run_id).mkdir(parents=True)
        (out / "runs" / run_id / "config.json").write_text(json.dumps(meta), encoding="utf-8")
    (out / "leaderboard_index.csv").write_text(
        "label,train,run_id,finished_at\n"
        "a,t,old,2025-01-01T00:00:00+00:00\n"
        "b,t,bare,2025-01-01T00:00:00+00:00\n"
        "c,t,gone,2025-01-01T00:00:00+00:00\n",
        encoding="utf-8",
    )
    rows = leaderboard.read_index(out)
    assert [(r["config"], r["seed"]) for r in rows] == [
        ("legacy:a|t", "3"),
        ("legacy:b|t", ""),  # config.json without a seed
        ("legacy:c|t", ""),  # no run folder at all
    ]
    # no run id: no seed, even where a stray runs/config.json has one
    (out / "runs" / "config.json").write_text(json.dumps({"seed": 9}), encoding="utf-8")
    (out / "leaderboard_index.csv").write_text("label,train\na,t\n", encoding="utf-8")
    assert [(r["config"], r["seed"]) for r in leaderboard.read_index(out)] == [("legacy:a|t", "")]
    (out / "leaderboard_index.csv").write_text("label,train,run_id\na,t,\n", encoding="utf-8")
    assert [(r["config"], r["seed"]) for r in leaderboard.read_index(out)] == [("legacy:a|t", "")]


def test_an_index_without_a_seed_column_gives_empty_seeds(tmp_path):
    out = tmp_path / "src"
    add_run(out, "r1", PERFECT, config="c1")
    (out / "leaderboard_index.csv").write_text(
        "config,label,train,run_id\nc1,cnnspot,progan,r1\n", encoding="utf-8"
    )
    table = leaderboard.build_table(out)
    assert table["seeds"].tolist() == [""]
    assert table.loc[0, "T/progan"] == 100.0


# ------------------------------------------------------------------- files on the disk


def test_tables_go_to_a_new_nested_folder(tmp_path):
    csv_path, md_path = leaderboard.write(tmp_path / "a" / "b")
    assert csv_path == tmp_path / "a" / "b" / "leaderboard_acc.csv"
    assert csv_path.is_file() and md_path.is_file()


def test_the_temporary_file_is_made_beside_the_target(tmp_path, monkeypatch):
    """os.replace is atomic only within one file system: the temp file is in the target's
    folder, hidden, named after it and ending in .tmp (what a cleanup may look for)."""
    moves: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def replace(src, dst):
        moves.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(leaderboard.os, "replace", replace)
    leaderboard.record(tmp_path, config="c", seed=0, label="a", train="t", run_id="r")
    ((src, dst),) = moves
    assert dst == tmp_path / "leaderboard_index.csv" and src.parent == tmp_path
    assert src.name.startswith(".leaderboard_index.csv.") and src.name.endswith(".tmp")


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    leaderboard.record(tmp_path, config="c", seed=0, label="a", train="t", run_id="r")
    before = (tmp_path / "leaderboard_index.csv").read_bytes()

    def broken_fsync(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(leaderboard.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        leaderboard.record(tmp_path, config="d", seed=0, label="b", train="t", run_id="s")
    assert (tmp_path / "leaderboard_index.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "leaderboard_index.csv",
        "leaderboard_index.csv.lock",
    ]


def test_the_csv_table_ends_lines_with_a_bare_newline(tmp_path):
    out = tmp_path / "out"
    add_run(out, "r1", PERFECT)
    csv_path, _ = leaderboard.write(out)
    data = csv_path.read_bytes()
    assert b"\r" not in data and data.count(b"\n") == 2


def test_files_are_utf8_whatever_the_locale(tmp_path):
    """Under an ASCII locale (LC_ALL=C, no UTF-8 mode) the index, the tables and config.json
    are still written and read as UTF-8: names with accents neither fail nor change."""
    out = tmp_path / "out"
    rows = gen("Ünseen", "café", [0.1, 0.2], [0.9, 0.8, 0.7])
    add_run(out, "r1", rows, label="naïve", train="façade", seen=[["Ünseen", "café"]])
    config = out / "runs" / "r1" / "config.json"  # as another tool writes JSON: UTF-8 text
    config.write_text(json.dumps(json.loads(config.read_text()), ensure_ascii=False), "utf-8")
    assert "café" in config.read_text(encoding="utf-8")
    leaderboard.write(out)  # in this process too, so the test is known to reach the writers
    script = textwrap.dedent(  # ASCII source: the names are escapes
        f"""
        from bench import leaderboard
        leaderboard.record({str(out)!r}, config="c1", seed=0, label={ascii("naïve ☃")},
                           train={ascii("façade")}, run_id="r1")
        leaderboard.write({str(out)!r})
        """
    )
    env = dict(os.environ, LC_ALL="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    env.pop("LANG", None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=os.getcwd()
    )
    assert result.returncode == 0, result.stderr
    assert [r["label"] for r in leaderboard.read_index(out)] == ["naïve ☃"]
    body = lines_of(out / "leaderboard_acc.csv")
    assert body[0].split(",")[3] == "Ünseen/café"
    assert body[1].startswith("naïve ☃,façade,0,100.0,")
    assert body[1].endswith(",Ünseen/café,c1")  # the seen mark came from config.json
    assert "| naïve ☃ " in (out / "leaderboard_acc.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------ the rows


def test_collect_rows_defaults_to_accuracy_and_keeps_each_runs_id(tmp_path):
    out = tmp_path / "out"
    add_run(out, "r1", THREE_OF_FIVE, config="c1", seed=0)
    add_run(out, "r2", FOUR_OF_FIVE, config="c1", seed=1)
    (row,) = leaderboard.collect_rows(out)
    assert [(r.run_id, r.seed, r.cells) for r in row.runs] == [
        ("r1", "0", {"T/progan": 0.6}),
        ("r2", "1", {"T/progan": 0.8}),
    ]


def test_a_skipped_run_does_not_stop_the_ones_after_it(tmp_path, capsys):
    out = tmp_path / "out"
    leaderboard.record(out, config="ghost", seed=0, label="ghost", train="t", run_id="r0")
    add_run(out, "r1", PERFECT, label="real", config="c1")
    assert [r.label for r in leaderboard.collect_rows(out)] == ["real"]
    assert "skipping run r0" in capsys.readouterr().err


def test_unreadable_metrics_are_skipped_with_the_reason(tmp_path, capsys):
    out = tmp_path / "out"
    add_run(out, "r1", PERFECT, config="c1")
    (out / "runs" / "r1" / "metrics.csv").write_bytes(b"kind,generator\n\xff\xfe\n")
    assert leaderboard.collect_rows(out) == []
    err = capsys.readouterr().err
    assert err.startswith("warning: skipping run r1: cannot read ")
    assert "metrics.csv: 'utf-8' codec can't decode" in err


def test_a_run_without_the_metric_is_skipped_not_fatal(tmp_path, capsys):
    """A mean row is there but no AP column: the run is left out of the AP table."""
    out = tmp_path / "out"
    add_run(out, "r1", PERFECT, config="c1")
    (out / "runs" / "r1" / "metrics.csv").write_text(
        "kind,test_set,generator,n_real,n_fake,acc\n"
        "generator,T,progan,2,3,1.0\nmean,,mean,2,3,1.0\n",
        encoding="utf-8",
    )
    assert leaderboard.build_table(out, "acc").loc[0, "T/progan"] == 100.0
    capsys.readouterr()
    assert leaderboard.build_table(out, "ap").empty
    err = capsys.readouterr().err
    assert "skipping run r1: " in err and "has no mean row or no 'ap' column" in err


def test_rows_told_apart_only_by_their_key_show_the_key(tmp_path):
    """Two configurations with one label and equal identities: the key tells them apart."""
    out = tmp_path / "out"
    add_run(out, "r1", PERFECT, config="k1")
    add_run(out, "r2", THREE_OF_FIVE, config="k2")
    assert [r.label for r in leaderboard.collect_rows(out)] == [
        "cnnspot (config=k1)",
        "cnnspot (config=k2)",
    ]


def test_every_clash_is_named_not_only_the_first(tmp_path):
    """An unclashing label first, then two configurations sharing another label."""
    out = tmp_path / "out"
    add_run(out, "r0", PERFECT, label="alone", config="a1", ident=identity("alone"))
    add_run(out, "r1", PERFECT, config="c1", ident=identity(lr=0.1))
    add_run(out, "r2", PERFECT, config="c2", ident=identity(lr=0.5))
    assert [r.label for r in leaderboard.collect_rows(out)] == [
        "alone",
        "cnnspot (lr=0.1)",
        "cnnspot (lr=0.5)",
    ]


# ------------------------------------------------------------------------ the table


def test_three_seeds_give_the_sample_standard_deviation(tmp_path):
    """Seeds at 60, 80 and 100 %: mean 80, sample std sqrt((400 + 0 + 400) / 2) = 20."""
    out = tmp_path / "out"
    for seed, rows in enumerate((THREE_OF_FIVE, FOUR_OF_FIVE, PERFECT)):
        add_run(out, f"r{seed}", rows, config="c1", seed=seed)
    table = leaderboard.build_table(out)
    assert table.loc[0, ["T/progan", "mean", "mean_std"]].tolist() == [80.0, 80.0, 20.0]
    assert table.attrs["std"][0] == {"T/progan": 20.0, "mean": 20.0}
    assert table.loc[0, "seeds"] == "0 1 2"


def test_several_seen_and_one_class_generators_are_listed(tmp_path):
    out = tmp_path / "out"
    rows = (
        gen("T", "a", [0.1, 0.2], [0.9, 0.8, 0.7])
        + gen("T", "b", [0.1, 0.2], [0.9, 0.8, 0.7])
        + gen("T", "x", [], [0.9])
        + gen("T", "y", [0.1], [])
    )
    add_run(out, "r1", rows, seen=[["T", "b"], ["T", "a"]])
    table = leaderboard.build_table(out, "ap")
    assert table.loc[0, "seen"] == "T/a; T/b"
    assert table.attrs["metric"] == "ap" and table.attrs["single"] == ["T/x", "T/y"]
    text = leaderboard.to_markdown(table, "ap")
    assert (
        text.splitlines()[-1] == "- One class only (AP/AUC undefined, not in the mean): T/x, T/y."
    )
    assert text.startswith("# Leaderboard: AP (%)\n")  # AP needs no threshold


# --------------------------------------------------------------------- the Markdown


def test_plain_number_cells_keep_their_decimal(tmp_path):
    """One run, one seed: every cell is a plain number, still written with one decimal."""
    out = tmp_path / "out"
    add_run(out, "r1", PERFECT, config="7")
    _, md_path = leaderboard.write(out)
    assert lines_of(md_path)[4] == (
        "| cnnspot    | progan  | 0       |      100.0 |  100.0 |       1 |        7 |"
    )


def test_the_threshold_is_in_the_heading(tmp_path):
    out = tmp_path / "out"
    add_run(out, "r1", PERFECT)
    table = leaderboard.build_table(out)
    assert leaderboard.to_markdown(table, "f_acc").startswith(
        "# Leaderboard: F.Acc (%) at threshold 0.5\n"
    )
    _, md_path = leaderboard.write(out, "acc", threshold=0.7)
    assert lines_of(md_path)[0] == "# Leaderboard: Acc (%) at threshold 0.7"


def test_a_table_without_attrs_still_renders(tmp_path):
    """A table read back from CSV (no attrs): text columns, mean, n_gen, config; no spread."""
    out = tmp_path / "out"
    add_run(out, "r1", PERFECT, config="c1", seed=0)
    add_run(out, "r2", FOUR_OF_FIVE, config="c1", seed=1)
    table = leaderboard.build_table(out)
    table.attrs = {}
    lines = lines_of_text(leaderboard.to_markdown(table, "acc"))
    assert lines[2] == "| detector   | train   | seeds   |   mean |   n_gen |   config |"
    assert lines[4] == "| cnnspot    | progan  | 0 1     |   90.0 |       1 |       c1 |"


def lines_of_text(text: str) -> list[str]:
    return text.splitlines()


# ----------------------------------------------------------------- every metric's file


def test_write_all_redraws_other_metrics_in_their_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    add_run(out, "r1", THREE_OF_FIVE)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert [p.name for p in leaderboard.write_all(out)] == [
        "leaderboard_acc.csv",
        "leaderboard_acc.md",
    ]
    leaderboard.write(out, "auc")
    (out / "leaderboard_auc.md").unlink()  # the CSV alone says AUC is kept in this OUT
    paths = leaderboard.write_all(out, "r_acc")
    assert [p.relative_to(out).as_posix() for p in paths] == [
        "leaderboard_r_acc.csv",
        "leaderboard_r_acc.md",
        "leaderboard_acc.csv",
        "leaderboard_acc.md",
        "leaderboard_auc.csv",
        "leaderboard_auc.md",
    ]
    assert list(elsewhere.iterdir()) == []
    # R.Acc 1 of 2 reals; accuracy 3 of 5
    assert lines_of(out / "leaderboard_r_acc.csv")[1].startswith("cnnspot,progan,0,50.0,")
    assert lines_of(out / "leaderboard_acc.csv")[1].startswith("cnnspot,progan,0,60.0,")
