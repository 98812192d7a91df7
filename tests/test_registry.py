"""Registry: lazy targets, did-you-mean, duplicates, broken plugins."""

from __future__ import annotations

import sys
import types

import pytest

from bench import plugins
from bench.errors import BenchError
from bench.plugins import build_registry, hookimpl, make_manager
from bench.registry import Entry, Registry, unknown_name_message


def test_targets_are_not_imported_until_loaded():
    registry = Registry()
    registry.add(Entry("detector", "ghost", "no_such_module_xyz:Ghost", origin="test"))
    assert "no_such_module_xyz" not in sys.modules
    assert registry.names("detector") == ["ghost"]
    with pytest.raises(BenchError, match="failed to load no_such_module_xyz:Ghost"):
        registry.get("detector", "ghost").load()


def test_did_you_mean_is_one_line():
    message = unknown_name_message("detector", "nsent", ["nsnet", "univfd", "safe"])
    assert message == "unknown detector 'nsent'; did you mean 'nsnet'?"
    assert "\n" not in message
    far = unknown_name_message("detector", "zzzz", ["nsnet", "safe"])
    assert far == "unknown detector 'zzzz' (known: nsnet, safe)"


def test_duplicate_name_names_both_origins():
    manager = make_manager()

    class First:
        @hookimpl
        def register_components(self, register):
            register("detector", "twin", "pkg_a.mod:Twin")

    class Second:
        @hookimpl
        def register_components(self, register):
            register("detector", "twin", "pkg_b.mod:Twin")

    manager.register(First(), name="plugin_a")
    manager.register(Second(), name="plugin_b")
    manager.set_blocked("builtin"), manager.set_blocked("nsnet"), manager.set_blocked("baselines")
    with pytest.raises(BenchError) as err:
        build_registry(manager)
    text = str(err.value)
    assert "registered twice" in text and "plugin_a" in text and "plugin_b" in text


def test_a_plugin_whose_hook_raises_is_reported_and_skipped():
    manager = make_manager()

    class Broken:
        @hookimpl
        def register_components(self, register):
            raise RuntimeError("boom")

    class Fine:
        @hookimpl
        def register_components(self, register):
            register("detector", "fine", "fine_mod:Fine")

    manager.register(Broken(), name="broken")
    manager.register(Fine(), name="fine")
    registry = build_registry(manager)
    assert "fine" in registry.names("detector")
    assert any("broken" in f and "boom" in f for f in registry.failures)


def test_an_entry_point_that_fails_to_import_is_skipped(monkeypatch):
    class FakeEP:
        name = "exploding"
        value = "exploding_plugin_xyz"

        def load(self):
            raise ImportError("No module named 'exploding_plugin_xyz'")

    real = plugins.entry_points

    def fake_entry_points(group):
        return [*real(group=group), FakeEP()]

    monkeypatch.setattr(plugins, "entry_points", fake_entry_points)
    registry = build_registry(make_manager())
    assert any("exploding" in f and "skipped" in f for f in registry.failures)
    assert "spectral_logreg" in registry.names("detector")  # the others still load


def test_registered_plugin_in_fixture_appears_and_leaves(registered_plugin):
    registry = plugins.get_registry(refresh=True)
    assert "fixture_detector" in registry.names("detector")
    assert registry.get("detector", "fixture_detector").origin == "fixture-plugin"


@pytest.fixture
def registered_plugin():
    """simonw/llm style: register a plugin on the process-wide manager, unregister after."""
    module = types.ModuleType("fixture_plugin")

    @hookimpl
    def register_components(register):
        register("detector", "fixture_detector", "fixture_plugin:Nothing", summary="test")

    module.register_components = register_components
    plugins.pm.register(module, name="fixture-plugin")
    plugins.reset()
    try:
        yield module
    finally:
        plugins.pm.unregister(name="fixture-plugin")
        plugins.reset()


def test_catalogue_entries_register_with_defaults():
    registry = plugins.get_registry(refresh=True)
    entry = registry.get("detector", "spectral_logreg")
    assert entry.origin == "builtin"
    assert entry.defaults["bins"] == 24
    assert entry.target == "bench.builtin.spectral_logreg:SpectralLogReg"
