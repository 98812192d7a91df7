"""`bench show-patches`: the picture shows exactly what Patch Selection feeds the network.

The kept patches are checked against spectral entropies computed here with numpy, and the
tiles of the shown output against the outlined input patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.errors import BenchError
from bench.show_patches import build_step
from tests.test_robustness import png_size


def photo(size: tuple[int, int]) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).crop((100, 40, 100 + size[0], 40 + size[1]))


def entropy_by_hand(patch: np.ndarray) -> float:
    grey = patch.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    power = np.abs(np.fft.fft2(grey)) ** 2
    p = power / power.sum()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@pytest.mark.parametrize("size", [(300, 260), (150, 100)])
def test_explain_is_the_selection_the_network_gets(size):
    step = build_step("patch_select", [])
    image = photo(size)
    shown = step.explain(image)
    out = np.asarray(shown["output"])
    assert np.array_equal(out, np.asarray(step(image, train=False, seed=0)))
    grown = np.asarray(shown["input"])
    assert grown.shape[0] >= 224 and grown.shape[1] >= 224  # small images mirror-padded
    boxes = shown["boxes"]
    groups = [b[4] for b in boxes]
    assert (groups.count("highest"), groups.count("lowest")) == (24, 25)
    crops = sorted(grown[y0:y1, x0:x1].tobytes() for x0, y0, x1, y1, _ in boxes)
    tiles = [out[r * 32 : r * 32 + 32, c * 32 : c * 32 + 32] for r in range(7) for c in range(7)]
    assert crops == sorted(t.tobytes() for t in tiles)  # every tile is one outlined patch
    by_position = {grown[y0:y1, x0:x1].tobytes(): g for x0, y0, x1, y1, g in boxes}
    assert [by_position[t.tobytes()] for t in tiles] == shown["tiles"]
    entropy = {}
    for y0 in range(0, grown.shape[0] - 31, 32):
        for x0 in range(0, grown.shape[1] - 31, 32):
            entropy[(x0, y0)] = entropy_by_hand(grown[y0 : y0 + 32, x0 : x0 + 32])
    high = [entropy[(b[0], b[1])] for b in boxes if b[4] == "highest"]
    low = [entropy[(b[0], b[1])] for b in boxes if b[4] == "lowest"]
    rest = [e for xy, e in entropy.items() if xy not in {(b[0], b[1]) for b in boxes}]
    assert min(high) >= max(low) - 1e-9
    assert all(max(low) - 1e-9 <= e <= min(high) + 1e-9 for e in rest)


def test_show_patches_writes_a_readable_png(tmp_path: Path, capsys):
    source = tmp_path / "photo.png"
    photo((300, 260)).save(source)
    target = tmp_path / "patches.png"
    assert main(["show-patches", str(source), "--out", str(target)]) == 0
    width, height = png_size(target)
    assert 500 <= width <= 2000 and 300 <= height <= 1200
    assert target.stat().st_size > 50_000
    assert main(["show-patches", str(source), "--opt", "patch_select.patch_size=30"]) == 2
    assert "not a multiple of patch_size 30" in capsys.readouterr().err
    with pytest.raises(BenchError, match="has no explain"):
        build_step("center_crop", [])
