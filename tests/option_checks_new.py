"""The option rule for the six baselines of issue 14: DFFreq, NPR, FreqNet, CNN-Spot, LaDeDa, AIDE.

Input options act on one transform of a real photograph; optimiser and schedule options on
an optimiser over a stand-in parameter (the network does not change what they do); network
options on the network built by ``build_net``. Expected values come from formulas here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests import option_rule as rule
from tests.option_rule import checks, exempt, make, photo, same

SCRATCH = ("dffreq", "npr", "freqnet")  # baselines/binary_cnn.py: lr x gamma every N epochs
FINETUNE = ("cnnspot", "ladeda")  # baselines/finetune.py: lr x factor at listed epochs
NEW = (*SCRATCH, *FINETUNE, "aide")
#: Random steps neutralised, so that one option's effect is seen alone.
NEUTRAL = {
    "npr": {"rotation": 0.0, "jitter": 0.0, "mask_p": 0.0},
    "cnnspot": {"blur_p": 0.0, "jpeg_p": 0.0},
    "aide": {"blur_p": 0.0, "jpeg_p": 0.0},
}


def out(name: str, train: bool, seed: int = 0, size: int = 300, **over):
    over = {**NEUTRAL.get(name, {}), **over}
    chain = make("detector", name, preset=None, **over).transforms(train=train)
    return chain(photo(size), train=train, seed=seed)


def side(x) -> int:
    return int(x.shape[-1])


# ----------------------------------------------------------------------------- geometry
@checks(*(f"detector:{n}.input_size" for n in ("dffreq", "npr", "freqnet", "cnnspot", "ladeda")))
def _input_size(_tree):
    for name in ("dffreq", "npr", "freqnet", "cnnspot", "ladeda"):
        for size in (192, 224):
            assert side(out(name, train=True, input_size=size)) == size, name


@checks(*(f"detector:{n}.load_size" for n in ("npr", "freqnet", "ladeda", "cnnspot")))
def _load_size(_tree):
    for name in ("npr", "freqnet", "ladeda"):  # evaluation sees the whole load_size resize
        over = {"eval_crop": 0} if name == "ladeda" else {"eval_crop": False}
        assert side(out(name, train=False, load_size=240, **over)) == 240, name
        assert side(out(name, train=False, load_size=256, **over)) == 256, name
    # CNN-Spot resizes the shorter side at train time only
    assert not same(out("cnnspot", True, load_size=256), out("cnnspot", True, load_size=300))
    assert same(out("cnnspot", False, load_size=256), out("cnnspot", False, load_size=300))


@checks(*(f"detector:{n}.eval_crop" for n in ("npr", "freqnet", "ladeda")))
def _eval_crop(_tree):
    for name in ("npr", "freqnet"):
        assert side(out(name, False, eval_crop=True, input_size=224)) == 224
        assert side(out(name, False, eval_crop=False, input_size=224)) == 256
    assert side(out("ladeda", False, eval_crop=96)) == 96
    assert side(out("ladeda", False, eval_crop=0)) == 256


@checks(*(f"detector:{n}.hflip" for n in SCRATCH))
def _hflip(_tree):
    for name in SCRATCH:
        flipped = 0
        for seed in range(8):
            plain = out(name, True, seed, hflip=False)
            maybe = out(name, True, seed, hflip=True)
            if same(maybe, torch.flip(plain, dims=[-1])) and not same(maybe, plain):
                flipped += 1
            else:
                assert same(maybe, plain), name
        assert 0 < flipped < 8, name


@checks(
    *(f"detector:npr.{k}" for k in ("rotation", "jitter", "mask_p", "mask_patch", "mask_ratio_max"))
)
def _npr_augmentations(_tree):
    base = out("npr", True)
    assert not same(out("npr", True, rotation=90.0), base)
    assert not same(out("npr", True, jitter=0.5), base)
    masked = out("npr", True, mask_p=1.0, mask_ratio_max=0.75)
    assert not same(masked, base)
    assert same(out("npr", True, mask_p=1.0, mask_ratio_max=0.0), base)
    assert not same(out("npr", True, mask_p=1.0, mask_patch=8), masked)


@checks(
    *(
        f"detector:{n}.{k}"
        for n in ("cnnspot", "aide")
        for k in ("blur_p", "blur_sigma", "jpeg_p", "jpeg_quality")
    ),
    "detector:aide.blur_kernel",
)
def _blur_jpeg(_tree):
    for name in ("cnnspot", "aide"):
        base = out(name, True)
        blurred = out(name, True, blur_p=1.0, blur_sigma=[1.0, 1.0])
        assert not same(base, blurred), name
        assert not same(blurred, out(name, True, blur_p=1.0, blur_sigma=[3.0, 3.0])), name
        jpeg = out(name, True, jpeg_p=1.0, jpeg_quality=[30, 30])
        assert not same(base, jpeg), name
        assert not same(jpeg, out(name, True, jpeg_p=1.0, jpeg_quality=[95, 95])), name
        assert same(out(name, False, blur_p=1.0, jpeg_p=1.0), out(name, False)), name
    wide = out("aide", True, blur_p=1.0, blur_sigma=[3.0, 3.0], blur_kernel=9)
    assert not same(wide, out("aide", True, blur_p=1.0, blur_sigma=[3.0, 3.0], blur_kernel=3))


@checks(*(f"detector:aide.{k}" for k in ("view_size", "window", "stride", "bands", "antialias")))
def _aide_views(_tree):
    base = out("aide", False)
    assert side(base) == 256 and side(out("aide", False, view_size=64)) == 64
    for key, value in (("window", 16), ("stride", 32), ("bands", 2), ("antialias", True)):
        assert not same(base, out("aide", False, **{key: value})), key


# ----------------------------------------------------------------------------- optimiser
def _with_stand_in(name: str, **over):
    detector = make("detector", name, preset=None, **over)
    detector.net = nn.Linear(3, 1)  # what the optimiser and the schedule see of the network
    return detector


def _lrs(detector, steps_per_epoch: int, epochs: int) -> list[float]:
    optimizer = detector.configure_optimizer()
    scheduler = detector.configure_scheduler(optimizer, steps_per_epoch, epochs)
    seen = []
    for _ in range(steps_per_epoch * epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return seen


@checks(*(f"detector:{n}.{k}" for n in (*SCRATCH, *FINETUNE) for k in ("lr", "beta1")))
def _adam(_tree):
    for name in (*SCRATCH, *FINETUNE):
        group = _with_stand_in(name, lr=3e-3, beta1=0.5).configure_optimizer().param_groups[0]
        assert (group["lr"], group["betas"]) == (3e-3, (0.5, 0.999)), name


@checks(*(f"detector:{n}.{k}" for n in SCRATCH for k in ("lr_decay", "lr_decay_every")))
def _step_decay(_tree):
    for name in SCRATCH:
        lrs = _lrs(_with_stand_in(name, lr=1.0, lr_decay=0.5, lr_decay_every=3), 2, 8)
        # x 0.5 at the end of 0-based epochs 3 and 6 (positive multiples of 3)
        per_epoch = [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25]
        assert lrs == pytest.approx([v for v in per_epoch for _ in range(2)]), name
        never = _lrs(_with_stand_in(name, lr=1.0, lr_decay=0.5, lr_decay_every=0), 1, 8)
        assert never == pytest.approx([1.0] * 8), name


@checks(*(f"detector:{n}.{k}" for n in FINETUNE for k in ("lr_drop_epochs", "lr_drop_factor")))
def _drops(_tree):
    for name in FINETUNE:
        lrs = _lrs(_with_stand_in(name, lr=1.0, lr_drop_epochs=[2, 3], lr_drop_factor=0.5), 2, 4)
        assert lrs == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25]), name
        assert _with_stand_in(name, lr_drop_epochs=[]).configure_scheduler(None, 2, 4) is None


@checks(
    *(
        f"detector:aide.{k}"
        for k in ("blr", "weight_decay", "min_lr", "warmup_epochs", "label_smoothing")
    )
)
def _aide_recipe(_tree):
    import math

    detector = make("detector", "aide", preset=None, blr=2e-3, batch_size=64, weight_decay=0.05)
    detector.net = nn.Linear(3, 2)
    groups = detector.configure_optimizer().param_groups
    assert groups[0]["lr"] == pytest.approx(2e-3 * 64 / 256)  # blr x batch / 256
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    over = {"blr": 1e-2, "batch_size": 256, "min_lr": 1e-4}
    warm = _lrs(_with_stand_in("aide", warmup_epochs=1, **over), 4, 3)
    assert warm[:5] == pytest.approx([0.0, 2.5e-3, 5e-3, 7.5e-3, 1e-2])
    cos = 0.5 * (1 + math.cos(math.pi * 7 / 8))
    assert warm[-1] == pytest.approx(1e-4 + (1e-2 - 1e-4) * cos)
    cold = _lrs(_with_stand_in("aide", warmup_epochs=0, **over), 4, 3)
    assert cold[0] == pytest.approx(1e-2)
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5]])
    labels = torch.tensor([0, 1])
    for eps in (0.0, 0.3):
        detector = make("detector", "aide", preset=None, label_smoothing=eps)
        detector.logits = lambda _views, out=logits: out
        loss = float(detector.training_step({"image": None, "label": labels}))
        target = torch.full((2, 2), eps / 2) + (1 - eps) * nn.functional.one_hot(labels, 2)
        expected = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
        assert loss == pytest.approx(float(expected), rel=1e-6)


@checks("detector:aide.semantic_train_mode")
def _aide_semantic_mode(_tree):
    for value in (True, False):
        detector = make("detector", "aide", preset=None, semantic_train_mode=value)
        detector.net, detector.semantic = nn.Linear(3, 2), nn.Dropout()
        detector.train_mode(True)
        assert detector.net.training and detector.semantic.training is value
        detector.train_mode(False)
        assert not detector.semantic.training


@checks("detector:aide.eval_batch_size")
def _aide_eval_batch(_tree):
    from bench.evaluation import eval_batch_size

    assert eval_batch_size(make("detector", "aide", eval_batch_size=5)) == 5


# ----------------------------------------------------------------------------- networks
def _built(name: str, **over):
    from tests.option_checks_core import rule_ctx

    torch.manual_seed(0)
    return make("detector", name, **over).build_net(rule_ctx())


@checks(*(f"detector:{n}.init_std" for n in FINETUNE))
def _init_std(_tree):
    for name in FINETUNE:
        small, large = (_built(name, init_std=s).fc.weight for s in (0.02, 0.5))
        torch.testing.assert_close(large, small * 25, atol=1e-6, rtol=1e-5)


@checks(*(f"detector:ladeda.{k}" for k in ("receptive_field", "preprocess", "stem_bn_momentum")))
def _ladeda_net(_tree):
    assert _built("ladeda", receptive_field=5).receptive_field == 5
    assert _built("ladeda", receptive_field=17).receptive_field == 17
    assert _built("ladeda", stem_bn_momentum=0.3).bn1.momentum == 0.3
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    npr, raw = (_built("ladeda", preprocess=p).eval() for p in ("NPR", "raw"))
    with torch.no_grad():
        assert not same(npr(x), raw(x))


@checks("detector:aide.train_semantic_proj")
def _aide_proj(_tree):
    """The option reaches AideNet (whose no_grad projection tests/test_aide.py pins)."""
    from tests.option_checks_core import rule_ctx

    class Built(Exception):
        pass

    for value in (False, True):
        made: dict = {}

        def record(*_args, made=made, **kw):
            made.update(kw)
            raise Built

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("baselines.aide.AideNet", record)
            mp.setattr(
                "bench.backbones.clip_convnext.load_clip_convnext",
                lambda *a, **k: type("Stub", (), {"channels": 8})(),
            )
            with pytest.raises(Built):
                make("detector", "aide", train_semantic_proj=value).setup(rule_ctx())
        assert made == {"train_semantic_proj": value}


for _name in NEW:
    exempt(rule.RUNNER_LOOP, f"detector:{_name}.batch_size", f"detector:{_name}.epochs")
    exempt(rule.RUNNER_PRECISION, f"detector:{_name}.precision")
exempt(
    "ImageNet weights for the ResNet-50 (none can be downloaded here); pinned by "
    "tests/test_cnnspot.py::test_network_is_resnet50_with_one_logit_and_loads_imagenet_weights_but_the_head",
    "detector:cnnspot.pretrained",
)
exempt(
    "the frozen ConvNeXt CLIP by name and weights (only the tiny config builds offline); "
    "pinned by tests/test_aide.py::test_missing_convnext_weights_offline_fail_fast and "
    "tests/test_aide.py::test_semantic_feature_is_aides_pooled_convnext_map",
    "detector:aide.convnext_model",
    "detector:aide.convnext_pretrained",
)
exempt(
    "ImageNet weights for the patch experts; pinned by "
    "tests/test_aide.py::test_resnet_weights_file_loads_into_both_experts_but_not_their_stems",
    "detector:aide.resnet_pretrained",
)
