"""AIDE (Yan et al., ICLR 2025): DCT-selected patches through SRM filters and two ResNet-50s,
fused with a frozen CLIP ConvNeXt's view of the whole image.

Recipe (the AIGIBench authors' copy of AIDE's code: ``models/AIDE.py``, ``data/dct.py``,
``data/datasets.py``, ``main_finetune.py``, ``engine_finetune.py``, ``scripts/train.sh``):
- Input: the full-resolution image (no crop, no resize first) in [0, 1]; at train time a
  3 × 3 Gaussian blur (σ ~ U[0.1, 3], p 0.1) then JPEG (quality 30-100, p 0.1). Four
  32 × 32 windows (stride 16) chosen by their DCT score (``baselines.aide_patches``) and
  the whole image, each resized to 256 × 256 (bilinear) and ImageNet-normalised.
- Network: ``baselines.aide_net``; the semantic branch is open_clip's ``convnext_xxlarge``
  (``laion2b_s34b_b82k_augreg_soup``, the weights AIDE's authors named) image trunk,
  frozen, fed CLIP-normalised pixels: its (3072, 8, 8) map after the head's LayerNorm,
  averaged over positions.
- Training: cross-entropy with label smoothing 0.1 over 2 classes; AdamW, weight decay 0,
  lr = blr · batch / 256 with blr 1e-4 and batch 32 (the AIGIBench copy does not multiply
  by the number of GPUs), a half-cosine per step from that lr to 1e-6 without warm-up,
  20 epochs; full precision there (bf16 autocast on CUDA here). p(fake) = softmax[:, 1].
Two behaviours of that code are kept as the defaults, because the published numbers come
from them, and can be switched off:
- ``resnet_pretrained = "none"``: AIDE's code reads ImageNet weights for its ResNets into a
  copy of their state dict and never loads that copy, so they train from random weights.
- ``semantic_train_mode = true``: the code switches the whole model, frozen ConvNeXt
  included, to train mode, so the ConvNeXt's stochastic depth (open_clip: 0.1) is active
  while training; ``train_semantic_proj = false``: the semantic projection runs inside
  ``torch.no_grad()``, so it keeps its random initialisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from baselines.aide_net import AideNet
from baselines.aide_patches import AideViews, empty_bands
from baselines.augment import BlurJpeg
from baselines.safe import decay_groups, warmup_cosine_scheduler
from bench.errors import BenchError
from bench.interfaces import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Batch,
    Detector,
    RunContext,
    TrainData,
    TransformChain,
)


class AIDE(Detector):
    """Views (N, 5, 3, S, S) -> patch experts + frozen ConvNeXt -> MLP -> softmax[:, 1]."""

    provides = frozenset()
    geometry_fixed = (
        "AIDE picks its own 32 x 32 patches by DCT score at full resolution and its semantic "
        "branch needs the whole image, so there is no crop to replace"
    )

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.semantic: Any = None
        self.net: AideNet | None = None
        self.device = "cpu"
        self._batch_size: int | None = None
        self.init_facts: dict[str, Any] = {}
        window, bands = int(options.get("window", 32)), int(options.get("bands", 6))
        if empty_bands(window, bands):
            raise BenchError(
                f"aide.bands = {bands} leaves a DCT band of the {window} x {window} window "
                "without a frequency (its patch scores would be 0/0): lower aide.bands or "
                "raise aide.window"
            )

    # --- input -------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return int(self.options.get("view_size", 256))

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return IMAGENET_MEAN, IMAGENET_STD

    def base_transforms(self, train: bool) -> TransformChain:
        o = self.options
        views = AideViews(
            self.input_size,
            int(o.get("window", 32)),
            int(o.get("stride", 16)),
            int(o.get("bands", 6)),
            bool(o.get("antialias", False)),
        )
        if not train:
            return TransformChain([views])
        perturb = BlurJpeg(
            blur_p=float(o.get("blur_p", 0.1)),
            sigma=tuple(o.get("blur_sigma", (0.1, 3.0))),
            jpeg_p=float(o.get("jpeg_p", 0.1)),
            quality=tuple(o.get("jpeg_quality", (30, 100))),
            kernel=int(o.get("blur_kernel", 3)),
        )
        return TransformChain([perturb, views])

    # --- life cycle --------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        from bench.backbones.clip_convnext import load_clip_convnext

        self.device = ctx.device
        o = self.options
        self.semantic = load_clip_convnext(
            str(o.get("convnext_model", "convnext_xxlarge")),
            str(o.get("convnext_pretrained", "laion2b_s34b_b82k_augreg_soup")),
            ctx.device,
            option="aide.convnext_pretrained",
        )
        self.net = AideNet(
            self.semantic.channels,
            train_semantic_proj=bool(o.get("train_semantic_proj", False)),
        )
        self.init_facts = self._load_resnets(str(o.get("resnet_pretrained", "none")))
        self.net.to(ctx.device)
        self.semantic.eval()

    def _load_resnets(self, pretrained: str) -> dict[str, Any]:
        from bench.backbones.imagenet import load_matching, read_state_dict, resolve_cnn_weights

        weights = resolve_cnn_weights("resnet50", pretrained, "aide.resnet_pretrained")
        if weights.path is not None:
            state = read_state_dict(weights.path)
            for net in (self.net.model_min, self.net.model_max):  # the 30-channel stem stays
                load_matching(net, state, may_skip=("conv1.",), source=weights.label)
        return {"patch_resnets": weights.label}

    def semantic_feature(self, views: torch.Tensor) -> torch.Tensor:
        """The frozen ConvNeXt's pooled map of the whole image (view 4), without gradients."""
        image = views[:, 4]
        inet_mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(1, 3, 1, 1)
        inet_std = torch.tensor(IMAGENET_STD, device=image.device).view(1, 3, 1, 1)
        clip_mean = torch.tensor(CLIP_MEAN, device=image.device).view(1, 3, 1, 1)
        clip_std = torch.tensor(CLIP_STD, device=image.device).view(1, 3, 1, 1)
        pixels = image * inet_std.to(image.dtype) + inet_mean.to(image.dtype)
        with torch.no_grad():
            clip_input = (pixels - clip_mean.to(image.dtype)) / clip_std.to(image.dtype)
            return self.semantic.feature_map(clip_input).mean(dim=(2, 3))

    def logits(self, views: torch.Tensor) -> torch.Tensor:
        return self.net(views, self.semantic_feature(views)).float()

    def fit(self, train: TrainData, ctx: RunContext) -> list[float]:
        self._batch_size = int(train.batch_size)  # the lr follows the batch really used
        return super().fit(train, ctx)

    def lr(self, batch_size: int | None = None) -> float:
        """AIDE's absolute lr: blr · batch / 256."""
        batch = int(batch_size or self._batch_size or self.options.get("batch_size", 32))
        return float(self.options.get("blr", 1e-4)) * batch / 256

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """AdamW; biases and 1-D parameters (BatchNorm) are not decayed, as AIDE's factory."""
        weight_decay = float(self.options.get("weight_decay", 0.0))
        return torch.optim.AdamW(decay_groups(self.net, weight_decay), lr=self.lr(), eps=1e-8)

    def configure_scheduler(self, optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
        warmup_epochs = float(self.options.get("warmup_epochs", 0))
        floor = float(self.options.get("min_lr", 1e-6)) / max(self.lr(), 1e-12)
        return warmup_cosine_scheduler(optimizer, warmup_epochs, steps_per_epoch, epochs, floor)

    def training_step(self, batch: Batch) -> torch.Tensor:
        smoothing = float(self.options.get("label_smoothing", 0.1))
        return F.cross_entropy(
            self.logits(batch["image"]), batch["label"].long(), label_smoothing=smoothing
        )

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        return torch.softmax(self.logits(batch["image"]), dim=1)[:, 1]

    def train_mode(self, mode: bool) -> None:
        super().train_mode(mode)
        if self.net is not None:
            self.net.train(mode)
        if self.semantic is not None:
            self.semantic.train(mode and bool(self.options.get("semantic_train_mode", True)))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen ConvNeXt (rebuilt from its weights at load time)."""
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = dict(self.init_facts)
        if self.semantic is not None:
            facts.update(self.semantic.describe())
            if self.semantic.random_weights:
                facts["weights"] = (
                    "random ConvNeXt (no pretrained CLIP weights: the semantic branch means nothing)"
                )
        if self.net is not None:
            facts["parameters"] = sum(p.numel() for p in self.net.parameters())
        facts["lr"] = self.lr()
        return facts
