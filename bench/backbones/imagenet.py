"""ImageNet-pretrained CNN weights (torchvision or timm), resolved the way CLIP's are.

Why a module of its own: CNN-Spot fine-tunes an ImageNet ResNet-50 and AIDE names one, and
where the weights come from decides the results, so they are resolved here once: a tag, a
file or a folder; missing offline, one line that says how to provide them (no download
retries, no traceback); loaded only through safetensors or ``torch.load(weights_only=True)``,
so a weights file can never run code.

``pretrained`` accepts:
  - "torchvision:IMAGENET1K_V1" (a weights name of the architecture's torchvision enum):
    taken from the torch hub cache (``$TORCH_HOME/hub/checkpoints``), downloaded only online;
  - "timm:resnet50.tv_in1k" (a timm pretrained tag of the same architecture): taken from
    the Hugging Face cache (repository ``timm/<tag>``), downloaded only online;
  - a file: ``.safetensors``, or ``.pth``/``.pt``/``.bin`` read with ``weights_only=True``
    (a dict holding the weights under "state_dict" or "model" is unwrapped);
  - "local-dir:/folder": the checkpoint in that folder;
  - "" / "none" / "random": random initialisation.
HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) means offline for torchvision downloads too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.backbones.clip import find_checkpoint
from bench.backbones.hub import cached_hub_file, hf_cache_dir, host_reachable, hub_offline
from bench.errors import BenchError

RANDOM_WEIGHTS = frozenset({"", "none", "random"})
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
#: Preferred checkpoint names inside a local-dir folder, best first.
CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth")
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class CnnWeights:
    """Where the weights come from, resolved before anything is built or loaded."""

    kind: str  # "random" or "file"
    path: str | None
    label: str  # stable identity for run logs and caches


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _missing(arch: str, tag: str, source: str, filename: str, why: str, option: str, cache: str):
    return BenchError(
        f"ImageNet weights {arch}/{tag} are not on this machine and {why}: download {source} "
        f"elsewhere and pass --opt {option}=/path/to/{filename} (or {option}=local-dir:/folder), "
        f"or put it in {cache}"
    )


def _torchvision_tag(arch: str, name: str, option: str) -> CnnWeights:
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        raise BenchError(f"torchvision has no weights for architecture '{arch}'") from None
    if name not in enum.__members__:
        known = ", ".join(enum.__members__) or "none"
        raise BenchError(f"'{name}' is not a torchvision weights name for {arch} (known: {known})")
    url = enum[name].url
    filename = os.path.basename(url)
    target = _torch_hub_checkpoints() / filename
    label = f"{arch}/torchvision:{name}"
    if target.is_file():
        return CnnWeights("file", str(target), label)
    host = "download.pytorch.org"
    why = None
    if hub_offline():
        why = "it is offline (HF_HUB_OFFLINE)"
    elif not host_reachable(host):
        why = f"{host} cannot be reached"
    if why:
        raise _missing(arch, f"torchvision:{name}", url, filename, why, option, str(target.parent))
    target.parent.mkdir(parents=True, exist_ok=True)
    match = re.search(r"-([a-f0-9]+)\.", filename)
    try:
        torch.hub.download_url_to_file(
            url, str(target), hash_prefix=match.group(1) if match else None
        )
    except Exception as exc:  # HTTP, disk and checksum errors all mean "not available"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        why = f"the download failed ({first})"
        cache = str(target.parent)
        raise _missing(arch, f"torchvision:{name}", url, filename, why, option, cache) from None
    return CnnWeights("file", str(target), label)


def _timm_tag(arch: str, tag: str, option: str) -> CnnWeights:
    import timm

    cfg = timm.models.get_pretrained_cfg(tag)
    if cfg is None or not cfg.hf_hub_id:
        raise BenchError(f"'{tag}' is not a timm pretrained tag with hub weights")
    if cfg.architecture != arch:
        raise BenchError(f"timm tag '{tag}' is a {cfg.architecture}, not a {arch}")
    repo = cfg.hf_hub_id
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else list(TIMM_FILES)
    label = f"{arch}/timm:{tag}"
    found = cached_hub_file(repo, names)
    if found:
        return CnnWeights("file", found, label)
    why = None
    if hub_offline():
        why = "it is offline (HF_HUB_OFFLINE)"
    elif not host_reachable("huggingface.co"):
        why = "huggingface.co cannot be reached"
    if why is None:
        from huggingface_hub import hf_hub_download

        errors = []
        for name in names:
            try:
                return CnnWeights(
                    "file", hf_hub_download(repo, name, cache_dir=hf_cache_dir()), label
                )
            except Exception as exc:  # a missing file name or a network error: try the next
                errors.append(type(exc).__name__)
        why = f"the download failed ({', '.join(errors)})"
    source = f"the hub repository {repo}"
    raise _missing(arch, f"timm:{tag}", source, names[0], why, option, hf_cache_dir())


def _path_weights(arch: str, text: str) -> CnnWeights:
    if text.startswith("local-dir:"):
        folder = Path(os.path.expanduser(text[len("local-dir:") :])).resolve()
        if not folder.is_dir():
            raise BenchError(f"{arch} weights folder does not exist: {folder}")
        found = find_checkpoint(folder, CHECKPOINT_NAMES, WEIGHT_SUFFIXES)
        if found is None:
            raise BenchError(f"no {arch} checkpoint ({', '.join(WEIGHT_SUFFIXES)}) in {folder}")
        text = found
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise BenchError(f"{arch} weights file does not exist: {path}")
    stat = os.stat(path)
    return CnnWeights("file", path, f"{arch}@{path}:{stat.st_size}:{int(stat.st_mtime)}")


def resolve_cnn_weights(
    arch: str, pretrained: str, option: str = "<detector>.pretrained"
) -> CnnWeights:
    """Find the weights without loading them; missing ones are a one-line BenchError."""
    text = (pretrained or "").strip()
    if text.lower() in RANDOM_WEIGHTS:
        return CnnWeights("random", None, f"{arch}/random")
    if text.startswith("torchvision:"):
        return _torchvision_tag(arch, text.partition(":")[2], option)
    if text.startswith("timm:"):
        return _timm_tag(arch, text.partition(":")[2], option)
    looks_like_path = (
        text.startswith("local-dir:")
        or os.sep in text
        or text.startswith(("~", "."))
        or text.lower().endswith(WEIGHT_SUFFIXES)
        or os.path.exists(text)
    )
    if looks_like_path:
        return _path_weights(arch, text)
    raise BenchError(
        f"{option}: '{text}' is neither a weights file nor a tag; give torchvision:NAME "
        f"(e.g. torchvision:IMAGENET1K_V1), timm:TAG, a file, local-dir:/folder, or 'none'"
    )


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors from a weights file, by a loader that cannot run code."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a checkpoint
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise BenchError(
            f"cannot read weights from {path} (safetensors or torch.load(weights_only=True)): "
            f"{type(exc).__name__}: {first}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_matching(
    model: nn.Module, state: dict[str, torch.Tensor], *, may_skip: tuple[str, ...], source: str
) -> list[str]:
    """Copy every tensor whose name and shape match; returns the names left at their init.

    Only names starting with one of ``may_skip`` (a replaced stem or head) may be left
    out; anything else missing means the file is not this architecture: a one-line error.
    """
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    left = sorted(k for k in own if k not in usable)
    # Old checkpoints (torchvision's V1 among them) have no BatchNorm step counters.
    wrong = [
        k for k in left if not k.startswith(may_skip) and not k.endswith("num_batches_tracked")
    ]
    if wrong:
        raise BenchError(
            f"{source} does not fit this network: {len(wrong)} of {len(own)} tensors missing or "
            f"of another shape (first: {wrong[0]})"
        )
    model.load_state_dict(usable, strict=False)
    return left
