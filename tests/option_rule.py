"""The option rule's shared parts: the check registry and cheap ways to build components.

Every option a registered component declares (registry.toml, or ``register(options=...)``)
has an effect check: a function showing that changing the option changes what its doc says
it changes (a shape, a pixel, a learning rate, a loss term), so an option cannot silently
become a no-op. An option whose effect only a training run or the runner can show has an
exemption instead: the reason, naming the test (``tests/FILE.py::NAME``) that pins it.
``tests/test_option_effects.py`` holds the meta-test that enumerates the registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.options import merge_options
from bench.plugins import get_registry

#: "kind:name.option" -> check(env); filled by the test_option_effects*.py modules.
CHECKS: dict[str, Callable[[Any], None]] = {}
#: "kind:name.option" -> why it has no check of its own, naming the test that pins it.
EXEMPT: dict[str, str] = {}

#: Options that every detector hands to the runner, which reads them the same way for all.
RUNNER_LOOP = (
    "loop length / batch: bench.runner builds TrainData from the detector's batch_size and "
    "epochs options; pinned by tests/test_option_effects.py::test_runner_reads_batch_size_and_epochs"
)
RUNNER_PRECISION = (
    "bench.runner hands the detector's precision option to choose_device (the paper preset's "
    "fp32, the flag's override); pinned by "
    "tests/test_runner.py::test_precision_is_chosen_checked_and_recorded"
)
BACKBONE_MODEL = (
    "the open_clip model name: only one model config (bench-tiny-vit) can be built offline; "
    "loading by name, tag, file and local-dir is pinned by "
    "tests/test_clip_backbone.py::test_local_dir_with_and_without_open_clip_config"
)
BACKBONE_WEIGHTS = (
    "where the weights come from (no weights can be downloaded here); pinned by "
    "tests/test_clip_backbone.py::test_checkpoint_file_round_trip"
)


def checks(*keys: str) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the effect check of each "kind:name.option" key."""

    def register(fn: Callable) -> Callable:
        for key in keys:
            assert key not in CHECKS, f"two checks for {key}"
            CHECKS[key] = fn
        return fn

    return register


def exempt(reason: str, *keys: str) -> None:
    for key in keys:
        assert key not in EXEMPT, f"two exemptions for {key}"
        EXEMPT[key] = reason


def options(kind: str, name: str, preset: str | None = "demo", **overrides: Any) -> dict:
    """Declared defaults < preset < overrides, checked as the runner checks them."""
    entry = get_registry().get(kind, name)
    presets = [entry.presets.get(preset, {})] if preset else []
    return merge_options(name, entry.specs, *presets, overrides)


def make(kind: str, name: str, preset: str | None = "demo", **overrides: Any) -> Any:
    """The component built from its checked options (construction only: cheap)."""
    entry = get_registry().get(kind, name)
    opts = options(kind, name, preset, **overrides)
    return entry.load()(**opts) if kind == "transform" else entry.load()(opts)


def declared_keys() -> list[str]:
    registry = get_registry()
    return sorted(
        f"{kind}:{entry.name}.{key}"
        for kind in ("detector", "addon", "transform", "perturbation")
        for entry in registry.entries(kind)
        for key in entry.specs
    )


def photo(size: int = 256, seed: int = 0) -> Any:
    """A crop of scikit-image's astronaut (real texture: entropies differ patch to patch)."""
    from PIL import Image
    from skimage import data

    pixels = data.astronaut()
    top = 40 + seed * 7
    return Image.fromarray(np.ascontiguousarray(pixels[top : top + size, 100 : 100 + size]))


def pixels(x: Any) -> np.ndarray:
    """A PIL image or a tensor as a float array, to compare outputs."""
    if hasattr(x, "detach"):
        return x.detach().double().numpy()
    return np.asarray(x, dtype=np.float64)


def same(a: Any, b: Any) -> bool:
    a, b = pixels(a), pixels(b)
    return a.shape == b.shape and np.allclose(a, b, atol=1e-6)


def file_in_tests(reference: str) -> bool:
    """Whether ``tests/FILE.py::NAME`` names a test function that exists."""
    path, _, name = reference.partition("::")
    full = os.path.join(os.path.dirname(os.path.dirname(__file__)), path)
    return os.path.isfile(full) and f"def {name}(" in open(full, encoding="utf-8").read()
