"""The CLI through its console script, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = shutil.which("bench", path=str(Path(sys.executable).parent)) or "bench"
ROOT = Path(__file__).resolve().parent.parent


def bench(
    *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [BENCH, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300
    )


def test_help_and_list_are_fast_and_import_no_torch():
    t0 = time.perf_counter()
    result = bench("list")
    elapsed = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr
    assert "spectral_logreg" in result.stdout
    assert elapsed < 1.0
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from bench.cli import main; main(['list']); "
            "print('torch' in sys.modules, 'pandas' in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip().splitlines()[-1] == "False False"


def test_misspelt_detector_exits_2_with_one_line_suggestion():
    result = bench("run", "--detector", "spectral_logrg")
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("bench: warning")]
    assert lines == [
        "bench: error: unknown detector 'spectral_logrg'; did you mean 'spectral_logreg'?"
    ]


def test_unknown_option_and_bad_config_exit_2(tmp_path):
    result = bench("run", "--detector", "spectral_logreg", "--opt", "spectral_logreg.bnis=3")
    assert result.returncode == 2 and "did you mean 'spectral_logreg.bins'" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("detector = 'spectral_logreg'\nepoch = 3\n")
    result = bench("run", "--config", str(bad))
    assert result.returncode == 2 and "unknown key(s)" in result.stderr


def test_options_shows_declarations_and_bad_values_exit_2_before_any_run(tmp_path):
    result = bench("options", "spectral_logreg")
    assert result.returncode == 0, result.stderr
    assert "lr          = 0.05  (float, > 0, ≤ 10)" in result.stdout
    assert "preset demo: epochs=30" in result.stdout
    out = tmp_path / "out"
    for opt, message in [
        ("spectral_logreg.bins=-4", "option spectral_logreg.bins must be ≥ 2, got -4"),
        ("spectral_logreg.lr=nan", "option spectral_logreg.lr must be a finite number, got nan"),
        ("spectral_logreg.input_size=0", "option spectral_logreg.input_size must be ≥ 16, got 0"),
    ]:
        result = bench("run", "--detector", "spectral_logreg", "--opt", opt, "--out", str(out))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [f"bench: error: {message}"]
        assert not out.exists()  # refused before any work: no run folder


def test_validate_passes():
    result = bench("validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all components valid" in result.stdout


def test_run_leaderboard_and_predict_through_the_console_script(
    tmp_path, tiny_tree, tiny_test_tree
):
    """Config paths relative to the file, two seeds, the leaderboard, predict's output."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    config = conf_dir / "run.toml"
    train, test = os.path.relpath(tiny_tree, conf_dir), os.path.relpath(tiny_test_tree, conf_dir)
    config.write_text(
        f"detector = 'spectral_logreg'\ntrain = '{train}'\ntest = ['{test}']\nout = 'out'\n"
        "epochs = 4\nworkers = 0\nseeds = [0, 1]\n[options.spectral_logreg]\nbins = 16\n"
    )
    elsewhere = tmp_path / "elsewhere"  # the config's paths must not depend on the cwd
    elsewhere.mkdir()
    result = bench("run", "--config", str(config), "--quiet", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    run_dirs = [Path(line) for line in result.stdout.strip().splitlines()]
    assert len(run_dirs) == 2 and all(p.parent.parent == conf_dir / "out" for p in run_dirs)
    assert '"bins": 16' in (run_dirs[0] / "config.json").read_text()
    out = conf_dir / "out"
    board = bench("leaderboard", "--out", str(out), "--metric", "ap", "--format", "csv")
    assert board.returncode == 0, board.stderr
    header, row = board.stdout.strip().splitlines()
    assert header.startswith(
        "detector,train,seeds,tiny-test-tree0/gan_a,tiny-test-tree0/gan_b,mean"
    )
    assert row.startswith("spectral_logreg,tiny-tree0,0 1,")
    assert (out / "leaderboard_ap.csv").is_file() and (out / "leaderboard_acc.csv").is_file()
    fake = next((tiny_test_tree / "gan_a" / "1_fake").iterdir())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    pred = bench("predict", "--run", str(run_dirs[0]), str(fake), "--device", "cpu")
    assert pred.returncode == 0, pred.stderr
    head, line = pred.stdout.strip().splitlines()
    prob, path = line.split("\t")
    assert head == "p_fake\tpath" and 0.0 <= float(prob) <= 1.0 and path == str(fake)
    pred = bench(
        "predict",
        "--run",
        str(run_dirs[0]),
        str(fake),
        str(broken),
        "--format",
        "json",
        "--device",
        "cpu",
    )
    assert pred.returncode == 1 and "1 of 2 image(s) could not be read" in pred.stderr
    records = [json.loads(x) for x in pred.stdout.strip().splitlines()]
    assert [r["path"] for r in records] == [str(fake), str(broken)]
    assert records[0]["p_fake"] == pytest.approx(float(prob), abs=1e-4)
    assert records[1]["p_fake"] is None


def test_version_and_synopsis_flags():
    from bench import __version__

    result = bench("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"bench {__version__}"


def test_outside_plugin_installed_through_entry_points(tmp_path):
    """The README's worked example, installed for real into a throw-away target folder."""
    target = tmp_path / "site"
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "examples" / "bench_example_plugin", source)
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if install.returncode != 0:
        pytest.fail(install.stderr)
    env = {"PYTHONPATH": str(target)}
    listed = bench("list", "detectors", env=env)
    assert listed.returncode == 0
    assert "mean_brightness  [example]" in listed.stdout.replace("  ", "  ")


def test_bench_data_demo_prints_its_folder_last(tmp_path):
    pytest.importorskip("bench.demo")
    result = bench("data", "demo", env={"BENCH_CACHE": os.environ["BENCH_CACHE"]})
    assert result.returncode == 0, result.stderr
    root = Path(result.stdout.strip().splitlines()[-1])
    assert (root / "train").is_dir() and (root / "test").is_dir()
