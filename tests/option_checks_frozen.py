"""The option rule for UnivFD and VIB-Net (frozen CLIP + a head; baselines/frozen_clip.py).

Head, optimiser and schedule options act on a head built by ``build_head`` (no CLIP
needed); input options on one transform; the official schedule's options are followed to
the parts tests/test_frozen_clip_runs.py pins. Expected values come from formulas here.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests import option_rule as rule
from tests.option_checks_clip import FROZEN, _chain_out, ctx, few
from tests.option_rule import checks, exempt, make, same


def _frozen_with_head(name: str, **over):
    detector = make("detector", name, **over)
    torch.manual_seed(0)
    detector.head = detector.build_head(16)
    return detector


@checks(*(f"detector:{n}.{k}" for n in FROZEN for k in ("lr", "weight_decay", "lr_drop_epochs")))
def _frozen_optimizer(_tree):
    for name in FROZEN:
        detector = _frozen_with_head(name, lr=2e-3, weight_decay=0.1, lr_drop_epochs=[2])
        optimizer = detector.configure_optimizer()
        assert (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["weight_decay"]) == (
            2e-3,
            0.1,
        )
        scheduler = detector.configure_scheduler(optimizer, steps_per_epoch=3, epochs=4)
        seen = []
        for _ in range(12):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert seen == pytest.approx([2e-3] * 6 + [2e-4] * 6)
        assert _frozen_with_head(name).configure_scheduler(optimizer, 3, 4) is None


@checks("detector:univfd.init_std")
def _init_std(_tree):
    small = _frozen_with_head("univfd", init_std=0.02).head.weight
    large = _frozen_with_head("univfd", init_std=0.5).head.weight
    torch.testing.assert_close(large, small * 25, atol=1e-6, rtol=1e-5)


@checks(*(f"detector:{n}.feature_cache" for n in FROZEN))
def _feature_cache(_tree):
    for name in FROZEN:
        modes = {
            v: make("detector", name, feature_cache=v).cache_mode
            for v in ("off", "eval-view", "views", "views:3")
        }
        assert [m.kind for m in modes.values()] == ["off", "eval-view", "views", "views"]
        assert (modes["views"].n_views(10), modes["views:3"].n_views(10)) == (10, 3)


# ----------------------------------------------------------------------------- UnivFD chain
def _frozen_train(name: str, **over):
    neutral = {"blur_p": 0.0, "jpeg_p": 0.0}
    return _chain_out(name, train=True, seed=4, **{**neutral, **over})


@checks(
    *(
        f"detector:{n}.{k}"
        for n in FROZEN
        for k in ("input_size", "load_size", "blur_p", "blur_sigma", "jpeg_p", "jpeg_quality")
    )
)
def _frozen_chain(_tree):
    for name in FROZEN:
        assert tuple(_chain_out(name, input_size=96).shape) == (3, 96, 96)
        base = _frozen_train(name)
        assert not same(base, _frozen_train(name, load_size=300))
        blurred = _frozen_train(name, blur_p=1.0, blur_sigma=[1.0, 1.0])
        assert not same(base, blurred)
        assert not same(blurred, _frozen_train(name, blur_p=1.0, blur_sigma=[3.0, 3.0]))
        jpeg = _frozen_train(name, jpeg_p=1.0, jpeg_quality=[30, 30])
        assert not same(base, jpeg)
        assert not same(jpeg, _frozen_train(name, jpeg_p=1.0, jpeg_quality=[95, 95]))


# ----------------------------------------------------------------------------- VIB head
@checks(*(f"detector:vibnet.{k}" for k in ("hidden", "k", "dropout", "sigma_shift")))
def _vib_head(_tree):
    head = _frozen_with_head("vibnet", hidden=12, k=5, dropout=0.25, sigma_shift=2.0).head
    assert (head.encoder[1].out_features, head.decoder.in_features) == (12, 5)
    assert head.encoder[0].p == 0.25
    head.eval()
    x = torch.randn(3, 16)
    _, mu, sigma = head(x, sample=False)
    stats = head.encoder(x)
    torch.testing.assert_close(mu, stats[:, :5])
    torch.testing.assert_close(sigma, torch.log1p(torch.exp(stats[:, 5:] - 2.0)))


@checks("detector:vibnet.beta")
def _vib_beta(_tree):
    x, y = torch.randn(4, 16), torch.tensor([0.0, 1.0, 1.0, 0.0])
    losses = {}
    for beta in (0.0, 0.5):
        detector = _frozen_with_head("vibnet", beta=beta)
        torch.manual_seed(5)
        losses[beta] = float(detector.head_loss(x, y).detach())
    detector.head.train()
    torch.manual_seed(5)
    with torch.no_grad():
        _, mu, sigma = detector.head(x, sample=True)
    kl = 0.5 * (mu**2 + sigma**2 - 1 - 2 * torch.log(sigma)).sum(1).mean()
    assert losses[0.5] - losses[0.0] == pytest.approx(0.5 * float(kl), rel=1e-4)


@checks("detector:vibnet.sample_at_test")
def _vib_sampling(_tree):
    x = torch.randn(4, 16)
    for sample, varies in ((False, False), (True, True)):
        detector = _frozen_with_head("vibnet", sample_at_test=sample)
        detector.head.eval()
        a, b = detector.head_proba(x), detector.head_proba(x)
        assert (not torch.equal(a, b)) == varies


for _name in ("nsnet", *FROZEN):
    exempt(rule.BACKBONE_MODEL, f"detector:{_name}.model")
    exempt(rule.BACKBONE_WEIGHTS, f"detector:{_name}.pretrained")


@checks(
    *(
        f"detector:{n}.{k}"
        for n in FROZEN
        for k in ("schedule", "val_set", "val_fraction", "patience", "min_lr")
    )
)
def _official_schedule(tree):
    """The options reach the official schedule's parts (whose behaviour
    tests/test_frozen_clip_runs.py pins); "fixed" runs the standard loop instead."""
    import baselines.frozen_clip as frozen
    import bench.training

    class Stop(Exception):
        pass

    samples = few(tree)
    for name in FROZEN:
        seen: dict = {}

        def split(s, root, val_set, fraction, seed, seen=seen):
            seen["split"] = (val_set, fraction)
            return s[2:], s[:2], "held out"

        def schedule(seen=seen, **kw):
            seen["schedule"] = kw
            raise Stop

        def loop(*_a, seen=seen, **_kw):
            seen["loop"] = True
            raise Stop

        over = {"val_set": "split", "val_fraction": 0.3, "patience": 2, "min_lr": 1e-5}
        train = SimpleNamespace(samples=samples, root=None, epochs=1, subset=lambda s: None)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(frozen, "validation_split", split)
            mp.setattr(frozen, "validation_features", lambda *a: None)
            mp.setattr(frozen, "OfficialSchedule", schedule)
            mp.setattr(frozen.Detector, "fit", loop, raising=False)
            mp.setattr(bench.training, "fit_loop", loop)
            with pytest.raises(Stop):
                make("detector", name, schedule="official", **over).fit(train, ctx())
            assert seen == {"split": ("split", 0.3), "schedule": {"patience": 2, "min_lr": 1e-5}}
            seen.clear()
            with pytest.raises(Stop):
                make("detector", name, feature_cache="off", **over).fit(train, ctx())
            assert seen == {"loop": True}
