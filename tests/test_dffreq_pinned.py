"""Issue 17 (mutation testing): DFFreq's block against a numpy reference written from its definition.

The reference (``_attention``, ``_block``) is DFFreq's FreqLC block as ``networks/FreqLC.py``
of the AIGIBench copy states it, with numpy and PyWavelets: 1×1 and depth-wise 3×3
convolutions (zero padding), reflect padding to whole windows, per window and head
softmax(q kᵀ · t) v ⊙ GELU(v Aᵀ + b), a 1×1 output projection; the DWT branch on the
layer-normalised Haar sub-band map with a residual, the FFT branch on the phase. Only the
weights are read from the module; every step is recomputed here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from baselines.dffreq_net import (
    DFFreqNet,
    DualFrequencyBlock,
    WindowChannelAttention,
    from_windows,
    windows_of,
)

# tiny tensors: one torch thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _attention(module: WindowChannelAttention, x: np.ndarray) -> np.ndarray:
    """DFFreq's windowed channel attention on (N, C, H, W), from the module's weights only."""
    n, c, h, w = x.shape
    win, heads = module.window, module.heads
    qkv = np.einsum("oc,nchw->nohw", _np(module.qkv.weight)[:, :, 0, 0], x)
    if module.qkv.bias is not None:
        qkv = qkv + _np(module.qkv.bias)[None, :, None, None]
    padded = np.pad(qkv, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dw = _np(module.qkv_dwconv.weight)[:, 0]
    qkv = sum(
        dw[None, :, dy, dx, None, None] * padded[:, :, dy : dy + h, dx : dx + w]
        for dy in range(3)
        for dx in range(3)
    )
    if module.qkv_dwconv.bias is not None:
        qkv = qkv + _np(module.qkv_dwconv.bias)[None, :, None, None]
    ph, pw = -h % win, -w % win
    qkv = np.pad(qkv, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
    temperature = _np(module.temperature).reshape(heads)
    a, b = _np(module.gate[0].weight), _np(module.gate[0].bias)
    per = c // heads
    out = np.zeros((n, c, h + ph, w + pw))
    for s in range(n):
        for i in range(0, h + ph, win):
            for j in range(0, w + pw, win):
                block = qkv[s, :, i : i + win, j : j + win].reshape(3 * c, win * win)
                q, k, v = block[:c], block[c : 2 * c], block[2 * c :]
                parts = []
                for head in range(heads):
                    rows = slice(head * per, (head + 1) * per)
                    logits = q[rows] @ k[rows].T * temperature[head]
                    soft = np.exp(logits - logits.max(1, keepdims=True))
                    soft /= soft.sum(1, keepdims=True)
                    z = v[rows] @ a.T + b
                    gate = 0.5 * z * (1 + erf(z / math.sqrt(2)))  # exact GELU
                    parts.append(soft @ v[rows] * gate)
                out[s, :, i : i + win, j : j + win] = np.concatenate(parts).reshape(c, win, win)
    out = np.einsum("oc,nchw->nohw", _np(module.project_out.weight)[:, :, 0, 0], out[:, :, :h, :w])
    return out + _np(module.project_out.bias)[None, :, None, None]


def _randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)


@pytest.mark.parametrize(
    ("dim", "window", "heads", "bias", "size"),
    [(4, 4, 2, True, (6, 9)), (3, 4, 1, False, (8, 5)), (6, 3, 3, True, (7, 7))],
)
def test_window_attention_matches_the_numpy_reference(dim, window, heads, bias, size):
    """Heads, biases, windows that do not divide the sides (reflect padding), general weights."""
    torch.manual_seed(0)
    module = WindowChannelAttention(dim, window, heads=heads, bias=bias).double()
    assert (module.qkv.bias is not None, module.qkv_dwconv.bias is not None) == (bias, bias)
    assert module.project_out.bias is not None and module.qkv_dwconv.groups == 3 * dim
    _randomise(module, 1)
    x = np.random.default_rng(2).normal(size=(2, dim, *size))
    ours = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, _attention(module, x), atol=1e-10)
    assert module.extra_repr() == f"dim={dim}, window={window}, heads={heads}"


def test_attention_starts_at_the_authors_temperature_and_refuses_uneven_heads():
    module = WindowChannelAttention(4, 4, heads=2)
    assert module.temperature.shape == (2, 1, 1)
    torch.testing.assert_close(module.temperature.detach(), torch.full((2, 1, 1), 0.5))
    assert module.qkv.bias is None and module.qkv_dwconv.bias is None  # bias=False default
    with pytest.raises(ValueError, match="^dim 3 is not a multiple of heads 2$"):
        WindowChannelAttention(3, 4, heads=2)


def test_windows_round_trip_with_padding():
    """windows_of cuts (window × window) tiles row-major after reflect padding; from_windows crops."""
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float64).reshape(2, 3, 5, 7)
    tiles, nh, nw = windows_of(x, 4)
    assert (nh, nw) == (2, 2) and tiles.shape == (2 * 4, 3, 16)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 3), (0, 1)), mode="reflect")
    for s in range(2):
        for i in range(2):
            for j in range(2):
                expected = padded[s, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].reshape(3, 16)
                np.testing.assert_array_equal(tiles[(s * 2 + i) * 2 + j].numpy(), expected)
    assert torch.equal(from_windows(tiles, 2, nh, nw, 5, 7), x)
    exact, nh, nw = windows_of(x[..., :4, :4], 2)  # no padding needed
    assert (nh, nw) == (2, 2) and torch.equal(from_windows(exact, 2, 2, 2, 4, 4), x[..., :4, :4])


def _layout(band: np.ndarray) -> np.ndarray:
    """(N, C, bh, bw) -> (N, C, bh·bw): each 2×2 block of the band at 4 consecutive places."""
    n, c, bh, bw = band.shape
    out = np.empty((n, c, bh * bw))
    for i in range(bh):
        for j in range(bw):
            out[:, :, (((i // 2) * (bw // 2) + j // 2) * 2 + i % 2) * 2 + j % 2] = band[:, :, i, j]
    return out


def _unlayout(row: np.ndarray, bh: int, bw: int) -> np.ndarray:
    out = np.empty((*row.shape[:2], bh, bw))
    for i in range(bh):
        for j in range(bw):
            out[:, :, i, j] = row[:, :, (((i // 2) * (bw // 2) + j // 2) * 2 + i % 2) * 2 + j % 2]
    return out


def _block(block: DualFrequencyBlock, x: np.ndarray) -> np.ndarray:
    """0.6 · IDWT(map + attn(LayerNorm_C(map))) + 0.4 · s · iFFT(|X| e^{i attn(∠X)})."""
    import pywt

    cA, (cH, cV, cD) = pywt.dwt2(x, "haar")
    bh, bw = cA.shape[-2:]
    rows = np.stack([_layout(b) for b in (cA, cH, cV, cD)], axis=2)  # (N, C, 4, L)
    mean = rows.mean(axis=1, keepdims=True)
    var = rows.var(axis=1, keepdims=True)
    gamma = _np(block.norm.weight)[None, :, None, None]
    beta = _np(block.norm.bias)[None, :, None, None]
    normed = (rows - mean) / np.sqrt(var + 1e-5) * gamma + beta
    rows = rows + _attention(block.dwt_attn, normed)
    bands = [_unlayout(rows[:, :, b], bh, bw) for b in range(4)]
    dwt = pywt.idwt2((bands[0], tuple(bands[1:])), "haar")
    return 0.6 * dwt + 0.4 * _fft_branch(block, x)


def _fft_branch(block: DualFrequencyBlock, x: np.ndarray) -> np.ndarray:
    spectrum = np.fft.rfft2(x)
    phase = _attention(block.fft_attn, np.angle(spectrum))
    fft = np.fft.irfft2(np.abs(spectrum) * np.exp(1j * phase), s=x.shape[-2:])
    return float(_np(block.fft_scale)[0]) * fft


def test_dual_frequency_block_matches_the_numpy_reference():
    torch.manual_seed(0)
    block = DualFrequencyBlock().double()
    assert (block.dwt_attn.window, block.fft_attn.window, block.weights) == (4, 8, (0.6, 0.4))
    assert block.norm.eps == 1e-5 and block.norm.normalized_shape == (3,)
    _randomise(block, 3)
    x = np.random.default_rng(4).normal(size=(2, 3, 8, 12))
    ours = block(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, _block(block, x), atol=1e-9)


def test_fft_branch_keeps_an_odd_width():
    """The branch alone takes any size: irfft2 must be told the width it came from."""
    torch.manual_seed(0)
    block = DualFrequencyBlock().double()
    _randomise(block, 6)
    x = np.random.default_rng(7).normal(size=(1, 3, 8, 13))
    ours = block.fft_branch(torch.from_numpy(x)).detach().numpy()
    assert ours.shape == x.shape
    np.testing.assert_allclose(ours, _fft_branch(block, x), atol=1e-9)


def test_dual_frequency_block_takes_half_precision_and_integer_pixels_in_float32():
    torch.manual_seed(0)
    block = DualFrequencyBlock()
    _randomise(block, 5)
    x = torch.randint(0, 4, (1, 3, 8, 8))
    reference = block.double()(x.double()).float()
    block.float()
    for value in (x, x.to(torch.bfloat16)):
        out = block(value)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # no bf16 inside the block
        torch.testing.assert_close(block(x.float()), reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(
        ValueError, match="^DFFreq needs image sides that are multiples of 4, got 8x6$"
    ):
        block(torch.zeros(1, 3, 8, 6))


def test_dffreq_net_passes_its_settings_to_the_block():
    net = DFFreqNet(num_classes=2, dwt_window=2, fft_window=4, weights=(0.3, 0.7))
    block = net.input_step
    assert isinstance(block, DualFrequencyBlock) and net.fc1.out_features == 2
    assert (block.dwt_attn.window, block.fft_attn.window, block.weights) == (2, 4, (0.3, 0.7))
    default = DFFreqNet()
    assert default.fc1.out_features == 1
    assert (default.input_step.dwt_attn.window, default.input_step.fft_attn.window) == (4, 8)
    assert default.input_step.weights == (0.6, 0.4)
