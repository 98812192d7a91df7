"""No code runs from a weights file: crafted checkpoints are refused, TorchScript needs consent."""

from __future__ import annotations

import json
import os
import zipfile

import pytest
import torch
from torch import nn

from bench.backbones.clip import TINY_MODEL, load_clip, register_tiny_config
from bench.backbones.torchscript import TRUST_TORCHSCRIPT_ENV, is_torchscript
from bench.errors import BenchError


class _Payload:
    """Unpickling this creates ``marker``: the proof that code from the file ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_checkpoint(path, marker, extra_entries=()) -> str:
    """A torch.save zip whose pickle calls open(marker, "w"), plus entries that mimic TorchScript."""
    torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": _Payload(str(marker))}, str(path))
    with zipfile.ZipFile(path, "a") as zf:
        top = zf.namelist()[0].split("/")[0]
        for name in extra_entries:
            zf.writestr(f"{top}/{name}", "def forward(self):\n  return 1\n")
    return str(path)


@pytest.mark.parametrize(
    "extra",
    [
        ("code/__torch__/evil.py",),  # the old check took any "/code/" entry for TorchScript
        ("code/__torch__/evil.py", "constants.pkl"),  # what torch.load itself looks for
        (),
    ],
    ids=["code-folder", "code-and-constants", "plain-pickle"],
)
def test_crafted_checkpoint_runs_no_code(tmp_path, extra):
    marker = tmp_path / "pwned"
    path = _malicious_checkpoint(tmp_path / "model.pt", marker, extra)
    assert not is_torchscript(path)
    with pytest.raises(BenchError) as info:
        load_clip(TINY_MODEL, path)
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    assert "\n" not in str(info.value)


def test_crafted_checkpoint_named_in_a_shared_run_folder_runs_no_code(tmp_path):
    """`bench predict` on someone else's run folder whose config names a hostile file."""
    from bench.cli import main

    marker = tmp_path / "pwned"
    weights = _malicious_checkpoint(tmp_path / "w.pt", marker, ("code/__torch__/x.py",))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    options = {"model": TINY_MODEL, "pretrained": weights, "feature_cache": "off"}
    (run_dir / "config.json").write_text(
        json.dumps({"detector": {"name": "univfd", "options": options}, "addons": [], "spec": {}})
    )
    (run_dir / "state.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    assert main(["predict", "--run", str(run_dir), str(image), "--device", "cpu"]) == 2
    assert not marker.exists()


def _scripted_copy(net: nn.Module) -> nn.Module:
    """A TorchScript module holding ``net``'s state under the same names (as OpenAI's files)."""
    root = nn.Module()
    for key, value in net.state_dict().items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if not isinstance(getattr(module, part, None), nn.Module):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        if value.is_floating_point():
            module.register_parameter(leaf, nn.Parameter(value.clone()))
        else:
            module.register_buffer(leaf, value.clone())
    return torch.jit.script(root)


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory):
    import open_clip

    register_tiny_config()
    torch.manual_seed(123)
    net = open_clip.create_model(TINY_MODEL, pretrained=None)
    path = tmp_path_factory.mktemp("ts") / "ViT-tiny.pt"
    with pytest.warns(FutureWarning):
        torch.jit.save(_scripted_copy(net), str(path))
    return str(path), net.state_dict()


def test_torchscript_is_recognised_strictly_and_refused_without_consent(
    torchscript_file, monkeypatch
):
    path, _ = torchscript_file
    monkeypatch.delenv(TRUST_TORCHSCRIPT_ENV, raising=False)
    assert is_torchscript(path)
    with pytest.raises(BenchError, match=f"{TRUST_TORCHSCRIPT_ENV}=1") as info:
        load_clip(TINY_MODEL, path)
    assert "runs the TorchScript code" in str(info.value)


def test_torchscript_loads_through_jit_with_consent(torchscript_file, monkeypatch):
    path, state = torchscript_file
    monkeypatch.setenv(TRUST_TORCHSCRIPT_ENV, "1")
    backbone = load_clip(TINY_MODEL, path)
    loaded = backbone.model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert backbone.quick_gelu is True  # an OpenAI-style TorchScript file implies QuickGELU


def test_a_torchscript_archive_naming_foreign_globals_is_not_torchscript(tmp_path):
    """Right structure, but data.pkl names os.system: not accepted as TorchScript."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "x.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x/data.pkl", pickle.dumps(Evil(), protocol=2))
        zf.writestr("x/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("x/version", "3\n")
        zf.writestr("x/code/__torch__/m.py", "")
    assert not is_torchscript(str(path))


def test_safetensors_and_plain_state_dicts_still_load(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    register_tiny_config()
    torch.manual_seed(7)
    net = open_clip.create_model(TINY_MODEL, pretrained=None)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, str(tmp_path / "w.bin"))
    for name in ("w.safetensors", "w.bin"):
        loaded = load_clip(TINY_MODEL, str(tmp_path / name)).model.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state), name
