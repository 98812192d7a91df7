"""CLIP through open_clip, for every plugin that needs it (NS-Net, UnivFD, VIB-Net).

Why a wrapper: where the weights come from decides the results (users of these projects
report OpenAI CLIP and a Hugging Face copy disagreeing), so the weights are resolved here,
once, with a one-line error when they are missing offline instead of a minute of hub
retries and a traceback. The result records what was loaded (``identity``) and whether
the weights are random, so run logs and caches can say so.

``pretrained`` accepts:
  - an open_clip tag ("openai", "laion2b_s32b_b82k", ...): taken from the Hugging Face or
    open_clip download cache; downloaded only when the machine is online;
  - a checkpoint file (.safetensors, or a .bin/.pt/.pth state dict, read with
    ``torch.load(weights_only=True)``, which cannot run code); OpenAI's TorchScript .pt
    only with BENCH_TRUST_TORCHSCRIPT=1, since loading TorchScript runs code from the file;
  - "local-dir:/folder": a folder holding a checkpoint, with or without open_clip's
    ``open_clip_config.json`` (a snapshot of a hub repository has one);
  - "" / "none" / "random": random weights (``random_weights`` is then True).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.backbones.hub import cached_hub_file, hf_cache_dir, host_reachable, hub_offline
from bench.backbones.torchscript import (
    is_torchscript,
    load_torchscript_weights,
    torchscript_allowed,
    torchscript_refused,
)
from bench.errors import BenchError

#: A tiny random-weight CLIP for tests and the CPU demo (config shipped beside this file).
TINY_MODEL = "bench-tiny-vit"
_TINY_CONFIG = Path(__file__).with_name(f"{TINY_MODEL}.json")

RANDOM_WEIGHTS = frozenset({"", "none", "random"})
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: Preferred checkpoint names inside a local-dir folder, best first.
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
#: open_clip's file names in a hub repository (and the safetensors twin it prefers).
HUB_WEIGHTS = "open_clip_pytorch_model.bin"
HUB_SAFE_WEIGHTS = "open_clip_model.safetensors"
TEXT_BATCH = 256


def register_tiny_config() -> None:
    """Make ``bench-tiny-vit`` known to open_clip (idempotent)."""
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_TINY_CONFIG)


# ----------------------------------------------------------------------------- weights
@dataclass
class Weights:
    """Where the weights come from, resolved before any model is built."""

    kind: str  # "random", "file" or "local-dir"
    path: str | None = None
    quick_gelu: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what was loaded, stable across runs: the backbone's identity


def _hub_filenames(filename: str) -> list[str]:
    """The safetensors twin first (what open_clip downloads when it exists), then the file."""
    if filename == HUB_WEIGHTS:
        return [HUB_SAFE_WEIGHTS, filename]
    stem, ext = os.path.splitext(filename)
    if ext in (".bin", ".pth"):
        return [f"{stem}.safetensors", filename]
    return [filename]


def _cached_tag_file(cfg: dict[str, Any]) -> str | None:
    hub = cfg.get("hf_hub", "")
    if hub:
        # open_clip's convention: "org/repo/" (default file name) or "org/repo/file.pt"
        repo_id, filename = os.path.split(hub)
        found = cached_hub_file(repo_id, _hub_filenames(filename or HUB_WEIGHTS))
        if found:
            return found
    url = cfg.get("url", "")
    if url:
        legacy = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(legacy):
            return legacy
    return None


def _missing_weights_message(
    model: str, tag: str, cfg: dict[str, Any], why: str, option: str
) -> str:
    hub = cfg.get("hf_hub", "").rstrip("/")
    where = f"the hub repository {hub}" if hub else f"{cfg.get('url', 'the checkpoint')}"
    return (
        f"CLIP weights {model}/{tag} are not on this machine and {why}: download {where} "
        f"elsewhere and pass --opt {option}=local-dir:/path/to/that/folder "
        f"(or {option}=/path/to/open_clip_pytorch_model.bin), or put it in the Hugging Face "
        f"cache ({hf_cache_dir()})"
    )


def _tag_weights(model: str, tag: str, option: str) -> Weights:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise BenchError(
            f"'{tag}' is neither a weights file nor a known open_clip tag for {model} "
            f"(tags: {tags}; or give a file path, local-dir:/folder, or 'none' for random)"
        )
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    found = _cached_tag_file(cfg)
    if found is None:
        found = _download_tag(model, tag, cfg, option)
    return Weights(
        "file", found, bool(cfg.get("quick_gelu", False)), preprocess, label=f"{model}/{tag}"
    )


def _download_tag(model: str, tag: str, cfg: dict[str, Any], option: str) -> str:
    """Download through open_clip, but only after checking the network is there at all."""
    import open_clip

    if hub_offline():
        why = "it is offline (HF_HUB_OFFLINE)"
        raise BenchError(_missing_weights_message(model, tag, cfg, why, option))
    host = "huggingface.co" if cfg.get("hf_hub") else _url_host(cfg.get("url", ""))
    if host and not host_reachable(host):
        why = f"{host} cannot be reached"
        raise BenchError(_missing_weights_message(model, tag, cfg, why, option))
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as exc:  # hub, HTTP and checksum errors all mean "not available"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(
            _missing_weights_message(model, tag, cfg, f"the download failed ({first})", option)
        ) from None
    if not path or not os.path.isfile(path):
        why = "the download gave no file"
        raise BenchError(_missing_weights_message(model, tag, cfg, why, option))
    return path


def _url_host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).hostname or ""


def find_checkpoint(
    folder: Path,
    names: tuple[str, ...] = CHECKPOINT_NAMES,
    suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES,
) -> str | None:
    """The checkpoint in a folder: a preferred name, else the only/first by suffix order."""
    for name in names:
        if (folder / name).is_file():
            return str(folder / name)
    for suffix in suffixes:
        found = sorted(folder.glob(f"*{suffix}"))
        if found:
            return str(found[0])
    return None


def _path_weights(model: str, pretrained: str, quick_gelu: bool | None) -> Weights:
    if pretrained.startswith("local-dir:"):
        folder = Path(os.path.expanduser(pretrained[len("local-dir:") :])).resolve()
        if not folder.is_dir():
            raise BenchError(f"CLIP weights folder does not exist: {folder}")
        config_file = folder / "open_clip_config.json"
        if config_file.is_file():
            # open_clip builds from the folder's own config, QuickGELU included
            try:
                model_cfg = json.loads(config_file.read_text(encoding="utf-8")).get("model_cfg", {})
            except (ValueError, OSError) as exc:
                raise BenchError(f"unreadable {config_file}: {exc}") from None
            quick = bool(model_cfg.get("quick_gelu", False))
            return Weights("local-dir", str(folder), quick, label=f"local-dir:{folder}")
        found = find_checkpoint(folder)
        if found is None:
            raise BenchError(f"no CLIP checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) in {folder}")
        pretrained = found
    path = os.path.abspath(os.path.expanduser(pretrained))
    if not os.path.isfile(path):
        raise BenchError(f"CLIP weights file does not exist: {path}")
    if quick_gelu is None:
        # OpenAI's weights were trained with QuickGELU; their files are TorchScript or,
        # converted, live in hub folders named "...openai". Override with quick_gelu.
        quick_gelu = is_torchscript(path) or "openai" in path.lower()
    stat = os.stat(path)
    return Weights(
        "file", path, quick_gelu, label=f"{model}@{path}:{stat.st_size}:{int(stat.st_mtime)}"
    )


def resolve_weights(
    model: str,
    pretrained: str,
    quick_gelu: bool | None = None,
    option: str = "<detector>.pretrained",
) -> Weights:
    """Find the weights without building anything; missing ones are a one-line BenchError."""
    text = (pretrained or "").strip()
    if text.lower() in RANDOM_WEIGHTS:
        return Weights("random", None, bool(quick_gelu), label=f"{model}/random")
    looks_like_path = (
        text.startswith("local-dir:")
        or os.sep in text
        or text.startswith(("~", "."))
        or text.lower().endswith(CHECKPOINT_SUFFIXES)
        or os.path.exists(text)
    )
    if looks_like_path:
        return _path_weights(model, text, quick_gelu)
    weights = _tag_weights(model, text, option)
    if quick_gelu is not None:
        weights.quick_gelu = quick_gelu
    return weights


# ----------------------------------------------------------------------------- model
def _image_size(visual: Any) -> int:
    size = getattr(visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    """open_clip warns "initialized randomly" on the root logger; ``describe`` says it."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _build(model: str, weights: Weights, device: str, random_seed: int) -> nn.Module:
    import open_clip

    try:
        if weights.kind == "random":
            # Random weights are not saved with a run, so they must be rebuilt identically:
            # a fixed seed of their own, without touching the caller's RNG state.
            with torch.random.fork_rng(devices=[]), _quiet_root_warnings():
                torch.manual_seed(random_seed)
                net = open_clip.create_model(
                    model, pretrained=None, force_quick_gelu=weights.quick_gelu
                )
            return net.to(device)
        if weights.kind == "local-dir":
            return open_clip.create_model(
                f"local-dir:{weights.path}", device=device, weights_only=True
            )
        if weights.path and is_torchscript(weights.path):
            if not torchscript_allowed():
                raise torchscript_refused(weights.path)
            with torch.random.fork_rng(devices=[]), _quiet_root_warnings():
                net = open_clip.create_model(
                    model,
                    pretrained=None,
                    force_quick_gelu=weights.quick_gelu,
                    force_preprocess_cfg=weights.preprocess or None,
                )
            load_torchscript_weights(net, weights.path)
            return net.to(device)
        # Never weights_only=False: a pickle can run any code; torch.load refuses TorchScript
        # here, and .safetensors files are read by safetensors.
        return open_clip.create_model(
            model,
            pretrained=weights.path,
            device=device,
            force_quick_gelu=weights.quick_gelu,
            force_preprocess_cfg=weights.preprocess or None,
            weights_only=True,
        )
    except BenchError:
        raise
    except Exception as exc:  # mismatched checkpoints, unreadable files, bad configs
        import pickle

        if isinstance(exc, pickle.UnpicklingError):
            raise BenchError(
                f"refusing to load {weights.label}: it is not a plain weights file (its pickle "
                "names objects other than tensors, which could run code); give a .safetensors "
                "file or a plain state dict"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BenchError(
            f"could not build CLIP {model} from {weights.label}: {type(exc).__name__}: {first[:300]}"
        ) from None


def load_clip(
    model: str = "ViT-L-14",
    pretrained: str = "openai",
    device: str = "cpu",
    *,
    quick_gelu: bool | None = None,
    option: str = "<detector>.pretrained",
    random_seed: int = 0,
) -> ClipBackbone:
    """Build an open_clip CLIP with resolved weights, frozen, on ``device``.

    quick_gelu: None = what the weights need (the tag's config; for a file, True for
    OpenAI TorchScript files or paths containing "openai"); True/False force it.
    option: how the user sets ``pretrained`` (for example "nsnet.pretrained"), named in
    the error when weights are missing.
    random_seed: the seed of random weights (pretrained "" / "none"), so that a saved run
    with random weights rebuilds the same backbone; part of ``identity``.
    """
    import open_clip

    register_tiny_config()
    if model not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(model, open_clip.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise BenchError(f"unknown CLIP model '{model}'{hint}")
    weights = resolve_weights(model, pretrained, quick_gelu, option)
    if weights.kind == "random":
        weights.label = f"{model}/random(seed={random_seed})"
    net = _build(model, weights, device, random_seed)
    backbone = ClipBackbone(
        net,
        name=model,
        identity=weights.label,
        random_weights=weights.kind == "random",
        tokenizer=f"local-dir:{weights.path}" if weights.kind == "local-dir" else model,
    )
    backbone.quick_gelu = weights.quick_gelu
    backbone.freeze()
    return backbone


class ClipBackbone(nn.Module):
    """An open_clip CLIP with the few things detectors ask of it.

    encode_image: the image embedding (CLS token after ln_post and the visual
    projection), not L2-normalised, as UnivFD and NS-Net use it. encode_text: frozen text
    features in the same space, batched, without gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        identity: str = "",
        random_weights: bool = False,
        tokenizer: str = "",
    ):
        super().__init__()
        import open_clip

        self.model = model
        self.model_name = name
        self.tokenizer_name = tokenizer or name
        self.identity = identity or name
        self.random_weights = bool(random_weights)
        self.quick_gelu = False
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.mean = tuple(float(x) for x in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(x) for x in cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.image_size = _image_size(model.visual)
        self.embed_dim = int(self._probe_embed_dim())
        self._tokenizer = None

    def _probe_embed_dim(self) -> int:
        proj = getattr(self.model.visual, "proj", None)
        if proj is not None:
            return proj.shape[1]
        head_proj = getattr(getattr(self.model.visual, "head", None), "proj", None)
        if isinstance(head_proj, nn.Linear):  # timm towers (ConvNeXt: AIDE's semantic branch)
            return head_proj.out_features
        return int(self.model.visual.output_dim)

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    def freeze(self) -> ClipBackbone:
        """No gradients anywhere and eval mode; LoRA re-enables its own parameters."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised images -> (N, embed_dim); gradients flow if enabled."""
        return self.model.encode_image(images, normalize=False)

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            import open_clip

            self._tokenizer = open_clip.get_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def encode_text(self, texts: list[str], batch_size: int = TEXT_BATCH) -> torch.Tensor:
        """Texts -> (N, embed_dim) float32 features on the model's device, no gradients."""
        device = next(self.model.parameters()).device
        if not texts:
            return torch.zeros(0, self.embed_dim, device=device)
        tok = self.tokenizer()
        out = []
        # CLIP's text tower has no dropout, so its train/eval mode does not matter here and
        # is left alone (the image tower's mode belongs to the detector's training loop).
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                tokens = tok(list(texts[start : start + batch_size])).to(device)
                out.append(self.model.encode_text(tokens, normalize=False).float())
        return torch.cat(out)

    def describe(self) -> dict[str, Any]:
        return {
            "backbone": self.identity,
            "random_weights": self.random_weights,
            "quick_gelu": self.quick_gelu,
        }
