"""Caption providers: BLIP (a tiny random one, real code path), files, prompts, the bank."""

from __future__ import annotations

import json
import os
import shutil
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.layouts import Sample
from bench.errors import BenchError
from bench.interfaces import RunContext
from nsnet_plugin.captions import (
    BlipCaptions,
    CaptionBank,
    FileCaptions,
    PromptCaptions,
    captions_for,
    class_name,
    load_blip,
)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
WORDS += [
    "a",
    "photo",
    "of",
    "cat",
    "dog",
    "car",
    "chair",
    "horse",
    "red",
    "blue",
    "on",
    "the",
    "table",
    "grass",
]


def tiny_blip():
    """A random BLIP small enough to generate in milliseconds, built without a download."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}, bos_token="[DEC]")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    config = BlipConfig(
        vision_config={**small, "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        text_config={
            **small,
            "num_attention_heads": 2,
            "vocab_size": len(WORDS),
            "encoder_hidden_size": 16,
            "max_position_embeddings": 64,
            "bos_token_id": WORDS.index("[DEC]"),
            "eos_token_id": WORDS.index("[SEP]"),
            "sep_token_id": WORDS.index("[SEP]"),
            "pad_token_id": 0,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    return BlipForConditionalGeneration(config).eval(), processor


def write_images(folder, n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def images(tmp_path):
    paths = write_images(tmp_path / "data" / "car" / "1_fake", 3)
    dup = tmp_path / "data" / "car" / "0_real" / "copy.png"
    dup.parent.mkdir(parents=True)
    shutil.copy(paths[0], dup)  # same content, another path: captioned once
    return [Sample(p, 1, "car") for p in paths] + [Sample(str(dup), 0, "car")]


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def test_blip_captions_are_batched_and_cached_by_content(images, private_cache):
    model, processor = tiny_blip()
    first = BlipCaptions(
        "test/tiny-blip", model=model, processor=processor, batch_size=2, max_new_tokens=4
    )
    captions = first(images, RunContext())
    assert set(captions) == {s.path for s in images}
    assert all(isinstance(c, str) for c in captions.values())
    assert captions[images[0].path] == captions[images[3].path]
    assert first.generate_calls == 2  # 3 distinct images, 2 per batch

    again = BlipCaptions(
        "test/tiny-blip", model=model, processor=processor, batch_size=2, max_new_tokens=4
    )
    assert again(images, RunContext()) == captions
    assert again.generate_calls == 0

    other_settings = BlipCaptions(
        "test/tiny-blip", model=model, processor=processor, batch_size=2, max_new_tokens=5
    )
    other_settings(images[:1], RunContext())
    assert other_settings.generate_calls == 1


def test_blip_from_a_local_folder(images, private_cache, tmp_path):
    model, processor = tiny_blip()
    folder = tmp_path / "blip"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    provider = BlipCaptions(str(folder), batch_size=4, max_new_tokens=3)
    captions = provider(images, RunContext())
    assert set(captions) == {s.path for s in images}
    assert provider.generate_calls == 1


def test_blip_hub_id_offline_is_one_line_and_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    start = time.perf_counter()
    with pytest.raises(BenchError) as info:
        load_blip("Salesforce/blip-image-captioning-base", option="nsnet.caption_model")
    assert time.perf_counter() - start < 10
    assert "\n" not in str(info.value)
    assert "offline" in str(info.value) and "--opt nsnet.caption_model=" in str(info.value)


def test_file_captions_from_json_csv_and_sidecars(tmp_path):
    paths = write_images(tmp_path / "set" / "cat" / "0_real", 3)
    samples = [Sample(p, 0, "cat") for p in paths]
    (tmp_path / "set" / "caps.json").write_text(
        json.dumps({"cat/0_real/000.png": "a cat", "cat/0_real/001.png": "a kitten"})
    )
    (tmp_path / "set" / "caps.csv").write_text(
        'path,caption\ncat/0_real/001.png,a csv kitten\ncat/0_real/002.png,"a cat, sleeping"\n'
    )
    (tmp_path / "set" / "bare.csv").write_text("cat/0_real/002.png,no header\n")
    (tmp_path / "set" / "list.json").write_text(
        json.dumps([{"path": str(paths[2]), "caption": "absolute"}])
    )
    ctx = RunContext(captions={paths[2]: "from the sidecar"})

    from_json = FileCaptions(str(tmp_path / "set" / "caps.json"))(samples, ctx)
    assert from_json == {paths[0]: "a cat", paths[1]: "a kitten", paths[2]: "from the sidecar"}
    from_csv = FileCaptions(str(tmp_path / "set" / "caps.csv"))(samples, RunContext())
    assert from_csv == {paths[1]: "a csv kitten", paths[2]: "a cat, sleeping"}
    assert FileCaptions(str(tmp_path / "set" / "bare.csv"))(samples)[paths[2]] == "no header"
    assert FileCaptions(str(tmp_path / "set" / "list.json"))(samples)[paths[2]] == "absolute"
    assert FileCaptions("")(samples, ctx) == {paths[2]: "from the sidecar"}
    with pytest.raises(BenchError, match="does not exist"):
        FileCaptions(str(tmp_path / "nope.json"))(samples)


def test_prompt_captions_and_class_names():
    assert class_name("/d/progan/car/1_fake/x.png") == "car"
    assert class_name("/d/genimage/sdv4/train/ai/x.png") == "sdv4"
    assert class_name("/d/flat/x.png") == "flat"
    prompt = PromptCaptions("a {label} photo of a {class} by {generator}")
    sample = Sample("/d/aigi/train/horse/0_real/x.png", 0, "horse_gen")
    assert prompt([sample])[sample.path] == "a real photo of a horse by horse gen"
    assert PromptCaptions()([sample])[sample.path] == "a photo of a horse"
    with pytest.raises(BenchError, match="may use"):
        PromptCaptions("a photo of {thing}")


def test_missing_captions_error_or_prompt_fallback(tmp_path):
    paths = write_images(tmp_path / "chair" / "1_fake", 2)
    samples = [Sample(p, 1, "chair") for p in paths]
    ctx = RunContext(captions={paths[0]: "a chair"})
    options = {"captions": "file", "missing_captions": "error"}
    with pytest.raises(BenchError, match="1 of 2 training images have no caption") as info:
        captions_for(samples, options, ctx, "nsnet")
    assert "\n" not in str(info.value) and "nsnet.caption_file" in str(info.value)
    filled = captions_for(samples, {**options, "missing_captions": "prompt"}, ctx, "nsnet")
    assert filled == {paths[0]: "a chair", paths[1]: "a photo of a chair"}
    with pytest.raises(BenchError, match="captions must be one of"):
        captions_for(samples, {"captions": "gpt"}, ctx, "nsnet")


def test_caption_bank_encodes_each_text_once():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.stack([torch.full((4,), float(len(t))) for t in texts])

    bank = CaptionBank(encode)
    bank.set({"a": "a cat", "b": "a dog!", "c": "a cat"})
    V = bank.for_paths(["a", "b", "c"])
    assert V.shape == (3, 4) and torch.equal(V[0], V[2])
    assert bank.distinct().shape == (2, 4)
    bank.for_paths(["c", "a"])
    assert calls == [["a cat", "a dog!"]]
    with pytest.raises(BenchError, match="no caption for image"):
        bank.for_paths(["zzz"])


def test_blip_reads_images_in_workers_with_the_same_captions(tmp_path, monkeypatch):
    """Preprocessing one image at a time in 2 workers gives the pixels the batched call gives,
    so the same captions; the cache then answers a third run."""
    model, processor = tiny_blip()
    paths = write_images(tmp_path / "data" / "cat" / "0_real", 5, seed=7)
    samples = [Sample(p, 0, "cat") for p in paths]
    from PIL import Image as PILImage

    images = [PILImage.open(p).convert("RGB") for p in paths]
    batched = processor(images=images, return_tensors="pt")["pixel_values"]
    from nsnet_plugin.captions import _BlipImages

    singles = torch.stack([_BlipImages([(p, "d")], processor)[0][0] for p in paths])
    assert torch.equal(singles, batched)

    captions = {}
    for workers in (0, 2):
        monkeypatch.setenv("BENCH_CACHE", str(tmp_path / f"cache{workers}"))
        provider = BlipCaptions(
            "test/tiny-blip", model=model, processor=processor, batch_size=2, max_new_tokens=4
        )
        captions[workers] = provider(samples, RunContext(workers=workers))
        assert provider.generate_calls == 3  # 5 images, 2 per batch
    assert captions[0] == captions[2] and len(captions[0]) == 5
    again = BlipCaptions("test/tiny-blip", model=model, processor=processor, batch_size=2)
    again.max_new_tokens = 4
    assert again(samples, RunContext(workers=2)) == captions[2] and again.generate_calls == 0
