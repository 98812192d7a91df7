"""Shared test set-up: offline hubs, a private cache folder, tiny image trees."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Nothing in the tests may wait on a model hub (HF waits ~49 s before failing offline).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test session gets its own BENCH_CACHE unless the caller chose one.

    It is unset again when the session ends: mutmut runs several sessions in one process
    (and forks its mutant runs from it), and a later session must not write into the
    first one's folder, which pytest's rotation of old temporary folders may have removed.
    """
    if "BENCH_CACHE" in os.environ:
        yield
        return
    os.environ["BENCH_CACHE"] = str(tmp_path_factory.mktemp("bench-cache"))
    yield
    os.environ.pop("BENCH_CACHE", None)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: one thread is as fast, and does not spin against a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tree(
    root: Path,
    generators: tuple[str, ...] = ("gan_a", "gan_b"),
    per_class: int = 12,
    size: int = 96,
    seed: int = 0,
) -> Path:
    """A 0_real/1_fake tree where fakes carry a real up-sampling trace (nearest, factor 2).

    Reals are smooth random textures; a fake is a texture drawn the same way, decimated and
    re-expanded, the artefact of a generator's up-sampling layer.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for gen in generators:
        for label in ("0_real", "1_fake"):
            folder = root / gen / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = rng.normal(128, 45, (size, size, 3))
                if label == "1_fake":
                    image = np.repeat(np.repeat(image[::2, ::2], 2, axis=0), 2, axis=1)
                Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two generators, 12 real + 12 fake 96x96 PNGs each."""
    return make_tree(tmp_path_factory.mktemp("tiny-tree"))


@pytest.fixture(scope="session")
def tiny_test_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out images drawn with another seed, for checking that a detector learned."""
    return make_tree(tmp_path_factory.mktemp("tiny-test-tree"), seed=1)
