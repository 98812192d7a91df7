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

KIND_TABLES = {"detector": "detectors", "addon": "addons", "transform": "transforms"}


def catalogue_path() -> Path:
    """``$BENCH_REGISTRY``, else registry.toml at the project root (beside ``bench/``)."""
    env = os.environ.get("BENCH_REGISTRY")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "registry.toml"


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
