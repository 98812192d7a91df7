"""ImageNet CNN weights: tags, files and folders resolved without the network; safe loading."""

from __future__ import annotations

import os
import time

import pytest
import torch
from torchvision.models import resnet18

from bench.backbones.imagenet import load_matching, read_state_dict, resolve_cnn_weights
from bench.errors import BenchError


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Offline, with empty torch-hub and Hugging Face caches."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def weights18():
    torch.manual_seed(0)
    return {k: v.clone() for k, v in resnet18(weights=None).state_dict().items()}


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("torchvision:IMAGENET1K_V1", "download.pytorch.org/models/resnet18-f37072fd.pth"),
        ("timm:resnet18.tv_in1k", "timm/resnet18.tv_in1k"),
    ],
)
def test_offline_missing_weights_fail_fast_in_one_line(offline_caches, tag, expected):
    start = time.perf_counter()
    with pytest.raises(BenchError) as info:
        resolve_cnn_weights("resnet18", tag, "cnnspot.pretrained")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message and "offline" in message and expected in message
    assert "--opt cnnspot.pretrained=" in message and "local-dir:" in message


def test_a_tag_already_in_the_torch_hub_cache_needs_no_network(offline_caches, weights18):
    folder = offline_caches / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(weights18, folder / "resnet18-f37072fd.pth")
    found = resolve_cnn_weights("resnet18", "torchvision:IMAGENET1K_V1")
    assert found.kind == "file" and found.path == str(folder / "resnet18-f37072fd.pth")
    assert found.label == "resnet18/torchvision:IMAGENET1K_V1"


def test_unknown_tags_are_named_errors(offline_caches):
    with pytest.raises(BenchError, match="IMAGENET1K_V1"):
        resolve_cnn_weights("resnet18", "torchvision:IMAGENET22K")
    with pytest.raises(BenchError, match="not a resnet18"):
        resolve_cnn_weights("resnet18", "timm:resnet50.tv_in1k")
    with pytest.raises(BenchError, match="neither a weights file nor a tag"):
        resolve_cnn_weights("resnet18", "imagenet")
    assert resolve_cnn_weights("resnet18", "none").kind == "random"


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "wrapped", "local-dir"])
def test_files_and_folders_load_into_the_network(tmp_path, weights18, fmt):
    from safetensors.torch import save_file

    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in weights18.items()}, str(path))
        spec = str(path)
    elif fmt == "pth":
        path = tmp_path / "w.pth"
        torch.save(weights18, path)
        spec = str(path)
    elif fmt == "wrapped":  # a training checkpoint: weights under "model", plus step counters
        path = tmp_path / "ckpt.pth"
        torch.save({"model": {f"module.{k}": v for k, v in weights18.items()}, "step": 3}, path)
        spec = str(path)
    else:
        (tmp_path / "folder").mkdir()
        save_file(weights18, str(tmp_path / "folder" / "model.safetensors"))
        spec = f"local-dir:{tmp_path / 'folder'}"
    weights = resolve_cnn_weights("resnet18", spec)
    net = resnet18(weights=None)
    left = load_matching(net, read_state_dict(weights.path), may_skip=(), source=weights.label)
    assert left == []
    for key, value in net.state_dict().items():
        assert torch.equal(value, weights18[key]), key


def test_skipped_layers_keep_their_init_and_wrong_files_are_refused(tmp_path, weights18):
    net = resnet18(weights=None, num_classes=1)  # another head: fc must be skippable
    before = net.fc.weight.clone()
    left = load_matching(net, weights18, may_skip=("fc.",), source="test")
    assert left == ["fc.bias", "fc.weight"]
    assert torch.equal(net.fc.weight, before)
    assert torch.equal(net.layer1[0].conv1.weight, weights18["layer1.0.conv1.weight"])
    with pytest.raises(BenchError, match="does not fit this network"):
        load_matching(
            resnet18(weights=None),
            {"conv1.weight": weights18["conv1.weight"]},
            may_skip=(),
            source="x",
        )


class _Payload:
    """Pickled, this would create a file when loaded by an unrestricted unpickler."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_weights_files_cannot_run_code(tmp_path):
    marker = tmp_path / "was-run"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(str(marker))}, path)  # a real torch checkpoint
    with pytest.raises(BenchError, match="weights_only=True"):
        read_state_dict(str(path))
    assert not os.path.exists(marker)
