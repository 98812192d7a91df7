"""Robustness sweeps end to end: robustness.csv, its numbers, sweeps of finished runs, tables.

One real sweep (spectral_logreg on the tiny trees, plots on) is shared by the file; the
cross-run and table-spec renderings are checked on run folders written by hand.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bench.tables as tables
from bench.cli import main
from bench.errors import BenchError
from bench.plugins import get_registry
from bench.robustness import sweep_finished_run
from bench.runner import RunSpec, run

COLUMNS = ["perturbation", "level", "generator", "n_real", "n_fake"]
COLUMNS += ["r_acc", "f_acc", "acc", "ap", "auc"]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header, read by hand."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_tree, tiny_test_tree) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "out"
    spec = RunSpec(
        detector="spectral_logreg",
        train=str(tiny_tree),
        test=[str(tiny_test_tree)],
        out=str(out),
        progress=False,
        workers=0,
        epochs=4,
        perturb={"jpeg": {"levels": "90,50"}, "resize": {"levels": [0.5]}},
        plots=True,
    )
    return run(spec, get_registry())


def test_sweep_writes_robustness_csv_clean_pass_first(swept: Path):
    table = pd.read_csv(swept / "robustness.csv", dtype={"level": str}, keep_default_na=False)
    assert list(table.columns) == COLUMNS
    keys = list(dict.fromkeys(zip(table["perturbation"], table["level"], strict=True)))
    assert keys == [("none", ""), ("jpeg", "90"), ("jpeg", "50"), ("resize", "0.5")]
    for _, rows in table.groupby(["perturbation", "level"]):
        assert list(rows["generator"]) == ["gan_a", "gan_b", "mean"]
        assert list(rows["n_real"]) == [12, 12, 24] and list(rows["n_fake"]) == [12, 12, 24]
    clean = table[table["perturbation"] == "none"].reset_index(drop=True)
    metrics = pd.read_csv(swept / "metrics.csv")
    for column in ("r_acc", "f_acc", "acc", "ap", "auc"):
        assert np.allclose(clean[column].astype(float), metrics[column], equal_nan=True)
    config = json.loads((swept / "config.json").read_text())
    assert [p["name"] for p in config["perturbations"]] == ["jpeg", "resize"]
    assert config["perturbations"][0]["levels"] == [90, 50] and config["status"] == "finished"


def test_each_level_is_a_real_pass_and_its_metrics_recompute_by_hand(swept: Path):
    with open(swept / "predictions.csv", newline="") as fh:
        clean = {r["path"]: float(r["prob"]) for r in csv.DictReader(fh)}
    scores = pd.read_csv(swept / "robustness_predictions.csv", dtype={"level": str})
    table = pd.read_csv(swept / "robustness.csv", dtype={"level": str}).set_index(
        ["perturbation", "level", "generator"]
    )
    for (name, level), rows in scores.groupby(["perturbation", "level"]):
        assert len(rows) == len(clean) == 48 and set(rows["path"]) == set(clean)
        # the perturbation was applied: the detector saw other pixels for (nearly) every image
        moved = np.mean(
            [
                abs(p - clean[path]) > 1e-6
                for path, p in zip(rows["path"], rows["p_fake"], strict=True)
            ]
        )
        assert moved > 0.9, (name, level)
        for generator, part in rows.groupby("generator"):
            y, p = part["label"].to_numpy(), part["p_fake"].to_numpy()
            by_hand = {"acc": np.mean((p > 0.5) == (y == 1)), "r_acc": np.mean(p[y == 0] <= 0.5)}
            for metric, value in by_hand.items():
                assert table.loc[(name, level, generator), metric] == pytest.approx(value)
    # the level matters: down-scaling by 2 destroys this detector's up-sampling trace
    accs = table["acc"]
    clean_acc = pd.read_csv(swept / "metrics.csv").set_index("generator")["acc"]
    assert any(abs(accs[("resize", "0.5", g)] - clean_acc[g]) > 0.1 for g in ("gan_a", "gan_b"))


def test_run_pictures_exist_with_sensible_sizes(swept: Path):
    for name in ("roc.png", "bars_acc.png", "histograms.png", "robustness_acc.png"):
        path = swept / "plots" / name
        width, height = png_size(path)
        assert 300 <= width <= 3000 and 250 <= height <= 2000, (name, width, height)
        assert 10_000 < path.stat().st_size < 1_000_000, name


def test_sweep_of_a_finished_run_adds_levels_without_training(swept: Path):
    state = (swept / "state.safetensors").stat().st_mtime_ns
    before = pd.read_csv(swept / "robustness.csv", dtype={"level": str})
    sweep_finished_run(
        swept,
        {"blur": {"levels": [2]}, "jpeg": {"levels": [50]}},
        device="cpu",
        workers=0,
        progress=False,
    )
    after = pd.read_csv(swept / "robustness.csv", dtype={"level": str})
    assert (swept / "state.safetensors").stat().st_mtime_ns == state
    pd.testing.assert_frame_equal(
        after.iloc[: len(before)], before
    )  # earlier levels kept as they were
    added = after.iloc[len(before) :]
    assert set(zip(added["perturbation"], added["level"], strict=True)) == {("blur", "2")}
    config = json.loads((swept / "config.json").read_text())
    assert [(p["name"], p["levels"]) for p in config["perturbations"]] == [
        ("jpeg", [90, 50]),
        ("resize", [0.5]),
        ("blur", [2.0]),
    ]
    with pytest.raises(BenchError, match="need a new run"):
        sweep_finished_run(swept, {"jpeg": {"levels": [30], "subsampling": "4:4:4"}}, device="cpu")


def test_report_is_one_self_contained_page(swept: Path):
    from bench.report import write_report

    out = swept.parent.parent
    page = write_report(out).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "spectral_logreg" in page
    assert page.count("data:image/png;base64,") >= 5  # 4 run pictures + the curves across runs
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert 'src="' not in page.replace('src="data:image/png;base64,', "")
    assert "&quot;detector&quot;" in page  # the run's configuration, escaped
    assert "Robustness: Acc (%)" in page


# ------------------------------------------------------------------ across runs


def fake_sweep(
    out: Path, label: str, run_id: str, rows: list[tuple], stronger: str = "lower"
) -> Path:
    """A run folder with robustness.csv and its index row, as a sweep leaves them."""
    run_dir = out / "runs" / run_id
    run_dir.mkdir(parents=True)
    records = [
        {"name": "jpeg", "levels": [90, 50], "level_name": "JPEG quality", "stronger": stronger}
    ]
    config = {"label": label, "status": "finished", "perturbations": records}
    (run_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    lines = [",".join(COLUMNS)] + [",".join(str(v) for v in row) for row in rows]
    (run_dir / "robustness.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    index = out / "leaderboard_index.csv"
    if not index.exists():
        index.write_text("label,train,run_id,finished_at\n", encoding="utf-8")
    with open(index, "a", encoding="utf-8") as fh:
        fh.write(f"{label},demo,{run_id},2026-01-01T00:00:00+00:00\n")
    return run_dir


def test_bench_robustness_tables_every_swept_run(tmp_path, capsys):
    out = tmp_path / "out"
    fake_sweep(
        out,
        "alpha",
        "run-a",
        [
            ("none", "", "g1", 10, 10, 1.0, 0.9, 0.95, 0.99, 0.99),
            ("none", "", "mean", 10, 10, 1.0, 0.9, 0.95, 0.99, 0.99),
            ("jpeg", 50, "g1", 10, 10, 1.0, 0.2, 0.6, 0.7, 0.7),
            ("jpeg", 50, "mean", 10, 10, 1.0, 0.2, 0.6, 0.7, 0.7),
            ("jpeg", 90, "g1", 10, 10, 1.0, 0.8, 0.9, 0.9, 0.9),
            ("jpeg", 90, "mean", 10, 10, 1.0, 0.8, 0.9, 0.9, 0.9),
        ],
    )
    fake_sweep(
        out,
        "beta",
        "run-b",
        [
            ("none", "", "mean", 10, 10, 0.5, 0.5, 0.5, 0.5, 0.5),
            ("jpeg", 90, "mean", 10, 10, 0.5, 0.25, 0.375, "", ""),
        ],
    )
    (out / "runs" / "run-c").mkdir()
    with open(out / "leaderboard_index.csv", "a", encoding="utf-8") as fh:
        fh.write("gamma,demo,run-c,2026-01-01T00:00:00+00:00\n")
    assert main(["robustness", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = [
        "| detector   | train   |   clean |   jpeg=90 |   jpeg=50 |",
        "|------------|---------|---------|-----------|-----------|",
        "| alpha      | demo    |    95.0 |      90.0 |      60.0 |",
        "| beta       | demo    |    50.0 |      37.5 |       –   |",
    ]
    assert [line for line in printed.splitlines() if line.startswith("|")] == expected
    assert "Rows without a sweep (left out): gamma." in printed
    assert (out / "robustness.csv").read_text().splitlines() == [
        "detector,train,clean,jpeg=90,jpeg=50",
        "alpha,demo,95.0,90.0,60.0",
        "beta,demo,50.0,37.5,",
    ]
    assert main(["robustness", "--out", str(out), "--metric", "f_acc", "--generator", "g1"]) == 0
    assert "| alpha      | demo    |    90.0 |      80.0 |      20.0 |" in capsys.readouterr().out
    width, height = png_size(out / "plots" / "robustness_acc.png")
    assert width >= 300 and height >= 250


def test_robustness_table_spec_renders_a_row_per_detector(tmp_path, tiny_tree, monkeypatch):
    from tests.test_tables import fake_run, row_spec

    out = tmp_path / "out"
    spec = row_spec("logreg", tiny_tree, tiny_tree)
    spec.perturb = {"jpeg": {"levels": [90, 50]}}
    fake_run(
        out, spec, "run-a", [("gan_a", 1, 1, 1, 1, 0.9, 1, 1), ("mean", 1, 1, 1, 1, 0.9, 1, 1)]
    )
    run_dir = out / "runs" / "run-a"
    config = json.loads((run_dir / "config.json").read_text())
    config["perturbations"] = [
        {"name": "jpeg", "levels": [90, 50], "options": {"subsampling": "4:2:0"}}
    ]
    (run_dir / "config.json").write_text(json.dumps(config))
    lines = [",".join(COLUMNS)]
    lines += [
        "none,,mean,1,1,1,1,0.9,1,1",
        "jpeg,90,mean,1,1,1,1,0.8,1,1",
        "jpeg,50,mean,1,1,1,1,0.55,1,1",
    ]
    (run_dir / "robustness.csv").write_text("\n".join(lines) + "\n")
    spec_file = tmp_path / "rob.toml"
    spec_file.write_text(
        'kind = "robustness"\ntitle = "Tiny robustness"\nmetric = "acc"\n'
        "[perturb]\njpeg = [50, 90]\n"
        f'[presets.demo]\ntrain = "{tiny_tree}"\ntrain_name = "tiny"\ntest = ["{tiny_tree}"]\n'
        '[[rows]]\nlabel = "logreg"\ndetector = "spectral_logreg"\n'
        "options = { spectral_logreg = { epochs = 2 } }\n"
    )

    def no_runs(*args, **kwargs):
        raise AssertionError("run() or a sweep was called although the run had every level")

    monkeypatch.setattr(tables, "run", no_runs)
    monkeypatch.setattr("bench.robustness.sweep_finished_run", no_runs)
    csv_path, md_path = tables.run_table(spec_file, out=out, progress=False)
    text = md_path.read_text()
    assert "| method | clean | jpeg=90 | jpeg=50 |" in text
    assert "| logreg |  90.0 |    80.0 |    55.0 |" in text
    assert csv_path.read_text().splitlines()[1] == "logreg,90.0,80.0,55.0,run-a,"


def test_spec_of_another_kind_may_not_name_perturbations(tmp_path):
    from bench.table_spec import load_spec

    spec = tmp_path / "t.toml"
    spec.write_text('[perturb]\njpeg = [50]\n[[rows]]\nlabel = "a"\ndetector = "spectral_logreg"\n')
    with pytest.raises(BenchError, match="'perturb' belongs to kind"):
        load_spec(spec)
    spec.write_text('kind = "robustness"\n[[rows]]\nlabel = "a"\ndetector = "spectral_logreg"\n')
    with pytest.raises(BenchError, match="needs \\[perturb\\]"):
        load_spec(spec)


# ------------------------------------------------------------------ the command line


def test_bad_perturb_flags_exit_2_before_any_run_folder(tmp_path, capsys, tiny_tree):
    out = tmp_path / "out"
    base = [
        "run",
        "--detector",
        "spectral_logreg",
        "--train",
        str(tiny_tree),
        "--test",
        str(tiny_tree),
    ]
    for flags, message in [
        (["--perturb", "jpeg=150"], "option jpeg.levels must be ≤ 100, got 150"),
        (["--perturb", "jepg=50"], "unknown perturbation 'jepg'; did you mean 'jpeg'?"),
        (["--perturb", "blur", "--opt", "resize.filter=box"], "--opt names 'resize'"),
    ]:
        assert main([*base, *flags, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


def test_config_file_perturb_table_reaches_the_run(tmp_path):
    from bench.cli import build_parser, spec_from_args

    config = tmp_path / "run.toml"
    config.write_text(
        'detector = "spectral_logreg"\nplots = false\n'
        '[perturb]\njpeg = [95, 75]\nresize = { levels = [0.5], filter = "bicubic" }\n'
    )
    spec = spec_from_args(build_parser().parse_args(["run", "--config", str(config)]))
    assert spec.perturb == {
        "jpeg": {"levels": [95, 75]},
        "resize": {"levels": [0.5], "filter": "bicubic"},
    }
    assert spec.plots is False
    flags = build_parser().parse_args(["run", "--config", str(config), "--perturb", "noise"])
    assert spec_from_args(flags).perturb == {"noise": {}}  # flags win, as elsewhere


def test_picture_commands_import_no_torch_pandas_or_matplotlib_at_start():
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from bench.cli import build_parser, main; build_parser(); "
            "main(['list', 'perturbations']); "
            "print(*[m in sys.modules for m in ('torch', 'pandas', 'matplotlib')])",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert probe.stdout.strip().splitlines()[-1] == "False False False", probe.stderr
    assert "jpeg" in probe.stdout and "noise" in probe.stdout
