"""NS-Net's readings of what the paper leaves open: each changes predictions where it must
and agrees where it must (issue 12). Tiny random CLIP; expected values computed by hand
from the detector's own features, head and text tower."""

from __future__ import annotations

import itertools
import json
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from bench.data.evaluation import evaluation_batches
from bench.data.layouts import read_dataset
from bench.data.pipeline import make_loader
from bench.interfaces import IMAGENET_MEAN, IMAGENET_STD, RunContext, TrainData
from bench.options import merge_options
from bench.plugins import get_registry
from nsnet_plugin.detector import NSNet
from nsnet_plugin.lora import lora_parameters
from nsnet_plugin.nullspace import null_space_projector


def ctx(**kw) -> RunContext:
    return RunContext(seed=0, log=lambda _m: None, **kw)


def build(seed: int = 0, **overrides) -> NSNet:
    entry = get_registry().get("detector", "nsnet")
    options = merge_options("nsnet", entry.specs, entry.presets["demo"], overrides)
    torch.manual_seed(seed)
    detector = NSNet(options)
    detector.setup(ctx())
    return detector


def factory(samples, chain, **kw):
    return make_loader(samples, chain, seed=0, workers=0, **kw)


@pytest.fixture(scope="module")
def data(tiny_tree, tmp_path_factory):
    """8 training images; 16 test images with a distinct caption each (a caption file)."""
    everything = read_dataset(str(tiny_tree))
    train, test = [], []
    for gen, label in itertools.product(("gan_a", "gan_b"), (0, 1)):
        group = [s for s in everything if s.generator == gen and s.label == label]
        train += group[:2]
        test += group[2:6]
    words = ["red", "blue", "green", "old", "new", "small", "large", "dark"]
    captions = {
        s.path: f"a {words[i % 8]} picture number {i} of a {s.generator}"
        for i, s in enumerate(train + test)
    }
    file = tmp_path_factory.mktemp("captions") / "captions.json"
    file.write_text(json.dumps(captions))
    return train, test, str(file)


def trained_state(train, caption_file):
    detector = build(lr=4e-3, captions="file", caption_file=caption_file)
    detector.fit(TrainData(train, factory, batch_size=4, epochs=1), ctx())
    return detector.trainable_state()


@pytest.fixture(scope="module")
def state(data):
    train, _, caption_file = data
    return trained_state(train, caption_file)


def scores(detector: NSNet, samples, batch_size: int = 16) -> dict[str, float]:
    """p(fake) per path, fed as the runner feeds evaluation (plan, fixed batches)."""
    plan = detector.plan_evaluation(samples, ctx())
    out = {}
    chain = detector.transforms(train=False)
    for batch in evaluation_batches(samples, chain, factory, plan, batch_size):
        with torch.no_grad():
            p = detector.predict_proba(batch)
        out.update(zip(batch["path"], p.tolist(), strict=True))
    return out


def reading(state, caption_file, **overrides) -> NSNet:
    detector = build(seed=9, captions="file", caption_file=caption_file, **overrides)
    detector.load_trainable_state(state)
    return detector


def by_hand(detector: NSNet, samples, projector_of) -> dict[str, float]:
    """head(U_i P_i) with P_i from ``projector_of(index)`` computed here."""
    chain = detector.transforms(train=False)
    batch = next(
        iter(make_loader(samples, chain, train=False, shuffle=False, batch_size=len(samples)))
    )
    with torch.no_grad():
        U = detector.extract_features(batch["image"]).double()
        out = {}
        for i, path in enumerate(batch["path"]):
            f = (U[i : i + 1] @ projector_of(i).double()).float()
            out[path] = float(torch.sigmoid(detector.head(f))[0, 0])
    return out


def text_features(detector: NSNet, samples, caption_file) -> torch.Tensor:
    with open(caption_file, encoding="utf-8") as fh:
        captions = json.load(fh)
    with torch.no_grad():
        return detector.encode_text([captions[s.path] for s in samples]).double()


def test_eval_projection_readings_against_hand_computed_projections(data, state):
    _, test, caption_file = data
    fixed = reading(state, caption_file)
    none = reading(state, caption_file, eval_projection="none")
    own = reading(state, caption_file, eval_projection="own")
    caption = reading(state, caption_file, eval_projection="caption", batch_size=4)
    P_fixed = state["nullspace.fixed_projector"]
    V = text_features(fixed, test, caption_file)
    d = V.shape[1]

    got = {
        name: scores(det, test) for name, det in (("fixed", fixed), ("none", none), ("own", own))
    }
    expect_fixed = by_hand(fixed, test, lambda i: P_fixed)
    expect_none = by_hand(none, test, lambda i: torch.eye(d))
    expect_own = by_hand(own, test, lambda i: null_space_projector(V[i : i + 1]))
    for name, expect in (("fixed", expect_fixed), ("none", expect_none), ("own", expect_own)):
        assert got[name] == pytest.approx(expect, abs=1e-5), name

    # caption: each fixed batch (per generator, by content hash, batch_size = 4) projected
    # by its own 4 captions' null space
    from bench.cache import file_digests

    digests = dict(zip([s.path for s in test], file_digests([s.path for s in test]), strict=True))
    groups = {}
    for gen in ("gan_a", "gan_b"):
        members = sorted((s for s in test if s.generator == gen), key=lambda s: digests[s.path])
        for k in range(0, len(members), 4):
            for s in members[k : k + 4]:
                groups[s.path] = [test.index(m) for m in members[k : k + 4]]
    expect_caption = by_hand(caption, test, lambda i: null_space_projector(V[groups[test[i].path]]))
    got_caption = scores(caption, test)
    assert got_caption == pytest.approx(expect_caption, abs=1e-5)

    # the readings differ where they must
    for a, b in itertools.combinations(["fixed", "none", "own"], 2):
        assert max(abs(got[a][p] - got[b][p]) for p in got[a]) > 1e-4, (a, b)
    assert max(abs(got_caption[p] - got["own"][p]) for p in got_caption) > 1e-4


def test_caption_reading_does_not_depend_on_order_and_agrees_with_own_where_it_must(data, state):
    _, test, caption_file = data
    caption = reading(state, caption_file, eval_projection="caption", batch_size=4)
    first = scores(caption, test)
    shuffled = list(test)
    random.Random(1).shuffle(shuffled)
    assert scores(caption, shuffled, batch_size=3) == pytest.approx(first, abs=1e-6)

    # prompt captions are one per class folder: every fixed batch shares one caption, so
    # its null space is that caption's, which is what `own` removes
    prompt_caption = build(seed=9, captions="prompt", eval_projection="caption")
    prompt_caption.load_trainable_state(state)
    prompt_own = build(seed=9, captions="prompt", eval_projection="own")
    prompt_own.load_trainable_state(state)
    assert scores(prompt_caption, test) == pytest.approx(scores(prompt_own, test), abs=1e-5)


def test_test_captions_are_missing_in_one_line(data, state, tmp_path):
    from bench.errors import BenchError

    _, test, _ = data
    (tmp_path / "c.json").write_text("{}")
    detector = reading(state, str(tmp_path / "c.json"), eval_projection="own")
    with pytest.raises(BenchError, match="test images have no caption"):
        detector.plan_evaluation(test, ctx())


def test_lora_scaling_changes_predictions_once_lora_has_learned(data):
    _, test, _ = data
    batch = next(
        iter(
            make_loader(
                test[:6], build().transforms(False), train=False, shuffle=False, batch_size=6
            )
        )
    )
    out = {}
    for scaling in ("clip-lora", "peft"):
        detector = build(seed=3, lora_scaling=scaling, nullspace="none", captions="prompt")
        out[scaling, "init"] = detector.predict_proba(batch)  # B = 0: no adapter effect
        with torch.no_grad():
            g = torch.Generator().manual_seed(4)
            for p in lora_parameters(detector.backbone.visual):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        out[scaling, "learned"] = detector.predict_proba(batch)
    assert torch.allclose(out["clip-lora", "init"], out["peft", "init"], atol=1e-6)
    assert (out["clip-lora", "learned"] - out["peft", "learned"]).abs().max() > 1e-4


def test_normalization_reading_is_imagenet_statistics(data):
    _, test, _ = data
    clip = build(nullspace="none", captions="prompt")
    imagenet = build(
        nullspace="none", captions="prompt", normalization="imagenet", patch_selection=False
    )
    plain = build(nullspace="none", captions="prompt", patch_selection=False)
    from PIL import Image

    with Image.open(test[0].path) as im:
        image = im.convert("RGB")
    x = imagenet.transforms(train=False)(image, train=False, seed=0)
    raw = torch.from_numpy(np.asarray(image)[:224, :224].copy()).permute(2, 0, 1).float() / 255
    # the tiny tree's images are 96 px: the centre crop pads them, compare the image part
    want = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        3, 1, 1
    )
    top, left = (224 - 96) // 2, (224 - 96) // 2
    assert torch.allclose(x[:, top : top + 96, left : left + 96], want[:, :96, :96], atol=1e-6)
    y = plain.transforms(train=False)(image, train=False, seed=0)
    assert not torch.allclose(x, y)
    assert clip.normalization == (tuple(clip.backbone.mean), tuple(clip.backbone.std))


def test_entropy_input_and_odd_tile_reach_the_input_chain():
    default = build(captions="prompt")
    (step,) = [s for s in default.transforms(train=False).steps if s.role == "geometry"]
    assert step.odd_tile == "high" and step.entropy_input == "luma"
    other = build(captions="prompt", entropy_input="rgb-mean", odd_tile="low")
    (step,) = [s for s in other.transforms(train=False).steps if s.role == "geometry"]
    assert step.odd_tile == "low" and step.entropy_input == "rgb-mean"
    assert "scaling=clip-lora" in default.describe()["lora"]


def test_runs_saved_before_the_options_existed_keep_their_readings():
    """A config.json without the new keys means peft scaling, luma, CLIP statistics."""
    entry = get_registry().get("detector", "nsnet")
    options = dict(entry.defaults)
    for key in ("lora_scaling", "entropy_input", "normalization"):
        options.pop(key)
    detector = NSNet(options)
    assert (detector.lora_scaling, detector.entropy_input, detector.normalization_stats) == (
        "peft",
        "luma",
        "clip",
    )


def test_entropy_input_and_odd_tile_readings_at_the_prediction(tmp_path):
    """On a grey photo luma and rgb-mean keep the same patches, so NS-Net predicts the same;
    on a colour photo they keep different ones, and so do the two odd-tile readings."""
    from PIL import Image
    from skimage import data as skdata

    from bench.data.layouts import Sample

    paths = {}
    for name, array in (("colour", skdata.astronaut()), ("grey", skdata.camera())):
        paths[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(array).convert("RGB").save(paths[name])
    samples = [Sample(paths["colour"], 1, "x"), Sample(paths["grey"], 0, "x")]

    def predict(**overrides) -> torch.Tensor:
        detector = build(seed=2, nullspace="none", captions="prompt", **overrides)
        chain = detector.transforms(train=False)
        batch = next(iter(make_loader(samples, chain, train=False, shuffle=False, batch_size=2)))
        return detector.predict_proba(batch)

    luma, rgb = predict(), predict(entropy_input="rgb-mean")
    assert abs(float(luma[1] - rgb[1])) < 1e-6  # grey: the same patches, the same tiling
    assert abs(float(luma[0] - rgb[0])) > 1e-5  # colour: other patches
    low = predict(odd_tile="low")
    assert abs(float(luma[0] - low[0])) > 1e-5
