"""Options: defaults < preset < config file < --opt, with types taken from the defaults.

Every component's options are a flat table of scalars or lists; an unknown key is an
error with a suggestion, so a typo never silently runs the default.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; missing or malformed files are one-line errors naming ``what``."""
    from bench.fileio import open_regular

    try:
        with open_regular(path) as fh:  # a folder or FIFO is refused, never read or waited on
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BenchError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"{what} {path} is not UTF-8 text (TOML must be): {exc}") from None
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


def coerce(component: str, key: str, value: Any, default: Any) -> Any:
    """Give ``value`` the type of ``default``; refuse what cannot be converted."""
    where = f"option {component}.{key}"
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "true",
            "yes",
            "on",
            "1",
            "false",
            "no",
            "off",
            "0",
        }:
            return value.lower() in {"true", "yes", "on", "1"}
        raise BenchError(f"{where} must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise BenchError(f"{where} must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise BenchError(f"{where} must be a number, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [parse_value(v.strip()) for v in value.split(",") if v.strip()]
        raise BenchError(f"{where} must be a list, got {value!r}")
    if isinstance(default, str):
        return value if isinstance(value, str) else str(value)
    return value


def merge_options(
    component: str, defaults: dict[str, Any], *overrides: dict[str, Any]
) -> dict[str, Any]:
    """Apply overrides in order; unknown keys are errors naming the closest known key."""
    merged = dict(defaults)
    for layer in overrides:
        for key, value in layer.items():
            if key not in defaults:
                close = difflib.get_close_matches(key, list(defaults), n=1, cutoff=0.5)
                hint = f"; did you mean '{component}.{close[0]}'?" if close else ""
                known = "" if close else f" (known: {', '.join(sorted(defaults)) or 'none'})"
                raise BenchError(f"unknown option '{component}.{key}'{hint}{known}")
            merged[key] = coerce(component, key, value, defaults[key])
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
