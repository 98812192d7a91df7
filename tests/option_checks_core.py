"""The option rule's checks of the components that need no CLIP: Patch Selection,
perturbations, SAFE, the spectral baseline; and the runner-level exemptions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests import option_rule as rule
from tests.option_rule import checks, exempt, make, photo, same


# ----------------------------------------------------------------------------- Patch Selection
def _tile(kind: str, **over):
    """The Patch Selection step, as the transform or as the addon's geometry for SAFE (256)."""
    if kind == "transform":
        return make("transform", "patch_select", **over)
    safe = make("detector", "safe", input_size=224)  # 7 x 7 patches: odd_tile matters
    return make("addon", "patchselect", **over).geometry(safe, train=True)


def _patch_check(kind: str, option: str, a, b, size: int = 256):
    def check(_tree):
        image = photo(size)
        out_a = _tile(kind, **{option: a})(image, train=True, seed=1)
        out_b = _tile(kind, **{option: b})(image, train=True, seed=1)
        assert not same(out_a, out_b), f"{kind}.{option} {a} vs {b}"

    return check


for _kind, _name in (("transform", "patch_select"), ("addon", "patchselect")):
    checks(f"{_kind}:{_name}.odd_tile")(_patch_check(_kind, "odd_tile", "high", "low", 300))
    checks(f"{_kind}:{_name}.entropy_input")(
        _patch_check(_kind, "entropy_input", "luma", "rgb-mean")
    )
    checks(f"{_kind}:{_name}.shuffle")(_patch_check(_kind, "shuffle", True, False))
    checks(f"{_kind}:{_name}.patch_size")(_patch_check(_kind, "patch_size", 32, 16))


@checks("transform:patch_select.out_size")
def _out_size(_tree):
    for side in (64, 128):
        assert make("transform", "patch_select", out_size=side)(
            photo(), train=True, seed=0
        ).size == (
            side,
            side,
        )


@checks("transform:patch_select.small_image", "addon:patchselect.small_image")
def _small_image(_tree):
    from bench.errors import BenchError

    small = photo(100)  # fewer whole 32-px patches than a 224 (or 256) tiling needs
    for kind in ("transform", "addon"):
        reflect = _tile(kind, small_image="reflect")(small, train=True, seed=0)
        resize = _tile(kind, small_image="resize")(small, train=True, seed=0)
        assert reflect.size == resize.size and not same(reflect, resize)
        with pytest.raises(BenchError):
            _tile(kind, small_image="error")(small, train=True, seed=0)


# ----------------------------------------------------------------------------- perturbations
def _perturbed(name: str, level, **over):
    return make("perturbation", name, **over).apply(photo(64), level, np.random.default_rng(0))


@checks(
    "perturbation:jpeg.levels",
    "perturbation:resize.levels",
    "perturbation:blur.levels",
    "perturbation:noise.levels",
)
def _levels(_tree):
    from bench.perturb import resolve_sweep
    from bench.plugins import get_registry

    registry = get_registry()
    for name in ("jpeg", "resize", "blur", "noise"):
        declared = registry.get("perturbation", name).defaults["levels"]
        swept = resolve_sweep(registry, {name: {}}).items[0].levels
        assert sorted(swept) == sorted(declared)
        given = resolve_sweep(registry, {name: {}}, options={name: {"levels": [declared[-1]]}})
        assert given.items[0].levels == [declared[-1]]


@checks("perturbation:jpeg.subsampling")
def _subsampling(_tree):
    assert not same(_perturbed("jpeg", 75, subsampling="4:4:4"), _perturbed("jpeg", 75))


@checks("perturbation:resize.filter")
def _filter(_tree):
    assert not same(_perturbed("resize", 0.5, filter="nearest"), _perturbed("resize", 0.5))


@checks("perturbation:resize.restore")
def _restore(_tree):
    assert _perturbed("resize", 0.5).size == (32, 32)
    assert _perturbed("resize", 0.5, restore=True).size == (64, 64)


@checks("perturbation:blur.truncate")
def _truncate(_tree):
    assert not same(_perturbed("blur", 3.0, truncate=1.0), _perturbed("blur", 3.0))


# ----------------------------------------------------------------------------- SAFE
def _safe_train(seed: int = 0, **over):
    neutral = {"rotation": 0.0, "jitter": 0.0, "mask_p": 0.0}
    chain = make("detector", "safe", **{**neutral, **over}).transforms(train=True)
    return chain(photo(), train=True, seed=seed)


@checks("detector:safe.input_size")
def _safe_input_size(_tree):
    for side in (64, 96):
        out = make("detector", "safe", input_size=side).transforms(train=False)(
            photo(), train=False, seed=0
        )
        assert tuple(out.shape) == (3, side, side)


@checks(
    "detector:safe.rotation",
    "detector:safe.jitter",
    "detector:safe.mask_p",
    "detector:safe.mask_patch",
    "detector:safe.mask_ratio_max",
)
def _safe_augmentations(_tree):
    base = _safe_train()
    assert not same(_safe_train(rotation=90.0), base)
    assert not same(_safe_train(jitter=0.5), base)
    masked = _safe_train(mask_p=1.0, mask_ratio_max=0.75)
    assert not same(masked, base)
    assert same(_safe_train(mask_p=1.0, mask_ratio_max=0.0), base)  # ratio 0: nothing masked
    assert not same(_safe_train(mask_p=1.0, mask_patch=8), masked)


@checks("detector:safe.wavelet")
def _safe_wavelet(_tree):
    from baselines.wavelet import HighFrequencyInput

    outs = []
    for wavelet in ("bior1.3", "haar"):
        torch.manual_seed(0)
        detector = make("detector", "safe", wavelet=wavelet)
        detector.setup(rule_ctx())
        (step,) = [m for m in detector.net.modules() if isinstance(m, HighFrequencyInput)]
        assert step.wavelet == wavelet
        outs.append(step(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))))
    assert not same(*outs)


@checks("detector:safe.lr", "detector:safe.lr_batch", "detector:safe.weight_decay")
def _safe_optimizer(_tree):
    detector = make("detector", "safe", lr=4e-3, lr_batch=64, batch_size=32, weight_decay=0.05)
    detector.setup(rule_ctx())
    optimizer = detector.configure_optimizer()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4e-3 * 32 / 64)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]


@checks("detector:safe.warmup_epochs", "detector:safe.min_lr")
def _safe_schedule(_tree):
    def lrs(**over):
        detector = make("detector", "safe", lr=1e-2, lr_batch=32, batch_size=32, **over)
        detector.setup(rule_ctx())
        optimizer = detector.configure_optimizer()
        scheduler = detector.configure_scheduler(optimizer, steps_per_epoch=4, epochs=3)
        out = []
        for _ in range(12):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    one, two = lrs(warmup_epochs=1, min_lr=1e-4), lrs(warmup_epochs=2, min_lr=1e-4)
    assert one[:5] == pytest.approx([0.0, 2.5e-3, 5e-3, 7.5e-3, 1e-2])  # 4 warm-up steps
    assert two[8] == pytest.approx(1e-2)  # 8 warm-up steps
    low = lrs(warmup_epochs=1, min_lr=5e-3)
    # last step: cosine at progress 7/8 between the peak and the floor
    cos = 0.5 * (1 + math.cos(math.pi * 7 / 8))
    assert one[-1] == pytest.approx(1e-4 + (1e-2 - 1e-4) * cos)
    assert low[-1] == pytest.approx(5e-3 + (1e-2 - 5e-3) * cos)


@checks("detector:safe.label_smoothing")
def _safe_smoothing(_tree):
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5]])
    labels = torch.tensor([0.0, 1.0])
    for eps in (0.0, 0.3):
        detector = make("detector", "safe", label_smoothing=eps)
        detector.net = lambda _images, out=logits: out  # the loss only: no network needed
        loss = float(detector.training_step({"image": None, "label": labels}))
        logp = torch.log_softmax(logits, dim=1)
        target = torch.full((2, 2), eps / 2) + (1 - eps) * torch.nn.functional.one_hot(
            labels.long(), 2
        )
        assert loss == pytest.approx(float(-(target * logp).sum(1).mean()), rel=1e-6)


# ----------------------------------------------------------------------------- spectral
@checks("detector:spectral_logreg.input_size")
def _spectral_input_size(_tree):
    for side in (32, 48):
        chain = make("detector", "spectral_logreg", input_size=side).transforms(train=False)
        assert tuple(chain(photo(), train=False, seed=0).shape) == (3, side, side)


@checks("detector:spectral_logreg.bins")
def _spectral_bins(_tree):
    for bins in (4, 9):
        detector = make("detector", "spectral_logreg", bins=bins)
        detector.setup(rule_ctx())
        assert detector.extract_features(torch.rand(2, 3, 32, 32)).shape == (2, bins)


@checks("detector:spectral_logreg.lr")
def _spectral_lr(_tree):
    detector = make("detector", "spectral_logreg", lr=0.3)
    detector.setup(rule_ctx())
    assert detector.configure_optimizer().param_groups[0]["lr"] == 0.3


def rule_ctx():
    from bench.interfaces import RunContext

    return RunContext(device="cpu", seed=0, workers=0, log=lambda _m: None)


for _name in ("spectral_logreg", "safe", "nsnet", "univfd", "vibnet"):
    exempt(rule.RUNNER_LOOP, f"detector:{_name}.batch_size", f"detector:{_name}.epochs")
for _name in ("safe", "nsnet", "univfd", "vibnet"):
    exempt(rule.RUNNER_PRECISION, f"detector:{_name}.precision")
