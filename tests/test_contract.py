"""One contract, every registered detector (timm style): build, learn, predict, round-trip.

Each detector runs with its demo preset (tiny backbones, random weights) on a tiny tree
whose fakes carry a real up-sampling trace.
"""

from __future__ import annotations

import pytest
import torch

from bench.data.pipeline import make_loader
from bench.interfaces import Addon, Detector, RunContext, TrainData
from bench.options import merge_options
from bench.plugins import get_registry
from tests.conftest import make_tree

REGISTRY = get_registry(refresh=True)
DETECTORS = REGISTRY.names("detector")
ADDONS = REGISTRY.names("addon")
# Epochs of the contract's fit. SAFE warms up for a whole epoch and augments heavily: 8
# gives it room. AIDE (two ResNet-50s under Adam) and CNN-Spot (a ResNet-50) cost 5-13 s an
# epoch here, and their loss falls within 3 and 4 epochs (measured: AIDE 0.695 -> 0.677,
# CNN-Spot 1.081 -> 0.777), so fewer keep the suite inside its budget.
EPOCHS = {"aide": 3, "cnnspot": 4}


@pytest.fixture(scope="module")
def contract_tree(tmp_path_factory):
    return make_tree(
        tmp_path_factory.mktemp("contract"), generators=("gan",), per_class=8, size=256
    )


def build(name: str, **overrides):
    entry = REGISTRY.get("detector", name)
    cls = entry.load()
    options = merge_options(name, entry.specs, entry.presets.get("demo", {}), overrides)
    return cls, options


def context(samples) -> RunContext:
    captions = {
        s.path: f"a close-up photo of a noisy texture number {i % 5}" for i, s in enumerate(samples)
    }
    return RunContext(device="cpu", seed=0, workers=0, captions=captions, log=lambda m: None)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_contract(name, contract_tree):
    from bench.data.layouts import read_folder_tree

    cls, options = build(name)
    assert issubclass(cls, Detector)
    samples = read_folder_tree(contract_tree)
    detector = cls(options)
    ctx = context(samples)
    torch.manual_seed(0)
    detector.setup(ctx)
    assert detector.input_size > 0
    epochs = EPOCHS.get(name, 8)
    batch = 8

    def factory(s, chain, **kw):
        return make_loader(s, chain, workers=0, seed=0, **kw)

    train = TrainData(samples, factory, batch_size=batch, epochs=epochs)
    losses = detector.fit(train, ctx) if cls.trainable else []
    if cls.trainable:
        steps = len(losses) // epochs
        assert steps >= 1 and all(map(lambda v: v == v, losses))
        # The last two epochs, not the last one: an epoch is two batches of 8, and
        # a from-scratch BatchNorm network's batch loss swings with the batch's class mix.
        first, last = sum(losses[:steps]) / steps, sum(losses[-2 * steps :]) / (2 * steps)
        assert last < first, f"{name}: loss did not fall ({first:.4f} -> {last:.4f})"

    loader = make_loader(
        samples,
        detector.transforms(train=False),
        train=False,
        shuffle=False,
        batch_size=batch,
        workers=0,
    )
    detector.train_mode(False)
    batch0 = next(iter(loader))
    with torch.no_grad():
        p = detector.predict_proba(batch0)
    assert p.shape == (len(batch0["path"]),)
    assert torch.all((p >= 0) & (p <= 1))

    state = detector.trainable_state()
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    again = cls(options)
    again.setup(ctx)
    again.load_trainable_state({k: v.clone() for k, v in state.items()})
    again.train_mode(False)
    with torch.no_grad():
        q = again.predict_proba(batch0)
    assert torch.allclose(p, q, atol=1e-5), f"{name}: saved state does not reproduce predictions"


@pytest.mark.parametrize("name", ADDONS)
def test_addon_contract(name):
    cls = REGISTRY.get("addon", name).load()
    assert issubclass(cls, Addon)
    assert cls.hook in ("transform", "features")
    entry = REGISTRY.get("addon", name)
    cls(merge_options(name, entry.specs))  # cheap construction with the defaults
