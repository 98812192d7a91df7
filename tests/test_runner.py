"""The runner end to end with the built-in detector on tiny trees."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.plugins import get_registry
from bench.runner import RunSpec, run


def spec(tmp_path, train, test, **kw):
    base = dict(
        detector="spectral_logreg",
        train=str(train),
        test=[str(test)],
        out=str(tmp_path / "out"),
        progress=False,
        workers=0,
        epochs=20,
    )
    base.update(kw)
    return RunSpec(**base)


def test_builtin_detector_learns_and_the_run_folder_is_complete(
    tmp_path, tiny_tree, tiny_test_tree
):
    run_dir = run(spec(tmp_path, tiny_tree, tiny_test_tree), get_registry())
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "state.safetensors",
        "predictions.csv",
        "metrics.csv",
        "log.txt",
    } <= names
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "finished" and config["detector"]["options"]["epochs"] == 20
    assert config["loss_last"] < config["loss_first"]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics["generator"]) == ["gan_a", "gan_b", "mean"]
    assert list(metrics["kind"]) == ["generator", "generator", "mean"]
    assert set(metrics["test_set"].dropna()) == {"tiny-test-tree0"}
    # held-out images drawn with another seed: the detector must have learned the trace
    assert metrics.set_index("generator").loc["mean", "acc"] > 0.9
    with open(run_dir / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 and all(0.0 <= float(r["p_fake"]) <= 1.0 for r in rows)
    assert list(rows[0]) == ["path", "test_set", "generator", "label", "p_fake"]
    out = tmp_path / "out"
    assert (out / "leaderboard_acc.csv").is_file() and (out / "leaderboard_acc.md").is_file()
    assert (
        config["config"]
        and config["seed"] == 0
        and config["identity"]["test"][0][0] == ("tiny-test-tree0")
    )


def test_an_ablation_sequence_leaves_one_row_per_configuration(tmp_path, tiny_tree, tiny_test_tree):
    """Options, epochs and seeds changed run after run into one --out: nothing is lost."""
    registry = get_registry()
    small = {"input_size": 32}

    def ablation(epochs=2, seed=0, **options):
        opts = {"spectral_logreg": {**small, **options}}
        return run(
            spec(tmp_path, tiny_tree, tiny_test_tree, epochs=epochs, seed=seed, options=opts),
            registry,
        )

    first = ablation()
    again = ablation()  # the same configuration and seed: replaces its run
    ablation(bins=8)
    ablation(epochs=3)
    ablation(seed=1)  # another seed of the first configuration: joins its row
    board = pd.read_csv(tmp_path / "out" / "leaderboard_acc.csv", dtype={"seeds": str})
    assert list(board["detector"]) == [
        "spectral_logreg (bins=24, epochs=2)",
        "spectral_logreg (bins=8, epochs=2)",
        "spectral_logreg (bins=24, epochs=3)",
    ]
    assert list(board["seeds"]) == ["0 1", "0", "0"]
    assert len(set(board["config"])) == 3
    runs = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 5 and first.name in runs and again.name in runs  # every run kept


def test_unreadable_images_are_recorded_as_skipped(tmp_path, tiny_tree):
    import shutil

    test = tmp_path / "test"
    shutil.copytree(tiny_tree, test)
    (test / "gan_a" / "0_real" / "broken.png").write_bytes(b"not an image")
    run_dir = run(spec(tmp_path, tiny_tree, test, epochs=1), get_registry())
    skipped = (run_dir / "skipped.txt").read_text().splitlines()
    assert any(line.startswith("test\t") and "broken.png" in line for line in skipped)


def test_trainable_detector_without_train_set_is_refused(tmp_path, tiny_tree):
    with pytest.raises(BenchError, match="must be trained"):
        run(
            RunSpec(detector="spectral_logreg", test=[str(tiny_tree)], out=str(tmp_path)),
            get_registry(),
        )


def test_saved_state_reproduces_predictions(tmp_path, tiny_tree, tiny_test_tree):
    from bench.predict import predict_images

    run_dir = run(spec(tmp_path, tiny_tree, tiny_test_tree, epochs=3), get_registry())
    with open(run_dir / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))[:4]
    again = predict_images(run_dir, [r["path"] for r in rows], device="cpu")
    for row, (_, prob) in zip(rows, again, strict=True):
        assert abs(float(row["p_fake"]) - prob) < 1e-5
