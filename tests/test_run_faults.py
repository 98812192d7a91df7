"""Runs that meet bad images, SIGTERM and full disks: listed, recorded, one line, nothing lost."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.errors import BenchError
from bench.plugins import get_registry
from bench.runner import RunSpec, run
from tests.bad_inputs import bmp_bomb, png_bomb

ROOT = Path(__file__).resolve().parent.parent


def _spec(tmp_path, train, test, **kw) -> RunSpec:
    base = dict(
        detector="spectral_logreg",
        train=str(train),
        test=[str(test)],
        out=str(tmp_path / "out"),
        progress=False,
        workers=0,
        epochs=2,
    )
    base.update(kw)
    return RunSpec(**base)


def _only_run(out: Path) -> Path:
    (run_dir,) = list((out / "runs").iterdir())
    return run_dir


def _skipped(run_dir: Path) -> dict[str, tuple[str, str]]:
    with open(run_dir / "skipped.txt", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return {"/".join(Path(r["path"]).parts[-3:]): (r["split"], r["reason"]) for r in rows}


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_bad_training_and_test_images_are_listed_and_the_run_goes_on(
    tmp_path, tiny_tree, tiny_test_tree
):
    train, test = tmp_path / "train", tmp_path / "test"
    shutil.copytree(tiny_tree, train)
    shutil.copytree(tiny_test_tree, test)
    png_bomb(train / "gan_a" / "1_fake" / "bomb.png")
    (train / "gan_b" / "0_real" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    bmp_bomb(test / "gan_a" / "0_real" / "bomb.bmp")
    grey16 = np.full((96, 96), 40000, np.uint16)  # a readable odd format is read, not skipped
    Image.fromarray(grey16).save(test / "gan_b" / "0_real" / "g16.png")
    run_dir = run(_spec(tmp_path, train, test), get_registry())
    skipped = _skipped(run_dir)
    bomb, cut, bmp = "1_fake/bomb.png", "0_real/cut.png", "0_real/bomb.bmp"
    assert set(skipped) == {f"gan_a/{bomb}", f"gan_b/{cut}", f"gan_a/{bmp}"}
    assert skipped[f"gan_a/{bomb}"][0] == "train"
    assert "decompression bomb" in skipped[f"gan_a/{bomb}"][1]
    assert skipped[f"gan_b/{cut}"][0] == "train"
    assert skipped[f"gan_a/{bmp}"][0] == "test"
    with open(run_dir / "predictions.csv", encoding="utf-8") as fh:
        predicted = {Path(r["path"]).name for r in csv.DictReader(fh)}
    assert "g16.png" in predicted and "bomb.bmp" not in predicted
    assert json.loads((run_dir / "config.json").read_text())["status"] == "finished"
    assert "skipped 2 unreadable training images" in (run_dir / "log.txt").read_text()


def test_a_training_set_with_no_readable_image_fails_the_run(tmp_path, tiny_test_tree):
    train = tmp_path / "train"
    for gen, label in (("g", "0_real"), ("g", "1_fake")):
        (train / gen / label).mkdir(parents=True)
        for i in range(3):
            (train / gen / label / f"{i}.png").write_bytes(b"not an image")
    with pytest.raises(BenchError, match="no training image could be read"):
        run(_spec(tmp_path, train, tiny_test_tree), get_registry())
    run_dir = _only_run(tmp_path / "out")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "failed" and "no training image" in config["error"]
    skipped = _skipped(run_dir)
    assert len(skipped) == 6 and {split for split, _ in skipped.values()} == {"train"}
    assert {r for _, r in skipped.values()} == {"not an image format PIL can identify"}
    assert not (tmp_path / "out" / "leaderboard_acc.csv").exists()


def test_a_non_finite_first_loss_fails_the_run(tmp_path, tiny_tree, tiny_test_tree, monkeypatch):
    from bench.builtin.spectral_logreg import SpectralLogReg

    monkeypatch.setattr(SpectralLogReg, "fit", lambda self, train, ctx: [float("nan"), 0.5])
    with pytest.raises(BenchError, match="first step"):
        run(_spec(tmp_path, tiny_tree, tiny_test_tree), get_registry())
    assert not (tmp_path / "out" / "leaderboard_acc.csv").exists()


def test_the_standard_loop_checks_its_first_loss_at_once(
    tmp_path, tiny_tree, tiny_test_tree, monkeypatch
):
    """The loop reads losses every READ_EVERY steps, but the first one at once: a NaN
    there stops the run after that one step, not READ_EVERY steps later."""
    from bench.builtin.spectral_logreg import SpectralLogReg

    real_step = SpectralLogReg.training_step
    steps = []

    def nan_first(self, batch):
        steps.append(len(batch["path"]))
        loss = real_step(self, batch)
        return loss * float("nan") if len(steps) == 1 else loss

    monkeypatch.setattr(SpectralLogReg, "training_step", nan_first)
    with pytest.raises(BenchError, match="diverged at the first step: loss is nan"):
        run(_spec(tmp_path, tiny_tree, tiny_test_tree, epochs=30, batch_size=4), get_registry())
    assert len(steps) == 1
    config = json.loads((_only_run(tmp_path / "out") / "config.json").read_text())
    assert config["status"] == "failed" and "first step" in config["error"]
    assert not (tmp_path / "out" / "leaderboard_acc.csv").exists()


def test_an_error_after_the_run_started_is_printed_once(capsys, tmp_path, tiny_test_tree):
    train = tmp_path / "train"
    for label in ("0_real", "1_fake"):
        (train / "g" / label).mkdir(parents=True)
        (train / "g" / label / "x.png").write_bytes(b"junk")
    argv = ["run", "--detector", "spectral_logreg", "--train", str(train), "--test"]
    argv += [str(tiny_test_tree), "--out", str(tmp_path / "out"), "--workers", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("no training image could be read") == 1, err


def test_sigterm_is_handled_like_ctrl_c(tmp_path, tiny_tree, tiny_test_tree):
    out = tmp_path / "out"
    argv = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())"]
    argv += ["run", "--detector", "spectral_logreg", "--train", str(tiny_tree)]
    argv += ["--test", str(tiny_test_tree), "--out", str(out), "--workers", "0", "--quiet"]
    argv += ["--epochs", "100000"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list(out.glob("runs/*/config.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the training loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "bench: terminated (SIGTERM)"
    config = json.loads((_only_run(out) / "config.json").read_text())
    assert (config["status"], config["error"]) == ("interrupted", "SIGTERM")
    assert not _tmp_files(out)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_simulated_at_the_write_layer(
    capsys, tmp_path, tiny_tree, tiny_test_tree, monkeypatch
):
    """No tmpfs needed: every atomic write and the predictions file hit ENOSPC mid-run."""
    import bench.run_files
    import bench.runner

    real_evaluate = bench.runner.evaluate

    def evaluate_until_full(detector, samples, factory, run_dir, ctx, *rest):
        monkeypatch.setattr(bench.run_files, "atomic_write_text", _disk_full)
        (run_dir / "predictions.csv").write_text("path,generator,label,prob\n")
        _disk_full()

    monkeypatch.setattr(bench.runner, "evaluate", evaluate_until_full)
    out = tmp_path / "out"
    argv = ["run", "--detector", "spectral_logreg", "--train", str(tiny_tree), "--epochs", "1"]
    argv += ["--test", str(tiny_test_tree), "--out", str(out), "--workers", "0", "--quiet"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["bench: error: no space left on device"]
    run_dir = _only_run(out)
    config = json.loads((run_dir / "config.json").read_text())  # rewritten in place
    assert config["status"] == "failed" and "No space left" in config["error"]
    assert (run_dir / "state.safetensors").is_file()  # what was produced is kept
    assert not _tmp_files(out) and not (out / "leaderboard_acc.csv").exists()
    assert real_evaluate is not evaluate_until_full


def _mount_tmpfs(folder: Path, size: str) -> None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if done.returncode != 0:
        pytest.skip("no permission to mount a tmpfs here")


def _fill(folder: Path, leave_pages: int) -> None:
    """Fill the file system but ``leave_pages`` pages of 4 KiB."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_pages * 4096))
    assert os.statvfs(folder).f_bavail * stat.f_frsize <= leave_pages * 4096


@pytest.mark.parametrize("pages", [3, 0], ids=["full-mid-run", "full-from-the-start"])
def test_a_really_full_file_system(capsys, tmp_path, tiny_tree, tiny_test_tree, pages):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")
    try:
        _fill(disk, pages)
        out = disk / "out"
        argv = ["run", "--detector", "spectral_logreg", "--train", str(tiny_tree)]
        argv += ["--test", str(tiny_test_tree), "--out", str(out), "--workers", "0", "--quiet"]
        argv += ["--epochs", "1"]
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bench: error: no space left on device")
        assert not _tmp_files(disk)
        runs = list((out / "runs").iterdir()) if (out / "runs").exists() else []
        if pages == 0:
            assert runs == []  # not even config.json fitted: no empty run folder is left
        else:
            config = json.loads((runs[0] / "config.json").read_text())
            assert config["status"] == "failed" and "No space left" in config["error"]
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system with byte names")
def test_non_utf8_file_and_folder_names_end_to_end(tmp_path, tiny_tree, tiny_test_tree):
    """Names that are not UTF-8 (surrogate-escaped in Python) run, predict and are written."""
    base = os.fsencode(tmp_path)
    train, test = base + b"/train_\xe9", base + b"/test"
    shutil.copytree(tiny_tree, os.fsdecode(train))
    shutil.copytree(tiny_test_tree, os.fsdecode(test))
    fake = test + b"/gan_a/1_fake"
    os.rename(fake + b"/000.png", fake + b"/\xff\xfe.png")
    (Path(os.fsdecode(fake)) / "junk_\udcff.png").write_bytes(b"junk")  # unreadable, listed
    os.rename(test + b"/gan_b", test + b"/gen_\xe9")
    out = tmp_path / "out"
    # in-process: Python hands such names from argv to the CLI as these surrogate-escaped str
    run_dir = run(_spec(tmp_path, os.fsdecode(train), os.fsdecode(test)), get_registry())
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert config["status"] == "finished" and config["train_name"] == "train_\\xe9"
    predictions = (run_dir / "predictions.csv").read_text(encoding="utf-8")
    assert "\\xff\\xfe.png" in predictions and "gen_\\xe9" in predictions
    assert "gen_\\xe9" in (run_dir / "metrics.csv").read_text(encoding="utf-8")
    assert "junk_\\xff.png" in (run_dir / "skipped.txt").read_text(encoding="utf-8")
    assert "train_\\xe9" in (out / "leaderboard_acc.csv").read_text(encoding="utf-8")
    image = fake + b"/\xff\xfe.png"
    predict = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main())"]
    predict += ["predict", "--run", str(run_dir), os.fsdecode(image), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(predict, capture_output=True, env=env)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    header, line = done.stdout.rstrip(b"\n").split(b"\n")
    assert header == b"p_fake\tpath"
    score, printed = line.split(b"\t")
    assert printed == image and 0.0 <= float(score) <= 1.0  # the path's own bytes come back


def _worker_died_during_a_stop(*args, **kwargs):
    """What a DataLoader does when SIGTERM reaches its workers too (scancel): its own
    RuntimeError, raised while the main process handles the signal."""
    from bench.errors import Terminated

    try:
        raise Terminated("SIGTERM")
    except Terminated:
        # no "from": the context is implicit, as where torch raises it
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated")  # noqa: B904


def test_a_worker_dying_in_a_sigterm_is_a_stop_not_a_failure(
    tmp_path, tiny_tree, tiny_test_tree, monkeypatch, capsys
):
    cls = get_registry().get("detector", "spectral_logreg").load()
    monkeypatch.setattr(cls, "fit", _worker_died_during_a_stop)
    argv = ["run", "--detector", "spectral_logreg", "--train", str(tiny_tree), "--test"]
    argv += [str(tiny_test_tree), "--out", str(tmp_path / "out"), "--workers", "0", "--quiet"]
    assert main(argv) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "bench: terminated (SIGTERM)"
    config = json.loads((_only_run(tmp_path / "out") / "config.json").read_text())
    assert (config["status"], config["error"]) == ("interrupted", "SIGTERM")


def test_a_table_stops_at_a_sigterm_instead_of_failing_the_row_and_going_on(
    tmp_path, tiny_tree, monkeypatch
):
    from bench import tables
    from bench.errors import Terminated
    from tests.test_tables import tiny_spec

    calls: list[str] = []

    def run_dying_in_a_stop(spec, registry, **kwargs):
        calls.append(spec.label)
        _worker_died_during_a_stop()

    spec = tiny_spec(tmp_path, tiny_tree, tiny_tree)
    monkeypatch.setattr(tables, "run", run_dying_in_a_stop)
    with pytest.raises(Terminated):
        tables.run_table(spec, out=tmp_path / "out", progress=False)
    assert calls == ["logreg"]  # the second row never started
