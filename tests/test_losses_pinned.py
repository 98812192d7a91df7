"""Issue 17 (mutation testing): NS-Net's loss at its defaults, at the ends of lam, and its refusals."""

from __future__ import annotations

import pytest
import torch

from nsnet_plugin.losses import nsnet_loss, supcon_loss
from tests.test_losses import plain_bce, reference_supcon

F = torch.tensor([[1.0, 0.2], [0.3, 1.0], [-1.0, 0.1], [0.2, -1.0], [0.5, 0.5]])
LABELS = [0, 0, 1, 1, 1]


def test_the_default_temperature_is_the_papers_0_07():
    expected = reference_supcon(F.tolist(), LABELS, 0.07)
    assert float(supcon_loss(F, torch.tensor(LABELS))) == pytest.approx(expected, rel=1e-5)
    z = torch.tensor([0.3, -0.2, 1.0, 0.4, -0.7])
    total, _ = nsnet_loss(F, z, torch.tensor(LABELS, dtype=torch.float32), lam=0.0)
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_lam_zero_is_pure_supcon_and_lam_one_pure_bce():
    z = torch.tensor([0.3, -0.2, 1.0, 0.4, -0.7])
    y = torch.tensor(LABELS, dtype=torch.float32)
    zero, _ = nsnet_loss(F, z, y, lam=0.0, temperature=0.5)
    one, _ = nsnet_loss(F, z, y, lam=1.0, temperature=0.5)
    assert float(zero) == pytest.approx(reference_supcon(F.tolist(), LABELS, 0.5), rel=1e-5)
    assert float(one) == pytest.approx(plain_bce(z.tolist(), [float(v) for v in LABELS]), rel=1e-5)
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match=rf"^lam must be in \[0, 1\], got {bad}$"):
            nsnet_loss(F, z, y, lam=bad)


def test_refusals_name_the_shapes():
    with pytest.raises(ValueError, match=r"^features must be \(N, D\), got shape \(5,\)$"):
        supcon_loss(torch.ones(5), torch.zeros(5))
    with pytest.raises(ValueError, match=r"^5 features but 4 labels$"):
        supcon_loss(F, torch.zeros(4))
    with pytest.raises(ValueError, match=r"^temperature must be > 0, got 0$"):
        supcon_loss(F, torch.zeros(5), 0)
