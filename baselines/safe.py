"""SAFE (Li et al., KDD 2025): a small ResNet on the HH wavelet band, trained from scratch.

The claims it tests: resizing destroys the high-frequency traces of generators, so crop
instead; colour jitter, rotation and patch masking break the shortcuts (colour, layout,
global content) a detector otherwise learns; and the diagonal wavelet band is where the
remaining traces are easiest to see.

Recipe (SAFE's public code, ``scripts/train.sh``, ``main_finetune.py``): AdamW, weight
decay 0.01 on weights only (biases and BatchNorm are not decayed: its optimiser factory
skips 1-D parameters), lr = blr · batch / 256 with blr 1e-2 and an effective batch of 128
(4 GPUs × 32), that is 5e-3; 20 epochs; the lr rises linearly from 0 over the first epoch
and then follows a half-cycle cosine down to min_lr 1e-6, both per step (its
``adjust_learning_rate``); label smoothing 0.1; p(fake) = softmax[:, 1].
With another batch size the lr is scaled linearly (``lr`` is the lr at ``lr_batch``).
SAFE's loader drops the last incomplete batch; the shared loop here keeps it.
Train transforms: random 256 crop (padded if smaller), flip, rotation in [-180, 180],
colour jitter (brightness, contrast, saturation 0.5), to tensor, RandomMask; no resize and
no normalisation. Evaluation: centre 256 crop.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

from baselines.augment import RandomMask, TorchvisionStep
from baselines.safe_net import SafeNet
from bench.builtin.transforms import CenterCrop, HorizontalFlip, RandomCrop, ToTensor
from bench.interfaces import Batch, Detector, RunContext, TrainData, TransformChain


def warmup_cosine(step: int, warmup: int, total: int, floor: float) -> float:
    """SAFE's lr factor at ``step``: linear 0 -> 1 over ``warmup``, then cosine down to ``floor``."""
    if step < warmup:
        return step / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def decay_groups(net: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups that decay weights but not biases or 1-D parameters (BatchNorm), as
    SAFE's and AIDE's optimiser factories do."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine_scheduler(
    optimizer: Any, warmup_epochs: float, steps_per_epoch: int, epochs: int, floor: float
) -> Any:
    """A per-step LambdaLR of ``warmup_cosine`` (at least one step after the warm-up)."""
    warmup = int(round(warmup_epochs * steps_per_epoch))
    total = max(1, epochs * steps_per_epoch)
    warmup = min(warmup, total - 1) if total > 1 else 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total, floor)
    )


class SAFE(Detector):
    """DWT-HH band -> truncated ResNet-50 -> 2-way softmax; the whole net is trained."""

    provides = frozenset()

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.net: SafeNet | None = None
        self._batch_size: int | None = None

    @property
    def input_size(self) -> int:
        return int(self.options.get("input_size", 256))

    def base_transforms(self, train: bool) -> TransformChain:
        """Crops are the "geometry" steps (Patch Selection replaces them)."""
        if not train:
            return TransformChain([CenterCrop(self.input_size), ToTensor()])
        from torchvision import transforms as T

        o = self.options
        jitter = float(o.get("jitter", 0.5))
        return TransformChain(
            [
                RandomCrop(self.input_size),
                HorizontalFlip(),
                TorchvisionStep(T.RandomRotation(float(o.get("rotation", 180.0)))),
                TorchvisionStep(
                    T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)
                ),
                ToTensor(),
                RandomMask(
                    p=float(o.get("mask_p", 0.5)),
                    patch=int(o.get("mask_patch", 16)),
                    ratio=(0.0, float(o.get("mask_ratio_max", 0.75))),
                ),
            ]
        )

    def setup(self, ctx: RunContext) -> None:
        self.net = SafeNet(num_classes=2, wavelet=str(self.options.get("wavelet", "bior1.3")))
        self.net.to(ctx.device)

    def fit(self, train: TrainData, ctx: RunContext) -> list[float]:
        self._batch_size = int(train.batch_size)  # the lr follows the batch really used
        return super().fit(train, ctx)

    def lr(self, batch_size: int | None = None) -> float:
        """``lr`` scaled linearly from ``lr_batch`` to the batch actually used."""
        batch = int(batch_size or self._batch_size or self.options.get("batch_size", 128))
        base = float(self.options.get("lr", 5e-3))
        return base * batch / int(self.options.get("lr_batch", 128))

    def configure_optimizer(self) -> torch.optim.Optimizer:
        weight_decay = float(self.options.get("weight_decay", 0.01))
        return torch.optim.AdamW(decay_groups(self.net, weight_decay), lr=self.lr())

    def configure_scheduler(self, optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
        warmup_epochs = float(self.options.get("warmup_epochs", 1))
        floor = float(self.options.get("min_lr", 1e-6)) / max(self.lr(), 1e-12)
        return warmup_cosine_scheduler(optimizer, warmup_epochs, steps_per_epoch, epochs, floor)

    def training_step(self, batch: Batch) -> torch.Tensor:
        logits = self.net(batch["image"])
        smoothing = float(self.options.get("label_smoothing", 0.1))
        return F.cross_entropy(logits.float(), batch["label"].long(), label_smoothing=smoothing)

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        return torch.softmax(self.net(batch["image"]).float(), dim=1)[:, 1]

    def train_mode(self, mode: bool) -> None:
        super().train_mode(mode)
        self.net.train(mode)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The whole network, BatchNorm statistics included: all of it is trained."""
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.net.parameters()) if self.net is not None else 0
        return {"parameters": n, "lr": self.lr()}
