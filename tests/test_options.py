"""Options: layering, types from defaults, unknown keys."""

from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.options import merge_options, parse_opt_flags, parse_value

DEFAULTS = {"lr": 2e-4, "epochs": 2, "patch_selection": True, "model": "ViT-L-14", "ks": [1, 2]}


def test_parse_value_reads_toml_literals_and_falls_back_to_text():
    assert parse_value("1e-3") == 1e-3
    assert parse_value("3") == 3
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("ViT-B-16") == "ViT-B-16"
    assert parse_value("local-dir:/x/y") == "local-dir:/x/y"


def test_layers_apply_in_order_with_types_of_defaults():
    merged = merge_options("nsnet", DEFAULTS, {"epochs": 5, "lr": 1}, {"epochs": 1, "ks": "3,4"})
    assert merged["epochs"] == 1
    assert merged["lr"] == 1.0 and isinstance(merged["lr"], float)
    assert merged["ks"] == [3, 4]
    assert merged["model"] == "ViT-L-14"


def test_bool_from_text_and_bad_types_refused():
    assert merge_options("n", DEFAULTS, {"patch_selection": "off"})["patch_selection"] is False
    with pytest.raises(BenchError, match="must be an integer"):
        merge_options("n", DEFAULTS, {"epochs": 1.5})
    with pytest.raises(BenchError, match="must be true or false"):
        merge_options("n", DEFAULTS, {"patch_selection": "maybe"})


def test_unknown_key_suggests_the_closest():
    with pytest.raises(
        BenchError, match=r"unknown option 'nsnet.epoch'; did you mean 'nsnet.epochs'\?"
    ):
        merge_options("nsnet", DEFAULTS, {"epoch": 3})
    with pytest.raises(BenchError, match=r"known: "):
        merge_options("nsnet", DEFAULTS, {"zzz": 3})


def test_opt_flags_parse_per_component():
    assert parse_opt_flags(["nsnet.lr=1e-4", "nullspace.mode=fixed"]) == {
        "nsnet": {"lr": 1e-4},
        "nullspace": {"mode": "fixed"},
    }
    with pytest.raises(BenchError, match="component.key=value"):
        parse_opt_flags(["lr=3"])
