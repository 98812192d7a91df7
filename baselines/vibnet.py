"""VIB-Net (Zhang et al., CVPR 2025): a variational information bottleneck on CLIP features.

The claim it tests: CLIP's image feature carries much that is irrelevant to real-vs-fake
(mostly what the image shows); squeezing it through a stochastic bottleneck, with a KL
penalty towards N(0, I), keeps only what predicts the label.

Architecture (from the public code): CLIP ViT-L/14 image feature (768) -> dropout 0.5 ->
MLP 768 -> 1024 -> 1024 -> 2k (ReLU between layers), k = 256; μ = first k outputs,
σ = softplus(last k − 5); z = μ + ε·σ; ``Linear(k, 1)`` decodes the logit.

What the public code does not give, and what is chosen here (the first trainable version):
  - At test time the public code samples ε too, so its predictions are random. Here
    z = μ at test (deterministic); ``sample_at_test = true`` restores the sampling.
  - Loss: BCE + β·KL(N(μ, σ²) ‖ N(0, I)), the KL summed over the k dimensions and averaged
    over the batch (Alemi et al.'s VIB). β is not given; the default 1e-3 is the value the
    VIB literature uses (option ``beta``).
  - Optimiser, lr, batch, epochs and preprocessing: UnivFD's (AdamW lr 1e-4, weight decay 0
    = Adam, batch 256; shorter side 256, blur/JPEG, random 224 crop, flip; centre crop at
    test). VIB-Net shares UnivFD's frozen backbone and input, and nothing VIB-specific is
    published; reusing the recipe also lets both share one feature cache.
  - The feature hook (NULL-space addon) acts on the CLIP feature, before the dropout and
    the bottleneck: that is this detector's "feature before the head".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from baselines.frozen_clip import FrozenClipDetector


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per row: ½ Σ (μ² + σ² − 1 − log σ²)."""
    log_var = 2.0 * torch.log(sigma.clamp_min(1e-12))
    return 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - log_var).sum(dim=-1)


class VIBHead(nn.Module):
    """dropout -> MLP -> (μ, σ) -> z -> Linear(k, 1)."""

    def __init__(
        self,
        dim: int,
        hidden: int = 1024,
        k: int = 256,
        dropout: float = 0.5,
        sigma_shift: float = 5.0,
    ):
        super().__init__()
        self.k = k
        self.sigma_shift = sigma_shift
        self.encoder = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 2 * k),
        )
        self.decoder = nn.Linear(k, 1)

    def forward(
        self, x: torch.Tensor, sample: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logit (N,), μ (N, k), σ (N, k)); z = μ + ε·σ when ``sample``, else μ."""
        stats = self.encoder(x)
        mu = stats[:, : self.k]
        sigma = F.softplus(stats[:, self.k :] - self.sigma_shift)
        z = mu + torch.randn_like(sigma) * sigma if sample else mu
        return self.decoder(z).squeeze(1), mu, sigma


class VIBNet(FrozenClipDetector):
    """Frozen CLIP image embedding -> variational bottleneck head -> sigmoid."""

    name = "vibnet"

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.beta = float(self.options.get("beta", 1e-3))
        self.sample_at_test = bool(self.options.get("sample_at_test", False))

    def build_head(self, dim: int) -> nn.Module:
        o = self.options
        return VIBHead(
            dim,
            hidden=int(o.get("hidden", 1024)),
            k=int(o.get("k", 256)),
            dropout=float(o.get("dropout", 0.5)),
            sigma_shift=float(o.get("sigma_shift", 5.0)),
        )

    def head_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logit, mu, sigma = self.head(features, sample=True)
        bce = F.binary_cross_entropy_with_logits(logit.float(), labels)
        return bce + self.beta * gaussian_kl(mu.float(), sigma.float()).mean()

    def head_proba(self, features: torch.Tensor) -> torch.Tensor:
        logit, _, _ = self.head(features, sample=self.sample_at_test)
        return torch.sigmoid(logit.float())
