"""SupCon (eq. 11) and the NS-Net objective (eq. 12) against plain-python arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from nsnet_plugin.losses import nsnet_loss, supcon_loss


def reference_supcon(features: list[list[float]], labels: list[int], tau: float) -> float:
    """Eq. 11 term by term in plain python; anchors without a positive are skipped."""
    unit = [[x / math.sqrt(sum(v * v for v in f)) for x in f] for f in features]

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    per_anchor = []
    for i, fi in enumerate(unit):
        positives = [p for p in range(len(unit)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(dot(fi, fj) / tau) for j, fj in enumerate(unit) if j != i)
        terms = [math.log(math.exp(dot(fi, unit[p]) / tau) / denom) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
    return sum(per_anchor) / len(per_anchor)


def test_hand_computed_square() -> None:
    # two real along +x/+y, two fake along −x/−y: each anchor's positive is orthogonal
    # (dot 0), its negatives one opposite (dot −1) and one orthogonal (dot 0), so
    # loss = −log(e⁰ / (e⁰ + e^(−1/τ) + e⁰)) = log(2 + e^(−1/τ)) for every anchor
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    for tau in (0.07, 0.5, 1.0):
        expected = math.log(2.0 + math.exp(-1.0 / tau))
        assert float(supcon_loss(f, y, tau)) == pytest.approx(expected, rel=1e-6)
    # features are L2-normalised inside: scaling changes nothing
    assert float(supcon_loss(3.0 * f, y, 0.5)) == pytest.approx(math.log(2 + math.exp(-2)))


def test_against_plain_python_on_a_random_batch() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(7, 5, generator=g, dtype=torch.float64)
    labels = [0, 1, 0, 1, 1, 0, 2]  # the label-2 anchor has no positive: skipped
    got = supcon_loss(f, torch.tensor(labels), 0.2)
    expected = reference_supcon(f.tolist(), labels, 0.2)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_anchor_without_positive_is_skipped_not_nan() -> None:
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    y = torch.tensor([0.0, 0.0, 1.0, 2.0])  # anchors 2 and 3 have no positive
    loss = supcon_loss(f, y, 0.5)
    assert math.isfinite(float(loss))
    assert float(loss) == pytest.approx(reference_supcon(f.tolist(), [0, 0, 1, 2], 0.5))


def test_no_positive_at_all_gives_a_differentiable_zero() -> None:
    f = torch.randn(3, 4, requires_grad=True)
    loss = supcon_loss(f, torch.tensor([0.0, 1.0, 2.0]))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert f.grad is not None and torch.count_nonzero(f.grad) == 0
    single = torch.randn(1, 4, requires_grad=True)
    supcon_loss(single, torch.tensor([1.0])).backward()
    assert torch.isfinite(single.grad).all()


def test_gradient_flows_and_is_finite() -> None:
    f = torch.randn(8, 16, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2])
    supcon_loss(f, y, 0.07).backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()
    assert float(f.grad[:7].abs().sum()) > 0


def test_stable_at_small_temperature() -> None:
    f = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 2
    loss = supcon_loss(f, y, 1e-3)  # similarities up to 1000 before exp
    assert math.isfinite(float(loss))


def test_temperature_effect() -> None:
    # well-separated classes: a lower temperature sharpens the softmax and lowers the loss
    f = torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]])
    y = torch.tensor([0, 0, 1, 1])
    losses = [float(supcon_loss(f, y, t)) for t in (1.0, 0.5, 0.1)]
    assert losses[0] > losses[1] > losses[2]
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(f, y, 0.0)


def plain_bce(logits: list[float], labels: list[float]) -> float:
    total = 0.0
    for z, t in zip(logits, labels, strict=True):
        p = 1.0 / (1.0 + math.exp(-z))
        total -= t * math.log(p) + (1 - t) * math.log(1 - p)
    return total / len(logits)


def test_nsnet_loss_weights_the_two_parts() -> None:
    g = torch.Generator().manual_seed(2)
    f = torch.randn(6, 4, generator=g, dtype=torch.float64)
    z = torch.randn(6, 1, generator=g)
    labels = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    y = torch.tensor(labels)
    sup = reference_supcon(f.tolist(), [int(v) for v in labels], 0.1)
    bce = plain_bce(z.reshape(-1).tolist(), labels)
    total, parts = nsnet_loss(f, z, y, lam=0.3, temperature=0.1)
    assert float(total) == pytest.approx(0.7 * sup + 0.3 * bce, rel=1e-5)
    assert float(parts["supcon"]) == pytest.approx(sup, rel=1e-5)
    assert float(parts["bce"]) == pytest.approx(bce, rel=1e-5)
    assert float(parts["total"]) == pytest.approx(float(total))
    # default λ = 0.2 (the paper)
    default_total, _ = nsnet_loss(f, z, y, temperature=0.1)
    assert float(default_total) == pytest.approx(0.8 * sup + 0.2 * bce, rel=1e-5)


def test_nsnet_loss_without_contrastive_is_plain_bce() -> None:
    f = torch.randn(4, 3, requires_grad=True)
    z = torch.tensor([0.5, -1.0, 2.0, 0.0], requires_grad=True)
    labels = [1.0, 0.0, 0.0, 1.0]
    total, parts = nsnet_loss(f, z, torch.tensor(labels), contrastive=False)
    assert total.item() == pytest.approx(plain_bce(z.tolist(), labels), rel=1e-6)
    assert set(parts) == {"bce", "total"}
    total.backward()
    assert z.grad is not None and f.grad is None
    with pytest.raises(ValueError, match="lam"):
        nsnet_loss(f, z, torch.tensor(labels), lam=1.5)
