"""Lazy registry of components: names map to "module:attr" targets, imported on first use.

Listing and validating names therefore imports no torch; only ``Entry.load`` does.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.options import OptionSpec

KINDS = ("detector", "addon", "transform", "perturbation")


@dataclass
class Entry:
    kind: str
    name: str
    target: str
    origin: str
    #: Every option, declared once: default, type, range or choices, doc.
    specs: dict[str, OptionSpec] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: spec.default for key, spec in self.specs.items()}

    def load(self) -> Any:
        """Import the target; an import failure becomes a one-line BenchError."""
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr) if attr else module
        except Exception as exc:  # any failure of a plugin's code must not take the tool down
            raise BenchError(
                f"{self.kind} '{self.name}' (from {self.origin}) failed to load "
                f"{self.target}: {type(exc).__name__}: {exc}"
            ) from exc

    def options(self, preset: str | None = None) -> dict[str, Any]:
        """Default options, with a preset's overrides when one is named and defined."""
        merged = dict(self.defaults)
        if preset and preset in self.presets:
            merged.update(self.presets[preset])
        return merged


class Registry:
    """All components by kind and name, each remembering which plugin registered it."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self.failures: list[str] = []

    def add(self, entry: Entry) -> None:
        if entry.kind not in KINDS:
            raise BenchError(
                f"{entry.origin} registered '{entry.name}' as unknown kind '{entry.kind}' "
                f"(kinds: {', '.join(KINDS)})"
            )
        if ":" not in entry.target:
            raise BenchError(
                f"{entry.origin} registered {entry.kind} '{entry.name}' with target "
                f"'{entry.target}': expected 'module:attr'"
            )
        table = self._entries[entry.kind]
        if entry.name in table:
            first = table[entry.name]
            raise BenchError(
                f"{entry.kind} '{entry.name}' is registered twice: by {first.origin} "
                f"({first.target}) and by {entry.origin} ({entry.target})"
            )
        table[entry.name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind)]

    def get(self, kind: str, name: str) -> Entry:
        table = self._entries[kind]
        if name in table:
            return table[name]
        raise BenchError(unknown_name_message(kind, name, list(table)))


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """One line: the unknown name, a 'did you mean' when one is close, else the choices."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if close:
        return f"unknown {kind} '{name}'; did you mean {' or '.join(repr(c) for c in close)}?"
    choices = ", ".join(sorted(known)) or "none registered"
    return f"unknown {kind} '{name}' (known: {choices})"
