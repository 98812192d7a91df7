"""Issue 17 (mutation testing): the frozen backbones' feature cache (baselines/feature_cache.py).

Expected digests come from hashlib, stored shards are read back with safetensors, features
from the images with numpy; the several-process path runs with a two-rank stand-in for
``bench.distributed.Processes`` (rank 0 and 1 in one process: what each rank would see).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import baselines.feature_cache as fc
from baselines.feature_cache import (
    CacheMode,
    FeatureStore,
    cached_features,
    image_digests,
    parse_cache_mode,
    shared_features,
    weights_fingerprint,
)
from bench.builtin.transforms import CenterCrop, ToTensor
from bench.data.layouts import Sample
from bench.errors import BenchError
from bench.interfaces import RunContext, Transform, TransformChain


# ------------------------------------------------------------------------------ modes
def test_modes_and_their_view_counts():
    assert parse_cache_mode(" OFF ") == CacheMode("off", None)
    assert parse_cache_mode("Eval-View") == CacheMode("eval-view", None)
    assert parse_cache_mode("views") == CacheMode("views", None)
    assert parse_cache_mode("Views:02") == CacheMode("views", 2)
    assert parse_cache_mode("views:1") == CacheMode("views", 1)
    assert CacheMode("off", None).n_views(5) == 0
    assert CacheMode("eval-view", None).n_views(5) == 1
    assert CacheMode("views", None).n_views(5) == 5
    assert CacheMode("views", 3).n_views(5) == 3 and CacheMode("views", 8).n_views(5) == 5
    assert CacheMode("views", None).n_views(0) == 1 and CacheMode("views", 3).n_views(0) == 1


@pytest.mark.parametrize(
    "bad", ["views:0", "views:-1", "views:", "view", "views:2x", "", "on", "views:1:2"]
)
def test_other_modes_are_refused_with_the_option_named(bad):
    with pytest.raises(BenchError) as err:
        parse_cache_mode(bad)
    assert str(err.value) == (
        "option feature_cache must be 'off', 'eval-view', 'views' or 'views:N' (N >= 1), "
        f"got {bad!r}"
    )
    with pytest.raises(BenchError, match=r"^option univfd\.feature_cache must be"):
        parse_cache_mode(bad, "univfd.feature_cache")


# ------------------------------------------------------------------------ fingerprints
def _module(first: float = 0.0) -> nn.Module:
    m = nn.Linear(10, 10)  # weight: 100 values
    with torch.no_grad():
        m.weight.copy_(torch.arange(100.0).view(10, 10) / 100)
        m.weight[0, 0] = first
        m.bias.zero_()
    m.register_buffer("running", torch.zeros(3))
    return m


def test_fingerprint_reads_the_first_64_values_of_each_tensor_and_its_name_and_shape():
    base = weights_fingerprint(_module())
    assert len(base) == 16 and int(base, 16) >= 0
    assert weights_fingerprint(_module()) == base
    assert weights_fingerprint(_module(first=5.0)) != base  # the first value
    m = _module()
    with torch.no_grad():
        m.weight.view(-1)[63] = 9.0  # the 64th value: read
    assert weights_fingerprint(m) != base
    m = _module()
    with torch.no_grad():
        m.weight.view(-1)[64] = 9.0  # the 65th: not read
    assert weights_fingerprint(m) == base
    assert weights_fingerprint(m, per_tensor=65) != weights_fingerprint(_module(), per_tensor=65)
    m = _module()
    m.running[2] = 1.0  # a buffer
    assert weights_fingerprint(m) != base
    renamed = _module()
    renamed.register_buffer("other", renamed.running)
    del renamed._buffers["running"]
    assert weights_fingerprint(renamed) != base  # the name is hashed
    wide = _module()
    wide.running = torch.zeros(1, 3)  # same values, another shape
    assert weights_fingerprint(wide) != base


def test_fingerprint_of_a_half_precision_module_is_its_float_values():
    m = _module()
    with torch.no_grad():
        m.weight.copy_(torch.arange(100.0).view(10, 10) / 4)  # exact in bfloat16
    expected = weights_fingerprint(m)
    assert weights_fingerprint(m.to(torch.bfloat16)) == expected


def test_image_digests_are_sha256_of_the_bytes_and_none_when_unreadable(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # the digest index lives there
    a, b = tmp_path / "a.png", tmp_path / "b.bin"
    a.write_bytes(b"\x89PNG not really")
    b.write_bytes(b"")
    samples = [
        Sample(str(a), 1, "g"),
        Sample(str(tmp_path / "gone.png"), 0, "g"),
        Sample(str(b), 0, "g"),
    ]
    assert image_digests(samples) == [
        hashlib.sha256(b"\x89PNG not really").hexdigest(),
        None,
        hashlib.sha256(b"").hexdigest(),
    ]


# --------------------------------------------------------------------------- the store
def _digest(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_store_writes_its_description_once_and_makes_its_folder(tmp_path):
    folder = tmp_path / "deep" / "features"
    store = FeatureStore(folder, describe={"backbone": "b", "path": Path("/x")})
    meta = folder / "meta.json"
    assert meta.read_text() == json.dumps({"backbone": "b", "path": "/x"}, indent=2)
    FeatureStore(folder, describe={"backbone": "other"})
    assert json.loads(meta.read_text()) == {"backbone": "b", "path": "/x"}  # kept
    assert store.shards() == [] and store.folder == folder
    FeatureStore(tmp_path / "bare")
    assert not (tmp_path / "bare" / "meta.json").exists()


def test_store_adds_shards_and_looks_rows_up_by_digest(tmp_path):
    from safetensors.torch import load_file

    store = FeatureStore(tmp_path / "f")
    feats, found = store.lookup([_digest(0), None])
    assert feats is None and found.dtype == torch.bool and found.tolist() == [False, False]
    store.add([], torch.zeros(0, 3))
    assert store.shards() == []
    rows = torch.arange(6, dtype=torch.float64).view(2, 3)
    store.add([_digest(1), _digest(2)], rows.requires_grad_())
    store.add([_digest(3)], torch.full((1, 3), 7.0))
    shards = store.shards()
    assert len(shards) == 2 and all(s.name.startswith("shard-") for s in shards)
    assert shards == sorted(shards)
    data = [load_file(str(s)) for s in shards]
    by_size = sorted(data, key=lambda d: -d["digest"].shape[0])
    assert by_size[0]["digest"].dtype == torch.uint8 and by_size[0]["digest"].shape == (2, 32)
    assert bytes(by_size[0]["digest"][1].tolist()).hex() == _digest(2)
    assert by_size[0]["features"].dtype == torch.float32
    assert by_size[0]["features"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    feats, found = store.lookup([_digest(3), None, _digest(2), _digest(9), _digest(3)])
    assert found.tolist() == [True, False, True, False, True]
    assert feats.dtype == torch.float32
    assert feats.tolist() == [[7.0] * 3, [0.0] * 3, [3.0, 4.0, 5.0], [0.0] * 3, [7.0] * 3]


def test_a_damaged_shard_or_one_of_another_width_is_a_miss(tmp_path):
    from safetensors.torch import save_file

    store = FeatureStore(tmp_path / "f")
    store.add([_digest(1)], torch.ones(1, 3))
    (tmp_path / "f" / "shard-0-damaged.safetensors").write_bytes(b"garbage")
    raw = torch.tensor([list(bytes.fromhex(_digest(2)))], dtype=torch.uint8)
    save_file(
        {"digest": raw, "features": torch.ones(1, 5)}, str(tmp_path / "f" / "shard-9-w.safetensors")
    )
    feats, found = store.lookup([_digest(1), _digest(2)])
    assert found.tolist() == [True, False] and feats.shape == (2, 3)


def test_unreadable_gives_the_image_readers_reason(tmp_path):
    from bench.data.images import UnreadableImage, load_rgb

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UnreadableImage) as err:
        load_rgb(str(bad))
    assert fc._unreadable(str(bad)) == err.value.reason != "unreadable file"
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(good)
    assert fc._unreadable(str(good)) == "unreadable file"


# --------------------------------------------------------------------- cached_features
def _images(tmp_path: Path, n: int, size: int = 6) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(str(path), i % 2, "g"))
    return samples


def _means(sample: Sample) -> list[float]:
    pixels = np.asarray(Image.open(sample.path).convert("RGB"), dtype=np.float64) / 255.0
    return list(pixels.mean(axis=(0, 1)))


CHAIN = TransformChain([CenterCrop(6), ToTensor()])


def _encode(calls: list[int]):
    def encode(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        return images.mean(dim=(2, 3)).double()

    return encode


def _run(samples, ctx, calls, *, key=None, train=False, view=0, batch_size=2, skipped=None):
    return cached_features(
        samples,
        image_digests(samples),
        CHAIN,
        _encode(calls),
        key=key or {"backbone": "means"},
        train=train,
        view=view,
        batch_size=batch_size,
        ctx=ctx,
        skipped=skipped,
    )


def test_features_are_computed_once_then_read_and_keyed_by_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path, 5)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    samples.insert(2, Sample(str(bad), 1, "g"))
    samples.insert(4, Sample(str(tmp_path / "gone.png"), 1, "g"))
    ctx = RunContext(seed=3, workers=0, log=lambda m: None)
    calls: list[int] = []
    skipped: dict[int, str] = {}
    feats, found, computed = _run(samples, ctx, calls, skipped=skipped)
    readable = [0, 1, 3, 5, 6]
    assert computed == 5 and found.tolist() == [i in readable for i in range(7)]
    assert feats.dtype == torch.float32 and feats.shape == (7, 3)
    np.testing.assert_allclose(
        feats[readable].numpy(), [_means(samples[i]) for i in readable], atol=1e-6
    )
    assert feats[[2, 4]].abs().sum() == 0
    assert set(skipped) == {2, 4} and skipped[4] == fc._unreadable(samples[4].path)
    assert skipped[2] == fc._unreadable(str(bad))
    assert sum(calls) == 5 and max(calls) <= 2
    calls.clear()
    again, found2, computed2 = _run(samples, ctx, calls)  # the bad file is retried, alone
    assert computed2 == 0 and sum(calls) == 0 and torch.equal(again, feats)
    assert torch.equal(found2, found)
    folders = {p.parent for p in (tmp_path / "cache").rglob("meta.json")}
    assert len(folders) == 1
    meta = json.loads(next(iter(folders)).joinpath("meta.json").read_text())
    assert meta == {
        "version": 1,
        "backbone": "means",
        "chain": CHAIN.describe(),
        "train": False,
        "view": 0,
        "seed": 3,
    }
    for change in ({"key": {"backbone": "other"}}, {"train": True}, {"view": 1}):
        calls.clear()
        assert _run(samples, ctx, calls, **change)[2] == 5, change
    calls.clear()
    assert _run(samples, RunContext(seed=4, workers=0, log=lambda m: None), calls)[2] == 5


def test_only_the_missing_rows_are_computed_and_shards_flush_every_flush_rows(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fc, "FLUSH_ROWS", 4)
    samples = _images(tmp_path, 7)
    ctx = RunContext(seed=0, workers=0, log=lambda m: None)
    calls: list[int] = []
    _run(samples[:2], ctx, calls)
    folder = next((tmp_path / "cache").rglob("meta.json")).parent
    assert len(list(folder.glob("shard-*.safetensors"))) == 1
    calls.clear()
    feats, found, computed = _run(samples, ctx, calls, batch_size=2)
    assert computed == 5 and calls == [2, 2, 1] and bool(found.all())
    # 5 new rows in batches of 2: a shard once 4 are pending, then the last one
    assert len(list(folder.glob("shard-*.safetensors"))) == 3
    np.testing.assert_allclose(feats.numpy(), [_means(s) for s in samples], atol=1e-6)
    assert FeatureStore(folder).lookup(image_digests(samples))[1].all()


def test_nothing_readable_gives_no_features(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    ctx = RunContext(seed=0, workers=0, log=lambda m: None)
    feats, found, computed = _run([Sample(str(bad), 1, "g")], ctx, [])
    assert feats is None and found.tolist() == [False] and computed == 0
    folder = next((tmp_path / "cache").rglob("meta.json")).parent
    assert list(folder.glob("shard-*")) == []


def test_the_progress_bar_names_the_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path, 3)
    _run(
        samples,
        RunContext(seed=0, workers=0, progress=True, log=lambda m: None),
        [],
        train=True,
        view=2,
    )
    assert "features (train view 2)" in capsys.readouterr().err
    _run(samples, RunContext(seed=0, workers=0, progress=False, log=lambda m: None), [], view=5)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------- several processes
class _Two:
    """Rank ``rank`` of two processes; the other rank's gathered object is ``theirs``."""

    world = 2
    several = True

    def __init__(self, rank: int, theirs=None, from_zero=None):
        self.rank = rank
        self.main = rank == 0
        self.theirs = theirs
        self.from_zero = from_zero
        self.gathered = None

    def broadcast(self, obj):
        return obj if self.main or self.from_zero is None else self.from_zero

    def all_gather(self, obj):
        self.gathered = obj
        return [obj, self.theirs] if self.main else [self.theirs, obj]


def test_each_process_encodes_its_share_of_whole_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path, 5)
    calls: list[int] = []
    one = _Two(1, theirs=([], {}), from_zero=None)
    # rank 1 of 2: batches [0, 1], [2, 3], [4] -> rank 1 encodes the second only
    one.broadcast = lambda obj: obj  # both ranks agree on the missing list
    ctx = RunContext(seed=0, workers=0, log=lambda m: None, processes=one)
    _run(samples, ctx, calls, batch_size=2)
    assert calls == [2]
    rows, out = one.gathered[0][0]
    assert rows == [2, 3]
    np.testing.assert_allclose(out.numpy(), [_means(samples[i]) for i in (2, 3)], atol=1e-6)
    folder = next((tmp_path / "cache").rglob("meta.json")).parent
    assert list(folder.glob("shard-*")) == []  # only process 0 writes


def test_process_zero_merges_and_stores_the_others_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path, 5)
    theirs_rows = torch.tensor([_means(samples[i]) for i in (2, 3)], dtype=torch.float32)
    zero = _Two(0, theirs=([([2, 3], theirs_rows)], {9: "broken elsewhere"}))
    calls: list[int] = []
    skipped: dict[int, str] = {}
    ctx = RunContext(seed=0, workers=0, log=lambda m: None, processes=zero)
    feats, found, computed = _run(samples, ctx, calls, batch_size=2, skipped=skipped)
    assert calls == [2, 1]  # batches 0 and 2
    assert computed == 5 and bool(found.all()) and skipped == {9: "broken elsewhere"}
    np.testing.assert_allclose(feats.numpy(), [_means(s) for s in samples], atol=1e-6)
    folder = next((tmp_path / "cache").rglob("meta.json")).parent
    assert len(list(folder.glob("shard-*"))) == 2  # its own rows, then rank 1's
    stored, hit = FeatureStore(folder).lookup(image_digests(samples))
    assert bool(hit.all()) and torch.allclose(stored, feats)


def test_shared_features_hand_every_process_process_zeros_result():
    digests = [_digest(i) for i in range(3)]
    zeros_view = (torch.ones(3, 2), torch.tensor([True, True, False]), 2, {2: "gone"})
    other = _Two(1, theirs=None, from_zero=zeros_view)
    skipped: dict[int, str] = {}
    store = FeatureStore.__new__(FeatureStore)  # never written to by rank 1
    feats, found, computed = shared_features(
        other,
        store,
        [([1], torch.ones(1, 2))],
        skipped,
        None,
        torch.zeros(3, dtype=torch.bool),
        digests,
    )
    assert torch.equal(feats, zeros_view[0]) and found.tolist() == [True, True, False]
    assert computed == 2 and skipped == {2: "gone"}
    ((rows, out),) = other.gathered[0]
    assert rows == [1] and torch.equal(out, torch.ones(1, 2)) and other.gathered[1] == {}


def test_shared_features_on_process_zero_start_from_nothing(tmp_path):
    digests = [_digest(i) for i in range(3)]
    zero = _Two(0, theirs=([([0, 2], torch.full((2, 4), 3.0))], {}))
    store = FeatureStore(tmp_path / "f")
    feats, found, computed = shared_features(
        zero, store, [], None, None, torch.zeros(3, dtype=torch.bool), digests
    )
    assert feats.dtype == torch.float32 and feats.shape == (3, 4)
    assert feats[[0, 2]].eq(3.0).all() and feats[1].eq(0).all()
    assert found.tolist() == [True, False, True] and computed == 2
    assert len(store.shards()) == 1
    stored, hit = store.lookup(digests)
    assert hit.tolist() == [True, False, True]


class _Marks(Transform):
    """A training-time step whose output shows the flag and the seed it was given."""

    role = "tensor"

    def __call__(self, image, *, train, seed):
        value = torch.tensor([float(train), float(seed % 9973), 1.0])
        return value.view(3, 1, 1).expand(3, 2, 2).clone()

    def __repr__(self) -> str:
        return "Marks()"


def test_stored_views_are_the_images_the_standard_loader_draws(tmp_path, monkeypatch):
    """For a training chain: the flag, the view (the loader's epoch) and the run's seed
    reach every image as ``make_loader`` hands them to the standard loop."""
    from bench.data.pipeline import make_loader

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path, 3)
    chain = TransformChain([_Marks()])
    ctx = RunContext(seed=3, workers=0, log=lambda m: None)
    for view in (0, 2):
        feats, _, computed = cached_features(
            samples,
            image_digests(samples),
            chain,
            lambda images: images.mean(dim=(2, 3)),
            key={"backbone": "marks"},
            train=True,
            view=view,
            batch_size=2,
            ctx=ctx,
        )
        loader = make_loader(
            samples, chain, train=True, shuffle=False, batch_size=3, epoch=view, seed=3
        )
        (batch,) = list(loader)
        assert computed == 3 and torch.equal(feats, batch["image"].mean(dim=(2, 3)))
        assert feats[:, 0].tolist() == [1.0, 1.0, 1.0]
    folder = next((tmp_path / "cache").rglob("meta.json")).parent
    assert folder.parent.name == "features"  # <cache root>/features/<key>


def test_the_progress_bar_counts_the_batches(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path, 3)
    _run(samples, RunContext(seed=0, workers=0, progress=True, log=lambda m: None), [])
    assert "2/2" in capsys.readouterr().err  # 3 images in batches of 2


def _shard(folder: Path, name: str, digest: str, value: float, width: int = 3) -> None:
    from safetensors.torch import save_file

    raw = torch.tensor([list(bytes.fromhex(digest))], dtype=torch.uint8)
    save_file({"digest": raw, "features": torch.full((1, width), value)}, str(folder / name))


def test_a_bad_shard_between_good_ones_does_not_hide_the_later_ones(tmp_path):
    store = FeatureStore(tmp_path / "f")
    _shard(store.folder, "shard-a.safetensors", _digest(1), 1.0)
    _shard(store.folder, "shard-b.safetensors", _digest(2), 2.0, width=5)  # another width
    (store.folder / "shard-c.safetensors").write_bytes(b"damaged")
    _shard(store.folder, "shard-d.safetensors", _digest(4), 4.0)
    feats, found = store.lookup([_digest(1), _digest(2), _digest(4)])
    assert found.tolist() == [True, False, True]
    assert feats.tolist() == [[1.0] * 3, [0.0] * 3, [4.0] * 3]


def test_an_unreadable_batch_does_not_end_the_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    good = _images(tmp_path, 2)
    samples = [Sample(str(bad), 1, "g"), Sample(str(bad), 0, "g"), *good]
    ctx = RunContext(seed=0, workers=0, log=lambda m: None)
    feats, found, computed = _run(samples, ctx, [], batch_size=2)
    assert computed == 2 and found.tolist() == [False, False, True, True]
    assert "features" in ctx.notes["data_wait"]  # the feature pass's data wait, by name


def test_the_progress_bar_names_an_evaluation_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path, 3)
    _run(samples, RunContext(seed=0, workers=0, progress=True, log=lambda m: None), [], view=5)
    assert "features (eval view 5)" in capsys.readouterr().err


def test_process_zero_keeps_the_rows_it_found_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = _images(tmp_path, 5)
    _run(samples[:1], RunContext(seed=0, workers=0, log=lambda m: None), [])  # row 0 stored
    theirs = torch.tensor([_means(samples[i]) for i in (3, 4)], dtype=torch.float32)
    zero = _Two(0, theirs=([([3, 4], theirs)], {}))
    ctx = RunContext(seed=0, workers=0, log=lambda m: None, processes=zero)
    calls: list[int] = []
    feats, found, computed = _run(samples, ctx, calls, batch_size=2)
    assert calls == [2] and computed == 4 and bool(found.all())
    np.testing.assert_allclose(feats.numpy(), [_means(s) for s in samples], atol=1e-6)
