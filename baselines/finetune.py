"""What CNN-Spot and LaDeDa share: one network trained end to end on one logit.

Both come from CNNDetection's training code (LaDeDa's is a copy of it): BCE-with-logits on
a single output, Adam (β1 0.9, β2 0.999, no weight decay), a fixed lr that the original
divides on validation plateaus, and the whole network saved. Subclasses build the network
and the input pipeline.

The originals validate after every epoch and multiply the lr by a factor (CNNDetection
0.1, LaDeDa 0.9) when validation accuracy stops improving, until it falls below 1e-6.
Runs here have a fixed epoch count and no validation split, so ``lr_drop_epochs`` places
the drops (``lr_drop_factor`` each) at fixed epochs; none by default.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from bench.interfaces import Batch, Detector, RunContext


def step_drop_factor(step: int, steps_per_epoch: int, drops: list[int], factor: float) -> float:
    """The lr multiplier at ``step``: ``factor`` once for every drop epoch already reached."""
    epoch = step // max(1, steps_per_epoch)
    return factor ** sum(1 for e in drops if epoch >= e > 0)


class BinaryNetDetector(Detector):
    """A whole network -> one logit -> sigmoid; every parameter trains."""

    provides = frozenset()
    #: The registry name, used in messages ("cnnspot.pretrained").
    name: ClassVar[str] = "binary-net"

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.net: nn.Module | None = None
        self.init_facts: dict[str, Any] = {}

    def build_net(self, ctx: RunContext) -> nn.Module:
        """The network with its weights loaded; sets ``init_facts`` for the run log."""
        raise NotImplementedError

    def setup(self, ctx: RunContext) -> None:
        self.net = self.build_net(ctx).to(ctx.device)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1).float()

    def training_step(self, batch: Batch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(batch["image"]), batch["label"])

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch["image"]))

    def configure_optimizer(self) -> torch.optim.Optimizer:
        beta1 = float(self.options.get("beta1", 0.9))
        return torch.optim.Adam(
            self.net.parameters(), lr=float(self.options.get("lr", 1e-4)), betas=(beta1, 0.999)
        )

    def configure_scheduler(self, optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
        drops = sorted(int(e) for e in self.options.get("lr_drop_epochs", []))
        if not drops:
            return None
        factor = float(self.options.get("lr_drop_factor", 0.1))
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: step_drop_factor(step, steps_per_epoch, drops, factor)
        )

    def train_mode(self, mode: bool) -> None:
        super().train_mode(mode)
        if self.net is not None:
            self.net.train(mode)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The whole network, BatchNorm statistics included: all of it is trained."""
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.net.parameters()) if self.net is not None else 0
        return {**self.init_facts, "parameters": n}
