"""DFFreq, NPR and FreqNet: their cores against the papers' formulas, sizes, recipe, inputs.

Every reference value here is computed independently of the code under test: with numpy
and PyWavelets from the formulas the papers and the authors' code state, by hand, or by
counting parameters from the architecture's definition.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bench.errors import BenchError
from bench.interfaces import RunContext
from bench.options import merge_options
from bench.plugins import get_registry

REGISTRY = get_registry(refresh=True)
NAMES = ("dffreq", "npr", "freqnet")


def build(name: str, preset: str | None = "demo", **overrides):
    entry = REGISTRY.get("detector", name)
    presets = [entry.presets.get(preset, {})] if preset else []
    return entry.load()(merge_options(name, entry.specs, *presets, overrides))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------ registration
def test_plugin_registers_the_three_detectors_with_their_authors_defaults():
    for name in NAMES:
        entry = REGISTRY.get("detector", name)
        assert entry.origin == "baselines" and "demo" in entry.presets
        det = build(name, preset=None)
        assert det.net is None  # construction builds nothing
    d = REGISTRY.get("detector", "dffreq").defaults
    assert (d["input_size"], d["lr"], d["batch_size"], d["epochs"]) == (256, 1e-4, 128, 101)
    n = REGISTRY.get("detector", "npr").defaults
    assert (n["load_size"], n["input_size"], n["lr"], n["eval_crop"]) == (256, 224, 2e-4, False)
    f = REGISTRY.get("detector", "freqnet").defaults
    assert (f["load_size"], f["input_size"], f["lr"], f["epochs"]) == (256, 224, 1e-4, 101)


def test_nullspace_is_refused_in_one_line():
    if "nullspace" not in REGISTRY.names("addon"):
        pytest.skip("nullspace addon not registered")
    nullspace = REGISTRY.get("addon", "nullspace").load()
    for name in NAMES:
        with pytest.raises(BenchError, match="clip-text"):
            nullspace.check_compatible("nullspace", name, REGISTRY.get("detector", name).load())


# ------------------------------------------------------------------------ NPR
def test_npr_residual_on_a_hand_example():
    from baselines.npr_net import npr_residual

    x = torch.tensor([[1.0, 2.0, 5.0], [3.0, 4.0, 6.0], [7.0, 8.0, 9.0]])
    # blocks: [[1,2],[3,4]] anchor 1; [[5],[6]] anchor 5; [[7,8]] anchor 7; [[9]] anchor 9
    expected = torch.tensor([[0.0, 1.0, 0.0], [2.0, 3.0, 1.0], [0.0, 1.0, 0.0]])
    assert torch.equal(npr_residual(x), expected)


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (1, 3, 7, 9)])
def test_npr_residual_matches_the_formula(shape):
    """NPR = x − up(down(x)): x[i, j] − x[2⌊i/2⌋, 2⌊j/2⌋], looped in numpy."""
    from baselines.npr_net import npr_residual

    x = np.random.default_rng(1).normal(size=shape)
    expected = np.empty_like(x)
    for i in range(shape[-2]):
        for j in range(shape[-1]):
            expected[..., i, j] = x[..., i, j] - x[..., 2 * (i // 2), 2 * (j // 2)]
    np.testing.assert_allclose(npr_residual(torch.from_numpy(x)).numpy(), expected, atol=0)
    if shape[-1] % 2 == 0 and shape[-2] % 2 == 0:  # the authors' interpolate form
        t = torch.from_numpy(x)
        down = F.interpolate(t, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
        up = F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)
        np.testing.assert_allclose((t - up).numpy(), expected, atol=0)


def test_npr_residual_vanishes_on_nearest_upsampled_images():
    from baselines.npr_net import NPRNet, npr_residual

    small = torch.rand(2, 3, 8, 8)
    assert npr_residual(small.repeat_interleave(2, -2).repeat_interleave(2, -1)).abs().max() == 0
    net = NPRNet()
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(net.input_step(x), npr_residual(x) * 2 / 3)


# ------------------------------------------------------------------------ FreqNet
def _numpy_highpass(x: np.ndarray, axes: tuple[int, ...], scale: int = 4) -> np.ndarray:
    """FreqNet's filter as its paper and code state it: FFT, fftshift, zero the centred
    block [n//2 − n//scale, n//2 + n//scale) on every axis, ifftshift, inverse FFT, real."""
    spectrum = np.fft.fftshift(np.fft.fftn(x, axes=axes, norm="ortho"), axes=axes)
    index = [slice(None)] * x.ndim
    for a in axes:
        n = x.shape[a]
        index[a] = slice(n // 2 - n // scale, n // 2 + n // scale)
    spectrum[tuple(index)] = 0
    return np.fft.ifftn(np.fft.ifftshift(spectrum, axes=axes), axes=axes, norm="ortho").real


@pytest.mark.parametrize("shape", [(2, 3, 8, 12), (1, 2, 9, 7), (1, 1, 16, 16)])
def test_freqnet_spatial_highpass_matches_the_formula(shape):
    from baselines.freqnet_net import fft_highpass

    x = np.random.default_rng(2).normal(size=shape)
    ours = fft_highpass(torch.from_numpy(x), (-2, -1), 4).numpy()
    np.testing.assert_allclose(ours, _numpy_highpass(x, (-2, -1)), atol=1e-12)


@pytest.mark.parametrize("channels", [12, 13, 64])
def test_freqnet_channel_highpass_matches_the_formula(channels):
    from baselines.freqnet_net import fft_highpass

    x = np.random.default_rng(3).normal(size=(2, channels, 3, 5))
    ours = fft_highpass(torch.from_numpy(x), (1,), 4).numpy()
    np.testing.assert_allclose(ours, _numpy_highpass(x, (1,)), atol=1e-12)


def test_freqnet_highpass_drops_the_mean_and_keeps_the_nyquist_pattern():
    from baselines.freqnet_net import fft_highpass

    flat = torch.full((1, 1, 8, 8), 3.0)
    assert fft_highpass(flat, (-2, -1)).abs().max() < 1e-12
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    checker = (((i + j) % 2) * 2 - 1)[None, None].double()
    torch.testing.assert_close(fft_highpass(checker, (-2, -1)), checker)
    with pytest.raises(ValueError, match="scale > 2"):
        fft_highpass(flat, (-2, -1), 2)


def test_freqnet_frequency_conv_layer_is_the_stated_formula():
    """FCL: ReLU(Re(iFFT(W_r · Re FFT(x) + i · W_i · Im FFT(x)))), W_* 1×1 convolutions."""
    from baselines.freqnet_net import FrequencyConvLayer

    torch.manual_seed(0)
    layer = FrequencyConvLayer(4).double()
    x = np.random.default_rng(4).normal(size=(2, 4, 6, 5))
    wr = layer.realconv.weight.detach().numpy()[:, :, 0, 0]
    wi = layer.imagconv.weight.detach().numpy()[:, :, 0, 0]
    spectrum = np.fft.fft2(x, norm="ortho")
    mixed = np.einsum("oc,nchw->nohw", wr, spectrum.real) + 1j * np.einsum(
        "oc,nchw->nohw", wi, spectrum.imag
    )
    expected = np.maximum(np.fft.ifft2(mixed, norm="ortho").real, 0)
    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-12)


# ------------------------------------------------------------------------ DFFreq
def test_dffreq_subband_map_layout_and_inverse():
    """Rows are pywt's Haar cA, cH, cV, cD; each 2×2 coefficient block is 4 consecutive places."""
    import pywt

    from baselines.dffreq_net import bands_to_rows, rows_to_image

    x = np.random.default_rng(5).normal(size=(2, 3, 8, 12))
    rows = bands_to_rows(torch.from_numpy(x)).numpy()
    cA, (cH, cV, cD) = pywt.dwt2(x, "haar")
    assert rows.shape == (2, 3, 4, 24)
    for b, band in enumerate((cA, cH, cV, cD)):
        bh, bw = band.shape[-2:]
        for i in range(bh):
            for j in range(bw):
                place = (((i // 2) * (bw // 2) + j // 2) * 2 + i % 2) * 2 + j % 2
                np.testing.assert_allclose(rows[:, :, b, place], band[:, :, i, j], atol=1e-12)
    back = rows_to_image(torch.from_numpy(rows), 8, 12).numpy()
    np.testing.assert_allclose(back, x, atol=1e-12)


def test_haar_inverse_matches_pywavelets():
    import pywt

    from baselines.wavelet import dwt2, idwt2_haar

    x = np.random.default_rng(6).normal(size=(3, 6, 10))
    coeffs = pywt.dwt2(x, "haar")
    bands = [torch.from_numpy(b) for b in (coeffs[0], *coeffs[1])]
    np.testing.assert_allclose(idwt2_haar(*bands).numpy(), pywt.idwt2(coeffs, "haar"), atol=1e-12)
    np.testing.assert_allclose(
        idwt2_haar(*dwt2(torch.from_numpy(x), "haar")).numpy(), x, atol=1e-12
    )


def test_dffreq_fft_split_matches_numpy():
    from baselines.dffreq_net import fft_phase_amplitude

    x = np.random.default_rng(7).normal(size=(2, 3, 8, 10))
    amplitude, phase = fft_phase_amplitude(torch.from_numpy(x))
    spectrum = np.fft.rfft2(x)
    np.testing.assert_allclose(amplitude.numpy(), np.abs(spectrum), atol=1e-12)
    np.testing.assert_allclose(phase.numpy(), np.angle(spectrum), atol=1e-12)


class _Zero(torch.nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_dffreq_branches_reduce_to_the_input_when_their_attention_is_neutral():
    """DWT branch = IDWT(map + attn(norm(map))); FFT branch = iFFT(|X| e^{i·attn(∠X)}) · s.

    With attn ≡ 0 the DWT branch is the inverse of the DWT (the input); with attn the
    identity on the phase and s = 1 the FFT branch is the input; the block is then
    0.6·x + 0.4·x. At initialisation s = 0: the FFT branch is off.
    """
    from baselines.dffreq_net import DualFrequencyBlock

    torch.manual_seed(0)
    block = DualFrequencyBlock().double()
    x = torch.from_numpy(np.random.default_rng(8).normal(size=(2, 3, 16, 12)))
    assert torch.equal(block.fft_branch(x), torch.zeros_like(x))
    block.dwt_attn = _Zero()
    block.fft_attn = torch.nn.Identity()
    with torch.no_grad():
        block.fft_scale.fill_(1.0)
    torch.testing.assert_close(block.dwt_branch(x), x)
    torch.testing.assert_close(block.fft_branch(x), x)
    torch.testing.assert_close(block(x), x)
    with pytest.raises(ValueError, match="multiples of 4"):
        block(torch.zeros(1, 3, 10, 12))


def test_window_attention_matches_a_per_window_loop():
    """Per window w (C × n pixels, q = k = v = x_w here): out = softmax(x xᵀ t) x ⊙ GELU(x Aᵀ + b)."""
    from scipy.special import erf

    from baselines.dffreq_net import WindowChannelAttention

    torch.manual_seed(0)
    dim, window, h, w = 3, 2, 5, 6  # h is padded by reflection to 6
    attn = WindowChannelAttention(dim, window).double()
    with torch.no_grad():  # q, k, v = x; output projection = identity
        attn.qkv.weight.copy_(torch.eye(dim).repeat(3, 1)[:, :, None, None])
        attn.qkv_dwconv.weight.zero_()
        attn.qkv_dwconv.weight[:, 0, 1, 1] = 1.0
        attn.project_out.weight.copy_(torch.eye(dim)[:, :, None, None])
        attn.project_out.bias.zero_()
        attn.temperature.fill_(0.7)
    x = np.random.default_rng(9).normal(size=(1, dim, h, w))
    a = attn.gate[0].weight.detach().numpy()
    b = attn.gate[0].bias.detach().numpy()
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)), mode="reflect")
    expected = np.zeros_like(padded)
    for i in range(0, padded.shape[2], window):
        for j in range(0, w, window):
            xw = padded[0, :, i : i + window, j : j + window].reshape(dim, -1)
            logits = xw @ xw.T * 0.7
            soft = np.exp(logits - logits.max(1, keepdims=True))
            soft /= soft.sum(1, keepdims=True)
            z = xw @ a.T + b
            gate = 0.5 * z * (1 + erf(z / np.sqrt(2)))  # exact GELU
            expected[0, :, i : i + window, j : j + window] = (soft @ xw * gate).reshape(
                dim, window, window
            )
    ours = attn(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, expected[:, :, :h], atol=1e-10)


# ------------------------------------------------------------------------ sizes
def test_parameter_counts_match_the_official_architectures():
    """Counted from the authors' definitions (AIGIBench detector_codes), at their input sizes.

    Trunk (NPR, DFFreq): 3×3 stem conv 3→64 (1,728), BN (128), ResNet-50 layer1 + layer2,
    Linear(512, 1) (513). DFFreq's FreqLC block: LayerNorm(3) 6; per attention 1×1 conv
    3→9 (27), depth-wise 3×3 on 9 (81), temperature 1, projection 3→3 + bias (12), plus
    Linear(w², w²) (w = 4: 272; w = 8: 4,160); fft_scale 1: 4,681. FreqNet: 1×1 convs with
    bias 3→64, 64→64, 256→256 (×2), FCL pairs 2·64² (×2) and 2·256² (×2), layer1, layer2, fc.
    """
    from torchvision.models import resnet50

    from baselines.dffreq_net import DFFreqNet
    from baselines.freqnet_net import FreqNet
    from baselines.npr_net import NPRNet

    ref = resnet50(weights=None)
    stages = count(ref.layer1) + count(ref.layer2)
    trunk = 3 * 64 * 9 + 128 + stages + 513
    freqlc = 6 + (27 + 81 + 1 + 12 + 16 * 16 + 16) + (27 + 81 + 1 + 12 + 64 * 64 + 64) + 1
    assert freqlc == 4681
    assert count(NPRNet()) == trunk == 1_437_761
    assert count(DFFreqNet()) == trunk + freqlc == 1_442_442
    freq = (3 * 64 + 64) + (64 * 64 + 64) + 2 * (256 * 256 + 256) + 2 * 2 * 64**2 + 2 * 2 * 256**2
    assert count(FreqNet()) == freq + stages + 513 == 1_850_433
    for net, size in ((DFFreqNet(), 256), (NPRNet(), 224), (FreqNet(), 224)):
        net.eval()
        with torch.no_grad():
            assert net(torch.rand(1, 3, size, size)).shape == (1, 1)


def test_frequency_blocks_run_in_float32_under_autocast():
    from baselines.dffreq_net import DFFreqNet
    from baselines.freqnet_net import FreqNet

    torch.manual_seed(0)
    for net in (DFFreqNet(), FreqNet()):
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(torch.rand(2, 3, 32, 32))
        assert torch.isfinite(out.float()).all()
    block = DFFreqNet().input_step
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(torch.rand(1, 3, 16, 16)).dtype == torch.float32


# ------------------------------------------------------------------------ recipe
def test_lr_decays_by_0_9_after_the_11th_21st_epoch():
    """The authors' loop: after 0-based epoch e with e % 10 == 0 and e != 0, lr *= 0.9."""
    from baselines.binary_cnn import step_decay_factor

    lr, seen = 1.0, []
    for epoch in range(32):
        seen.append(lr)
        if epoch % 10 == 0 and epoch != 0:
            lr *= 0.9
    assert [step_decay_factor(e, 10, 0.9) for e in range(32)] == pytest.approx(seen)
    det = build("npr")
    det.setup(RunContext(device="cpu", log=lambda m: None))
    optimizer = det.configure_optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-4)
    scheduler = det.configure_scheduler(optimizer, steps_per_epoch=3, epochs=13)
    lrs = []
    for _ in range(13 * 3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:33] == pytest.approx([2e-4] * 33) and lrs[33:] == pytest.approx([1.8e-4] * 6)


@pytest.mark.parametrize("name", NAMES)
def test_training_step_is_finite_and_reaches_every_parameter(name):
    torch.manual_seed(0)
    det = build(name)
    det.setup(RunContext(device="cpu", log=lambda m: None))
    det.train_mode(True)
    batch = {"image": torch.randn(4, 3, 64, 64), "label": torch.tensor([0.0, 1.0, 0.0, 1.0])}
    loss = det.training_step(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for pname, p in det.net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert set(det.trainable_state()) == set(det.net.state_dict())
    probs = det.predict_proba(batch)
    assert probs.shape == (4,) and torch.all((probs > 0) & (probs < 1))


# ------------------------------------------------------------------------ inputs
def _image(w: int = 300, h: int = 280):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8))


def test_resize_square_is_torchvisions_resize():
    from torchvision import transforms as T

    from baselines.augment import ResizeSquare

    image = _image()
    ours = np.asarray(ResizeSquare(256)(image, train=True, seed=0))
    np.testing.assert_array_equal(ours, np.asarray(T.Resize((256, 256))(image)))


def test_input_chains_follow_the_authors_code():
    image = _image()
    for name, train_size, eval_size in (("npr", 224, 256), ("freqnet", 224, 256)):
        det = build(name, preset=None)
        assert det.transforms(False).describe()[0].startswith("ResizeSquare(size=256")
        assert det.transforms(True)(image, train=True, seed=1).shape == (3, train_size, train_size)
        assert det.transforms(False)(image, train=False, seed=1).shape == (3, eval_size, eval_size)
    dffreq = build("dffreq", preset=None)
    assert dffreq.transforms(False).describe()[0] == "CenterCrop(size=256)"
    assert dffreq.transforms(True)(image, train=True, seed=1).shape == (3, 256, 256)
    npr_train = " ".join(build("npr", preset=None).transforms(True).describe())
    for step in ("RandomRotation", "ColorJitter", "RandomMask"):
        assert step in npr_train
    assert "RandomMask" not in " ".join(build("freqnet", preset=None).transforms(True).describe())
    demo = build("npr")  # 256-px demo images: crop 64, no resize
    assert demo.transforms(False).describe()[0] == "CenterCrop(size=64)"


def test_bad_sizes_are_refused_in_one_line():
    with pytest.raises(BenchError, match="eval_crop"):
        build("npr", preset=None, load_size=0)
    with pytest.raises(BenchError, match="smaller than"):
        build("freqnet", preset=None, load_size=200)
    with pytest.raises(BenchError, match="multiple of 4"):
        build("dffreq", preset=None, input_size=254)
    for name, key, value in (("dffreq", "input_size", 0), ("npr", "mask_p", 1.5)):
        with pytest.raises(BenchError, match=f"{name}.{key}"):  # the declared ranges
            build(name, preset=None, **{key: value})


@pytest.mark.parametrize("name", NAMES)
def test_patchselect_replaces_every_geometry_step(name):
    if "patchselect" not in REGISTRY.names("addon"):
        pytest.skip("patchselect addon not registered")
    entry = REGISTRY.get("addon", "patchselect")
    det = build(name, preset=None)  # the papers' sizes: 256 = 8 x 32, 224 = 7 x 32
    entry.load()(entry.options()).attach(det)
    image = _image()
    for train in (True, False):
        steps = " ".join(det.transforms(train).describe())
        assert "PatchSelect" in steps
        assert not any(s in steps for s in ("ResizeSquare", "RandomCrop", "CenterCrop"))
        out = det.transforms(train)(image, train=train, seed=0)
        assert out.shape == (3, det.input_size, det.input_size)
