"""Options: declared once (default, type, range, choices, doc), layered, checked before work.

A component's options are a flat table of scalars or lists. Each is declared by an
``OptionSpec``: the catalogue (registry.toml) writes them as one inline table per option,
an outside plugin passes the same data to ``register(options=...)``. Values are layered
defaults < preset < config file < --opt, and every layer is checked against the
declaration, so a typo or an out-of-range value fails in one line before any run starts.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

#: The types an option may have; a list option's elements all have the same scalar type.
TYPES = ("bool", "int", "float", "str", "list[int]", "list[float]", "list[str]")
#: The keys of one option declaration.
SPEC_KEYS = ("default", "type", "choices", "min", "max", "gt", "lt", "length", "pattern", "doc")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; missing or malformed files are one-line errors naming ``what``."""
    from bench.fileio import open_regular

    try:
        with open_regular(path) as fh:  # a folder or FIFO is refused, never read or waited on
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BenchError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise BenchError(f"{what} {path} is a folder, not a TOML file") from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"{what} {path} is not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{what} {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise BenchError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def parse_value(text: str) -> Any:
    """A TOML literal when it parses (1, 2e-4, true, [1, 2], "x"), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def infer_type(value: Any) -> str | None:
    """The option type a default implies; None when it cannot tell (an empty list)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list) and value:
        kinds = {infer_type(v) for v in value}
        if kinds <= {"int"}:
            return "list[int]"
        if kinds <= {"int", "float"}:
            return "list[float]"
        if kinds == {"str"}:
            return "list[str]"
    return None


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


@dataclass(frozen=True)
class OptionSpec:
    """One option: its default and what values it admits; ``doc`` says why the default."""

    default: Any
    type: str
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    lt: float | None = None
    length: int | None = None
    pattern: str | None = None

    @property
    def scalar_type(self) -> str:
        return self.type[5:-1] if self.type.startswith("list[") else self.type

    def describe(self) -> str:
        """What values are allowed, in a few words (for `bench options` and error messages)."""
        parts = [self.type]
        if self.choices is not None:
            parts.append("one of " + "|".join(str(c) for c in self.choices))
        for word, bound in (("≥", self.min), (">", self.gt), ("≤", self.max), ("<", self.lt)):
            if bound is not None:
                parts.append(f"{word} {_fmt(bound)}")
        if self.length is not None:
            parts.append(f"length {self.length}")
        if self.pattern is not None:
            parts.append(f"matching {self.pattern}")
        return ", ".join(parts)

    def check(self, component: str, key: str, value: Any) -> Any:
        """``value`` converted to this option's type; a one-line BenchError when not allowed."""
        where = f"option {component}.{key}"
        if self.type.startswith("list["):
            if isinstance(value, str):
                value = [parse_value(v.strip()) for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise BenchError(f"{where} must be a list of {self.scalar_type}, got {value!r}")
            if self.length is not None and len(value) != self.length:
                raise BenchError(
                    f"{where} must have {self.length} element(s), got {len(value)}: {value!r}"
                )
            return [self._check_scalar(where, v) for v in value]
        return self._check_scalar(where, value)

    def _check_scalar(self, where: str, value: Any) -> Any:
        value = _convert(where, self.scalar_type, value)
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(
                str(value), [str(c) for c in self.choices], n=1, cutoff=0.6
            )
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BenchError(
                f"{where} must be one of {', '.join(str(c) for c in self.choices)}, "
                f"got {value!r}{hint}"
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            for ok, word, bound in (
                (lambda v, b: v >= b, "≥", self.min),
                (lambda v, b: v > b, ">", self.gt),
                (lambda v, b: v <= b, "≤", self.max),
                (lambda v, b: v < b, "<", self.lt),
            ):
                if bound is not None and not ok(value, bound):
                    raise BenchError(f"{where} must be {word} {_fmt(bound)}, got {_fmt(value)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, str(value)):
            raise BenchError(f"{where} must match {self.pattern}, got {value!r}")
        return value


def _convert(where: str, kind: str, value: Any) -> Any:
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise BenchError(f"{where} must be true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise BenchError(f"{where} must be an integer, got {value!r}")
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise BenchError(f"{where} must be a finite number, got {value!r}")
            return float(value)
        raise BenchError(f"{where} must be a number, got {value!r}")
    # str: numbers typed without quotes (--opt x.model=7) are text; other shapes are refused.
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise BenchError(f"{where} must be text, got {value!r}")


def parse_spec(component: str, key: str, raw: Any) -> OptionSpec:
    """One declaration (``{default = ..., ...}``) as an OptionSpec; its default must pass it."""
    where = f"option {component}.{key}"
    if not isinstance(raw, Mapping) or "default" not in raw:
        raise BenchError(f"{where}: a declaration is a table with at least 'default'")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise BenchError(
            f"{where}: unknown declaration key(s) {', '.join(unknown)} (known: {', '.join(SPEC_KEYS)})"
        )
    kind = raw.get("type") or infer_type(raw["default"])
    if kind not in TYPES:
        raise BenchError(
            f"{where}: cannot tell its type from default {raw['default']!r}; "
            f"declare type = one of {', '.join(TYPES)}"
        )
    choices = raw.get("choices")
    if choices is not None and not isinstance(choices, list | tuple):
        raise BenchError(f"{where}: choices must be a list")
    spec = OptionSpec(
        default=raw["default"],
        type=kind,
        doc=str(raw.get("doc", "")),
        choices=tuple(choices) if choices is not None else None,
        min=raw.get("min"),
        max=raw.get("max"),
        gt=raw.get("gt"),
        lt=raw.get("lt"),
        length=raw.get("length"),
        pattern=raw.get("pattern"),
    )
    try:
        default = spec.check(component, key, raw["default"])
    except BenchError as exc:
        raise BenchError(f"{where}: its default does not satisfy its declaration ({exc})") from None
    return OptionSpec(**{**spec.__dict__, "default": default})


def parse_specs(
    component: str,
    options: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, OptionSpec]:
    """Declarations (``options``) plus bare ``defaults`` (type inferred, nothing else checked)."""
    specs = {key: parse_spec(component, key, raw) for key, raw in (options or {}).items()}
    for key, value in (defaults or {}).items():
        if key in specs:
            raise BenchError(f"option {component}.{key} is both declared and given a bare default")
        specs[key] = parse_spec(component, key, {"default": value})
    return specs


def merge_options(
    component: str,
    specs: Mapping[str, OptionSpec] | Mapping[str, Any],
    *overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """Defaults with the layers applied in order; every key and value checked.

    ``specs`` may also be plain ``{key: default}`` (types inferred from the defaults).
    """
    if not all(isinstance(s, OptionSpec) for s in specs.values()):
        specs = parse_specs(component, defaults=specs)
    merged = {key: spec.default for key, spec in specs.items()}
    for layer in overrides:
        if not isinstance(layer, Mapping):
            raise BenchError(f"options for '{component}' must be a table of key = value")
        for key, value in layer.items():
            if key not in specs:
                close = difflib.get_close_matches(key, list(specs), n=1, cutoff=0.5)
                hint = f"; did you mean '{component}.{close[0]}'?" if close else ""
                known = "" if close else f" (known: {', '.join(sorted(specs)) or 'none'})"
                raise BenchError(f"unknown option '{component}.{key}'{hint}{known}")
            merged[key] = specs[key].check(component, key, value)
    return merged


def parse_opt_flags(flags: list[str]) -> dict[str, dict[str, Any]]:
    """``["nsnet.lr=1e-4", ...]`` -> ``{"nsnet": {"lr": 1e-4}}``."""
    out: dict[str, dict[str, Any]] = {}
    for flag in flags:
        key, sep, value = flag.partition("=")
        component, dot, option = key.strip().partition(".")
        if not sep or not dot or not component or not option:
            raise BenchError(f"--opt expects component.key=value, got {flag!r}")
        out.setdefault(component, {})[option] = parse_value(value.strip())
    return out
