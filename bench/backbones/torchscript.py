"""TorchScript archives: recognised strictly, loaded only when the user says they trust them.

OpenAI's original CLIP files are TorchScript. ``torch.jit.load`` runs TorchScript code stored
in the archive (its ``__setstate__`` methods), so a file from elsewhere is loaded only with
``BENCH_TRUST_TORCHSCRIPT=1``; every other checkpoint goes through safetensors or
``torch.load(weights_only=True)``, which cannot run code.
"""

from __future__ import annotations

import os
import zipfile

import torch
from torch import nn

from bench.errors import BenchError

#: Set to 1 to allow loading TorchScript archives: torch.jit.load runs code stored in them.
TRUST_TORCHSCRIPT_ENV = "BENCH_TRUST_TORCHSCRIPT"
#: Globals a TorchScript archive's pickles may name besides its own ``__torch__`` classes.
_TORCHSCRIPT_GLOBALS = frozenset(
    {("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")}
)


def _pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """(module, name) of every global a pickle names, read without unpickling it."""
    import io
    import pickletools

    found: set[tuple[str, str]] = set()
    strings: list[str] = []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            found.add((module, name))
        elif op.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]) if len(strings) >= 2 else ("?", "?"))
        elif op.name in {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}:
            strings.append(str(arg))
    return found


def _torchscript_global(module: str, name: str) -> bool:
    return (
        module == "__torch__"
        or module.startswith("__torch__.")
        or module == "torch.jit._pickle"
        or (module == "torch" and name.endswith("Storage"))
        or (module, name) in _TORCHSCRIPT_GLOBALS
    )


def is_torchscript(path: str) -> bool:
    """True only for a well-formed TorchScript archive (OpenAI's original .pt files are).

    Strict, and without loading anything: one top folder holding ``data.pkl``,
    ``constants.pkl``, ``version`` and TorchScript source under ``code/``, and pickles that
    name only TorchScript classes, tensor rebuilders and storages. A zip that merely has a
    ``code/`` folder is not TorchScript, and is never loaded with anything but
    ``torch.load(weights_only=True)``.
    """
    try:
        if not os.path.isfile(path) or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            tops = {name.split("/", 1)[0] for name in names}
            if len(tops) != 1 or any("/" not in name for name in names):
                return False
            top = tops.pop()
            needed = {f"{top}/data.pkl", f"{top}/constants.pkl", f"{top}/version"}
            if not needed <= set(names):
                return False
            if not any(n.startswith(f"{top}/code/") and n.endswith(".py") for n in names):
                return False
            for pkl in (f"{top}/data.pkl", f"{top}/constants.pkl"):
                if not all(_torchscript_global(m, n) for m, n in _pickle_globals(zf.read(pkl))):
                    return False
    except Exception:  # a damaged or hostile file is simply not TorchScript
        return False
    return True


def torchscript_allowed() -> bool:
    return os.environ.get(TRUST_TORCHSCRIPT_ENV, "").strip() == "1"


def torchscript_refused(path: str) -> BenchError:
    return BenchError(
        f"{path} is a TorchScript archive, and loading one runs the TorchScript code stored in "
        f"it; nothing is loaded unless you trust its source and set {TRUST_TORCHSCRIPT_ENV}=1 "
        "(or convert it once to a .safetensors state dict)"
    )


def load_torchscript_weights(net: nn.Module, path: str) -> None:
    """Copy a trusted TorchScript archive's weights into an open_clip model (strict keys)."""
    import open_clip.model

    scripted = torch.jit.load(path, map_location="cpu")
    state = dict(scripted.state_dict())
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    if "logit_scale" in state and state["logit_scale"].ndim != net.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(net.logit_scale.shape)
    open_clip.model.resize_pos_embed(state, net)
    net.load_state_dict(state, strict=True)
