"""`bench validate`: the catalogue, every plugin and every default option must load."""

from __future__ import annotations

import inspect

from bench.catalogue import KIND_TABLES, load_catalogue
from bench.errors import BenchError
from bench.interfaces import Addon, Detector, Perturbation, Transform
from bench.options import merge_options

BASES = {"detector": Detector, "addon": Addon, "transform": Transform, "perturbation": Perturbation}


def check_entry(entry) -> None:  # noqa: ANN001
    obj = entry.load()
    base = BASES[entry.kind]
    if not (inspect.isclass(obj) and issubclass(obj, base)):
        raise BenchError(f"{entry.target} is not a {base.__name__} subclass")
    if entry.kind == "transform":
        return
    if entry.kind == "perturbation":
        from bench.perturb import check_perturbation

        check_perturbation(entry, obj)
        return
    for preset in [None, *entry.presets]:
        options = merge_options(
            entry.name, entry.specs, entry.presets.get(preset, {}) if preset else {}
        )
        obj(options)  # construction is cheap by contract: no weights, no data; it checks options
    if entry.kind == "detector" and obj.trainable:
        for key in ("epochs", "batch_size"):
            if key not in entry.defaults:
                raise BenchError(f"trainable detector has no default '{key}' option")


def validate(echo=print) -> list[str]:  # noqa: ANN001
    """Check everything; print one line per component; return the problems found."""
    from bench.plugins import get_registry

    problems: list[str] = []
    registry = get_registry()
    problems.extend(registry.failures)
    catalogue = load_catalogue()
    for kind, table in KIND_TABLES.items():
        for name, spec in catalogue.get(table, {}).items():
            missing = {"plugin", "target"} - set(spec)
            if missing:
                problems.append(f"registry.toml {table}.{name} lacks {', '.join(sorted(missing))}")
            elif name not in registry.names(kind):
                problems.append(
                    f"registry.toml {table}.{name}: plugin '{spec['plugin']}' is not installed or did not register it"
                )
    for kind in BASES:
        for entry in registry.entries(kind):
            try:
                check_entry(entry)
            except BenchError as exc:
                problems.append(f"{kind} '{entry.name}' ({entry.origin}): {exc}")
                echo(f"FAIL {kind:<9} {entry.name}")
            else:
                echo(f"ok   {kind:<9} {entry.name}  [{entry.origin}]")
    for line in problems:
        echo(f"problem: {line}")
    echo("validate: " + ("all components valid" if not problems else f"{len(problems)} problem(s)"))
    return problems
