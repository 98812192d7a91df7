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


# --- declarations: type, range, choices, pattern, length, doc -----------------------------

from bench.options import OptionSpec, parse_spec, parse_specs  # noqa: E402

SPECS = parse_specs(
    "det",
    {
        "lr": {"default": 1e-4, "gt": 0, "max": 10, "doc": "paper"},
        "lam": {"default": 0.2, "min": 0, "max": 1},
        "mode": {"default": "batch", "choices": ["batch", "fixed", "none"]},
        "cache": {"default": "views", "pattern": "off|views(:[1-9][0-9]*)?"},
        "sigma": {"default": [0.0, 3.0], "length": 2, "min": 0},
        "drops": {"default": [], "type": "list[int]", "min": 1},
        "alpha": {"default": 6, "type": "float"},
    },
)


def test_declared_types_and_inferred_types():
    assert isinstance(SPECS["lr"], OptionSpec) and SPECS["lr"].type == "float"
    assert SPECS["sigma"].type == "list[float]" and SPECS["drops"].type == "list[int]"
    # an int default declared float is stored as a float
    assert SPECS["alpha"].default == 6.0 and isinstance(SPECS["alpha"].default, float)
    assert merge_options("det", SPECS, {"alpha": 2})["alpha"] == 2.0


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"lr": 0}, r"option det.lr must be > 0, got 0"),
        ({"lr": -1}, r"must be > 0"),
        ({"lr": float("nan")}, r"must be a finite number"),
        ({"lr": float("inf")}, r"must be a finite number"),
        ({"lr": 11}, r"must be ≤ 10"),
        ({"lam": 1.5}, r"must be ≤ 1"),
        (
            {"mode": "fixd"},
            r"must be one of batch, fixed, none, got 'fixd'; did you mean 'fixed'\?",
        ),
        ({"cache": "views:0"}, r"must match"),
        ({"sigma": [1.0]}, r"must have 2 element\(s\)"),
        ({"sigma": [1.0, -2.0]}, r"must be ≥ 0, got -2"),
        ({"drops": [0]}, r"must be ≥ 1, got 0"),
        ({"drops": "x"}, r"must be an integer, got 'x'"),
        ({"mode": [1]}, r"must be text"),
        ({"lr": "fast"}, r"must be a number"),
    ],
)
def test_values_outside_their_declaration_are_refused_in_one_line(layer, message):
    with pytest.raises(BenchError, match=message) as info:
        merge_options("det", SPECS, layer)
    assert "\n" not in str(info.value)


def test_values_inside_their_declaration_pass_converted():
    merged = merge_options(
        "det", SPECS, {"lr": 10, "mode": "none", "cache": "views:3", "drops": "2, 4"}
    )
    assert merged["lr"] == 10.0 and merged["cache"] == "views:3" and merged["drops"] == [2, 4]


def test_bad_declarations_are_refused():
    with pytest.raises(BenchError, match="its default does not satisfy"):
        parse_spec("det", "lr", {"default": -1.0, "gt": 0})
    with pytest.raises(BenchError, match="declare type"):
        parse_spec("det", "xs", {"default": []})
    with pytest.raises(BenchError, match="unknown declaration key"):
        parse_spec("det", "lr", {"default": 1.0, "minimum": 0})
    with pytest.raises(BenchError, match="both declared and given a bare default"):
        parse_specs("det", {"lr": {"default": 1.0}}, {"lr": 2.0})


def test_every_catalogue_option_is_declared_with_a_doc():
    """The catalogue declares each option once, with the reason for its default."""
    from bench.plugins import get_registry

    registry = get_registry()
    undocumented = [
        f"{entry.kind} {entry.name}.{key}"
        for kind in ("detector", "addon", "transform")
        for entry in registry.entries(kind)
        if entry.origin in {"builtin", "nsnet", "baselines"}
        for key, spec in entry.specs.items()
        if not spec.doc
    ]
    assert undocumented == []
