"""Building the demo benchmark: crops, generator training, fakes, PNG files, manifest.

Module level stays import-light (stdlib only); numpy, PIL and torch load inside the build.
The build is deterministic (fixed seeds, fixed torch thread count, deterministic
algorithms, fixed PNG settings) and atomic (written to a temp folder next to the final one,
renamed into place once complete), and cached under a key holding everything the bytes
depend on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.cache import cache_dir

#: Bump whenever crops, generators, post-processing or file layout change meaning. (The
#: cache key also holds a digest of this package's code, so edits never serve stale data.)
BUILD_VERSION = 1

#: The families a detector trains on (Setting-II: train on few, test on all). One
#: transposed-convolution and one resize-convolution decoder: the two upsampling styles
#: most common in real generators, leaving bilinear, pixel-shuffle and the 8x latent unseen.
TRAIN_FAMILIES: tuple[str, ...] = ("ae_transposed", "ae_nearest")
#: Every family; all of them appear under test/.
ALL_FAMILIES: tuple[str, ...] = (
    "ae_transposed",
    "ae_nearest",
    "ae_bilinear",
    "ae_pixelshuffle",
    "ae_latent8",
)

#: torch intra-op threads during the build: float reductions depend on it. One thread: the
#: nets are small, so a second thread buys little on an idle machine, while on a busy one
#: every op waits at a barrier for a descheduled peer (measured 3-8x slower builds).
BUILD_THREADS = 1
#: Crops per forward pass; fixed, because the noise stream and kernels depend on it.
CHUNK = 16
PNG_COMPRESS_LEVEL = 1  # fast; any fixed level gives identical bytes from the same zlib

_CODE_FILES = ("build.py", "crops.py", "generators.py", "captions.json")


@dataclass(frozen=True)
class DemoSizes:
    """Everything size-like the demo's content depends on (part of the cache key)."""

    train_per_family: int = 200  # real crops (and as many fakes) per training family
    test_per_family: int = 200  # real crops (and as many fakes) per family under test/
    pool: int = 48  # real crops the generators learn from (never written out)
    steps: int = 200  # generator training steps
    batch: int = 8
    patch: int = 48  # side of the training sub-crops (a multiple of 8)


def _major_minor(dist: str) -> str:
    try:
        return ".".join(metadata.version(dist).split(".")[:2])
    except metadata.PackageNotFoundError:
        return "absent"


def _versions() -> dict[str, str]:
    """Library versions whose numerics reach the bytes (read without importing them)."""
    return {
        d: _major_minor(d) for d in ("torch", "pillow", "numpy", "scikit-image", "scikit-learn")
    }


def _code_digest() -> str:
    """Digest of the demo's own code and captions."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODE_FILES:
        h.update(name.encode() + b"\0" + (here / name).read_bytes())
    return h.hexdigest()[:16]


def demo_root(seed: int = 0, sizes: DemoSizes | None = None) -> Path:
    """Where the demo of `seed` (and `sizes`) lives, or will live once built."""
    sizes = sizes or DemoSizes()
    key = (BUILD_VERSION, seed, asdict(sizes), _versions(), _code_digest(), BUILD_THREADS)
    return cache_dir("demo", *key) / "data"


def family_seed(seed: int, family: str) -> int:
    """A family's own seed, derived from the build seed (stable across Python runs)."""
    digest = hashlib.sha256(f"nsnet-demo:{seed}:{family}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def is_complete(root: Path) -> bool:
    """A finished build: the manifest is written last, and the folder appears by rename."""
    return (root / "manifest.json").is_file()


@contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
    """Fixed thread count, deterministic kernels, private RNG state; restored on exit."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def _match_mean(fake: Any, real: Any) -> Any:
    """Shift each channel of float fakes (NHWC, [0, 1]) to its real crop's mean; as uint8.

    Removes the global colour/brightness drift of briefly trained autoencoders, so the
    classes differ in texture and spectrum rather than in a cue any colour histogram sees.
    """
    import numpy as np

    real_mean = real.mean(axis=(1, 2), keepdims=True, dtype=np.float32) / np.float32(255)
    fake = fake + (real_mean - fake.mean(axis=(1, 2), keepdims=True, dtype=np.float32))
    return np.rint(np.clip(fake, 0.0, 1.0) * np.float32(255)).astype(np.uint8)


def _save_png(arr: Any, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr, "RGB").save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _build_into(dest: Path, seed: int, sizes: DemoSizes, progress: bool) -> None:
    """Write the whole benchmark into the empty folder `dest`; manifest.json last."""
    import numpy as np
    import torch
    from PIL import Image
    from tqdm import tqdm

    from bench.demo import crops
    from bench.demo.generators import FAMILIES, generate, make_generator, train_generator

    if tuple(FAMILIES) != ALL_FAMILIES:
        raise RuntimeError("generators.FAMILIES and build.ALL_FAMILIES disagree")
    captions_by_source = crops.load_captions()
    images = {name: Image.fromarray(crops.load_source(name)) for name in crops.SOURCES}
    shapes = {name: (im.height, im.width) for name, im in images.items()}

    # The crop plan, drawn in a fixed order from one RNG: generator pool first, then every
    # (split, family). One shared `taken` set makes all crops distinct.
    rng = np.random.default_rng([seed, 0x5EED])
    taken: set[crops.CropSpec] = set()
    pool_specs = crops.sample_crop_specs(sizes.pool, rng, shapes, taken)
    plan: dict[str, list[tuple[str, list[crops.CropSpec]]]] = {f: [] for f in ALL_FAMILIES}
    for family in TRAIN_FAMILIES:
        plan[family].append(
            ("train", crops.sample_crop_specs(sizes.train_per_family, rng, shapes, taken))
        )
    for family in ALL_FAMILIES:
        plan[family].append(
            ("test", crops.sample_crop_specs(sizes.test_per_family, rng, shapes, taken))
        )
    pool = np.stack([crops.render_crop(images[s.source], s) for s in pool_specs])

    n_images = sum(len(specs) for parts in plan.values() for _, specs in parts)
    bar = tqdm(
        total=len(ALL_FAMILIES) * sizes.steps + n_images,
        desc="building demo benchmark",
        unit="it",
        disable=not progress,
    )
    records: dict[str, dict[str, Any]] = {}
    captions: dict[str, str] = {}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    with bar, _deterministic_torch(BUILD_THREADS):
        for family in ALL_FAMILIES:
            fseed = family_seed(seed, family)
            torch.manual_seed(fseed)
            model = make_generator(family)
            bar.set_postfix_str(f"train {family}")
            train_generator(
                model,
                pool,
                steps=sizes.steps,
                batch=sizes.batch,
                patch=sizes.patch,
                seed=fseed,
                on_step=lambda: bar.update(1),
            )
            bar.set_postfix_str(f"generate {family}")
            noise = torch.Generator().manual_seed(fseed + 1)
            for split, specs in plan[family]:
                for folder in ("0_real", "1_fake"):
                    (dest / split / family / folder).mkdir(parents=True, exist_ok=True)
                for start in range(0, len(specs), CHUNK):
                    chunk = specs[start : start + CHUNK]
                    reals = np.stack([crops.render_crop(images[s.source], s) for s in chunk])
                    fakes = _match_mean(generate(model, reals, noise), reals)
                    for j, spec in enumerate(chunk):
                        name = f"{start + j:06d}.png"
                        for label, folder, arr in (
                            (0, "0_real", reals[j]),
                            (1, "1_fake", fakes[j]),
                        ):
                            rel = f"{split}/{family}/{folder}/{name}"
                            _save_png(arr, dest / rel)
                            captions[rel] = captions_by_source[spec.source]
                            records[rel] = {"split": split, "family": family, "label": label}
                            records[rel].update(spec.to_json())
                    bar.update(len(chunk))
                counts.setdefault(split, {})[family] = {"real": len(specs), "fake": len(specs)}

    manifest = {
        "build_version": BUILD_VERSION,
        "seed": seed,
        "sizes": asdict(sizes),
        "versions": _versions(),
        "code_digest": _code_digest(),
        "torch_threads": BUILD_THREADS,
        "families": list(ALL_FAMILIES),
        "train_families": list(TRAIN_FAMILIES),
        "test_families": list(ALL_FAMILIES),
        "architectures": {f: asdict(FAMILIES[f]) for f in ALL_FAMILIES},
        "family_seeds": {f: family_seed(seed, f) for f in ALL_FAMILIES},
        "counts": counts,
        "generator_training_crops": [s.to_json() for s in pool_specs],
        "images": records,
    }
    _write_json(dest / "captions.json", captions)
    _write_json(dest / "manifest.json", manifest)


def _remove_stale_temps(parent: Path, max_age_s: float = 6 * 3600) -> None:
    """Delete leftovers of builds killed long ago (recent ones may still be running)."""
    now = time.time()
    for p in [*parent.glob(".building-*"), *parent.glob(".old-*")]:
        try:
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def build_demo(
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    sizes: DemoSizes | None = None,
) -> Path:
    """Build the demo benchmark of `seed` unless a complete one is cached; return its root.

    The root holds train/<family>/{0_real,1_fake}/*.png, test/<family>/{0_real,1_fake}/*.png,
    captions.json (relative path -> caption of the source photo) and manifest.json (seed,
    families, counts, and the source, crop box and flip of every image). `sizes` shrinks
    the build, for tests.
    """
    sizes = sizes or DemoSizes()
    final = demo_root(seed, sizes)
    if is_complete(final) and not force:
        return final
    parent = final.parent
    _remove_stale_temps(parent)
    tmp = parent / f".building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _build_into(tmp, seed, sizes, progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        if is_complete(final) and not force:  # a concurrent build finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        old = parent / f".old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        final.rename(old)
    try:
        tmp.rename(final)
    except OSError:  # lost a race with a concurrent build: keep the winner's
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_complete(final):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final
