"""The nsnet plugin: registers the components listed under its name in registry.toml."""

from bench.catalogue import register_catalogue
from bench.plugins import hookimpl


@hookimpl
def register_components(register):
    register_catalogue(register, "nsnet")
