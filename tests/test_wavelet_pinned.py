"""Issue 17 (mutation testing): SAFE's DWT against PyWavelets beyond the symmetric bior1.3.

The filters are reversed for the convolution: bior1.3's are symmetric, so only an
asymmetric wavelet (db2, sym4) shows a missing reversal; odd sides show the crop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.wavelet import HighFrequencyInput, dwt2, dwt_hh


@pytest.mark.parametrize("wavelet", ["db2", "sym4", "haar"])
@pytest.mark.parametrize("shape", [(9, 11), (2, 13, 8)])
def test_asymmetric_wavelets_and_odd_sides_match_pywavelets(wavelet, shape):
    import pywt

    x = np.random.default_rng(1).random(shape)
    cA, (cH, cV, cD) = pywt.dwt2(x, wavelet, mode="symmetric")
    for band, ref in zip(dwt2(torch.from_numpy(x), wavelet), (cA, cH, cV, cD), strict=True):
        assert band.shape == ref.shape
        np.testing.assert_allclose(band.numpy(), ref, atol=1e-12)


def test_half_precision_and_integer_pixels_are_transformed_in_float32():
    import pywt

    x = np.random.default_rng(2).integers(0, 256, (12, 10)).astype(np.uint8)
    _, (_, _, cD) = pywt.dwt2(x.astype(np.float64), "bior1.3", mode="symmetric")
    for tensor in (torch.from_numpy(x), torch.from_numpy(x).to(torch.bfloat16)):
        out = dwt_hh(tensor)
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), cD, rtol=1e-5, atol=1e-3)


def test_another_extension_mode_is_refused_by_name():
    with pytest.raises(
        ValueError, match="only the 'symmetric' extension mode is implemented, got 'zero'"
    ):
        dwt2(torch.zeros(4, 4), "haar", mode="zero")
    assert repr(HighFrequencyInput("db2")) == "HighFrequencyInput(wavelet='db2', mode='symmetric')"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_transform_runs_where_the_pixels_are():
    """On a GPU: index and filter tensors are made on the input's device (CPU: no test)."""
    x = torch.rand(2, 3, 16, 16)
    expected = HighFrequencyInput("db2")(x)
    got = HighFrequencyInput("db2")(x.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected, atol=1e-5, rtol=1e-5)
