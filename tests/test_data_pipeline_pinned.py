"""Issue 17 (mutation testing): bench/data/pipeline.py's seeds, batches, read logs, data
waits and caption sidecars, each against values worked out by hand.

The images are four 2x2 PNGs of known colours and one file that is not an image, so every
batch's contents can be written down; a recording transform shows each sample's seed.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from bench.data import pipeline
from bench.data.layouts import Sample
from bench.data.pipeline import (
    DataWait,
    ImageDataset,
    ReadLog,
    active_read_log,
    batch_order,
    collate,
    load_caption_sidecars,
    make_loader,
    read_sidecar,
    recording,
    sample_seed,
)
from bench.errors import BenchError
from bench.interfaces import Transform, TransformChain

M = 2**31 - 1


class Seen(Transform):
    """The image's red value, the train flag and the seed, as a tensor (nothing random)."""

    def __call__(self, image, *, train, seed):
        assert train in (True, False)  # a bool, never None
        return torch.tensor([float(image.getpixel((0, 0))[0]), float(train), float(seed)])


class Chain(TransformChain):
    """Passes the sample's own seed straight to Seen (TransformChain derives step seeds)."""

    def __init__(self):
        super().__init__([Seen()])

    def __call__(self, image, *, train, seed):
        return self.steps[0](image, train=train, seed=seed)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    samples = []
    for i, red in enumerate((10, 20, 30, 40)):
        path = root / f"{i}.png"
        Image.new("RGB", (2, 2), (red, 0, 0)).save(path)
        samples.append(Sample(str(path), i % 2, f"g{i % 2}"))
    broken = root / "broken.png"
    broken.write_bytes(b"not a png")
    return samples, Sample(str(broken), 1, "g1")


def test_sample_seeds_by_hand():
    assert sample_seed(0, 0, 5) == 5
    assert sample_seed(1, 0, 0) == 1_000_003
    assert sample_seed(0, 7, 0) == 70_049  # 7 * 10_007
    assert sample_seed(5, 2, 9) == 5_020_038  # 5_000_015 + 20_014 + 9
    assert sample_seed(3000, 0, 0) == 852_525_353  # 3_000_009_000 - 2**31 + 1
    assert sample_seed(0, 0, M + 4) == 4
    assert sample_seed(0, 0, M) == 0


def test_a_sample_gets_its_seed_and_the_train_flag(images):
    samples, broken = images
    data = ImageDataset([*samples, broken], Chain(), train=True, seed=5, epoch=2)
    item = data[3]
    assert set(item) == {"image", "label", "path", "generator", "index"}
    assert item["image"].tolist() == [40.0, 1.0, float(5_000_015 + 20_014 + 3)]
    assert (item["label"], item["path"], item["generator"], item["index"]) == (
        1.0,
        samples[3].path,
        "g1",
        3,
    )
    assert type(item["label"]) is float
    assert data[4] == {"skip": broken.path, "reason": "not an image format PIL can identify"}
    evaluation = ImageDataset(samples, Chain(), train=False, seed=0, epoch=0)
    assert evaluation[1]["image"].tolist() == [20.0, 0.0, 1.0]


def test_collate_stacks_the_readable_and_lists_the_rest():
    items = [
        {
            "image": torch.tensor([1.0, 2.0]),
            "label": 1.0,
            "path": "a",
            "generator": "g",
            "index": 4,
        },
        {"skip": "b", "reason": "truncated"},
        {
            "image": torch.tensor([3.0, 4.0]),
            "label": 0.0,
            "path": "c",
            "generator": "h",
            "index": 6,
        },
    ]
    batch = collate(items)
    assert set(batch) == {"image", "label", "path", "generator", "index", "skipped", "unreadable"}
    assert batch["image"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert batch["label"].tolist() == [1.0, 0.0] and batch["label"].dtype == torch.float32
    assert batch["path"] == ["a", "c"] and batch["generator"] == ["g", "h"]
    assert batch["index"].tolist() == [4, 6]
    assert batch["skipped"] == ["b (truncated)"] and batch["unreadable"] == [("b", "truncated")]
    assert collate([{"skip": "x", "reason": "r1"}, {"skip": "y", "reason": "r2"}]) == {
        "image": None,
        "label": None,
        "path": [],
        "generator": [],
        "skipped": ["x (r1)", "y (r2)"],
        "unreadable": [("x", "r1"), ("y", "r2")],
    }


def test_read_logs_keep_the_first_reason_and_the_innermost_recording_wins():
    log = ReadLog()
    log.add([("a", "first"), ("b", "other")])
    log.add([("a", "second")])
    assert log.unreadable == {"a": "first", "b": "other"}
    assert log.among({"a", "z"}) == {"a": "first"}
    assert active_read_log() is None
    outer, middle, inner = ReadLog(), ReadLog(), ReadLog()
    with recording(outer):
        assert active_read_log() is outer
        with recording(middle), recording(inner) as got:
            assert got is inner and active_read_log() is inner
        assert active_read_log() is outer
    assert active_read_log() is None


def red_and_seed(loader) -> list[list[tuple[float, float, float]]]:
    return [[tuple(row) for row in b["image"].tolist()] for b in loader]


def test_the_default_loader_reads_in_order_with_the_seeds_of_epoch_0(images):
    samples, _ = images
    loader = make_loader(samples, Chain(), train=False, shuffle=False, batch_size=3)
    assert loader.num_workers == 0 and loader.batch_size == 3 and loader.drop_last is False
    assert loader.generator.initial_seed() == 0  # sample_seed(0, 0, 0)
    batches = list(loader)
    assert set(batches[0]) == {
        "image",
        "label",
        "path",
        "generator",
        "index",
        "skipped",
        "unreadable",
    }
    # seed 0, epoch 0: a sample's seed is its index
    assert red_and_seed(batches) == [
        [(10.0, 0.0, 0.0), (20.0, 0.0, 1.0), (30.0, 0.0, 2.0)],
        [(40.0, 0.0, 3.0)],
    ]
    assert batches[0]["label"].dtype == torch.float32
    trained = make_loader(samples, Chain(), train=True, shuffle=False, batch_size=4, epoch=1)
    assert red_and_seed(trained) == [[(10.0 * (i + 1), 1.0, 10_007.0 + i) for i in range(4)]]
    dropped = make_loader(
        samples, Chain(), train=False, shuffle=False, batch_size=3, drop_last=True
    )
    assert [b["index"].tolist() for b in dropped] == [[0, 1, 2]]
    assert (
        make_loader(
            samples, Chain(), train=False, shuffle=False, batch_size=3, workers=2
        ).num_workers
        == 2
    )


def test_fixed_batches_are_followed_as_given(images):
    samples, _ = images
    loader = make_loader(
        samples,
        Chain(),
        train=False,
        shuffle=True,
        batch_size=3,
        batches=[[3, 0], [2], [1]],
        seed=4,
    )
    assert [b["index"].tolist() for b in loader] == [[3, 0], [2], [1]]
    assert loader.generator.initial_seed() == 4_000_012  # sample_seed(4, 0, 0)
    with_workers = make_loader(
        samples, Chain(), train=False, shuffle=False, batch_size=3, batches=[[0]], workers=2
    )
    assert with_workers.num_workers == 2


def test_loaders_never_move_the_global_generator(images):
    samples, _ = images
    for kw in ({"batches": [[1, 0], [3, 2]]}, {"shuffle": True}):
        kw = {"shuffle": False, **kw}
        torch.manual_seed(11)
        before = torch.get_rng_state()
        list(make_loader(samples, Chain(), train=False, batch_size=2, **kw))
        assert torch.equal(torch.get_rng_state(), before), kw


def test_two_processes_split_each_batch(images):
    samples, _ = images
    kw = {"train": False, "shuffle": False, "batch_size": 4}
    parts = [
        [b["index"].tolist() for b in make_loader(samples, Chain(), rank=r, world=2, **kw)]
        for r in range(2)
    ]
    assert parts == [[[0, 1]], [[2, 3]]]
    assert batch_order(7, 3, False, True, 0, 0) == [[0, 1, 2], [3, 4, 5]]
    assert batch_order(7, 3, False, False, 0, 0) == [[0, 1, 2], [3, 4, 5], [6]]


def test_unreadable_files_reach_the_active_read_log(images):
    samples, broken = images
    data = [samples[0], broken, samples[1]]
    kw = {"train": False, "shuffle": False, "batch_size": 2}
    log = ReadLog()
    with recording(log):
        loader = make_loader(data, Chain(), **kw)
        fixed = make_loader(data, Chain(), batches=[[1]], **kw)
    outside = make_loader(data, Chain(), **kw)
    assert loader.read_log is log and fixed.read_log is log and outside.read_log is None
    batches = list(loader)
    assert log.unreadable == {broken.path: "not an image format PIL can identify"}
    assert batches[0]["unreadable"] == [(broken.path, "not an image format PIL can identify")]
    assert [b["index"].tolist() for b in batches] == [[0], [2]]
    log.unreadable.clear()
    assert [b["unreadable"] for b in fixed] == [
        [(broken.path, "not an image format PIL can identify")]
    ]
    assert list(log.unreadable) == [broken.path]
    assert len(list(outside)) == 2  # no log: the batches still list the file


def test_default_workers_without_sched_getaffinity(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    for count, expected in ((None, 0), (1, 0), (4, 3), (64, pipeline.MAX_DEFAULT_WORKERS)):
        monkeypatch.setattr(os, "cpu_count", lambda c=count: c)
        assert pipeline.default_workers() == expected, count


def test_data_wait_on_a_scripted_clock(monkeypatch):
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(perf_counter=lambda: clock.now))

    def loader():
        for i in range(4):
            clock.now += 0.75  # waiting for the batch
            yield i

    wait = DataWait()
    assert (wait.elapsed(), wait.share(), wait.batches) == (0.0, 0.0, 0)
    assert wait.summary("train", 3) == (
        "data wait (train): 0% of 0.0 s spent waiting for batches (0 batches, 3 loader workers)"
    )
    got = []
    for item in wait(loader()):
        got.append(item)
        clock.now += 0.25  # the step
    assert got == [0, 1, 2, 3] and wait.batches == 4
    clock.now += 50.0  # time after the loop is not the loop's
    assert wait.waited == pytest.approx(3.0) and wait.elapsed() == pytest.approx(4.0)
    assert wait.share() == pytest.approx(0.75)
    assert wait.summary("evaluate", 2) == (
        "data wait (evaluate): 75% of 4.0 s spent waiting for batches (4 batches, 2 loader workers)"
    )


def test_caption_sidecars_at_a_root_and_its_parent(tmp_path):
    data = tmp_path / "demo"
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
    (data / "captions.json").write_text(
        json.dumps({"train/a.png": "a cat", "test/b.png": 7}), encoding="utf-8"
    )
    (data / "test" / "captions.json").write_text(json.dumps({"c.png": "a dog"}), encoding="utf-8")
    listing = tmp_path / "lists"
    listing.mkdir()
    (listing / "set.csv").write_text("x.png,0\n")
    (listing / "captions.json").write_text(json.dumps({"x.png": "a bird"}), encoding="utf-8")
    got = load_caption_sidecars([str(data / "train"), data / "test", listing / "set.csv"])
    assert got == {
        str(data / "train" / "a.png"): "a cat",
        str(data / "test" / "b.png"): "7",
        str(data / "test" / "c.png"): "a dog",
        str(listing / "x.png"): "a bird",
    }
    assert load_caption_sidecars([tmp_path / "elsewhere"]) == {}
    # a list file's folder and the folder above it are searched (not the file "as a folder")
    nested = data / "lists" / "set.csv"
    nested.parent.mkdir()
    nested.write_text("x.png,0\n")
    assert load_caption_sidecars([nested]) == {
        str(data / "train" / "a.png"): "a cat",
        str(data / "test" / "b.png"): "7",
    }
    # a root given through a symbolic link and a relative part: keys name the real files
    os.symlink(data, tmp_path / "link")
    assert load_caption_sidecars([tmp_path / "link" / "test" / ".." / "train"]) == {
        str(data / "train" / "a.png"): "a cat",
        str(data / "test" / "b.png"): "7",
    }


def test_a_sidecar_read_once_even_when_two_roots_share_it(tmp_path, monkeypatch):
    data = tmp_path / "demo"
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
    (data / "captions.json").write_text(json.dumps({"train/a.png": "x"}), encoding="utf-8")
    reads = []
    real = pipeline.read_sidecar
    monkeypatch.setattr(pipeline, "read_sidecar", lambda f: reads.append(f) or real(f))
    assert load_caption_sidecars([data / "train", data / "test", data]) == {
        str(data / "train" / "a.png"): "x"
    }
    assert reads == [data / "captions.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "cannot be read: Expecting property name enclosed in double quotes"),
        (b'{"a": "\xff"}', "cannot be read: 'utf-8' codec can't decode byte 0xff"),
        (b'["a.png", "x"]', "must map image paths to captions"),
    ],
)
def test_a_damaged_sidecar_is_a_one_line_error_naming_it(tmp_path, content, message):
    file = tmp_path / "captions.json"
    file.write_bytes(content)
    with pytest.raises(BenchError) as info:
        read_sidecar(file)
    assert str(info.value).startswith(f"caption sidecar {file} ")
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BenchError, match="caption sidecar"):
        load_caption_sidecars([tmp_path])


def test_a_sidecar_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "captions.json")
    with pytest.raises(BenchError, match=r"^caption sidecar .*captions\.json cannot be read"):
        read_sidecar(tmp_path / "captions.json")
    assert read_sidecar_ok(tmp_path) == {"k": "v"}


def read_sidecar_ok(tmp_path):
    file = tmp_path / "ok.json"
    file.write_text('{"k": "v"}', encoding="utf-8")
    return read_sidecar(file)
