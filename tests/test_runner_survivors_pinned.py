"""Issue 17 (mutation testing): the runner's survivors of the recorded mutation run.

Each test pins one thing ``bench.runner`` does that no earlier test looked at closely
enough (benchmarks/mutation/equivalent-mut-core.md, "bench/runner.py"): a perturbation's
``--opt`` options and preset, the whole of the errors that name a component, skipped.txt of
a failed run, the run folder's lock at the end, and the evaluation plan handed to the sweep.
The detectors, addons and trees are those of tests/test_runner_pinned.py; expected values
are written out by hand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import runner
from bench.errors import BenchError
from bench.interfaces import EvalPlan
from bench.registry import Entry, Registry
from bench.runner import RunSpec, run
from tests import test_runner_pinned as pinned
from tests.test_runner_pinned import Frozen, Toy, config_of, log_of, small_trees, spec

# the fixtures of tests/test_runner_pinned.py: its registry, and Toy's record emptied
registry = pinned.registry
_fresh = pinned._fresh

THIS = "tests.test_runner_survivors_pinned"


def jpeg_entry(presets: dict[str, Any]) -> Entry:
    """The built-in JPEG perturbation, with presets of this test's own."""
    from bench.plugins import get_registry

    jpeg = get_registry().get("perturbation", "jpeg")
    return Entry("perturbation", "jpeg", jpeg.target, "tests", jpeg.specs, presets)


# ------------------------------------------------------------------ resolve_components


def test_a_perturbations_opt_options_and_preset_reach_the_sweep(registry):
    reg = Registry()
    reg.add(registry.get("detector", "toy"))
    reg.add(jpeg_entry({"quick": {"levels": [40, 20], "subsampling": "4:4:4"}}))
    resolved = runner.resolve_components(
        reg,
        RunSpec(
            detector="toy",
            preset="quick",
            perturb={"jpeg": {}},
            options={"jpeg": {"subsampling": "4:2:2"}},
        ),
    )
    (item,) = resolved.sweep.items
    # levels from the preset, subsampling from --opt (which wins over the preset)
    assert item.name == "jpeg"
    assert item.options == {"levels": [40, 20], "subsampling": "4:2:2"}
    assert item.levels == [40, 20]  # JPEG quality: lower is stronger, so 40 comes first
    # --perturb's own levels win over both
    again = runner.resolve_components(
        reg,
        RunSpec(
            detector="toy",
            preset="quick",
            perturb={"jpeg": {"levels": [60]}},
            options={"jpeg": {"levels": [70]}},
        ),
    )
    assert again.sweep.items[0].options == {"levels": [60], "subsampling": "4:4:4"}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"addons": ["needy"]},
            "addon 'needy' needs 'clip-text', which detector 'toy' does not provide "
            "(it provides: features)",
        ),
        (
            {"options": {"toy": {"zzz": 1}}},
            "unknown option 'toy.zzz' (known: batch_size, bins, epochs, fail, input_size, lr)",
        ),
        (
            {"addons": ["marker"], "options": {"marker": {"zzz": 1}}},
            "unknown option 'marker.zzz' (known: k)",
        ),
    ],
)
def test_the_whole_error_names_the_detector_or_the_addon(registry, kw, message):
    with pytest.raises(BenchError) as err:
        runner.resolve_components(registry, RunSpec(detector="toy", **kw))
    assert str(err.value) == message


# --------------------------------------------------------------------- a run's files


def test_a_failed_run_keeps_unreadable_files_and_unlisted_entries_in_skipped_txt(
    tmp_path, registry, monkeypatch
):
    train, test = small_trees(tmp_path)
    broken = train / "gan_a" / "0_real" / "zz.png"
    broken.write_bytes(b"not a png")
    notes = test / "notes.txt"
    notes.write_text("not an image")
    monkeypatch.setattr(Toy, "planted", "predict")
    with pytest.raises(RuntimeError, match="planted"):
        run(spec(tmp_path, (train, test)), registry)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    assert config_of(run_dir)["status"] == "failed"
    rows = [ln.split("\t") for ln in (run_dir / "skipped.txt").read_text().splitlines()]
    assert rows[0] == ["split", "path", "reason"]
    assert [(r[0], Path(r[1]).resolve()) for r in rows[1:]] == [
        ("test", notes.resolve()),  # the listing's entry, first
        ("train", broken.resolve()),  # the unreadable file, with its split
    ]
    assert all(r[2] for r in rows[1:])  # each with a reason
    # the failure's rewrite keeps what skipped.txt said after training, reasons and all
    assert (run_dir / "skipped.txt").read_text() == Toy.seen[0].skipped_at_predict


def held_elsewhere(path: Path) -> bool:
    """Whether another process is refused the run folder's POSIX lock (tries it at once)."""
    probe = (
        "import fcntl, sys\n"
        "handle = open(sys.argv[1], 'a')\n"
        "try:\n"
        "    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except OSError:\n"
        "    sys.exit(3)\n"
    )
    code = subprocess.run([sys.executable, "-c", probe, str(path)], timeout=60).returncode
    assert code in (0, 3)
    return code == 3


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks")
def test_a_finished_run_leaves_its_folder_unlocked(tmp_path, registry, monkeypatch):
    locks = []
    real = runner.open_run_dir

    def keep(*args):
        run_dir, lock = real(*args)
        locks.append(lock)  # held here too: only a release, not the end of run(), frees it
        return run_dir, lock

    monkeypatch.setattr(runner, "open_run_dir", keep)
    run_dir = run(spec(tmp_path, small_trees(tmp_path), detector="frozen"), registry)
    (lock,) = locks
    assert lock.path.parent == run_dir and lock.path.exists()
    assert not held_elsewhere(lock.path)
    # the probe itself can see a lock: while this process holds it, it is refused
    lock.acquire()
    try:
        assert held_elsewhere(lock.path)
    finally:
        lock.release()


# ------------------------------------------------------------ the sweep's batch plan


class Planned(Frozen):
    """A frozen detector with a fixed batch composition: 2 images a batch, 2nd and 4th first."""

    batches: list[list[str]] = []

    def plan_evaluation(self, samples, ctx):
        assert len(samples) == 4
        return EvalPlan(batches=[[3, 1], [0, 2]])

    def predict_proba(self, batch):
        Planned.batches.append(["/".join(Path(p).parts[-3:]) for p in batch["path"]])
        return super().predict_proba(batch)


def test_the_sweep_keeps_the_clean_passs_batches(tmp_path):
    from bench.plugins import get_registry

    reg = Registry()
    reg.add(Entry("detector", "planned", f"{THIS}:Planned", "tests", {}, {}))
    reg.add(get_registry().get("perturbation", "jpeg"))
    Planned.batches = []
    s = spec(
        tmp_path, small_trees(tmp_path), detector="planned", perturb={"jpeg": {"levels": [50]}}
    )
    run_dir = run(s, reg)
    assert (run_dir / "robustness.csv").is_file()
    clean, swept = Planned.batches[:2], Planned.batches[2:]
    assert [len(b) for b in clean] == [2, 2]
    assert swept == clean  # the same two batches of two, in the same order, not one of four


# ------------------------------------------------ process 0 of two, without a second one


class ProcessZeroOfTwo:
    """Process 0 of a two-process run whose other process holds nothing: the collectives
    hand process 0's objects back (what a second process with no unreadable file gives)."""

    rank, world, local_rank, backend, host_group = 0, 2, 0, "gloo", None
    main, several = True, True

    def __init__(self):
        self.gathered: list[Any] = []
        self.broadcasts: list[Any] = []

    def barrier(self) -> None:
        pass

    def broadcast(self, obj: Any) -> Any:
        self.broadcasts.append(obj)
        return obj

    def average_gradients(self, parameters: Any, n: int, loss: Any) -> Any:
        return loss  # no other process: this one's gradients are the batch's

    def all_gather(self, obj: Any) -> list[Any]:
        self.gathered.append(obj)
        return [obj, {}]


def as_process_zero_of_two(monkeypatch, zero: Any = None) -> Any:
    """The run's processes: process 0 of two (or ``zero``); its evaluation is one process's (the sharding
    is tests/test_scale.py's), the rest of the run is the runner's."""
    from bench import distributed

    zero = zero or ProcessZeroOfTwo()
    monkeypatch.setattr(distributed, "start", lambda device: (zero, device))
    real = runner.evaluate

    def one_process(detector, samples, factory, run_dir, ctx):
        ctx.processes = distributed.SINGLE
        try:
            return real(detector, samples, factory, run_dir, ctx)
        finally:
            ctx.processes = zero

    monkeypatch.setattr(runner, "evaluate", one_process)
    return zero


def test_process_zero_of_two_says_who_does_what(tmp_path, monkeypatch):
    """A frozen detector and a sweep, as process 0 of two."""
    from bench.plugins import get_registry

    zero = as_process_zero_of_two(monkeypatch)
    reg = Registry()

    reg.add(Entry("detector", "planned", f"{THIS}:Planned", "tests", {}, {}))
    reg.add(get_registry().get("perturbation", "jpeg"))
    s = spec(
        tmp_path, small_trees(tmp_path), detector="planned", perturb={"jpeg": {"levels": [50]}}
    )
    run_dir = run(s, reg)
    assert config_of(run_dir)["processes"] == 2
    log = log_of(run_dir)
    assert (
        "2 processes (gloo): each trains on its part of every batch and scores one test batch "
        "in 2; process 0 writes"
    ) in log
    assert "the robustness sweep runs in process 0 alone (it is not sharded)" in log
    assert zero.gathered == [{}]  # the unreadable files after evaluation: none here


def test_process_zero_of_two_trains_on_its_part_and_shares_its_state(
    tmp_path, registry, monkeypatch
):
    from bench.data import pipeline

    zero = as_process_zero_of_two(monkeypatch)
    calls = []
    real = pipeline.make_loader

    def recorded(samples, chain, **kw):
        calls.append((kw.get("train", False), kw.get("rank"), kw.get("world")))
        return real(samples, chain, **kw)

    monkeypatch.setattr(pipeline, "make_loader", recorded)
    run_dir = run(spec(tmp_path, small_trees(tmp_path)), registry)
    train_calls = [c for c in calls if c[0]]
    assert train_calls == [(True, 0, 2)]  # one epoch: process 0's part of every batch
    assert {c[1:] for c in calls if not c[0]} == {(None, None)}  # evaluation: the whole set
    toy = Toy.seen[0]
    run_folder, state = zero.broadcasts  # the folder, then process 0's trained state
    assert run_folder == str(run_dir)
    trained = toy.trainable_state()
    assert sorted(state) == sorted(trained) and len(trained) > 0
    assert all(torch.equal(state[k], trained[k]) for k in trained)
    assert zero.gathered == [{}, {}]  # unreadable files after training, after evaluation


class ProcessOneOfTwo(ProcessZeroOfTwo):
    """Process 1 of two: process 0 made the run folder, which the broadcast hands over."""

    rank, main = 1, False

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def broadcast(self, obj: Any) -> Any:
        self.broadcasts.append(obj)
        return str(self.folder) if obj is None and not self.broadcasts[:-1] else obj


def test_process_one_of_two_writes_no_log(tmp_path, registry, monkeypatch):
    folder = tmp_path / "made-by-process-0"
    folder.mkdir()
    one = as_process_zero_of_two(monkeypatch, ProcessOneOfTwo(folder))
    assert run(spec(tmp_path, small_trees(tmp_path), detector="frozen"), registry) == folder
    assert one.broadcasts[0] is None  # process 1 makes no folder of its own
    assert not (folder / "log.txt").exists() and not (folder / "config.json").exists()
    assert not (tmp_path / "out").exists()


def test_the_detector_is_set_up_on_the_device_the_run_chose(tmp_path, registry, monkeypatch):
    """The context handed to setup carries choose_device's answer, not the context's own
    default "cpu"; "meta" stands in for a GPU (the run then fails on it, which is fine)."""
    monkeypatch.setattr(runner, "choose_device", lambda requested, precision="auto": ("meta", None))
    with pytest.raises(Exception):  # noqa: B017 - any failure after setup will do
        run(spec(tmp_path, small_trees(tmp_path)), registry)
    assert Toy.seen and Toy.seen[-1].ctx.device == "meta"
