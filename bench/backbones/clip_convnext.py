"""The image trunk of a CLIP ConvNeXt (open_clip), as AIDE's semantic branch uses it.

AIDE keeps only ``visual.trunk`` of open_clip's ``convnext_xxlarge`` and reads its spatial
feature map after the head's LayerNorm, before pooling and before CLIP's projection. The
weights are resolved by the shared CLIP loader (tags, files, ``local-dir:``, one-line
errors offline); this module only adds the tiny random-weight config for tests and the
CPU demo and cuts the trunk out of the full model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import BenchError

#: A tiny ConvNeXt CLIP (timm's convnext_atto tower, 64 px) for tests and the CPU demo.
TINY_CONVNEXT = "bench-tiny-convnext"
_TINY_CONFIG = Path(__file__).with_name(f"{TINY_CONVNEXT}.json")


def register_tiny_convnext() -> None:
    """Make ``bench-tiny-convnext`` known to open_clip (idempotent)."""
    import open_clip

    if TINY_CONVNEXT not in open_clip.list_models():
        open_clip.add_model_config(_TINY_CONFIG)


class ClipConvNextTrunk(nn.Module):
    """A frozen ConvNeXt trunk: images in CLIP normalisation -> (N, C, h, w) feature map."""

    def __init__(self, trunk: nn.Module, *, identity: str, random_weights: bool, image_size: int):
        super().__init__()
        self.trunk = trunk
        self.identity = identity
        self.random_weights = random_weights
        self.image_size = image_size
        self.channels = int(trunk.num_features)
        for p in self.trunk.parameters():
            p.requires_grad_(False)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Stages, then the head's LayerNorm per position (the head's pooling is skipped).

        The same as AIDE's ``head.global_pool = Identity; head.flatten = Identity``
        followed by the trunk's forward: the head's pre-logits, dropout and fc are
        identities in open_clip's trunk (its classifier is reset to 0 classes).
        """
        return self.trunk.head.norm(self.trunk.forward_features(images))

    def describe(self) -> dict[str, Any]:
        return {"semantic_backbone": self.identity, "semantic_random_weights": self.random_weights}


def load_clip_convnext(
    model: str,
    pretrained: str,
    device: str = "cpu",
    *,
    option: str = "<detector>.pretrained",
    random_seed: int = 0,
) -> ClipConvNextTrunk:
    """Build the CLIP model through the shared loader and keep its image trunk only."""
    from bench.backbones.clip import load_clip

    register_tiny_convnext()
    clip = load_clip(model, pretrained, device, option=option, random_seed=random_seed)
    trunk = getattr(clip.model.visual, "trunk", None)
    head = getattr(trunk, "head", None)
    if trunk is None or not hasattr(trunk, "forward_features") or not hasattr(head, "norm"):
        raise BenchError(f"CLIP {model} has no timm ConvNeXt image trunk (AIDE needs one)")
    return ClipConvNextTrunk(
        trunk,
        identity=clip.identity,
        random_weights=clip.random_weights,
        image_size=clip.image_size,
    )
