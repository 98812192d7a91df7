"""The embedded demo benchmark: determinism, layout, leakage, captions, format, difficulty.

One default-size build (into a private cache root) is shared by the whole file; the
determinism and atomicity checks use reduced builds, which cost seconds.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.demo import ALL_FAMILIES, TRAIN_FAMILIES, DemoSizes, build_demo, demo_root
from bench.demo import build as demo_build
from bench.demo.crops import SOURCES, load_captions

SMALL = DemoSizes(train_per_family=6, test_per_family=6, pool=6, steps=8, batch=4, patch=32)
HELD_OUT = tuple(f for f in ALL_FAMILIES if f not in TRAIN_FAMILIES)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default demo (seed 0), built once in the session's cache (shared with the CLI test)."""
    import torch

    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    root = build_demo(seed=0, progress=False)
    assert root == demo_root(0)
    # Cached: a second call returns the same folder without rebuilding.
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert build_demo(seed=0, progress=False) == root
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    # The build restores torch's global settings.
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    return root


@pytest.fixture(scope="module")
def manifest(demo: Path) -> dict:
    return json.loads((demo / "manifest.json").read_text(encoding="utf-8"))


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _pngs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def test_same_seed_gives_identical_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digests = []
    for name in ("a", "b"):
        monkeypatch.setenv("BENCH_CACHE", str(tmp_path / name))
        digests.append(_digests(build_demo(seed=3, progress=False, sizes=SMALL)))
    assert digests[0] == digests[1]
    assert len(digests[0]) == 2 + 2 * 6 * (len(TRAIN_FAMILIES) + len(ALL_FAMILIES))
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "c"))
    other = _digests(build_demo(seed=4, progress=False, sizes=SMALL))
    fakes = [k for k in other if "/1_fake/" in k]
    assert all(other[k] != digests[0][k] for k in fakes)


def test_interrupted_build_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    saved = []
    real_save = demo_build._save_png

    def failing_save(arr: np.ndarray, path: Path) -> None:
        if len(saved) == 10:
            raise KeyboardInterrupt
        saved.append(path)
        real_save(arr, path)

    monkeypatch.setattr(demo_build, "_save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        build_demo(seed=5, progress=False, sizes=SMALL)
    root = demo_root(5, SMALL)
    assert not root.exists()
    assert list(root.parent.iterdir()) == []  # the temp folder is gone too


def test_module_is_import_light() -> None:
    code = "import sys, bench.demo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_layout_and_counts(demo: Path, manifest: dict) -> None:
    assert set(ALL_FAMILIES) >= set(TRAIN_FAMILIES) and len(ALL_FAMILIES) >= 5
    assert len(TRAIN_FAMILIES) == 2
    assert sorted(p.name for p in (demo / "train").iterdir()) == sorted(TRAIN_FAMILIES)
    assert sorted(p.name for p in (demo / "test").iterdir()) == sorted(ALL_FAMILIES)
    for split, families, minimum in (("train", TRAIN_FAMILIES, 200), ("test", ALL_FAMILIES, 200)):
        for family in families:
            assert sorted(p.name for p in (demo / split / family).iterdir()) == ["0_real", "1_fake"]
            n_real = len(list((demo / split / family / "0_real").glob("*.png")))
            n_fake = len(list((demo / split / family / "1_fake").glob("*.png")))
            assert n_real >= minimum and n_fake >= minimum, (split, family, n_real, n_fake)
            assert manifest["counts"][split][family] == {"real": n_real, "fake": n_fake}
    assert manifest["seed"] == 0
    assert manifest["train_families"] == list(TRAIN_FAMILIES)
    assert manifest["families"] == list(ALL_FAMILIES)
    assert set(manifest["images"]) == set(_pngs(demo))


def test_no_leakage_and_no_duplicates(manifest: dict) -> None:
    def ident(rec: dict) -> tuple:
        return (rec["source"], tuple(rec["box"]), rec["flip"])

    images = manifest["images"]
    reals = {rel: ident(rec) for rel, rec in images.items() if rec["label"] == 0}
    fakes = {rel: ident(rec) for rel, rec in images.items() if rec["label"] == 1}
    # Every crop is used once as a real and once as the source of a fake, never again.
    assert len(set(reals.values())) == len(reals)
    assert len(set(fakes.values())) == len(fakes)
    # Matched pairs: the fake with a real's name was made from that very real crop.
    for rel, crop in reals.items():
        assert fakes[rel.replace("/0_real/", "/1_fake/")] == crop
    train = {ident(r) for r in images.values() if r["split"] == "train"}
    test = {ident(r) for r in images.values() if r["split"] == "test"}
    assert train and test and not train & test
    # The generators never saw a benchmark crop.
    pool = {(r["source"], tuple(r["box"]), r["flip"]) for r in manifest["generator_training_crops"]}
    assert pool and not pool & (train | test)
    assert {r["source"] for r in images.values()} <= set(SOURCES)


def test_every_image_has_its_source_caption(demo: Path, manifest: dict) -> None:
    captions = json.loads((demo / "captions.json").read_text(encoding="utf-8"))
    assert set(captions) == set(_pngs(demo))
    by_source = load_captions()
    for rel, rec in manifest["images"].items():
        assert captions[rel] == by_source[rec["source"]]
    assert all(isinstance(c, str) and len(c.split()) >= 4 for c in by_source.values())


def test_all_images_are_256_rgb_png(demo: Path) -> None:
    files = [p for p in demo.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".png", ".json"}
    for p in files:
        if p.suffix == ".png":
            with open(p, "rb") as fh:
                assert fh.read(8) == PNG_MAGIC, p
    with Image.open(next((demo / "test").rglob("*.png"))) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (256, 256))


def _spectrum(y: np.ndarray, bins: int = 48) -> np.ndarray:
    """Radially averaged log power spectrum of a 3x3 high-pass residual of luminance `y`."""
    from scipy import ndimage

    residual = y - ndimage.uniform_filter(y, 3)
    power = np.abs(np.fft.fftshift(np.fft.fft2(residual))) ** 2
    h, w = power.shape
    yy, xx = np.indices(power.shape)
    radius = np.hypot(yy - h // 2, xx - w // 2) / (min(h, w) / 2)
    ring = np.minimum((radius * bins).astype(int), bins - 1).ravel()
    mean = np.bincount(ring, power.ravel(), bins) / np.bincount(ring, None, bins)
    return np.log(mean + 1e-8)


@pytest.fixture(scope="module")
def features(demo: Path) -> dict[str, dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """kind -> (split, family) -> (X, y) for the train families and the held-out families."""
    out: dict[str, dict] = {"spectrum": {}, "colour": {}}
    groups = [("train", f) for f in TRAIN_FAMILIES] + [("test", f) for f in HELD_OUT]
    for split, family in groups:
        spec, colour, labels = [], [], []
        for label, folder in ((0, "0_real"), (1, "1_fake")):
            for p in sorted((demo / split / family / folder).glob("*.png")):
                with Image.open(p) as im:
                    rgb = np.asarray(im, dtype=np.float64)
                spec.append(_spectrum(rgb @ np.array([0.299, 0.587, 0.114])))
                colour.append(np.concatenate([rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1))]))
                labels.append(label)
        out["spectrum"][split, family] = (np.array(spec), np.array(labels))
        out["colour"][split, family] = (np.array(colour), np.array(labels))
    return out


def _held_out_accuracies(data: dict[tuple[str, str], tuple]) -> dict[str, float]:
    """Fit on the training families' train/ split, score each held-out family's test/."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([data["train", f][0] for f in TRAIN_FAMILIES])
    y = np.concatenate([data["train", f][1] for f in TRAIN_FAMILIES])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x, y)
    return {f: float(clf.score(*data["test", f])) for f in HELD_OUT}


def test_independent_spectral_learner_beats_chance_on_unseen_families(features: dict) -> None:
    acc = _held_out_accuracies(features["spectrum"])
    print("spectral learner, held-out families:", {f: round(a, 3) for f, a in acc.items()})
    assert float(np.mean(list(acc.values()))) > 0.6, acc
    # ...and the demo is not trivial: some unseen family is not solved by this cue.
    assert min(acc.values()) < 0.95, acc


def test_colour_statistics_alone_do_not_separate(features: dict) -> None:
    acc = _held_out_accuracies(features["colour"])
    print("colour-moment learner, held-out families:", {f: round(a, 3) for f, a in acc.items()})
    assert float(np.mean(list(acc.values()))) < 0.7, acc
