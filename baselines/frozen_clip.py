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
from baselines.schedule import (
    OfficialSchedule,
    validation_accuracy,
    validation_features,
    validation_split,
)
from bench.errors import BenchError
from bench.interfaces import (
    CLIP_MEAN,
    CLIP_STD,
    Batch,
    Detector,
    EvalPlan,
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
        if features is not None:
            features = features.to(self.device, non_blocking=True)
        else:
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

        The fixed schedule. UnivFD's own (``schedule = "official"``, baselines/schedule.py)
        divides the lr on validation plateaus instead.
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

    # --- training ------------------------------------------------------------------
    def fit(self, train: TrainData, ctx: RunContext) -> list[float]:
        """Fixed epochs (``schedule = "fixed"``) or UnivFD's official schedule.

        Features come from the cache unless ``feature_cache = "off"``; with the fixed
        schedule and no cache this is the standard loop.
        """
        self._ctx = ctx
        official = str(self.options.get("schedule", "fixed")) == "official"
        if self.cache_mode.kind == "off" and not official:
            from bench.training import fit_loop

            return fit_loop(self, train, ctx)
        schedule, val = None, None
        if official:
            samples, held, source = validation_split(
                train.samples,
                train.root,
                str(self.options.get("val_set", "auto")),
                float(self.options.get("val_fraction", 0.05)),
                ctx.seed,
            )
            ctx.log(
                f"{self.name}: official schedule: validation on {len(held)} images ({source}), "
                f"training on {len(samples)}; at most {train.epochs} epochs"
            )
            train = train.subset(samples)
            val = validation_features(self, held, ctx)
            schedule = OfficialSchedule(
                patience=int(self.options.get("patience", 5)),
                min_lr=float(self.options.get("min_lr", 1e-6)),
            )
        epochs = int(train.epochs)
        run_epoch, steps_per_epoch = self._epoch_runner(train, ctx)
        optimizer = self.configure_optimizer()
        scheduler = (
            None if official else self.configure_scheduler(optimizer, steps_per_epoch, epochs)
        )
        losses: list[float] = []
        self.train_mode(True)
        try:
            for epoch in range(epochs):
                losses += run_epoch(epoch, optimizer, scheduler)
                tail = losses[-steps_per_epoch:] or [math.nan]
                message = f"epoch {epoch + 1}/{epochs}: mean loss {sum(tail) / len(tail):.4f}"
                if schedule is not None:
                    accuracy = validation_accuracy(self, *val)
                    ctx.log(f"{message}, validation acc {accuracy:.4f}")
                    if not schedule.after_epoch(epoch, accuracy, optimizer, self.head.state_dict()):
                        break
                else:
                    ctx.log(message)
        finally:
            self.train_mode(False)
        if schedule is not None and schedule.best_state is not None:
            self.head.load_state_dict(schedule.best_state)
            record = schedule.record()
            ctx.notes["schedule"] = record
            ctx.log(
                f"{self.name}: stopped after {record['epochs_run']} epochs; keeps epoch "
                f"{record['chosen_epoch']} (what UnivFD's early stopper saved last)"
            )
        return losses

    def _epoch_runner(self, train: TrainData, ctx: RunContext) -> tuple[Any, int]:
        """(run_epoch(epoch, optimizer, scheduler) -> losses, steps per epoch)."""
        from bench.data.pipeline import DataWait
        from bench.training import READ_EVERY, read_losses, record_wait, step, to_device

        batch_size = int(train.batch_size)
        wait = DataWait()
        if self.cache_mode.kind == "off":
            chain = self.transforms(train=True)

            def run_images(epoch: int, optimizer: Any, scheduler: Any) -> list[float]:
                out: list[float] = []
                pending: list[torch.Tensor] = []
                for batch in wait(train.loader(chain, train=True, shuffle=True, epoch=epoch)):
                    if batch["image"] is not None:
                        batch = to_device(batch, ctx.device)
                        pending.append(step(self, batch, optimizer, scheduler, ctx))
                    if len(pending) >= READ_EVERY:
                        out += read_losses(pending, epoch)
                out += read_losses(pending, epoch)
                record_wait(ctx, wait, "train")
                return out

            return run_images, max(1, math.ceil(len(train.samples) / batch_size))

        samples = train.samples
        n_views = self.cache_mode.n_views(int(train.epochs))
        digests = image_digests(samples)
        labels = torch.tensor([float(s.label) for s in samples])
        memo: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}

        def view_features(view: int) -> tuple[torch.Tensor | None, torch.Tensor]:
            if view in memo:
                return memo[view]
            feats, found, computed = self._view_features(train, ctx, digests, view)
            ctx.log(
                f"{self.name}: features view {view + 1}/{n_views}: {int(found.sum())} images, "
                f"{computed} computed, {int(found.sum()) - computed} from the cache"
            )
            memo.clear()  # one view in memory at a time (a ViT-L view of 144k images: 440 MB)
            memo[view] = (feats, found)
            return feats, found

        usable = int(view_features(0)[1].sum())
        if usable == 0:
            raise BenchError(f"{self.name}: no training image could be read")

        def run_cached(epoch: int, optimizer: Any, scheduler: Any) -> list[float]:
            feats, found = view_features(epoch % n_views)
            out: list[float] = []
            pending: list[torch.Tensor] = []
            for idx in self._batches(found, batch_size, ctx.seed, epoch):
                batch = {
                    "features": feats[idx].to(self.device, non_blocking=True),
                    "label": labels[idx].to(self.device),
                    "path": [samples[i].path for i in idx.tolist()],
                    "generator": [samples[i].generator for i in idx.tolist()],
                    "index": idx,
                }
                pending.append(step(self, batch, optimizer, scheduler, ctx))
                if len(pending) >= READ_EVERY:
                    out += read_losses(pending, epoch)
            return out + read_losses(pending, epoch)

        return run_cached, max(1, math.ceil(usable / batch_size))

    def feature_key(self, ctx: RunContext) -> dict[str, Any]:
        """What a cached feature depends on besides chain, view and image."""
        cuda = ctx.device.startswith("cuda")
        return {
            "feature": "clip.encode_image(normalize=False)",
            "backbone": self.backbone.identity,
            "weights": weights_fingerprint(self.backbone),
            "device": "cuda" if cuda else ctx.device,
            "autocast": str(ctx.amp_dtype) if ctx.amp_dtype is not None else None,
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

    # --- evaluation on cached features --------------------------------------------------
    def plan_evaluation(self, samples: list[Any], ctx: RunContext) -> EvalPlan | None:
        """Test features through the cache too (unless ``feature_cache = "off"``).

        The backbone is frozen, so a test image's feature depends on the image, the chain
        and the backbone only: a second run (another head, another feature addon, VIB-Net
        after UnivFD) decodes and encodes no test image.
        """
        if self.cache_mode.kind == "off":
            return None
        self._ctx = ctx
        missing: dict[int, str] = {}
        feats, found, computed = cached_features(
            samples,
            image_digests(samples),
            self.transforms(train=False),
            self._encode_for_cache,
            key=self.feature_key(ctx),
            train=False,
            view=0,
            batch_size=int(
                self.options.get("eval_batch_size", self.options.get("batch_size", 256))
            ),
            ctx=ctx,
            skipped=missing,
        )
        n = int(found.sum())
        ctx.log(
            f"{self.name}: test features: {n} images, {computed} computed, {n - computed} from the cache"
        )
        for i in (~found).nonzero().squeeze(1).tolist():
            missing.setdefault(i, "unreadable")
        if feats is None:
            feats = torch.zeros(len(samples), self.backbone.embed_dim)
        return EvalPlan(features=feats, missing=missing)
