"""Entry point of the baselines plugin: registers its catalogue entries from registry.toml."""

from bench.catalogue import register_catalogue
from bench.plugins import hookimpl


@hookimpl
def register_components(register):  # noqa: ANN001 - pluggy hook signature
    register_catalogue(register, "baselines")
