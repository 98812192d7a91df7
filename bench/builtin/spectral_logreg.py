"""A small detector that really learns: logistic regression on a residual's power spectrum.

It exists to test the runner end to end and as a sanity row on a leaderboard: generator
up-sampling leaves periodic traces in the high frequencies that a radial power spectrum
of a high-pass residual exposes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.builtin.transforms import HorizontalFlip, RandomCrop, ToTensor
from bench.interfaces import Batch, Detector, RunContext, TransformChain


def radial_log_spectrum(images: torch.Tensor, bins: int) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, bins): mean log power of a Laplacian residual per radius."""
    grey = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    kernel = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
    residual = nn.functional.conv2d(grey[:, None], kernel.to(grey)[None, None], padding=1)[:, 0]
    power = torch.fft.fftshift(torch.fft.fft2(residual).abs() ** 2, dim=(-2, -1))
    h, w = power.shape[-2:]
    yy, xx = torch.meshgrid(
        torch.arange(h, device=power.device) - h // 2,
        torch.arange(w, device=power.device) - w // 2,
        indexing="ij",
    )
    radius = torch.sqrt(yy.float() ** 2 + xx.float() ** 2) / (min(h, w) / 2)
    index = (radius.clamp(max=1.0 - 1e-6) * bins).long().flatten()
    counts = torch.bincount(index, minlength=bins).clamp(min=1).to(power)
    flat = power.flatten(1)
    sums = torch.zeros(flat.shape[0], bins, device=flat.device, dtype=flat.dtype)
    sums.index_add_(1, index, flat)
    return torch.log(sums / counts + 1e-8)


class SpectralLogReg(Detector):
    """Standardised radial spectrum -> Linear(bins, 1), trained with BCE."""

    provides = frozenset({"features"})

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.net: nn.Module | None = None

    @property
    def input_size(self) -> int:
        return int(self.options["input_size"])

    def base_transforms(self, train: bool) -> TransformChain:
        return TransformChain([RandomCrop(self.input_size), HorizontalFlip(), ToTensor()])

    def setup(self, ctx: RunContext) -> None:
        bins = int(self.options["bins"])
        self.norm = nn.BatchNorm1d(bins, affine=False, momentum=None)  # cumulative mean/var
        self.head = nn.Linear(bins, 1)
        self.net = nn.ModuleDict({"norm": self.norm, "head": self.head}).to(ctx.device)

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(radial_log_spectrum(images.float(), int(self.options["bins"])))

    def logits(self, batch: Batch) -> torch.Tensor:
        features = self.apply_feature_hooks(self.extract_features(batch["image"]), batch)
        return self.head(features).squeeze(1)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.head.parameters(), lr=float(self.options["lr"]))

    def training_step(self, batch: Batch) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(self.logits(batch), batch["label"])

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch).float())

    def train_mode(self, mode: bool) -> None:
        super().train_mode(mode)
        self.net.train(mode)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)
