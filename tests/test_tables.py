"""`bench table`: spec files, reuse of finished runs, the paper layout, one-line errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

import bench.tables as tables
from bench.cli import main
from bench.errors import BenchError
from bench.plugins import get_registry
from bench.runner import RunSpec, resolve_components
from bench.table_spec import (
    PAPER_DIR,
    available_specs,
    check_components,
    load_spec,
    resolve_spec_path,
)

GOLDEN = Path(__file__).parent / "golden" / "table_example.md"


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tiny_spec(tmp_path: Path, train: Path, test: Path, extra_rows: str = "") -> Path:
    """Two spectral_logreg rows, the second compared with the first; one row not available."""
    return write_spec(
        tmp_path / "tiny_table.toml",
        f"""
title = "Tiny table"
metric = "f_acc"
real_column = true
mean_column = "mAcc."
switches = ["coarse"]

[presets.demo]
train = "{train}"
train_name = "tiny"
test = ["{test}"]

[[rows]]
label = "logreg"
detector = "spectral_logreg"
options = {{ spectral_logreg = {{ epochs = 2 }} }}
switches = {{ coarse = false }}

[[rows]]
label = "logreg-coarse"
detector = "spectral_logreg"
options = {{ spectral_logreg = {{ epochs = 2, bins = 8 }} }}
switches = {{ coarse = true }}
base = "logreg"

[[rows]]
label = "ghost"
detector = "ghostnet"
switches = {{ coarse = false }}
unavailable = "GhostNet is not implemented here"
{extra_rows}""",
    )


# ------------------------------------------------------------------ shipped specs


@pytest.mark.parametrize("name", available_specs())
def test_shipped_spec_parses_and_names_known_components(name: str) -> None:
    spec = load_spec(name)
    registry = get_registry()
    runnable = check_components(spec, registry)  # unknown names or option keys raise
    for row in spec.rows:
        if row not in runnable:
            assert row.unavailable, row.label
    assert set(spec.presets) == {"demo", "paper"}
    assert "{data_root}" in spec.presets["paper"].train
    assert spec.presets["demo"].train == "{demo_root}/train"


@pytest.mark.parametrize("name", available_specs())
def test_shipped_spec_matches_its_paper_table(name: str) -> None:
    spec = load_spec(name)
    if spec.kind == "robustness":
        pytest.skip("robustness tables are not in the paper")
    if spec.paper_table is None:  # a table of our own (an ablation): no paper rows to show
        assert not any(r.paper_row for r in spec.rows)
        return
    matched = tables.paper_rows(spec)  # each paper_row names exactly one printed row
    assert set(matched) == {r.label for r in spec.rows if r.paper_row}
    with open(PAPER_DIR / "index.csv", newline="", encoding="utf-8") as fh:
        info = next(r for r in csv.DictReader(fh) if r["table"] == str(spec.paper_table))
    # Table 4 prints only means; its columns are Table 1's, whose mAcc. its means are.
    file = "table1_genimage_acc.csv" if spec.paper_table == 4 else info["file"]
    with open(PAPER_DIR / file, newline="", encoding="utf-8") as fh:
        printed_columns = next(csv.reader(fh))
    assert set(spec.presets["paper"].columns) <= set(printed_columns)
    assert spec.real_column == ("Real" in printed_columns)


def test_cross_generator_specs_share_one_paper_run_per_detector() -> None:
    """Same train, tests and labels everywhere: each detector trains once for Tables 1-8."""
    presets = {n: load_spec(n).presets["paper"] for n in available_specs()}
    assert len({(p.train, p.train_name, tuple(p.test)) for p in presets.values()}) == 1


def test_table4_switches_follow_the_nsnet_options() -> None:
    spec = load_spec("table4_ablation")
    defaults = get_registry().get("detector", "nsnet").defaults
    for row in spec.rows:
        options = {**defaults, **row.options.get("nsnet", {})}
        assert row.switches == {
            "patch_selection": options["patch_selection"],
            "nullspace": options["nullspace"] != "none",
            "contrastive": options["contrastive"],
        }, row.label


def test_open_choices_ablation_varies_exactly_those_choices() -> None:
    """Each row but the defaults' changes one of the open choices, and every non-default
    value of each has its row; nothing else moves."""
    spec = load_spec("ablation_open_choices")
    entry = get_registry().get("detector", "nsnet")
    choices = ("lora_scaling", "odd_tile", "eval_projection", "entropy_input", "normalization")
    seen = set()
    for row in spec.rows:
        assert row.detector == "nsnet" and not row.addons
        changed = row.options.get("nsnet", {})
        if row.label == "nsnet":
            assert not changed
            continue
        assert row.base == "nsnet" and len(changed) == 1, row.label
        ((key, value),) = changed.items()
        assert key in choices and value != entry.defaults[key]
        seen.add((key, value))
    wanted = {(k, c) for k in choices for c in entry.specs[k].choices if c != entry.defaults[k]}
    assert seen == wanted


def test_plug_and_play_specs_pair_each_row_with_its_base() -> None:
    for name, addon in [("table7_nullspace", "nullspace"), ("table8_patchselect", "patchselect")]:
        spec = load_spec(name)
        for row in spec.rows:
            if row.base and row.detector != "nsnet":
                base = spec.row(row.base)
                assert (row.detector, row.addons) == (base.detector, [addon]), row.label
    table8 = load_spec("table8_patchselect")
    assert not any(row.unavailable for row in table8.rows)  # DFFreq completes Table 8
    assert table8.row("dffreq+patchselect").addons == ["patchselect"]


# ------------------------------------------------------------------ spec errors


def test_bare_names_resolve_and_typos_get_a_suggestion() -> None:
    assert resolve_spec_path("table7_nullspace").name == "table7_nullspace.toml"
    with pytest.raises(BenchError, match="did you mean 'table7_nullspace'"):
        resolve_spec_path("table7_nullspac")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('label = "x"\ndetector = "nosuch"', "unknown detector 'nosuch'"),
        ('label = "x"\ndetector = "spectral_logreg"\naddons = ["nosuch"]', "unknown addon"),
        (
            'label = "x"\ndetector = "spectral_logreg"\noptions = { spectral_logreg = { bin = 3 } }',
            "did you mean 'spectral_logreg.bins'",
        ),
        ('label = "x"\ndetector = "spectral_logreg"\nbase = "y"', "not a row label"),
        ('label = "x"\ndetector = "spectral_logreg"\ncolour = 1', "unknown key 'colour'"),
    ],
)
def test_bad_rows_are_one_line_errors(tmp_path: Path, row: str, message: str) -> None:
    path = write_spec(
        tmp_path / "bad.toml",
        f'[presets.demo]\ntrain = "a"\ntest = ["b"]\n\n[[rows]]\n{row}\n',
    )
    with pytest.raises(BenchError, match=message) as err:
        check_components(load_spec(path), get_registry())
    assert "\n" not in str(err.value)


def test_missing_or_absent_data_root_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="needs --data-root"):
        tables.run_table("table7_nullspace", preset="paper", out=tmp_path)
    with pytest.raises(BenchError, match="not an existing folder"):
        tables.run_table(
            "table7_nullspace", preset="paper", data_root=tmp_path / "no", out=tmp_path
        )
    with pytest.raises(BenchError, match="does not exist: .*AIGIBench/train"):
        tables.run_table("table7_nullspace", preset="paper", data_root=tmp_path, out=tmp_path)


def test_cli_reports_a_bad_data_root_in_one_line(tmp_path: Path, capsys) -> None:
    code = main(["table", "table7_nullspace", "--preset", "paper", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("bench: error:") and "\n" not in err


def test_spec_test_entries_are_named_and_names_unique(tmp_path: Path) -> None:
    spec = load_spec("table1_genimage")
    names = [n for n, _ in spec.presets["paper"].test]
    assert names == ["GenImage", "ForenSynths", "UniversalFakeDetect", "AIGIBench"]
    path = write_spec(
        tmp_path / "dup.toml",
        '[presets.demo]\ntrain = "a"\ntest = [{ name = "X", path = "b" }, { name = "X", path = "c" }]\n'
        '\n[[rows]]\nlabel = "x"\ndetector = "spectral_logreg"\n',
    )
    with pytest.raises(BenchError, match="two test sets are named 'X'"):
        load_spec(path)


# ------------------------------------------------------------------ rendering and reuse


def fake_run(out: Path, spec: RunSpec, run_id: str, metrics: list[tuple]) -> None:
    """A finished run folder and its index row, as `bench run` would leave them."""
    from bench import leaderboard
    from bench.run_data import name_test_sets
    from bench.run_identity import config_key
    from bench.runner import identity_of

    resolved = resolve_components(get_registry(), spec)
    tests = name_test_sets(spec.test)
    key = config_key(identity_of(spec, resolved, tests))
    run_dir = out / "runs" / run_id
    run_dir.mkdir(parents=True)
    config = {"label": spec.label, "status": "finished", "config": key, "seed": spec.seed}
    (run_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    lines = ["kind,test_set,generator,n_real,n_fake,r_acc,f_acc,acc,ap,auc,n_generators,note"]
    for row in metrics:
        kind, test_set = ("mean", "") if row[0] == "mean" else ("generator", tests[0][0])
        lines.append(",".join([kind, test_set, *(str(v) for v in row), "1", ""]))
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    leaderboard.record(
        out, config=key, seed=spec.seed, label=spec.label, train=spec.train_name, run_id=run_id
    )


def row_spec(label: str, train: Path, test: Path, **options) -> RunSpec:
    return RunSpec(
        detector="spectral_logreg",
        train=str(train),
        test=[str(test)],
        options={"spectral_logreg": {"epochs": 2, **options}},
        preset="demo",
        train_name="tiny",
        name=label,
    )


def no_runs(*args, **kwargs):
    raise AssertionError("run() was called although every row had a finished run")


def test_table_in_paper_layout_matches_the_golden_file(tmp_path, tiny_tree, monkeypatch):
    out = tmp_path / "out"
    fake_run(
        out,
        row_spec("logreg", tiny_tree, tiny_tree),
        "run-a",
        [
            ("gan_a", 10, 10, 0.9, 0.7, 0.8, 0.85, 0.86),
            ("gan_b", 30, 30, 0.5, 0.62, 0.56, 0.6, 0.61),
            ("mean", 40, 40, 0.7, 0.66, 0.68, 0.725, 0.735),
        ],
    )
    fake_run(
        out,
        row_spec("logreg-coarse", tiny_tree, tiny_tree, bins=8),
        "run-b",
        [
            ("gan_a", 10, 10, 1.0, 0.95, 0.975, 0.99, 0.99),
            ("gan_b", 30, 30, 0.8, "", 0.8, "", ""),
            ("mean", 40, 40, 0.9, 0.95, 0.8875, 0.99, 0.99),
        ],
    )
    monkeypatch.setattr(tables, "run", no_runs)
    spec = tiny_spec(tmp_path, tiny_tree, tiny_tree)
    csv_path, md_path = tables.run_table(spec, out=out, progress=False)
    text = md_path.read_text(encoding="utf-8")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    # Real pools the real images: (10 x 0.9 + 30 x 0.5) / 40 = 60.0; mean of 60.0, 70.0, 62.0
    assert [r["Real"] for r in rows] == ["60.0", "85.0", "–"]
    assert [r["mAcc."] for r in rows] == ["64.0", "90.0 (+26.0)", "–"]
    assert rows[2]["note"].startswith("skipped: GhostNet is not implemented here")
    assert [r["run_id"] for r in rows] == ["run-a", "run-b", ""]


@pytest.mark.slow
def test_second_table_run_reuses_every_finished_row(
    tmp_path, tiny_tree, tiny_test_tree, monkeypatch
):
    calls: list[str] = []
    real_run = tables.run

    def counting_run(spec, registry):
        calls.append(spec.label)
        return real_run(spec, registry)

    monkeypatch.setattr(tables, "run", counting_run)
    spec = tiny_spec(tmp_path, tiny_tree, tiny_test_tree)
    out = tmp_path / "out"
    csv_path, md_path = tables.run_table(spec, out=out, device="cpu", workers=0, progress=False)
    assert calls == ["logreg", "logreg-coarse"]
    first = md_path.read_text(encoding="utf-8")
    assert "| logreg-coarse |" in first and ("(+" in first or "(-" in first)
    tables.run_table(spec, out=out, device="cpu", workers=0, progress=False)
    assert calls == ["logreg", "logreg-coarse"]  # nothing ran again
    assert md_path.read_text(encoding="utf-8") == first
    # A changed option is a different run: only that row runs again.
    text = spec.read_text(encoding="utf-8").replace("epochs = 2, bins = 8", "epochs = 3, bins = 8")
    spec.write_text(text, encoding="utf-8")
    tables.run_table(spec, out=out, device="cpu", workers=0, progress=False)
    assert calls == ["logreg", "logreg-coarse", "logreg-coarse"]


def test_a_failing_row_is_recorded_and_the_rest_still_drawn(tmp_path, tiny_tree, monkeypatch):
    def broken_run(spec, registry):
        raise RuntimeError("out of memory\nlong traceback text")

    monkeypatch.setattr(tables, "run", broken_run)
    spec = tiny_spec(tmp_path, tiny_tree, tiny_tree)
    with pytest.raises(BenchError, match="2 row\\(s\\) of tiny_table failed") as err:
        tables.run_table(spec, out=tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    text = (tmp_path / "out" / "tiny_table.md").read_text(encoding="utf-8")
    assert "logreg: failed: out of memory" in text


def test_paper_preset_prints_the_papers_rows_beside_ours(tmp_path, tiny_tree, monkeypatch):
    data = tmp_path / "data"
    for cls in ("ai", "nature"):  # GenImage's own layout, one generator
        folder = data / "GenImage" / "ADM" / "imagenet_ai_0508_adm" / "val" / cls
        folder.mkdir(parents=True)
        (folder / "x.png").write_bytes(b"listing does not decode")
    (data / "train").symlink_to(tiny_tree, target_is_directory=True)
    spec = write_spec(
        tmp_path / "paper_table.toml",
        """
title = "Paper-style table"
paper_table = 7
metric = "f_acc"
mean_column = "mAcc."

[presets.paper]
train = "{data_root}/train"
train_name = "tiny"
test = ["{data_root}/GenImage"]
columns = { "ADM" = "GenImage/adm", "GLIDE" = "glide" }

[[rows]]
label = "logreg"
detector = "spectral_logreg"
options = { spectral_logreg = { epochs = 2 } }
paper_row = "UnivFD"

[[rows]]
label = "logreg-coarse"
detector = "spectral_logreg"
options = { spectral_logreg = { epochs = 2, bins = 8 } }
base = "logreg"
paper_row = "+NULL-Space"
""",
    )
    out = tmp_path / "out"
    train, test = data / "train", data / "GenImage"
    metrics = [("ADM", 5, 5, 0.8, 0.5, 0.65, 0.7, 0.7), ("mean", 5, 5, 0.8, 0.5, 0.65, 0.7, 0.7)]
    for label, options in [("logreg", {}), ("logreg-coarse", {"bins": 8})]:
        run_spec = row_spec(label, train, test, **options)
        run_spec.preset = "paper"
        fake_run(out, run_spec, f"run-{label}", metrics)
    monkeypatch.setattr(tables, "run", no_runs)
    # GLIDE matches no generator in the data: an error naming what is there, before any run...
    with pytest.raises(BenchError, match=r"column 'GLIDE' \(glide\) matches no generator"):
        tables.run_table(spec, preset="paper", data_root=data, out=out, progress=False)
    # ... unless the user accepts an empty column.
    csv_path, md_path = tables.run_table(
        spec, preset="paper", data_root=data, out=out, allow_missing=True
    )
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = [
            (r["source"], r["method"], r["ADM"], r["GLIDE"], r["mAcc."]) for r in csv.DictReader(fh)
        ]
    assert rows == [
        ("ours", "logreg", "50.0", "–", "50.0"),
        ("paper", "UnivFD (paper)", "12.7", "75.6", "66.8"),
        ("ours", "logreg-coarse", "50.0", "–", "50.0 (+0.0)"),
        # A leading "+" would start a spreadsheet formula: the CSV cell is quoted as text.
        ("paper", "'+NULL-Space (paper)", "59.5", "74.9", "80.7 (+13.9)"),
    ]
    text = md_path.read_text(encoding="utf-8")
    assert "(paper preset)" in text and "Demo preset" not in text
    assert "- Missing: column 'GLIDE' (glide) matches no generator" in text


# ------------------------------------------------------------------ column matching

AVAILABLE = [("GenImage", "Midjourney"), ("GenImage", "glide"), ("AIGIBench", "Midjourney")]
AVAILABLE += [("AIGIBench", "GLIDE"), ("AIGIBench", "DALLE-3")]


def test_columns_match_set_and_generator_ignoring_case_and_separators() -> None:
    from bench.table_columns import resolve_columns

    columns = {
        "GLIDE": ["GenImage/Glide"],
        "Midjourney-V6": ["AIGIBench/Midjourney-V6", "AIGIBench/Midjourney"],
        "DALLE3": ["AIGIBench/dalle_3"],
    }
    resolved, notes = resolve_columns(columns, AVAILABLE, "spec")
    assert resolved == [
        ("GLIDE", ("GenImage", "glide")),
        ("Midjourney-V6", ("AIGIBench", "Midjourney")),  # the alias, never GenImage's
        ("DALLE3", ("AIGIBench", "DALLE-3")),
    ]
    assert notes == []


def test_a_column_matching_nothing_names_the_nearest() -> None:
    from bench.table_columns import resolve_columns

    with pytest.raises(BenchError, match="nearest: AIGIBench/Midjourney .*--allow-missing"):
        resolve_columns({"MJ": ["AIGIBench/Midjourney-V6"]}, AVAILABLE, "spec")
    resolved, notes = resolve_columns(
        {"MJ": ["AIGIBench/Midjourney-V6"]}, AVAILABLE, "spec", allow_missing=True
    )
    assert resolved == [("MJ", None)] and "matches no generator" in notes[0]
    with pytest.raises(BenchError, match="matches GenImage/Midjourney, AIGIBench/Midjourney"):
        resolve_columns({"MJ": ["midjourney"]}, AVAILABLE, "spec")  # no set: ambiguous
