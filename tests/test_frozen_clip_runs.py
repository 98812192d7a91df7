"""UnivFD's official schedule (issue 12) and cached test features (issue 13)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from baselines.schedule import (
    OfficialSchedule,
    Stopper,
    validation_accuracy,
    validation_features,
    validation_split,
)
from bench.data.layouts import Sample, read_folder_tree
from bench.data.pipeline import make_loader
from bench.interfaces import RunContext, TrainData
from bench.options import merge_options
from bench.plugins import get_registry
from bench.runner import RunSpec, run


def build(name: str, **overrides):
    entry = get_registry().get("detector", name)
    return entry.load()(merge_options(name, entry.specs, entry.presets["demo"], overrides))


def quiet_ctx(**kw) -> RunContext:
    return RunContext(device="cpu", seed=0, workers=0, log=lambda m: None, **kw)


# ------------------------------------------------------------------ the schedule's rules
def test_stopper_is_cnndetections_rule():
    """Improve by at least delta (0.001), else count; patience 2 for brevity."""
    s = Stopper(patience=2, delta=0.001)
    steps = [s.step(a) for a in (0.50, 0.5005, 0.502, 0.502, 0.5029)]
    assert steps == [(True, False), (False, False), (True, False), (False, False), (False, True)]


class _Opt:
    def __init__(self, lr: float):
        self.param_groups = [{"lr": lr}]


def test_official_schedule_divides_the_lr_on_plateaus_and_keeps_the_last_best():
    """Worked by hand, patience 2, lr 1e-4. Epochs (1-based) 1, 2 improve; 3, 4 do not:
    lr 1e-5 and a new stopper (delta 0.002), whose first epoch (5) always saves; 6
    improves; 7 (+0.001 < 0.002) and 8 do not: lr 1e-6, new stopper, 9 saves; 10, 11 do
    not: lr 1e-7 < 1e-6, stop. The head kept is epoch 9's."""
    schedule = OfficialSchedule(patience=2, min_lr=1e-6)
    opt = _Opt(1e-4)
    accs = [0.60, 0.70, 0.69, 0.695, 0.68, 0.700, 0.701, 0.69, 0.69, 0.69, 0.69, 0.99]
    go_on = []
    for epoch, acc in enumerate(accs):
        state = {"w": torch.tensor([float(epoch)])}
        go_on.append(schedule.after_epoch(epoch, acc, opt, state))
        if not go_on[-1]:
            break
    assert go_on == [True] * 10 + [False]
    lrs = [h["lr"] for h in schedule.history]
    assert lrs == pytest.approx([1e-4] * 4 + [1e-5] * 4 + [1e-6] * 3)
    record = schedule.record()
    assert record["epochs_run"] == 11 and record["chosen_epoch"] == 9
    assert float(schedule.best_state["w"]) == 8.0


def test_validation_split_uses_aigibenchs_val_folder_or_holds_out_per_class(tmp_path):
    from tests.conftest import make_tree

    make_tree(tmp_path / "AIGIBench" / "train", ("car", "cat"), per_class=10, size=40)
    make_tree(tmp_path / "AIGIBench" / "val", ("car",), per_class=3, size=40, seed=5)
    train = read_folder_tree(tmp_path / "AIGIBench" / "train")
    root = str(tmp_path / "AIGIBench" / "train")
    kept, val, source = validation_split(train, root, "auto", 0.2, seed=0)
    assert kept == train and len(val) == 6 and source.endswith("val")
    kept, val, source = validation_split(train, root, "split", 0.2, seed=0)
    assert len(val) == 8 and len(kept) == 32 and not {s.path for s in val} & {s.path for s in kept}
    for gen, label in [("car", 0), ("car", 1), ("cat", 0), ("cat", 1)]:
        assert sum(1 for s in val if (s.generator, s.label) == (gen, label)) == 2
    assert validation_split(train, root, "split", 0.2, seed=0)[1] == val  # fixed seed
    assert validation_split(train, None, "auto", 0.2, seed=0)[1] == val  # no val/: split


def test_univfd_official_schedule_end_to_end(tiny_tree, tmp_path, monkeypatch):
    """Stops early, records the chosen epoch, and keeps the head saved at that epoch: its
    validation accuracy, recomputed, is the one recorded for that epoch."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = read_folder_tree(tiny_tree)

    def factory(s, chain, **kw):
        return make_loader(s, chain, workers=0, seed=0, **kw)

    torch.manual_seed(0)
    det = build(
        "univfd", schedule="official", epochs=30, patience=1, min_lr=1e-5, val_fraction=0.25
    )
    det.setup(quiet_ctx())
    ctx = quiet_ctx()
    det.fit(TrainData(samples, factory, batch_size=16, epochs=30), ctx)
    record = ctx.notes["schedule"]
    assert 2 <= record["epochs_run"] < 30  # patience 1: two plateaus, then lr < 1e-5
    chosen = record["history"][record["chosen_epoch"] - 1]
    _, held, _ = validation_split(samples, None, "auto", 0.25, seed=0)
    feats, labels = validation_features(det, held, quiet_ctx())
    det.train_mode(True)
    assert validation_accuracy(det, feats, labels) == pytest.approx(chosen["val_acc"])


# ------------------------------------------------------------------ cached test features
def _count_forwards(monkeypatch) -> list[int]:
    from bench.backbones import clip

    calls = [0]
    original = clip.ClipBackbone.encode_image

    def counting(self, images, *a, **kw):
        calls[0] += int(images.shape[0])
        return original(self, images, *a, **kw)

    monkeypatch.setattr(clip.ClipBackbone, "encode_image", counting)
    return calls


def _count_decodes(monkeypatch) -> list[int]:
    from bench.data import pipeline

    calls = [0]
    original = pipeline.ImageDataset.__getitem__

    def counting(self, index):
        calls[0] += 1
        return original(self, index)

    monkeypatch.setattr(pipeline.ImageDataset, "__getitem__", counting)
    return calls


def _predictions(run_dir) -> dict[str, float]:
    with open(run_dir / "predictions.csv") as fh:
        return {r["path"]: float(r["p_fake"]) for r in csv.DictReader(fh)}


def test_second_run_evaluates_from_cached_features(
    tiny_tree, tiny_test_tree, tmp_path, monkeypatch
):
    """Run 1 encodes every test image once; runs 2 (same detector) and 3 (with a feature
    addon, as Table 7's rows) decode and encode none, and predict the same as run 1 (and
    as an uncached run)."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    forwards, decodes = _count_forwards(monkeypatch), _count_decodes(monkeypatch)
    n_test = len(read_folder_tree(tiny_test_tree))

    def one(**kw):
        options = {"univfd": {"epochs": 1, "batch_size": 16, **kw.pop("univfd", {})}}
        spec = RunSpec(
            detector="univfd",
            train=str(tiny_tree),
            test=[str(tiny_test_tree)],
            preset="demo",
            out=str(tmp_path / "out"),
            progress=False,
            workers=0,
            options=options,
            **kw,
        )
        torch.manual_seed(0)
        before = (forwards[0], decodes[0])
        run_dir = run(spec, get_registry())
        config = json.loads((run_dir / "config.json").read_text())
        return run_dir, config, forwards[0] - before[0], decodes[0] - before[1]

    first, c1, f1, d1 = one()
    assert f1 == d1 == len(read_folder_tree(tiny_tree)) + n_test  # one training view, then tests
    second, c2, f2, d2 = one()
    assert (f2, d2) == (0, 0)
    assert _predictions(second) == _predictions(first)
    assert "0 computed, 48 from the cache" in (second / "log.txt").read_text()
    off, _, f3, _ = one(univfd={"feature_cache": "off"})
    assert f3 > 0
    for path, p in _predictions(off).items():
        assert math.isclose(p, _predictions(first)[path], abs_tol=1e-5)


def test_feature_plan_lists_unreadable_test_images(tiny_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    samples = read_folder_tree(tiny_tree)[:3] + [Sample(str(broken), 1, "gan_a")]
    det = build("univfd")
    det.setup(quiet_ctx())
    plan = det.plan_evaluation(samples, quiet_ctx())
    assert set(plan.missing) == {3} and plan.features.shape[0] == 4


def test_cached_evaluation_keeps_test_sets_shared_reals_and_skips(tiny_tree, tmp_path, monkeypatch):
    """Cached test features with everything the clean pass promises: UniversalFakeDetect's
    LAION reals (shared by ldm_200 and dalle) encoded once, test sets named, an unreadable
    image in skipped.txt on both runs; a sweep after the cached pass encodes each distinct
    perturbed image once."""
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    forwards = _count_forwards(monkeypatch)
    rng = np.random.default_rng(3)

    def write(folder, n, fake):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.normal(128, 45, (64, 64, 3))
            if fake:
                image = np.repeat(np.repeat(image[::2, ::2], 2, axis=0), 2, axis=1)
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")

    ufd = tmp_path / "C" / "diffusion_datasets"
    write(ufd / "imagenet" / "0_real", 2, False)
    write(ufd / "laion" / "0_real", 3, False)
    for fake in ("guided", "ldm_200", "dalle"):
        write(ufd / fake / "1_fake", 2, True)
    other = tmp_path / "X"
    write(other / "g" / "0_real", 2, False)
    write(other / "g" / "1_fake", 2, True)
    (other / "g" / "1_fake" / "broken.png").write_bytes(b"not an image")
    distinct = 11 + 4

    def one(**kw):
        spec = RunSpec(
            detector="univfd",
            train=str(tiny_tree),
            test=[f"UFD={tmp_path / 'C'}", str(other)],
            preset="demo",
            out=str(tmp_path / "out"),
            progress=False,
            workers=0,
            options={"univfd": {"epochs": 1, "batch_size": 16}},
            **kw,
        )
        torch.manual_seed(0)
        before = forwards[0]
        run_dir = run(spec, get_registry())
        return run_dir, forwards[0] - before

    first, f1 = one()
    assert f1 == len(read_folder_tree(tiny_tree)) + distinct
    second, f2 = one(perturb={"jpeg": {"levels": [50]}})
    assert f2 == distinct  # the clean pass from the cache, the JPEG pass once per image
    with open(first / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 + 2 + (2 + 3) * 2 + 4  # laion's reals scored for two generators
    assert {r["test_set"] for r in rows} == {"UFD", "X"}
    laion = {}
    for r in rows:
        if "/laion/" in r["path"]:
            laion.setdefault(r["path"], set()).add((r["generator"], r["p_fake"]))
    assert all({g for g, _ in v} == {"ldm_200", "dalle"} for v in laion.values())
    assert all(len({p for _, p in v}) == 1 for v in laion.values())
    assert _predictions(second) == _predictions(first)
    with open(tmp_path / "out" / "leaderboard_index.csv", newline="") as fh:
        (entry,) = csv.DictReader(fh)  # one configuration, one seed: the second run replaced it
    config = json.loads((second / "config.json").read_text())["config"]
    assert (entry["run_id"], entry["config"]) == (second.name, config)  # not a describe() key
    for run_dir in (first, second):
        skipped = (run_dir / "skipped.txt").read_text()
        assert "broken.png" in skipped and "not an image format PIL can identify" in skipped
    assert "0 computed, 15 from the cache" in (second / "log.txt").read_text()
    with open(second / "robustness.csv", newline="") as fh:
        swept = [r for r in csv.DictReader(fh) if r["perturbation"] == "jpeg"]
    assert {(r["kind"], r["test_set"], r["generator"]) for r in swept} == {
        ("generator", "UFD", "guided"),
        ("generator", "UFD", "ldm_200"),
        ("generator", "UFD", "dalle"),
        ("generator", "X", "g"),
        ("set mean", "UFD", "mean"),
        ("set mean", "X", "mean"),
        ("mean", "", "mean"),
    }
