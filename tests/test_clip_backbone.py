"""The shared CLIP loader: the tiny config, shapes, weights resolution, offline errors."""

from __future__ import annotations

import json
import os
import shutil
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from bench.backbones.clip import TINY_MODEL, load_clip, resolve_weights
from bench.errors import BenchError
from bench.interfaces import CLIP_MEAN, CLIP_STD


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_clip(TINY_MODEL, "")


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """Offline, with a Hugging Face cache that holds nothing."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf"


def test_tiny_model_builds_with_random_weights(tiny):
    assert tiny.random_weights is True
    assert tiny.embed_dim == 64
    assert tiny.image_size == 224
    assert tiny.mean == pytest.approx(CLIP_MEAN)
    assert tiny.std == pytest.approx(CLIP_STD)
    assert TINY_MODEL in tiny.identity and "random" in tiny.identity
    assert tiny.describe()["random_weights"] is True
    assert not any(p.requires_grad for p in tiny.parameters())


def test_encode_image_is_the_unnormalised_projected_cls(tiny):
    images = torch.randn(3, 3, 224, 224)
    out = tiny.encode_image(images)
    assert out.shape == (3, 64)
    norms = out.norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms))
    visual = tiny.model.visual
    x = visual._embeds(images)
    x = visual.transformer(x)
    cls = visual.ln_post(x)[:, 0]
    assert torch.allclose(out, cls @ visual.proj, atol=1e-5)


def test_encode_text_batches_without_gradients(tiny):
    texts = ["a photo of a cat", "a red car", "a chair", "a horse in a field", "x"]
    whole = tiny.encode_text(texts)
    parts = tiny.encode_text(texts, batch_size=2)
    assert whole.shape == (5, 64) and whole.dtype == torch.float32
    assert not whole.requires_grad
    assert torch.allclose(whole, parts, atol=1e-5)
    assert tiny.encode_text([]).shape == (0, 64)


def test_offline_missing_weights_fail_fast_in_one_line(empty_hub):
    start = time.perf_counter()
    with pytest.raises(BenchError) as info:
        load_clip("ViT-L-14", "openai", option="nsnet.pretrained")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert "ViT-L-14/openai" in message and "offline" in message
    assert "--opt nsnet.pretrained=" in message and "local-dir:" in message


@pytest.mark.parametrize(
    ("model", "pretrained", "needle"),
    [
        ("ViT-L-14", "no-such-tag", "known open_clip tag"),
        ("ViT-L-14", "/nowhere/model.bin", "does not exist"),
        ("ViT-L-14", "local-dir:/nowhere", "does not exist"),
        ("ViT-L-15", "", "unknown CLIP model"),
    ],
)
def test_bad_weights_or_model_are_one_line_errors(empty_hub, model, pretrained, needle):
    with pytest.raises(BenchError, match=needle) as info:
        load_clip(model, pretrained)
    assert "\n" not in str(info.value)


def test_checkpoint_file_round_trip(tiny, tmp_path):
    path = tmp_path / "tiny.bin"
    torch.save(tiny.model.state_dict(), path)
    loaded = load_clip(TINY_MODEL, str(path))
    assert loaded.random_weights is False
    assert str(path) in loaded.identity
    images = torch.randn(2, 3, 224, 224)
    assert torch.allclose(loaded.encode_image(images), tiny.encode_image(images), atol=1e-6)
    assert torch.allclose(loaded.encode_text(["a cat"]), tiny.encode_text(["a cat"]), atol=1e-6)


def test_local_dir_with_and_without_open_clip_config(tiny, tmp_path):
    from safetensors.torch import save_file

    bare = tmp_path / "bare"
    bare.mkdir()
    save_file(
        {k: v.contiguous() for k, v in tiny.model.state_dict().items()},
        str(bare / "open_clip_model.safetensors"),
    )
    images = torch.randn(2, 3, 224, 224)
    want = tiny.encode_image(images)
    assert torch.allclose(
        load_clip(TINY_MODEL, f"local-dir:{bare}").encode_image(images), want, atol=1e-6
    )

    import open_clip

    full = tmp_path / "full"
    full.mkdir()
    shutil.copy(bare / "open_clip_model.safetensors", full / "open_clip_model.safetensors")
    config = {"model_cfg": open_clip.get_model_config(TINY_MODEL), "preprocess_cfg": {}}
    (full / "open_clip_config.json").write_text(json.dumps(config))
    loaded = load_clip(TINY_MODEL, f"local-dir:{full}")
    assert torch.allclose(loaded.encode_image(images), want, atol=1e-6)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError, match="no CLIP checkpoint"):
        load_clip(TINY_MODEL, f"local-dir:{empty}")


def test_quick_gelu_follows_the_weights(tmp_path):
    openai_dir = tmp_path / "vit_large_patch14_clip_224.openai"
    openai_dir.mkdir()
    (openai_dir / "open_clip_pytorch_model.bin").write_bytes(b"x")
    other = tmp_path / "other.bin"
    other.write_bytes(b"x")
    assert resolve_weights("ViT-L-14", str(openai_dir / "open_clip_pytorch_model.bin")).quick_gelu
    assert not resolve_weights("ViT-L-14", str(other)).quick_gelu
    assert resolve_weights("ViT-L-14", str(other), quick_gelu=True).quick_gelu
    assert resolve_weights("ViT-L-14", "none").kind == "random"


def test_tag_found_in_the_hub_cache_needs_no_network(empty_hub, tiny):
    """A tag resolves to the cached hub file (what `pretrained=openai` does after a download)."""
    from huggingface_hub import constants

    repo = "timm/vit_large_patch14_clip_224.openai"
    folder = empty_hub / "hub" / constants.REPO_ID_SEPARATOR.join(["models", *repo.split("/")])
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    weights = resolve_weights("ViT-L-14", "openai")
    assert weights.path == str(snapshot / "open_clip_pytorch_model.bin")
    assert weights.quick_gelu is True
    assert weights.preprocess.get("mean") == pytest.approx(CLIP_MEAN)


def test_random_weights_are_rebuilt_identically_without_touching_the_rng(tiny):
    """A run with random weights saves no backbone: rebuilding it must give the same one."""
    torch.manual_seed(42)
    state = torch.random.get_rng_state()
    again = load_clip(TINY_MODEL, "none")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert again.identity == tiny.identity == f"{TINY_MODEL}/random(seed=0)"
    for (name, a), (_, b) in zip(
        again.state_dict().items(), tiny.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    other = load_clip(TINY_MODEL, "", random_seed=1)
    assert not torch.equal(other.model.visual.proj, tiny.model.visual.proj)
