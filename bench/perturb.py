"""Perturbations in a run: how they are named, checked, seeded and put in front of a chain.

`--perturb jpeg=95,75 --perturb resize` (or a `[perturb]` table in a --config file) names
registered perturbations and their levels; a name without levels takes the default levels
its catalogue entry declares. Names, levels and options are checked against the
declarations before any work, like a detector's options.

A perturbed pass evaluates through ``PerturbedChain``: the perturbation at one level, then
the detector's own evaluation chain with exactly the seeds of the clean pass. Its
``describe()`` (the key of anything cached from the chain's output, such as frozen
features) names the perturbation, its level and its options, so a perturbed feature is
never served for a clean one or for another level.
Import-light: no torch, no PIL at import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.interfaces import Perturbation, TransformChain

if TYPE_CHECKING:
    from bench.registry import Registry

#: The `perturbation` value of the clean pass in robustness.csv.
CLEAN = "none"


@dataclass
class SweepItem:
    """One perturbation of a sweep, resolved: its levels, options and the component itself."""

    name: str
    levels: list[Any]
    options: dict[str, Any]
    perturbation: Perturbation
    level_name: str = "level"
    stronger: str = "higher"

    def record(self) -> dict[str, Any]:
        """What config.json keeps, so tables and plots can be redrawn without the plugin."""
        return {
            "name": self.name,
            "levels": list(self.levels),
            "options": {k: v for k, v in self.options.items() if k != "levels"},
            "level_name": self.level_name,
            "stronger": self.stronger,
        }


@dataclass
class Sweep:
    items: list[SweepItem] = field(default_factory=list)

    def passes(self) -> list[tuple[SweepItem, Any]]:
        return [(item, level) for item in self.items for level in item.levels]


def format_level(level: Any) -> str:
    """95 -> "95", 0.5 -> "0.5", 2.0 -> "2": how a level is written in files and tables."""
    if isinstance(level, float) and level.is_integer():
        return str(int(level))
    return f"{level:g}" if isinstance(level, float) else str(level)


def parse_perturb_flags(flags: list[str]) -> dict[str, dict[str, Any]]:
    """``["jpeg=95,75", "blur"]`` -> ``{"jpeg": {"levels": "95,75"}, "blur": {}}``."""
    out: dict[str, dict[str, Any]] = {}
    for flag in flags:
        name, sep, levels = flag.partition("=")
        name = name.strip()
        if not name:
            raise BenchError(f"--perturb expects NAME or NAME=LEVEL,LEVEL,..., got {flag!r}")
        if name in out:
            raise BenchError(f"--perturb {name} is given twice; list all its levels once")
        out[name] = {"levels": levels.strip()} if sep else {}
    return out


def perturb_from_config(value: Any, source: str) -> dict[str, dict[str, Any]]:
    """A config file's `perturb`: ``{jpeg = [95, 75], resize = {levels = [0.5], ...}}``.

    A list of levels sets the levels; a table sets options (``levels`` among them); an
    empty table or ``true`` keeps the default levels. A list of "NAME=L1,L2" strings is
    read like the flags.
    """
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return parse_perturb_flags(value)
    if not isinstance(value, Mapping):
        raise BenchError(
            f"{source}: 'perturb' must be a table NAME = [levels] (or a list of "
            f"'NAME=L1,L2' strings), got {value!r}"
        )
    out: dict[str, dict[str, Any]] = {}
    for name, spec in value.items():
        if isinstance(spec, list):
            out[str(name)] = {"levels": spec}
        elif isinstance(spec, Mapping):
            out[str(name)] = dict(spec)
        elif spec is True:
            out[str(name)] = {}
        else:
            raise BenchError(
                f"{source}: perturb.{name} must be a list of levels or a table of options, "
                f"got {spec!r}"
            )
    return out


def resolve_sweep(
    registry: Registry,
    perturb: Mapping[str, Mapping[str, Any]],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    preset: str | None = None,
) -> Sweep:
    """Look names up and check levels and options: defaults < preset < options < perturb."""
    from bench.options import merge_options

    items = []
    for name, given in perturb.items():
        entry = registry.get("perturbation", name)
        layers = [entry.presets.get(preset, {}) if preset else {}, (options or {}).get(name, {})]
        merged = merge_options(name, entry.specs, *layers, given)
        levels = merged.get("levels")
        if not isinstance(levels, list) or not levels:
            raise BenchError(f"--perturb {name}: give at least one level ({name}=L1,L2,...)")
        shown = [format_level(v) for v in levels]
        repeated = sorted({s for s in shown if shown.count(s) > 1})
        if repeated:
            raise BenchError(f"--perturb {name}: level {repeated[0]} is listed twice")
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, Perturbation)):
            raise BenchError(f"perturbation '{name}' ({entry.target}) is not a Perturbation")
        items.append(
            SweepItem(
                name=name,
                levels=sorted(levels, reverse=cls.stronger == "lower"),  # mild to strong
                options=merged,
                perturbation=cls(merged),
                level_name=cls.level_name,
                stronger=cls.stronger,
            )
        )
    return Sweep(items)


def image_seed(image: Any, name: str, level: Any) -> int:
    """A seed from the decoded pixels, the perturbation's name and the level.

    The same image gets the same noise whichever run, detector, worker or position it is
    evaluated in, so two detectors are compared on identical perturbed images.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{name}|{format_level(level)}|{image.mode}|{image.size}|".encode())
    h.update(image.tobytes())
    return int.from_bytes(h.digest(), "little")


def perturb_image(item: SweepItem, level: Any, image: Any) -> Any:
    """``image`` (PIL) perturbed by ``item`` at ``level``, seeded from the image itself."""
    import numpy as np

    rng = np.random.default_rng(image_seed(image, item.name, level))
    return item.perturbation.apply(image, level, rng)


class PerturbedChain(TransformChain):
    """One perturbation at one level, then the detector's chain with the clean pass's seeds."""

    def __init__(self, item: SweepItem, level: Any, inner: TransformChain):
        super().__init__(inner.steps)
        self.item = item
        self.level = level

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        image = perturb_image(self.item, self.level, image)
        return super().__call__(image, train=train, seed=seed)

    def replace_role(self, role: str, new: Any) -> TransformChain:
        return PerturbedChain(self.item, self.level, super().replace_role(role, new))

    def describe(self) -> list[str]:
        head = f"Perturb({self.item.name}={format_level(self.level)}, {self.item.perturbation!r})"
        return [head, *super().describe()]


def check_perturbation(entry: Any, cls: type[Perturbation]) -> None:
    """`bench validate`: each default level turns a small RGB image into an RGB image."""
    import numpy as np
    from PIL import Image

    from bench.options import merge_options

    options = merge_options(entry.name, entry.specs)
    if not isinstance(options.get("levels"), list) or not options["levels"]:
        raise BenchError("a perturbation declares its default levels as option 'levels'")
    item = SweepItem(entry.name, options["levels"], options, cls(options))
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    for level in item.levels:
        out = perturb_image(item, level, Image.fromarray(pixels))
        if getattr(out, "mode", None) != "RGB":
            raise BenchError(f"level {format_level(level)} did not return an RGB PIL image")
