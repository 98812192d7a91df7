"""Issue 17 (mutation testing): UnivFD's official schedule (baselines/schedule.py), pinned.

Every expected value is worked by hand from UnivFD's ``train.py`` / CNNDetection's
``earlystop.py`` rules (patience 5, delta 0.001 then 0.002, lr / 10 until below 1e-6),
or computed with the standard library (the held-out draw is ``random.Random`` seeded by
the documented string); exact binary fractions (0.5, 0.25, 0.05) make the boundaries exact.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.schedule import (
    OfficialSchedule,
    Stopper,
    validation_accuracy,
    validation_features,
    validation_split,
    validation_transforms,
)
from bench.data.layouts import Sample
from bench.errors import BenchError
from bench.interfaces import RunContext


class _Opt:
    def __init__(self, *lrs: float):
        self.param_groups = [{"lr": lr} for lr in lrs]


# ------------------------------------------------------------------------------ Stopper
def test_default_stopper_needs_0_001_and_runs_out_after_five_epochs():
    s = Stopper()
    assert (s.patience, s.delta, s.best, s.counter) == (5, 0.001, None, 0)
    assert s.step(0.5) == (True, False)
    assert s.step(0.5009) == (False, False)  # + 0.0009 < 0.001
    assert s.step(0.5011) == (True, False) and s.best == 0.5011 and s.counter == 0
    outcomes = [s.step(0.5) for _ in range(5)]
    assert outcomes == [(False, False)] * 4 + [(False, True)]
    assert s.counter == 5 and s.best == 0.5011


def test_stopper_saves_an_improvement_of_exactly_delta_and_resets_its_count():
    s = Stopper(patience=3, delta=0.25)
    assert s.step(0.25) == (True, False)
    assert s.step(0.25) == (False, False) and s.counter == 1
    assert s.step(0.5) == (True, False)  # 0.25 + 0.25 exactly: ">=" saves it
    assert (s.best, s.counter) == (0.5, 0)
    assert [s.step(0.5) for _ in range(3)] == [(False, False), (False, False), (False, True)]


# ---------------------------------------------------------------------- OfficialSchedule
def test_default_schedule_is_patience_five_then_delta_0_002_and_min_lr_1e_6():
    schedule = OfficialSchedule()
    assert (schedule.patience, schedule.min_lr) == (5, 1e-6)
    assert (schedule.stopper.patience, schedule.stopper.delta) == (5, 0.001)
    opt = _Opt(1e-5)
    state = {"w": torch.zeros(1)}
    assert all(schedule.after_epoch(e, 0.5, opt, state) for e in range(6))  # 1 save + 5
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)  # 1e-6 is not below 1e-6
    assert (schedule.stopper.patience, schedule.stopper.delta) == (5, 0.002)
    assert schedule.stopper.best is None  # a new stopper: its first epoch saves
    assert schedule.after_epoch(6, 0.5, opt, state) is True and schedule.best_epoch == 6
    assert schedule.after_epoch(7, 0.5019, opt, state) is True and schedule.best_epoch == 6
    assert [schedule.after_epoch(e, 0.5, opt, state) for e in range(8, 12)] == [True] * 3 + [
        False
    ]  # 1e-7 < 1e-6: stop
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-7)


def test_history_rounds_accuracy_and_best_state_is_a_detached_copy():
    schedule = OfficialSchedule(patience=1, min_lr=0.0)
    opt = _Opt(0.5)
    weight = torch.tensor([1.0, 2.0], requires_grad=True)
    state = {"w": weight}
    assert schedule.after_epoch(0, 0.123456789, opt, state) is True
    assert schedule.history == [{"epoch": 1, "val_acc": 0.123457, "lr": 0.5}]
    assert isinstance(schedule.history[0]["lr"], float)
    saved = schedule.best_state["w"]
    assert not saved.requires_grad and saved is not weight
    with torch.no_grad():
        weight.add_(10.0)
    assert saved.tolist() == [1.0, 2.0] and schedule.best_epoch == 0
    assert schedule.after_epoch(1, 0.1, opt, state) is True  # plateau (patience 1): lr / 10
    assert opt.param_groups[0]["lr"] == 0.05
    assert schedule.history[1] == {"epoch": 2, "val_acc": 0.1, "lr": 0.5}
    assert schedule.best_state["w"].tolist() == [1.0, 2.0]


def test_every_group_is_divided_and_any_group_below_min_lr_stops():
    schedule = OfficialSchedule(patience=1, min_lr=0.05)
    opt = _Opt(0.5, 5.0)
    state = {"w": torch.zeros(1)}
    assert schedule.after_epoch(0, 0.5, opt, state) is True
    # plateau: 0.5 / 10 = 0.05 exactly, not below 0.05: go on
    assert schedule.after_epoch(1, 0.5, opt, state) is True
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.5]
    assert schedule.after_epoch(2, 0.5, opt, state) is True  # the new stopper's first epoch
    # plateau again: the first group (0.005) is below min_lr, the second (0.05) is not
    assert schedule.after_epoch(3, 0.5, opt, state) is False
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.05])
    opt = _Opt(5.0, 0.5)  # the group below min_lr second: still a stop
    schedule = OfficialSchedule(patience=1, min_lr=0.06)
    schedule.after_epoch(0, 0.5, opt, state)
    assert schedule.after_epoch(1, 0.5, opt, state) is False


def test_record_before_and_after_epochs():
    schedule = OfficialSchedule()
    assert schedule.record() == {
        "schedule": "official (UnivFD train.py)",
        "epochs_run": 0,
        "chosen_epoch": None,
        "history": [],
    }
    opt = _Opt(0.25)
    for epoch, acc in enumerate((0.5, 0.75, 0.75)):
        schedule.after_epoch(epoch, acc, opt, {"w": torch.zeros(1)})
    record = schedule.record()
    assert record["epochs_run"] == 3 and record["chosen_epoch"] == 2
    assert record["history"][2] == {"epoch": 3, "val_acc": 0.75, "lr": 0.25}


# ---------------------------------------------------------------------- validation_split
def _samples(root: str, sizes: dict[tuple[str, int], int]) -> list[Sample]:
    out = []
    for (generator, label), n in sizes.items():
        out += [Sample(f"{root}/{generator}/{label}/{i}.png", label, generator) for i in range(n)]
    return out


def test_held_out_images_are_the_documented_seeded_draw_per_generator_and_class():
    samples = _samples("/nowhere", {("a", 0): 10, ("a", 1): 4, ("b", 1): 1, ("b", 0): 2})
    train, val, source = validation_split(samples, None, "split", 0.25, seed=7)
    # round(0.25 * n): 10 -> 2 (banker's rounding of 2.5), 4 -> 1, 1 -> 0 (kept), 2 -> 0 (kept)
    expected = set()
    for generator, label, k in (("a", 0, 2), ("a", 1, 1)):
        group = [s for s in samples if (s.generator, s.label) == (generator, label)]
        rng = random.Random(f"7:val:{generator}:{label}")
        expected |= {s.path for s in rng.sample(group, k)}
    assert {s.path for s in val} == expected and len(val) == 3
    assert train == [s for s in samples if s.path not in expected]  # order kept
    assert val == [s for s in samples if s.path in expected]
    assert source == "0.25 of the training set, per generator and class"


def test_a_fraction_that_would_take_a_whole_group_or_nothing_is_refused():
    samples = _samples("/nowhere", {("a", 0): 2, ("a", 1): 2})
    with pytest.raises(BenchError) as err:
        validation_split(samples, None, "split", 1.0, seed=0)  # k == len: nothing to train on
    assert str(err.value) == (
        "the training set is too small to hold out val_fraction=1.0 for validation"
    )
    with pytest.raises(BenchError, match="val_fraction=0.1 "):
        validation_split(samples, None, "auto", 0.1, seed=0)  # round(0.2) == 0
    assert len(validation_split(samples, None, "split", 0.5, seed=0)[1]) == 2


def _tree(root: Path, per_class: int = 2) -> Path:
    for folder in ("0_real", "1_fake"):
        (root / folder).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((8, 8, 3), 40 * i + (100 if folder == "1_fake" else 0), np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i}.png")
    return root


def test_val_set_auto_split_or_a_path(tmp_path, monkeypatch):
    train_dir = _tree(tmp_path / "data" / "TRAIN", per_class=4)
    _tree(tmp_path / "data" / "val", per_class=1)
    other = _tree(tmp_path / "elsewhere", per_class=3)
    from bench.data.layouts import read_folder_tree

    samples = read_folder_tree(train_dir)
    # "TRAIN" (any case) with a sibling val/ folder: that folder is the validation set
    kept, val, source = validation_split(samples, str(train_dir), "auto", 0.5, seed=0)
    assert kept == samples and source == str((tmp_path / "data" / "val").resolve())
    assert sorted(Path(s.path).name for s in val) == ["0.png", "0.png"]
    # "split" ignores the sibling folder
    kept, val, _ = validation_split(samples, str(train_dir), "split", 0.5, seed=0)
    assert len(val) == 4 and len(kept) == 4
    # any other value is a data set path, read whatever the training root
    kept, val, source = validation_split(samples, str(train_dir), str(other), 0.5, seed=0)
    assert kept == samples and source == str(other) and len(val) == 6
    # "~" is expanded before the sibling is looked for
    monkeypatch.setenv("HOME", str(tmp_path))
    kept, val, source = validation_split(samples, "~/data/TRAIN", "auto", 0.5, seed=0)
    assert kept == samples and len(val) == 2


def test_no_sibling_without_a_train_folder_or_a_val_folder(tmp_path):
    samples = _samples("/nowhere", {("a", 0): 2, ("a", 1): 2})
    lone = tmp_path / "lone" / "train"
    lone.mkdir(parents=True)
    (tmp_path / "lone" / "val").write_text("a file, not a folder")
    named = tmp_path / "named" / "training"
    named.mkdir(parents=True)
    (tmp_path / "named" / "val").mkdir()
    missing = tmp_path / "gone" / "train"  # does not exist, though its val/ does
    (tmp_path / "gone" / "val").mkdir(parents=True)
    for root in (None, "", str(lone), str(named), str(missing)):
        _, val, source = validation_split(samples, root, "auto", 0.5, seed=0)
        assert len(val) == 2 and source.startswith("0.5 of the training set"), root


# ------------------------------------------------------------------ validation_transforms
def _detector(**options):
    return SimpleNamespace(
        name="stub",
        options=options,
        input_size=8,
        normalization=((0.5, 0.25, 0.0), (0.5, 0.5, 1.0)),
    )


def test_validation_chain_uses_the_midpoints_of_the_training_ranges():
    chain = validation_transforms(
        _detector(
            load_size=300, blur_sigma=[1.0, 3.0], jpeg_quality=[40, 61], blur_p=0.25, jpeg_p=0.75
        )
    )
    assert chain.describe() == [
        "ResizeShorter(size=300, interpolation='bilinear')",
        "BlurJpeg(blur_p=0.25, sigma=(2.0, 2.0), jpeg_p=0.75, quality=(50, 50), "
        "draws='independent', jpeg='cv2-bgr')",
        "CenterCrop(size=8)",
        "ToTensor(mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 1.0))",
    ]
    defaults = validation_transforms(_detector()).describe()
    assert defaults[:2] == [
        "ResizeShorter(size=256, interpolation='bilinear')",
        "BlurJpeg(blur_p=0.5, sigma=(1.5, 1.5), jpeg_p=0.5, quality=(65, 65), "
        "draws='independent', jpeg='cv2-bgr')",
    ]


# ------------------------------------------------------------------- validation_features
def _cached_detector(**options):
    det = _detector(**options)
    det._encode_for_cache = lambda images: images.mean(dim=(2, 3))
    det.feature_key = lambda ctx: {"feature": "channel means (test stub)", "seed": ctx.seed}
    return det


def _photo_samples(tmp_path: Path) -> list[Sample]:
    rng = np.random.default_rng(3)
    samples = []
    for i, label in enumerate((0, 1, 1)):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(str(path), label, "g"))
    return samples


def test_validation_features_are_the_centre_crops_of_the_readable_images(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _photo_samples(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    samples.insert(1, Sample(str(broken), 0, "g"))
    messages: list[str] = []
    ctx = RunContext(device="cpu", seed=0, workers=0, log=messages.append)
    det = _cached_detector(load_size=10, blur_p=0.0, jpeg_p=0.0)
    feats, labels = validation_features(det, samples, ctx)
    expected = []
    for sample in (samples[0], samples[2], samples[3]):
        pixels = np.asarray(Image.open(sample.path).convert("RGB"), dtype=np.float64) / 255.0
        crop = pixels[2:10, 1:9]  # 12 x 10 -> centre 8 x 8
        expected.append((crop.mean(axis=(0, 1)) - (0.5, 0.25, 0.0)) / (0.5, 0.5, 1.0))
    np.testing.assert_allclose(feats.numpy(), np.array(expected), atol=1e-6)
    assert labels.dtype == torch.float32 and labels.tolist() == [0.0, 1.0, 1.0]
    assert messages[-1] == "stub: validation features: 3 computed, rest from the cache"
    again: list[str] = []
    ctx.log = again.append
    feats2, _ = validation_features(det, samples, ctx)
    assert torch.equal(feats2, feats)
    assert again[-1] == "stub: validation features: 0 computed, rest from the cache"


def test_validation_features_take_the_training_draw_of_blur_and_jpeg(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _photo_samples(tmp_path)
    ctx = RunContext(device="cpu", seed=0, workers=0, log=lambda m: None)
    clean, _ = validation_features(
        _cached_detector(load_size=10, jpeg_p=0.0, blur_p=0.0), samples, ctx
    )
    jpeg, _ = validation_features(
        _cached_detector(load_size=10, jpeg_p=1.0, blur_p=0.0, jpeg_quality=[30, 30]), samples, ctx
    )
    # JPEG at quality 30 moves the channel means of 12 x 10 noise: applied (train=True)
    assert (jpeg - clean).abs().max() > 1e-3


def test_validation_features_are_view_0_of_the_training_draw_in_eval_batches(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    (one,) = _photo_samples(tmp_path)[:1]
    det = _cached_detector(load_size=10, blur_p=0.0, jpeg_p=0.0, eval_batch_size=2)
    sizes = []
    encode = det._encode_for_cache
    det._encode_for_cache = lambda images: sizes.append(len(images)) or encode(images)
    ctx = RunContext(device="cpu", seed=0, workers=0, log=lambda m: None)
    feats, _ = validation_features(det, [one] * 3, ctx)  # one file three times: three rows
    assert sizes == [2, 1] and feats.shape == (3, 3)
    (meta,) = (tmp_path / "cache").rglob("meta.json")
    described = json.loads(meta.read_text())
    assert (described["view"], described["train"], described["seed"]) == (0, True, 0)
    del det.options["eval_batch_size"]  # the default: 256 images a batch
    sizes.clear()
    validation_features(det, [one] * 257, RunContext(seed=1, workers=0, log=lambda m: None))
    assert sizes == [256, 1]


def test_validation_features_refuse_a_set_with_no_readable_image(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    ctx = RunContext(device="cpu", seed=0, workers=0, log=lambda m: None)
    with pytest.raises(BenchError) as err:
        validation_features(_cached_detector(), [Sample(str(broken), 1, "g")], ctx)
    assert str(err.value) == "stub: no validation image could be read"
    # the same cache folder holding other images' features: still nothing for these
    validation_features(_cached_detector(), _photo_samples(tmp_path)[:1], ctx)
    with pytest.raises(BenchError, match="no validation image could be read"):
        validation_features(_cached_detector(), [Sample(str(broken), 1, "g")], ctx)


# ------------------------------------------------------------------- validation_accuracy
class _Head:
    """p(fake) is the feature's first value; records the modes it is put in."""

    def __init__(self):
        self.device = "cpu"
        self.modes: list[bool] = []
        self.hooked: list[object] = []

    def train_mode(self, mode: bool) -> None:
        self.modes.append(mode)

    def apply_feature_hooks(self, f, batch):
        self.hooked.append(batch)
        return f * 1.0

    def head_proba(self, f):
        assert not torch.is_grad_enabled()
        return f[:, 0]


def test_validation_accuracy_at_0_5_over_more_than_one_chunk():
    n = 4096 + 5
    p = torch.full((n, 1), 0.75)
    labels = torch.ones(n)
    p[-5:, 0] = torch.tensor([0.5, 0.6, 0.25, 0.75, 0.9])
    labels[-5:] = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0])
    p[1:11, 0] = 0.25  # ten wrong near the start (labels 1); row 0 is right
    # correct: n - 5 - 10 in the first block, then 0.5 -> 0 yes (not > 0.5), yes, yes, no, yes
    head = _Head()
    assert validation_accuracy(head, p, labels) == (n - 15 + 4) / n
    assert head.modes == [False, True] and head.hooked == [None, None]


def test_validation_accuracy_moves_each_chunk_to_the_detectors_device():
    """The "meta" device (shapes only) shows where the features were sent, with no GPU."""
    head = _Head()
    head.device = "meta"
    seen = []

    def proba(f):
        seen.append(f.device.type)
        return torch.zeros(f.shape[0])

    head.head_proba = proba
    assert validation_accuracy(head, torch.ones(3, 1), torch.zeros(3)) == 1.0
    assert seen == ["meta"]


def test_validation_accuracy_restores_training_mode_when_the_head_fails():
    head = _Head()
    head.head_proba = lambda f: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        validation_accuracy(head, torch.zeros(3, 1), torch.zeros(3))
    assert head.modes == [False, True]
