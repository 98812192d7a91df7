"""Issue 17 (mutation testing): the NULL-space addon's options, messages and projections.

Caption features are chosen by hand (multiples of unit vectors), so each projection is
known without the code under test: removing a caption direction e_i zeroes column i.
"""

from __future__ import annotations

import pytest
import torch

from bench.data.layouts import Sample
from bench.errors import BenchError
from bench.interfaces import RunContext, TrainData
from nsnet_plugin.nullspace_addon import NullSpaceAddon, _positive_or_none

D = 6
PATHS = ["/d/cat/0_real/a.png", "/d/dog/1_fake/b.png", "/d/cat/1_fake/c.png"]
CAPTIONS = {PATHS[0]: "a cat", PATHS[1]: "a dog", PATHS[2]: "a cat"}
TEXT = {"a cat": 2.0 * torch.eye(D)[0], "a dog": 3.0 * torch.eye(D)[1]}


class TextTower:
    """A detector whose text tower maps each caption to a known vector."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([TEXT[t] for t in texts])


def train() -> TrainData:
    samples = [Sample(p, int("fake" in p), "gen") for p in PATHS]
    return TrainData(samples, lambda *a, **k: None, batch_size=2, epochs=1)


def without(x: torch.Tensor, *columns: int) -> torch.Tensor:
    out = x.clone()
    out[:, list(columns)] = 0.0
    return out


def prepared(mode: str, log: list[str] | None = None) -> NullSpaceAddon:
    addon = NullSpaceAddon({"mode": mode, "captions": "file"})
    ctx = RunContext(captions=dict(CAPTIONS), log=(log if log is not None else []).append)
    addon.prepare(TextTower(), train(), ctx)
    return addon


def test_defaults_are_fixed_mode_top_32_no_rtol_no_cap():
    space = NullSpaceAddon({}).nullspace
    assert (space.mode, space.fixed_k, space.fixed_energy) == ("fixed", 32, None)
    assert (space.rtol, space.max_rank) == (None, None)


def test_options_reach_the_null_space():
    space = NullSpaceAddon(
        {"mode": "batch", "fixed_energy": 0.9, "rtol": 0.25, "max_rank": 1, "fixed_k": 7}
    ).nullspace
    # an energy share replaces fixed_k (NullSpace refuses both)
    assert (space.mode, space.fixed_k, space.fixed_energy) == ("batch", None, 0.9)
    assert (space.rtol, space.max_rank) == (0.25, 1)
    space = NullSpaceAddon({"fixed_k": 5, "rtol": 0.5, "max_rank": 3}).nullspace
    assert (space.fixed_k, space.fixed_energy, space.rtol, space.max_rank) == (5, None, 0.5, 3)
    # 0 (or less) means "not set": TOML has no null
    space = NullSpaceAddon({"fixed_k": 0, "rtol": 0.0, "max_rank": -2}).nullspace
    assert (space.fixed_k, space.rtol, space.max_rank) == (None, None, None)


@pytest.mark.parametrize(
    ("value", "expected"), [(0, None), (0.0, None), (-1, None), (-0.5, None), (0.5, 0.5), (1, 1)]
)
def test_positive_or_none(value, expected):
    assert _positive_or_none(value) == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mode", "none", "option nullspace.mode must be one of fixed, batch, got 'none'"),
        (
            "captions",
            "gpt",
            "option nullspace.captions must be one of file, blip, prompt, got 'gpt'",
        ),
        (
            "missing_captions",
            "skip",
            "option nullspace.missing_captions must be one of error, prompt, got 'skip'",
        ),
    ],
)
def test_bad_choices_are_named_in_one_line(key, value, message):
    with pytest.raises(BenchError) as info:
        NullSpaceAddon({key: value})
    assert str(info.value) == message


def test_prepare_fits_p_from_the_runs_captions_and_says_what_it_keeps():
    log: list[str] = []
    addon = prepared("fixed", log)
    assert log == ["nullspace: projector from 2 distinct training captions keeps 4 of 6 dimensions"]
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(0))
    want = without(x, 0, 1)  # both caption directions removed
    torch.testing.assert_close(addon.apply(x, None, False), want, atol=1e-6, rtol=0)
    # fixed mode uses the same P in training, whatever the batch
    torch.testing.assert_close(addon.apply(x, {"path": PATHS[:1]}, True), want, atol=1e-6, rtol=0)


def test_missing_captions_name_the_addons_options():
    addon = NullSpaceAddon({"captions": "file"})
    ctx = RunContext(captions={PATHS[0]: "a cat"}, log=lambda _m: None)
    with pytest.raises(BenchError) as info:
        addon.prepare(TextTower(), train(), ctx)
    assert str(info.value).startswith("2 of 3 training images have no caption from ")
    assert "--opt nullspace.caption_file=FILE" in str(info.value)


def test_batch_mode_trains_on_the_batchs_captions_and_evaluates_with_the_fixed_p():
    addon = prepared("batch")
    x = torch.randn(4, D, generator=torch.Generator().manual_seed(1))
    cats = {"path": [PATHS[0], PATHS[2]]}  # both "a cat": only e_0 removed
    torch.testing.assert_close(addon.apply(x, cats, True), without(x, 0), atol=1e-6, rtol=0)
    torch.testing.assert_close(addon.apply(x, None, False), without(x, 0, 1), atol=1e-6, rtol=0)
    message = "addon 'nullspace' (mode batch) needs the batch's image paths"
    for batch in (None, {"image": x}):
        with pytest.raises(BenchError) as info:
            addon.apply(x, batch, True)
        assert str(info.value) == message


def test_a_loaded_projector_serves_without_captions():
    P = torch.eye(D) - torch.outer(torch.eye(D)[2], torch.eye(D)[2])  # removes e_2
    addon = NullSpaceAddon({"mode": "batch"})
    with pytest.raises(BenchError) as info:
        addon.apply(torch.ones(1, D), None, False)
    assert str(info.value) == (
        "addon 'nullspace' has no projector: it is fitted on the training captions "
        "(train the detector, or load a run's saved state)"
    )
    addon.load_state({"fixed_projector": P})
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(2))
    # no bank (nothing was captioned here): training too falls back to the fixed P
    torch.testing.assert_close(addon.apply(x, {"path": PATHS}, True), without(x, 2))
    torch.testing.assert_close(addon.apply(x, None, False), without(x, 2))
