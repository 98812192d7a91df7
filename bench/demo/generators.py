"""Fake-image generators of the demo: small convolutional autoencoders trained on CPU.

Each family differs in how its decoder upsamples (or how deep its bottleneck is), because
upsampling is where real generators leave their spectral fingerprints: transposed
convolutions leave checkerboards, nearest resizing leaves blocks, pixel shuffle leaves
sub-pixel phase patterns, an 8x latent leaves the smooth look of latent-diffusion decoders.
A detector trained on some families and tested on the others therefore measures
cross-generator generalisation, the question AIGIBench Setting-II asks.

A plain L1 autoencoder trained for a few hundred steps only blurs, and blur alone would make
every family trivially detectable by the same cue. So, like StyleGAN and adversarially
trained VAE decoders, the decoder gets per-channel scaled noise inputs and the loss adds a
spectral term that rewards real-photo high-frequency energy: the nets learn to synthesise
texture, and that texture is shaped by each family's own upsampling layers.

The nets are fully convolutional, so they train on small patches and run on full crops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class FamilySpec:
    """Architecture of one generator family."""

    up: str  # "transposed" | "nearest" | "bilinear" | "pixelshuffle"
    levels: int  # number of 2x down/up-sampling stages
    latent: int  # bottleneck channels
    width: int = 12  # channels after the first downsampling; doubles per level


FAMILIES: dict[str, FamilySpec] = {
    "ae_transposed": FamilySpec(up="transposed", levels=2, latent=32),
    "ae_nearest": FamilySpec(up="nearest", levels=2, latent=32),
    "ae_bilinear": FamilySpec(up="bilinear", levels=2, latent=32),
    "ae_pixelshuffle": FamilySpec(up="pixelshuffle", levels=2, latent=32),
    "ae_latent8": FamilySpec(up="nearest", levels=3, latent=16),
}


def _upsample(kind: str, c_in: int, c_out: int) -> nn.Module:
    """A 2x upsampling layer mapping c_in to c_out channels, in the family's style."""
    if kind == "transposed":
        # kernel 3, stride 2: uneven kernel overlap, the classic checkerboard source.
        return nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)
    if kind == "nearest":
        up = nn.Upsample(scale_factor=2, mode="nearest")
        return nn.Sequential(up, nn.Conv2d(c_in, c_out, 3, 1, 1))
    if kind == "bilinear":
        up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        return nn.Sequential(up, nn.Conv2d(c_in, c_out, 3, 1, 1))
    if kind == "pixelshuffle":
        return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 3, 1, 1), nn.PixelShuffle(2))
    raise ValueError(f"unknown upsampling {kind!r}")


class NoiseInput(nn.Module):
    """Adds Gaussian noise with a learned per-channel strength (StyleGAN's noise inputs)."""

    def __init__(self, channels: int, init: float = 0.05) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.full((1, channels, 1, 1), init))

    def forward(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return x + self.strength * noise


class ConvAutoencoder(nn.Module):
    """Strided-conv encoder, bottleneck, and a decoder of one upsampling style, with a noise
    input before every upsampling layer."""

    def __init__(self, spec: FamilySpec) -> None:
        super().__init__()
        chans = [spec.width * 2**i for i in range(spec.levels)]
        enc: list[nn.Module] = []
        c = 3
        for c_next in chans:
            enc += [nn.Conv2d(c, c_next, 3, 2, 1), nn.SiLU()]
            c = c_next
        enc.append(nn.Conv2d(c, spec.latent, 1))
        self.encoder = nn.Sequential(*enc)
        self.stem = nn.Sequential(nn.Conv2d(spec.latent, c, 3, 1, 1), nn.SiLU())
        outs = [*reversed(chans[:-1]), 3]
        self.noises = nn.ModuleList()
        self.ups = nn.ModuleList()
        for c_next in outs:
            self.noises.append(NoiseInput(c))
            self.ups.append(_upsample(spec.up, c, c_next))
            c = c_next
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """x in [0, 1], Bx3xHxW with H, W divisible by 2**levels; noise drawn from `gen`."""
        h = self.stem(self.encoder(x * 2 - 1))
        for i, (noise, up) in enumerate(zip(self.noises, self.ups, strict=True)):
            h = up(noise(h, gen))
            if i < len(self.ups) - 1:
                h = self.act(h)
        return h * 0.5 + 0.5


def make_generator(family: str) -> ConvAutoencoder:
    """A freshly initialised net of `family` (seed torch's RNG first for reproducibility).

    Channels-last layout: oneDNN's CPU convolutions run about a third faster with it.
    """
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return ConvAutoencoder(FAMILIES[family]).to(memory_format=torch.channels_last)


def _log_spectrum(x: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.fft.rfft2(x, norm="ortho").abs() + 1e-3)


def _loss(y: torch.Tensor, x: torch.Tensor, spectral_weight: float) -> torch.Tensor:
    """L1 plus L1 between log amplitude spectra (the latter rewards high-frequency energy
    where plain L1 rewards blur, the role adversarial losses play in real generators)."""
    loss = (y - x).abs().mean()
    if spectral_weight:
        loss = loss + spectral_weight * (_log_spectrum(y) - _log_spectrum(x)).abs().mean()
    return loss


def train_generator(
    model: ConvAutoencoder,
    pool: np.ndarray,
    *,
    steps: int,
    batch: int,
    patch: int,
    seed: int,
    lr: float = 2e-3,
    spectral_weight: float = 0.1,
    on_step: Callable[[], None] | None = None,
) -> ConvAutoencoder:
    """Fit `model` to reconstruct random `patch`-sized sub-crops of the NxHxWx3 uint8 `pool`.

    Patches keep the CPU cost small; everything random comes from a generator seeded with
    `seed`, so the result depends only on the arguments (at a fixed torch thread count).
    """
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(pool).permute(0, 3, 1, 2)  # uint8, NCHW
    n, _, h, w = data.shape
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    model.train()
    for _ in range(steps):
        idx = torch.randint(n, (batch,), generator=gen).tolist()
        ys = torch.randint(h - patch + 1, (batch,), generator=gen).tolist()
        xs = torch.randint(w - patch + 1, (batch,), generator=gen).tolist()
        x = torch.stack(
            [
                data[i, :, y : y + patch, x0 : x0 + patch]
                for i, y, x0 in zip(idx, ys, xs, strict=True)
            ]
        )
        x = (x.float() / 255.0).contiguous(memory_format=torch.channels_last)
        loss = _loss(model(x, gen), x, spectral_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step()
    model.eval()
    return model


@torch.no_grad()
def generate(model: ConvAutoencoder, images: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """The model's outputs for NxHxWx3 uint8 `images`, as float32 NHWC in [0, 1].

    Noise comes from `gen`; call with the same chunks in the same order to get the same bytes.
    """
    model.eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = x.contiguous(memory_format=torch.channels_last)
    return model(x, gen).clamp(0, 1).permute(0, 2, 3, 1).numpy()
