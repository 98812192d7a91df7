"""NS-Net's training objective: (1 − λ)·SupCon + λ·BCE (eqs. 11-12).

SupCon pulls the projected features of same-label images together and pushes real from
fake; BCE trains the linear head. Both are computed in float32 whatever autocast does,
because τ = 0.07 scales cosine similarities up to ±14 before the exponential.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supcon_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., the paper's eq. 11), mean over anchors.

    Features are L2-normalised here. For anchor i, positives are the other samples with
    its label; the denominator runs over every j ≠ i. An anchor with no positive in the
    batch is skipped (it has nothing to pull towards); with none at all the loss is a
    zero that still backpropagates, so a training step never breaks on a one-class batch.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    labels = labels.reshape(-1)
    n = features.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{n} features but {labels.shape[0]} labels")
    f = F.normalize(features.float(), dim=1)
    self_mask = torch.eye(n, dtype=torch.bool, device=f.device)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    has_positive = positive.any(dim=1)
    if not bool(has_positive.any()):
        return features.float().sum() * 0.0
    # only anchors with a positive: each such row has a finite entry besides itself, so
    # the log-sum-exp (and its gradient) is finite
    sim = (f[has_positive] @ f.T) / temperature
    sim = sim.masked_fill(self_mask[has_positive], float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = positive[has_positive]
    mean_log_prob_pos = torch.where(pos, log_prob, 0.0).sum(dim=1) / pos.sum(dim=1)
    return -mean_log_prob_pos.mean()


def nsnet_loss(
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    lam: float = 0.2,
    temperature: float = 0.07,
    contrastive: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(1 − λ)·SupCon + λ·BCE-with-logits (eq. 12); contrastive=False gives plain BCE.

    ``features`` are the projected features (what the head reads), ``logits`` the head's
    (N,) or (N, 1) output, ``labels`` 1 = fake. parts: detached "supcon", "bce", "total".
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    target = labels.reshape(-1).float()
    bce = F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), target)
    if not contrastive:
        return bce, {"bce": bce.detach(), "total": bce.detach()}
    sup = supcon_loss(features, target, temperature)
    total = (1.0 - lam) * sup + lam * bce
    return total, {"supcon": sup.detach(), "bce": bce.detach(), "total": total.detach()}
