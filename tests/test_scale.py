"""Running at scale: several processes (gloo on the CPU), checkpoints and resume, tables
planned as independent `bench run` commands, concurrent leaderboard writes, tracking.

One uninterrupted single-process run (module fixture) is the reference the others are
compared with: a 2-process run, a run killed with SIGKILL and resumed, a table row
interrupted and resumed by `bench table`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.plugins import get_registry
from bench.runner import RunSpec, run

ROOT = Path(__file__).resolve().parent.parent
# 4 images per generator and class (fixed-seed sample): 16 to train (4 steps an epoch,
# 8 in all) and 16 to test, from tests/conftest.py's generated trees
EPOCHS, BATCH, PER_CLASS, STEPS = 2, 4, 4, 4
# UnivFD's linear head on a frozen tiny CLIP: nothing in it depends on the batch's other
# images (no BatchNorm), so several processes must give one process's numbers.
DETECTOR, OPTIONS = "univfd", {"feature_cache": "off", "lr": 0.01}
KILLER = """
import os, signal, sys
import bench.training as training
real_step, calls = training.step, [0]
def step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(*args, **kwargs)
training.step = step
from bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_flags(train: Path, test: Path, out: Path) -> list[str]:
    return [
        "--detector", DETECTOR, "--preset", "demo", "--train", str(train),
        "--test", f"tiny={test}", "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
        "--max-per-class", str(PER_CLASS),
        "--opt", "univfd.feature_cache=off", "--opt", "univfd.lr=0.01", "--device", "cpu",
        "--out", str(out), "--quiet", "--no-plots", "--workers", "0",
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    return dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )


def only_run(out: Path) -> Path:
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def predictions(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "an image is predicted twice"
    return {r["path"]: float(r["p_fake"]) for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_tree, tiny_test_tree) -> Path:
    """One process, uninterrupted, tracked to TensorBoard (tracking changes no number)."""
    out = tmp_path_factory.mktemp("reference")
    spec = RunSpec(
        detector=DETECTOR,
        preset="demo",
        options={DETECTOR: dict(OPTIONS)},
        train=str(tiny_tree),
        test=[f"tiny={tiny_test_tree}"],
        epochs=EPOCHS,
        batch_size=BATCH,
        max_per_class=PER_CLASS,
        device="cpu",
        out=str(out),
        progress=False,
        workers=0,
        log_with="tensorboard" if importlib.util.find_spec("tensorboard") else None,
    )
    return run(spec, get_registry())


def test_two_processes_score_every_image_once_with_one_process_metrics(
    tmp_path, tiny_tree, tiny_test_tree, reference, monkeypatch, capfd
):
    """`bench run --num-processes 2` (this process calls accelerate's launcher, which
    starts two gloo processes), also through UnivFD's default feature cache (each process
    encodes its share, process 0 stores them): with a cold cache it trains on the very
    images the reference's standard loop (feature_cache=off) draws."""
    out = tmp_path / "out"
    flags = run_flags(tiny_tree, tiny_test_tree, out)
    k = flags.index("univfd.feature_cache=off")
    flags = [*flags[: k - 1], *flags[k + 1 :], "--num-processes", "2"]
    for key, value in child_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # a cold feature cache
    status = main(["run", *flags])
    stdout, stderr = capfd.readouterr()
    assert status == 0, stderr[-3000:]
    run_dir = only_run(out)
    assert stdout.strip().splitlines() == [str(run_dir)]  # process 0 alone says it
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert config["processes"] == 2 and config["status"] == "finished"
    mine, single = predictions(run_dir), predictions(reference)
    assert mine.keys() == single.keys()  # every test image once, none lost to sharding
    assert min(abs(p - 0.5) for p in single.values()) > 1e-3  # no score on the threshold
    # the same gradient steps, summed in another order: equal to float rounding
    assert max(abs(mine[p] - single[p]) for p in mine) <= 2e-6
    with open(run_dir / "metrics.csv", newline="") as a, open(reference / "metrics.csv") as b:
        ours, theirs = list(csv.DictReader(a)), list(csv.DictReader(b))
    for x, y in zip(ours, theirs, strict=True):
        for metric in ("acc", "r_acc", "f_acc"):
            assert x[metric] == y[metric]
        for metric in ("ap", "auc"):
            assert float(x[metric]) == pytest.approx(float(y[metric]), abs=1e-9)
    log = (run_dir / "log.txt").read_text(encoding="utf-8")
    assert log.count("epoch 1/2:") == 1  # one writer
    assert "features view 1/2: 16 images, 16 computed" in log
    index = (out / "leaderboard_index.csv").read_text(encoding="utf-8").splitlines()
    assert len(index) == 2


def test_a_planned_row_killed_mid_epoch_and_resumed_by_the_next_plan_is_bit_identical(
    tmp_path, tiny_tree, tiny_test_tree, reference
):
    """The plan's script runs as written: its fresh `bench run` (checkpoints every 2
    steps) is killed with SIGKILL at step 7, mid-epoch 2 (the last checkpoint is at step
    6); planning again writes `bench run --resume` for it, whose run then ends with the
    bytes of a run never stopped; the table is drawn without running anything again."""
    out = tmp_path / "out"
    spec = tmp_path / "tiny.toml"
    options = f'feature_cache = "off", lr = 0.01, epochs = {EPOCHS}, batch_size = {BATCH}'
    spec.write_text(
        f"""title = "Tiny"
metric = "acc"
real_column = true
mean_column = "mean"
[presets.demo]
train = "{tiny_tree}"
test = [{{ name = "tiny", path = "{tiny_test_tree}" }}]
max_per_class = {PER_CLASS}
[[rows]]
label = "univfd"
detector = "univfd"
options = {{ univfd = {{ {options} }} }}
""",
        encoding="utf-8",
    )
    table = ["table", str(spec), "--out", str(out), "--device", "cpu", "--workers", "0"]
    plan = [*table, "--plan", "--checkpoint-every", "2", "--quiet"]
    script = out / "plan" / "tiny.sh"
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER, encoding="utf-8")

    assert main(plan) == 0
    assert "run --detector univfd" in script.read_text(encoding="utf-8")
    assert "#SBATCH --array=1" in (out / "plan" / "tiny.sbatch").read_text(encoding="utf-8")
    env = dict(child_env(), BENCH=f"{sys.executable} {killer}", KILL_AT_STEP="7")
    killed = subprocess.run(["sh", str(script), "1"], env=env, capture_output=True, timeout=300)
    assert killed.returncode == 128 + 9, killed.stderr[-2000:]
    stopped = only_run(out)
    assert (stopped / "checkpoint.pt").is_file()
    assert not (stopped / "state.safetensors").exists()

    assert main(plan) == 0
    assert f"run --resume {stopped} --checkpoint-every 2" in script.read_text(encoding="utf-8")
    env = dict(child_env(), BENCH=f"{sys.executable} -m bench.cli")
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    assert only_run(out) == stopped
    config = json.loads((stopped / "config.json").read_text(encoding="utf-8"))
    assert config["status"] == "finished"
    assert config["resumed_at_step"] == {"epoch": 2, "batches_done": 2, "steps_done": 6}
    assert not (stopped / "checkpoint.pt").exists()
    for name in ("state.safetensors", "predictions.csv", "metrics.csv"):
        assert (stopped / name).read_bytes() == (reference / name).read_bytes(), name
    reference_config = json.loads((reference / "config.json").read_text(encoding="utf-8"))
    assert config["loss_last"] == reference_config["loss_last"]
    assert main([*table, "--quiet"]) == 0  # drawn from the finished run
    assert only_run(out) == stopped
    assert "| univfd" in (out / "tiny.md").read_text(encoding="utf-8")


def test_bench_table_resumes_an_interrupted_row(
    tmp_path, tiny_tree, tiny_test_tree, reference, monkeypatch
):
    """A row stopped by Ctrl-C mid-epoch is resumed by the next `bench table`, not restarted."""
    import bench.training as training
    from bench import tables

    out = tmp_path / "out"
    spec = tmp_path / "one.toml"
    spec.write_text(
        f"""title = "One"
metric = "acc"
real_column = true
mean_column = "mean"
[presets.demo]
train = "{tiny_tree}"
test = [{{ name = "tiny", path = "{tiny_test_tree}" }}]
max_per_class = {PER_CLASS}
[[rows]]
label = "univfd"
detector = "univfd"
options = {{ univfd = {{ epochs = {EPOCHS}, batch_size = {BATCH}, feature_cache = "off", lr = 0.01 }} }}
""",
        encoding="utf-8",
    )
    real_step, calls = training.step, [0]

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 7:  # epoch 2, batch 3: the epoch-1 checkpoint is the last one
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tables.run_table(spec, out=out, device="cpu", workers=0, progress=False)
    stopped = only_run(out)
    assert json.loads((stopped / "config.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(training, "step", real_step)
    tables.run_table(spec, out=out, device="cpu", workers=0, progress=False)
    assert only_run(out) == stopped
    config = json.loads((stopped / "config.json").read_text(encoding="utf-8"))
    assert config["resumed_at_step"] == {"epoch": 2, "batches_done": 0, "steps_done": 4}
    assert (stopped / "state.safetensors").read_bytes() == (
        reference / "state.safetensors"
    ).read_bytes()


def test_tensorboard_events_hold_every_step_and_the_final_metrics(reference):
    pytest.importorskip("tensorboard", reason="the test extra installs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = list((reference / "tracking").iterdir())
    assert [f.name for f in folders] == [reference.name]
    events = EventAccumulator(str(folders[0]))
    events.Reload()
    losses = events.Scalars("train/loss")
    config = json.loads((reference / "config.json").read_text(encoding="utf-8"))
    assert [e.step for e in losses] == list(range(1, EPOCHS * STEPS + 1))  # every step once
    assert losses[0].value == pytest.approx(config["loss_first"], rel=1e-6)
    assert losses[-1].value == pytest.approx(config["loss_last"], rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([0.01] * EPOCHS * STEPS)
    with open(reference / "metrics.csv", newline="", encoding="utf-8") as fh:
        mean = next(r for r in csv.DictReader(fh) if r["kind"] == "mean")
    assert events.Scalars("test/mean/auc")[0].value == pytest.approx(float(mean["auc"]))
    assert 0 <= events.Scalars("train/data_wait_share")[0].value <= 1


def _record_many(out: str, first: int, count: int, barrier) -> None:
    from bench import leaderboard

    barrier.wait()
    for k in range(first, first + count):
        leaderboard.record_and_write(
            out, config=f"cfg{k:02d}", seed=0, label=f"row{k:02d}", train="t", run_id=f"r{k:02d}"
        )


def test_runs_finishing_at_once_lose_no_leaderboard_row(tmp_path, reference):
    out = tmp_path / "out"
    writers, each = 4, 3
    for k in range(writers * each):
        shutil.copytree(
            reference, out / "runs" / f"r{k:02d}", ignore=shutil.ignore_patterns("tracking")
        )
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(writers)
    procs = [
        context.Process(target=_record_many, args=(str(out), w * each, each, barrier))
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with open(out / "leaderboard_index.csv", newline="", encoding="utf-8") as fh:
        configs = sorted(r["config"] for r in csv.DictReader(fh))
    assert configs == [f"cfg{k:02d}" for k in range(writers * each)]
    with open(out / "leaderboard_acc.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == writers * each  # the table drawn last holds every row


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-processes", "0"], "--num-processes must be a whole number from 1"),
        (["--checkpoint-every", "0"], "--checkpoint-every (checkpoint_every) must be from 1"),
        (["--log-with", "neptune"], "invalid choice"),
    ],
)
def test_bad_scale_flags_are_one_line_errors_before_any_work(
    tmp_path, tiny_tree, capsys, extra, message
):
    out = tmp_path / "out"
    try:
        code = main(["run", *run_flags(tiny_tree, tiny_tree, out), *extra])
    except SystemExit as exc:  # argparse's choices: OneLineParser exits 2 itself
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_log_with_an_absent_package_names_it(tmp_path, tiny_tree, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    out = tmp_path / "out"
    assert main(["run", *run_flags(tiny_tree, tiny_tree, out), "--log-with", "mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "bench: error: --log-with mlflow needs the 'mlflow' package, which is not installed "
        "(pip install mlflow)"
    )
    assert not out.exists()


def test_resume_refuses_what_is_not_a_stopped_run(tmp_path, tiny_tree, reference, capsys):
    cases = [
        (["--resume", str(tmp_path)], "not a run folder (no readable config.json)"),
        (["--resume", str(tmp_path / "nothing")], "no such folder"),
        (["--resume", str(reference)], "the run finished already"),
        (["--resume", str(reference), "--detector", "x", "--seed", "1"], "drop --detector --seed"),
    ]
    for flags, message in cases:
        assert main(["run", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_table_refuses_bad_jobs_and_devices(capsys):
    for flags, message in [
        (["--jobs", "0"], "--jobs must be a whole number from 1"),
        (["--devices", "gpu0"], "--device must be auto, cpu, cuda, cuda:N or mps"),
        (["--plan", "--jobs", "2"], "--plan writes the rows for others to run"),
    ]:
        assert main(["table", "table7_nullspace", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_batch_parts_and_resumed_epochs_follow_the_loader_of_one_process(tiny_tree):
    """The order is read back from the DataLoader make_loader builds (not recomputed)."""
    from bench.builtin.transforms import ToTensor
    from bench.data.layouts import list_dataset
    from bench.data.pipeline import batch_order, make_loader
    from bench.interfaces import TransformChain

    samples = list_dataset(str(tiny_tree), "train").samples
    chain = TransformChain([ToTensor()])
    kw = {"train": True, "shuffle": True, "batch_size": 10, "epoch": 2, "seed": 5}
    whole = [b["path"] for b in make_loader(samples, chain, **kw)]
    order = batch_order(len(samples), 10, True, False, 5, 2)
    assert whole == [[samples[i].path for i in batch] for batch in order]
    parts = [
        [b["path"] for b in make_loader(samples, chain, rank=r, world=3, **kw)] for r in range(3)
    ]
    assert [sum((p[k] for p in parts), []) for k in range(len(whole))] == whole
    assert [b["path"] for b in make_loader(samples, chain, skip=3, **kw)] == whole[3:]
