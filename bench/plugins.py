"""Plugins: pluggy hooks, found through the entry-point group ``bench.plugins``.

A plugin is a module with a ``register_components(register)`` hook implementation; the
built-in components come through exactly the same path as an outside package's.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

import pluggy

from bench.errors import BenchError
from bench.options import merge_options, parse_specs
from bench.registry import Entry, Registry

ENTRY_POINT_GROUP = "bench.plugins"
hookspec = pluggy.HookspecMarker("bench")
hookimpl = pluggy.HookimplMarker("bench")


class Hookspecs:
    @hookspec
    def register_components(self, register: Any) -> None:
        """Call ``register(kind, name, target, options=..., presets=..., summary=...)``.

        ``options`` declares each option once: ``{"lr": {"default": 1e-4, "gt": 0,
        "doc": "why"}}`` (keys: bench.options.SPEC_KEYS); ``defaults={"lr": 1e-4}`` is the
        short form that only fixes the type.
        """


def make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(Hookspecs)
    return pm


#: The process-wide manager; tests register throw-away plugins on it and unregister after.
pm = make_manager()
_loaded_entry_points = False
_load_failures: list[str] = []


def load_entry_points(manager: pluggy.PluginManager | None = None) -> list[str]:
    """Register every ``bench.plugins`` entry point; a broken one is reported and skipped."""
    global _loaded_entry_points
    manager = manager or pm
    if manager is pm and _loaded_entry_points:
        return _load_failures
    failures: list[str] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if manager.has_plugin(ep.name) or manager.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must never take the tool down
            failures.append(f"plugin '{ep.name}' ({ep.value}) failed to load: {exc}; skipped")
            continue
        manager.register(plugin, name=ep.name)
    if manager is pm:
        _loaded_entry_points = True
        _load_failures[:] = failures
    return failures


def build_registry(manager: pluggy.PluginManager | None = None) -> Registry:
    """Collect every plugin's components into a fresh registry."""
    manager = manager or pm
    failures = load_entry_points(manager)
    registry = Registry()
    registry.failures.extend(failures)
    for impl in manager.hook.register_components.get_hookimpls():
        origin = manager.get_name(impl.plugin) or repr(impl.plugin)
        pending: list[Entry] = []

        def register(
            kind: str,
            name: str,
            target: str,
            *,
            options: dict[str, dict[str, Any]] | None = None,
            defaults: dict[str, Any] | None = None,
            presets: dict[str, dict[str, Any]] | None = None,
            summary: str = "",
            _origin: str = origin,
            _pending: list[Entry] = pending,
        ) -> None:
            specs = parse_specs(name, options, defaults)
            presets = {k: dict(v) for k, v in (presets or {}).items()}
            for preset, values in presets.items():
                try:
                    merge_options(name, specs, values)
                except BenchError as exc:
                    raise BenchError(f"preset '{preset}' of {kind} '{name}': {exc}") from None
            _pending.append(
                Entry(
                    kind=kind,
                    name=name,
                    target=target,
                    origin=_origin,
                    specs=specs,
                    presets=presets,
                    summary=summary,
                )
            )

        try:
            impl.function(register)
        except Exception as exc:
            registry.failures.append(f"plugin '{origin}' failed to register: {exc}; skipped")
            continue
        for entry in pending:
            registry.add(entry)  # duplicates are an error naming both origins
    return registry


_registry: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The registry of the process-wide manager, built once (``refresh`` rebuilds it)."""
    global _registry
    if _registry is None or refresh:
        _registry = build_registry()
        for line in _registry.failures:
            print(f"bench: warning: {line}", file=sys.stderr)
    return _registry


def reset() -> None:
    """Forget the built registry (tests call it after registering a plugin)."""
    global _registry
    _registry = None


__all__ = [
    "ENTRY_POINT_GROUP",
    "build_registry",
    "get_registry",
    "hookimpl",
    "load_entry_points",
    "pm",
    "reset",
]
