"""The toolkit's own components, registered like any outside plugin's."""

from bench.catalogue import register_catalogue
from bench.plugins import hookimpl


@hookimpl
def register_components(register):  # noqa: ANN001 - pluggy hook signature
    register_catalogue(register, "builtin")
