"""Issue 17 (mutation testing): VIB-Net's bottleneck head (baselines/vibnet.py), pinned
against the formulas of its docstring computed in numpy (softplus, KL, z = mu + eps*sigma).

The heads are built without a backbone (``build_head`` on a small feature size), so no
CLIP model is needed: the backbone is frozen and only the head and its loss are theirs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.pinned_helpers import bce as _bce
from tests.pinned_helpers import build_detector as build
from tests.pinned_helpers import sigmoid as _sigmoid
from tests.pinned_helpers import to_numpy as _np


# ---------------------------------------------------------------------------- VIB-Net
def test_gaussian_kl_sums_over_the_last_axis_and_clamps_sigma():
    from baselines.vibnet import gaussian_kl

    rng = np.random.default_rng(0)
    mu = rng.normal(size=(2, 3, 4))
    sigma = rng.uniform(0.2, 2.0, size=(2, 3, 4))
    expected = 0.5 * (mu**2 + sigma**2 - 1 - np.log(sigma**2)).sum(axis=-1)
    got = gaussian_kl(torch.from_numpy(mu), torch.from_numpy(sigma))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # sigma 0 is read as 1e-12 (log 0 would be -inf): KL = ½(0 + 0 − 1 − 2 ln 1e-12)
    zero = gaussian_kl(
        torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    )
    assert float(zero) == pytest.approx(0.5 * (-1 - 2 * math.log(1e-12)), rel=1e-12)


def _vib_by_hand(head, x: np.ndarray, eps: np.ndarray | None):
    layers = [m for m in head.encoder if isinstance(m, nn.Linear)]
    h = x
    for i, layer in enumerate(layers):
        h = h @ _np(layer.weight).T + _np(layer.bias)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    k = head.k
    mu = h[:, :k]
    sigma = np.log1p(np.exp(h[:, k:] - head.sigma_shift))  # softplus
    zed = mu if eps is None else mu + eps * sigma
    logit = zed @ _np(head.decoder.weight)[0] + float(head.decoder.bias.detach())
    return logit, mu, sigma


def test_vib_head_layout_and_defaults():
    from baselines.vibnet import VIBHead

    head = VIBHead(12)
    kinds = [type(m) for m in head.encoder]
    assert kinds == [nn.Dropout, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert head.encoder[0].p == 0.5 and head.k == 256 and head.sigma_shift == 5.0
    shapes = [(m.in_features, m.out_features) for m in head.encoder if isinstance(m, nn.Linear)]
    assert shapes == [(12, 1024), (1024, 1024), (1024, 512)]
    assert (head.decoder.in_features, head.decoder.out_features) == (256, 1)


@pytest.mark.parametrize("shift", [5.0, 0.5])
def test_vib_head_forward_by_hand_with_and_without_sampling(shift):
    from baselines.vibnet import VIBHead

    torch.manual_seed(3)
    head = VIBHead(6, hidden=8, k=3, dropout=0.25, sigma_shift=shift).double().eval()
    assert head.encoder[0].p == 0.25
    x = torch.randn(4, 6, dtype=torch.float64)
    logit, mu, sigma = head(x, sample=False)
    want_logit, want_mu, want_sigma = _vib_by_hand(head, _np(x), None)
    np.testing.assert_allclose(_np(mu), want_mu, rtol=1e-10)
    np.testing.assert_allclose(_np(sigma), want_sigma, rtol=1e-10)
    assert logit.shape == (4,)
    np.testing.assert_allclose(_np(logit), want_logit, rtol=1e-10)
    torch.manual_seed(11)
    sampled, _, _ = head(x, sample=True)
    torch.manual_seed(11)
    eps = torch.randn(4, 3, dtype=torch.float64)
    np.testing.assert_allclose(_np(sampled), _vib_by_hand(head, _np(x), _np(eps))[0], rtol=1e-10)


def test_vibnet_options_reach_the_head():
    det = build("vibnet")
    assert det.beta == 1e-3 and det.sample_at_test is False
    head = det.build_head(10)
    assert head.k == 256 and head.sigma_shift == 5.0 and head.encoder[0].p == 0.5
    assert head.encoder[1].out_features == 1024
    det = build(
        "vibnet", beta=0.5, sample_at_test=True, hidden=7, k=3, dropout=0.1, sigma_shift=2.0
    )
    assert det.beta == 0.5 and det.sample_at_test is True
    head = det.build_head(10)
    assert (head.k, head.sigma_shift, head.encoder[0].p) == (3, 2.0, 0.1)
    assert head.encoder[1].out_features == 7 and head.encoder[5].out_features == 6


def test_vibnet_loss_is_bce_of_a_sampled_z_plus_beta_times_the_mean_kl():
    det = build("vibnet", beta=0.25, hidden=8, k=3, sigma_shift=-3.0)  # sigma ~ 3: eps shows
    torch.manual_seed(4)
    det.head = det.build_head(5).eval()  # dropout off, so only the sample is random
    x = torch.randn(6, 5)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    torch.manual_seed(21)
    loss = det.head_loss(x, y).detach()
    torch.manual_seed(21)
    eps = _np(torch.randn(6, 3))
    logit, mu, sigma = _vib_by_hand(det.head, _np(x), eps)
    kl = 0.5 * (mu**2 + sigma**2 - 1 - np.log(sigma**2)).sum(axis=1).mean()
    assert float(loss) == pytest.approx(_bce(logit, _np(y)) + 0.25 * kl, rel=1e-5)


def test_vibnet_probability_uses_the_mean_unless_sampling_is_asked():
    det = build("vibnet", hidden=8, k=3, sigma_shift=-3.0)  # sigma ~ 3: sampling shows
    torch.manual_seed(5)
    det.head = det.build_head(5).eval()
    x = torch.randn(4, 5)
    logit, _, _ = _vib_by_hand(det.head, _np(x), None)
    proba = det.head_proba(x)
    assert proba.dtype == torch.float32
    np.testing.assert_allclose(_np(proba), _sigmoid(logit), rtol=1e-5)
    sampling = build("vibnet", hidden=8, k=3, sigma_shift=-3.0, sample_at_test=True)
    sampling.head = det.head
    torch.manual_seed(6)
    got = sampling.head_proba(x)
    torch.manual_seed(6)
    eps = _np(torch.randn(4, 3))
    np.testing.assert_allclose(
        _np(got), _sigmoid(_vib_by_hand(det.head, _np(x), eps)[0]), rtol=1e-5
    )


def test_fallback_defaults_in_the_code_are_the_registrys():
    """A VIBNet built from a partial option dict (a plugin, a test) gets the catalogue's
    defaults, read here from registry.toml."""
    import tomllib
    from pathlib import Path

    from baselines.vibnet import VIBNet

    text = (Path(__file__).parents[1] / "registry.toml").read_text(encoding="utf-8")
    spec = tomllib.loads(text)["detectors"]["vibnet"]["options"]
    bare = VIBNet({})
    assert bare.beta == spec["beta"]["default"]
    assert bare.sample_at_test is spec["sample_at_test"]["default"] is False
    head = bare.build_head(6)
    assert head.k == spec["k"]["default"] and head.sigma_shift == spec["sigma_shift"]["default"]
    assert head.encoder[0].p == spec["dropout"]["default"]
    assert head.encoder[1].out_features == spec["hidden"]["default"]
