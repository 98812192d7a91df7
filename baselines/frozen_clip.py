"""What UnivFD and VIB-Net share: a frozen CLIP image feature, a trained head, cached features.

Both methods put a head on the CLIP ViT-L/14 image embedding (not L2-normalised) and
never update the backbone, so this base class owns the backbone, UnivFD's input pipeline,
the feature hook point (between CLIP feature and head, where the NULL-space addon acts)
and the feature cache. Subclasses say only what the head is and what it is trained with.

Training with a feature cache (option ``feature_cache``, see ``baselines.feature_cache``):
UnivFD's own code trains on freshly augmented images every epoch. The default "views" keeps
that distribution (epoch e sees augmented view e of each image, drawn once and stored), so
the first run costs what an uncached one does and every later run of the same backbone and
chain (another head, another feature addon, VIB-Net after UnivFD) costs no backbone forward
at all. With a cold cache the stored views are the very images the standard loop draws and
the batches come in its order, so "views" and "off" train the same head (a test checks it). "eval-view" trades the augmentation for one deterministic view (cheapest;
the method then loses its blur/JPEG robustness training, so it is not the default) and
"off" runs the standard loop.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from baselines.augment import cnndetection_transforms
from baselines.feature_cache import (
    CacheMode,
    cached_features,
    image_digests,
    parse_cache_mode,
    weights_fingerprint,
)
from bench.errors import BenchError
from bench.interfaces import (
    CLIP_MEAN,
    CLIP_STD,
    Batch,
    Detector,
    RunContext,
    TrainData,
    TransformChain,
)


class FrozenClipDetector(Detector):
    """Frozen CLIP image embedding -> head; subclasses define the head and its loss."""

    provides = frozenset({"features", "clip-text"})
    #: The registry name, used in messages ("univfd.pretrained").
    name = "frozen-clip"

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.cache_mode: CacheMode = parse_cache_mode(
            self.options.get("feature_cache", "off"), f"{self.name}.feature_cache"
        )
        self.backbone: Any = None
        self.head: nn.Module | None = None
        self.device = "cpu"
        self._ctx: RunContext | None = None

    # --- input ---------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return int(self.options.get("input_size", 224))

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return CLIP_MEAN, CLIP_STD

    def base_transforms(self, train: bool) -> TransformChain:
        """UnivFD's pipeline (CNNDetection's): shorter side to ``load_size``, blur / JPEG,
        random crop, flip at train time; centre crop without resizing at evaluation.
        """
        return cnndetection_transforms(train, self.options, self.input_size, *self.normalization)

    # --- life cycle ------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        from bench.backbones.clip import load_clip

        self._ctx = ctx
        self.device = ctx.device
        self.backbone = load_clip(
            str(self.options.get("model", "ViT-L-14")),
            str(self.options.get("pretrained", "openai")),
            ctx.device,
            option=f"{self.name}.pretrained",
        )
        if self.backbone.image_size != self.input_size:
            raise BenchError(
                f"{self.name}: CLIP {self.backbone.model_name} takes {self.backbone.image_size}px "
                f"images but input_size is {self.input_size}; set {self.name}.input_size="
                f"{self.backbone.image_size}"
            )
        self.head = self.build_head(self.backbone.embed_dim).to(ctx.device)

    def build_head(self, dim: int) -> nn.Module:
        raise NotImplementedError

    def head_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head_proba(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """The CLIP image embedding (frozen: computed without gradients), float32."""
        with torch.no_grad():
            return self.backbone.encode_image(images).float()

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.backbone.encode_text(texts)

    def _features(self, batch: Batch) -> torch.Tensor:
        """Cached features when the batch carries them, else the backbone's; then the hooks."""
        features = batch.get("features")
        if features is None:
            features = self.extract_features(batch["image"])
        return self.apply_feature_hooks(features, batch)

    def training_step(self, batch: Batch) -> torch.Tensor:
        return self.head_loss(self._features(batch), batch["label"].float())

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        return self.head_proba(self._features(batch)).float()

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """AdamW as UnivFD (betas 0.9/0.999; with weight_decay 0 it is plain Adam)."""
        return torch.optim.AdamW(
            self.head.parameters(),
            lr=float(self.options.get("lr", 1e-4)),
            betas=(0.9, 0.999),
            weight_decay=float(self.options.get("weight_decay", 0.0)),
        )

    def configure_scheduler(self, optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
        """lr ÷ 10 after each epoch listed in ``lr_drop_epochs`` (empty: constant lr).

        UnivFD divides the lr by 10 whenever validation accuracy plateaus (early stopping,
        patience 5, until the lr falls below 1e-6). Runs here have a fixed epoch count and
        no validation split, so the drops, if wanted, are placed at fixed epochs instead.
        """
        drops = sorted(int(e) for e in self.options.get("lr_drop_epochs", []))
        if not drops:
            return None
        per_epoch = max(1, steps_per_epoch)

        def factor(step: int) -> float:
            return 0.1 ** sum(1 for e in drops if step // per_epoch >= e > 0)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def train_mode(self, mode: bool) -> None:
        super().train_mode(mode)
        if self.head is not None:
            self.head.train(mode)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.head.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        facts = dict(self.backbone.describe()) if self.backbone is not None else {}
        if facts.get("random_weights"):
            facts["weights"] = "random (no pretrained CLIP weights: results mean nothing)"
        facts["feature_cache"] = self.options.get("feature_cache", "off")
        return facts

    # --- training on cached features -----------------------------------------------------
    def fit(self, train: TrainData, ctx: RunContext) -> list[float]:
        if self.cache_mode.kind == "off":
            from bench.training import fit_loop

            return fit_loop(self, train, ctx)
        return self._fit_cached(train, ctx)

    def feature_key(self, ctx: RunContext) -> dict[str, Any]:
        """What a cached feature depends on besides chain, view and image."""
        cuda = ctx.device.startswith("cuda")
        return {
            "feature": "clip.encode_image(normalize=False)",
            "backbone": self.backbone.identity,
            "weights": weights_fingerprint(self.backbone),
            "device": "cuda" if cuda else ctx.device,
            "autocast": str(ctx.amp_dtype) if cuda and ctx.amp_dtype is not None else None,
        }

    def _encode_for_cache(self, images: torch.Tensor) -> torch.Tensor:
        from bench.training import autocast

        images = images.to(self.device, non_blocking=True)
        with torch.no_grad(), autocast(self._ctx or RunContext(device=self.device)):
            return self.extract_features(images)

    def _view_features(
        self, train: TrainData, ctx: RunContext, digests: list[str | None], view: int
    ) -> tuple[torch.Tensor | None, torch.Tensor, int]:
        augmented = self.cache_mode.kind == "views"
        return cached_features(
            train.samples,
            digests,
            self.transforms(train=augmented),
            self._encode_for_cache,
            key=self.feature_key(ctx),
            train=augmented,
            view=view,
            batch_size=int(train.batch_size),
            ctx=ctx,
        )

    @staticmethod
    def _batches(found: torch.Tensor, batch_size: int, seed: int, epoch: int) -> Any:
        """Row indices in the standard loop's order: the same sampler with the same seed.

        With a cold cache the stored views are the very images ``fit_loop`` would draw
        (same per-sample seeds), so training on them repeats the standard loop's batches.
        """
        from torch.utils.data import DataLoader

        from bench.data.pipeline import sample_seed

        rows = found.nonzero().squeeze(1).tolist()
        generator = torch.Generator().manual_seed(sample_seed(seed, epoch, 0))
        return DataLoader(rows, batch_size=batch_size, shuffle=True, generator=generator)

    def _fit_cached(self, train: TrainData, ctx: RunContext) -> list[float]:
        from bench.training import train_step

        self._ctx = ctx
        samples = train.samples
        epochs = int(train.epochs)
        n_views = self.cache_mode.n_views(epochs)
        digests = image_digests(samples)
        kept: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}
        usable = 0
        for view in range(n_views):
            feats, found, computed = self._view_features(train, ctx, digests, view)
            ctx.log(
                f"{self.name}: features view {view + 1}/{n_views}: {int(found.sum())} images, "
                f"{computed} computed, {int(found.sum()) - computed} from the cache"
            )
            usable = usable or int(found.sum())
            if n_views == 1:
                kept[view] = (feats, found)
        labels = torch.tensor([float(s.label) for s in samples])
        if usable == 0:
            raise BenchError(f"{self.name}: no training image could be read")
        batch_size = int(train.batch_size)
        steps_per_epoch = max(1, math.ceil(usable / batch_size))
        optimizer = self.configure_optimizer()
        scheduler = self.configure_scheduler(optimizer, steps_per_epoch, epochs)
        losses: list[float] = []
        self.train_mode(True)
        try:
            for epoch in range(epochs):
                view = epoch % n_views
                if view in kept:
                    feats, found = kept[view]
                else:  # one view in memory at a time (a ViT-L view of 144k images is 440 MB)
                    feats, found, _ = self._view_features(train, ctx, digests, view)
                for idx in self._batches(found, batch_size, ctx.seed, epoch):
                    batch = {
                        "features": feats[idx].to(self.device, non_blocking=True),
                        "label": labels[idx].to(self.device),
                        "path": [samples[i].path for i in idx.tolist()],
                        "generator": [samples[i].generator for i in idx.tolist()],
                        "index": idx,
                    }
                    losses.append(train_step(self, batch, optimizer, scheduler, ctx, epoch))
                tail = losses[-steps_per_epoch:] or [math.nan]
                ctx.log(
                    f"epoch {epoch + 1}/{epochs} (feature view {view + 1}/{n_views}): "
                    f"mean loss {sum(tail) / len(tail):.4f}"
                )
        finally:
            self.train_mode(False)
        return losses
