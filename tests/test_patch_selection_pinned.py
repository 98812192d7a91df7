"""Issue 17 (mutation testing): Patch Selection's refusals and names, word for word."""

from __future__ import annotations

import pytest

from bench.errors import BenchError
from nsnet_plugin.patch_selection import PatchSelect, PatchSelectAddon


def test_the_transform_refuses_bad_choices_by_name():
    with pytest.raises(
        BenchError,
        match=r"^patch_select: small_image must be one of reflect, resize, error, got 'pad'$",
    ):
        PatchSelect(small_image="pad")  # type: ignore[arg-type]
    with pytest.raises(
        BenchError, match=r"^patch_select: entropy_input must be one of luma, rgb-mean, got 'grey'$"
    ):
        PatchSelect(entropy_input="grey")  # type: ignore[arg-type]
    with pytest.raises(BenchError, match=r"^patch_select: odd_tile must be one of .*got 'middle'$"):
        PatchSelect(odd_tile="middle")  # type: ignore[arg-type]


def test_the_addon_reads_each_option_and_refuses_bad_ones_by_name():
    addon = PatchSelectAddon(
        {"patch_size": 1, "small_image": "resize", "odd_tile": "low", "shuffle": False,
         "entropy_input": "rgb-mean"}
    )  # fmt: skip
    assert (addon.patch_size, addon.small_image, addon.odd_tile, addon.shuffle) == (
        1,
        "resize",
        "low",
        False,
    )
    assert addon.entropy_input == "rgb-mean"
    with pytest.raises(BenchError, match=r"^patchselect: patch_size must be positive, got 0$"):
        PatchSelectAddon({"patch_size": 0})
    for key, bad, allowed in (
        ("small_image", "pad", "reflect, resize, error"),
        ("odd_tile", "middle", "low, high"),
        ("entropy_input", "grey", "luma, rgb-mean"),
    ):
        message = rf"^patchselect: {key} must be one of {allowed}, got '{bad}'$"
        with pytest.raises(BenchError, match=message):
            PatchSelectAddon({key: bad})


def test_repr_names_entropy_input_only_when_it_is_not_luma():
    base = "PatchSelect(out_size=64, patch_size=16, small_image='reflect', odd_tile='high', shuffle=True"
    assert repr(PatchSelect(64, 16)) == base + ")"
    assert (
        repr(PatchSelect(64, 16, entropy_input="rgb-mean")) == base + ", entropy_input='rgb-mean')"
    )
