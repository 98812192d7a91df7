"""The training recipe NPR, FreqNet and DFFreq share in the code the AIGIBench authors ran.

Their three ``train.py``/``networks/trainer.py`` (HorizonTEL/AIGIBench, ``detector_codes/``)
are one recipe, descended from CNNDetection's: a network with one logit trained from
scratch with BCE-with-logits; Adam (β₁ 0.9, β₂ 0.999, no weight decay); at the end of every
0-based epoch that is a positive multiple of 10 (``if epoch % 10 == 0 and epoch != 0``) the
lr is multiplied by 0.9, so the first decay comes after the 11th epoch; 101 epochs
(``--niter``); batch 128; ImageNet mean/std after ``ToTensor``. A validation pass after
each epoch only logs, and the last epoch's weights are the ones tested, so a fixed number
of epochs here is the same procedure. p(fake) = sigmoid(logit).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from baselines.augment import ResizeSquare
from bench.builtin.transforms import CenterCrop, RandomCrop
from bench.errors import BenchError
from bench.interfaces import IMAGENET_MEAN, IMAGENET_STD, Batch, Detector, RunContext, Transform


def step_decay_factor(epoch: int, every: int, gamma: float) -> float:
    """lr factor during 0-based ``epoch`` when the lr is multiplied by ``gamma`` at the end of
    each 0-based epoch that is a positive multiple of ``every`` (``every`` 0: never)."""
    if every <= 0 or epoch <= 0:
        return 1.0
    return gamma ** ((epoch - 1) // every)


class BinaryCNNDetector(Detector):
    """A from-scratch network with one logit; subclasses give the network and the transforms."""

    name = "binary_cnn"
    provides = frozenset()

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.net: nn.Module | None = None

    @property
    def input_size(self) -> int:
        return int(self.options.get("input_size", 224))

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return IMAGENET_MEAN, IMAGENET_STD

    @abstractmethod
    def build_net(self) -> nn.Module:
        """The network, freshly initialised (called by ``setup``)."""

    def setup(self, ctx: RunContext) -> None:
        self.net = self.build_net().to(ctx.device)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        o = self.options
        return torch.optim.Adam(
            self.net.parameters(),
            lr=float(o.get("lr", 1e-4)),
            betas=(float(o.get("beta1", 0.9)), 0.999),
        )

    def configure_scheduler(self, optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
        every = int(self.options.get("lr_decay_every", 10))
        gamma = float(self.options.get("lr_decay", 0.9))
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: step_decay_factor(step // steps_per_epoch, every, gamma)
        )

    def training_step(self, batch: Batch) -> torch.Tensor:
        logits = self.net(batch["image"]).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits.float(), batch["label"].float())

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        return torch.sigmoid(self.net(batch["image"]).squeeze(1).float())

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
        return {"parameters": n}


def check_resize_crop(options: dict[str, Any], name: str) -> None:
    """Refuse a combination of ``load_size``, ``input_size`` and ``eval_crop`` that cannot run
    (each option's own range is checked by its catalogue declaration)."""
    load, size = int(options.get("load_size", 256)), int(options.get("input_size", 224))
    if 0 < load < size:
        raise BenchError(f"{name}.load_size {load} is smaller than {name}.input_size {size}")
    if load == 0 and not bool(options.get("eval_crop", False)):
        raise BenchError(
            f"{name}.load_size = 0 (no resize) needs {name}.eval_crop = true: images of "
            "different sizes cannot be batched"
        )


def resize_then_crop(options: dict[str, Any], train: bool) -> list[Transform]:
    """NPR's and FreqNet's geometry: ``Resize((load, load))``, then a random crop (train) or,
    at evaluation, nothing (their AIGIBench ``test.py``: ``no_crop = True``) or a centre crop.

    ``load_size = 0`` skips the resize (their ``--no_resize``); evaluation must then crop,
    since images of different sizes cannot share a batch (``check_resize_crop``).
    """
    load, size = int(options.get("load_size", 256)), int(options.get("input_size", 224))
    steps: list[Transform] = [ResizeSquare(load)] if load else []
    if train:
        steps.append(RandomCrop(size))
    elif bool(options.get("eval_crop", False)):
        steps.append(CenterCrop(size))
    return steps
