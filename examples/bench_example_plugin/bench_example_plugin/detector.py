"""A deliberately simple detector showing the whole Detector contract."""

from __future__ import annotations

import torch
from torch import nn

from bench.builtin.transforms import CenterCrop, ToTensor
from bench.interfaces import Detector, TransformChain


class MeanBrightness(Detector):
    provides = frozenset()

    @property
    def input_size(self) -> int:
        return 64

    def base_transforms(self, train: bool) -> TransformChain:
        return TransformChain([CenterCrop(self.input_size), ToTensor()])

    def setup(self, ctx) -> None:
        self.head = nn.Linear(1, 1).to(ctx.device)

    def _logits(self, batch) -> torch.Tensor:
        return self.head(batch["image"].mean(dim=(1, 2, 3))[:, None]).squeeze(1)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.head.parameters(), lr=self.options["lr"])

    def training_step(self, batch) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(self._logits(batch), batch["label"])

    @torch.no_grad()
    def predict_proba(self, batch) -> torch.Tensor:
        return torch.sigmoid(self._logits(batch))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.head.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict(state)
