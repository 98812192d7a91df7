"""registry.toml: the catalogue of built-in components and their default options.

Configuration is data: each built-in plugin registers the entries the catalogue lists
under its name, through the same ``register`` callback an outside plugin uses.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from bench.options import read_toml

KIND_TABLES = {
    "detector": "detectors",
    "addon": "addons",
    "transform": "transforms",
    "perturbation": "perturbations",
}


def catalogue_path() -> Path:
    """``$BENCH_REGISTRY``, else the checkout's registry.toml, else the wheel's copy.

    A checkout (or editable install) has registry.toml beside ``bench/``; a wheel carries
    a copy in ``bench/_data/`` (see setup.py).
    """
    env = os.environ.get("BENCH_REGISTRY")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    checkout = here.parent / "registry.toml"
    return checkout if checkout.is_file() else here / "_data" / "registry.toml"


@cache
def load_catalogue(path: str | None = None) -> dict[str, Any]:
    return read_toml(Path(path) if path else catalogue_path(), "registry catalogue")


def register_catalogue(register: Any, plugin: str) -> None:
    """Register every catalogue entry whose ``plugin`` is ``plugin``."""
    data = load_catalogue()
    for kind, table in KIND_TABLES.items():
        for name, spec in data.get(table, {}).items():
            if spec.get("plugin") != plugin:
                continue
            register(
                kind,
                name,
                spec["target"],
                options=spec.get("options"),
                defaults=spec.get("defaults"),
                presets=spec.get("presets", {}),
                summary=spec.get("summary", ""),
            )
