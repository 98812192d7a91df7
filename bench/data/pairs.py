"""Paired layouts: fake folders scored against real folders that live elsewhere.

Two ways, one result (each fake folder becomes a two-class generator; its reals are the
paired real folder's images, predicted once and scored with every generator they pair):

- **UniversalFakeDetect's diffusion set** as released (``diffusion_datasets/``): reals in
  ``{imagenet,laion}/0_real``, fakes in ``<generator>/1_fake``. The pairing is the one in
  the authors' ``dataset_paths.py`` (WisconsinAIVision/UniversalFakeDetect, commit
  51ce2c3de18e5d524227d335285cb61bef93bcc4): ``guided`` with ``imagenet``, every LDM,
  GLIDE and DALL-E folder with ``laion``. Recognised whenever a tree has reals-only
  ``imagenet``/``laion`` folders beside fakes-only folders of those names.
- **A pairs manifest** (TOML) for any other layout, beside or outside the data::

      name = "MySet"                 # optional: the data set's name (default: file stem)
      root = "."                     # optional: folder the paths start from (default: here)

      [generators.guided]
      real = ["imagenet/0_real"]     # folders (every image below) or globs ("x/*.png")
      fake = ["guided/1_fake"]

  Every file under ``root`` that no generator names is listed as not read.
"""

from __future__ import annotations

import difflib
import glob
import os
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.text import printable

#: Fake folder -> real folder, from UniversalFakeDetect's dataset_paths.py (see above).
UFD_DIFFUSION_PAIRS: dict[str, str] = {
    "guided": "imagenet",
    "ldm_200": "laion",
    "ldm_200_cfg": "laion",
    "ldm_100": "laion",
    "glide_100_27": "laion",
    "glide_50_27": "laion",
    "glide_100_10": "laion",
    "dalle": "laion",
}
UFD_SOURCE = "WisconsinAIVision/UniversalFakeDetect dataset_paths.py"

MANIFEST_KEYS = {"name", "root", "generators"}
GENERATOR_KEYS = {"real", "fake"}


def pair_universalfakedetect(samples: list[Any]) -> tuple[list[Any], list[str]]:
    """Pair fakes-only UniversalFakeDetect folders with their reals-only real folder."""
    from bench.data.layouts import Sample

    labels: dict[str, set[int]] = {}
    for s in samples:
        labels.setdefault(s.generator, set()).add(s.label)
    reals_only = {g.lower(): g for g, labs in labels.items() if labs == {0}}
    pairs = {
        g: reals_only[UFD_DIFFUSION_PAIRS[g.lower()]]
        for g, labs in labels.items()
        if labs == {1}
        and g.lower() in UFD_DIFFUSION_PAIRS
        and UFD_DIFFUSION_PAIRS[g.lower()] in reals_only
    }
    if not pairs:
        return samples, []
    used = set(pairs.values())
    by_real: dict[str, list[Any]] = {}
    kept = []
    for s in samples:
        if s.generator in used:
            by_real.setdefault(s.generator, []).append(s)
        else:
            kept.append(s)
    for fake_gen, real_gen in pairs.items():
        kept.extend(Sample(s.path, 0, fake_gen, s.dataset) for s in by_real[real_gen])
    listed = "; ".join(
        f"{printable(r)} -> {', '.join(sorted(printable(f) for f, rr in pairs.items() if rr == r))}"
        for r in sorted(used)
    )
    notes = [
        f"UniversalFakeDetect diffusion layout: real folders paired with fake folders as in "
        f"{UFD_SOURCE} ({listed}); each real image is predicted once and scored with every "
        "generator it pairs"
    ]
    return kept, notes


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
            hint = (
                f"; did you mean '{close[0]}'?"
                if close
                else f" (known: {', '.join(sorted(known))})"
            )
            raise BenchError(f"{where}: unknown key '{key}'{hint}")


def _patterns(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BenchError(f"{where} must be a folder, a glob or a list of them")
    return value


def _expand(root: Path, pattern: str, where: str, skipped: list) -> list[tuple[str, Any]]:
    """Images a manifest entry names: a folder (all images below), a file, or a glob."""
    from bench.data.walk import entry_kind, images_below, is_image_name

    full = os.path.join(root, os.path.expanduser(pattern))
    # the root is a folder name, never a pattern: "[", "*" or "?" in it match themselves
    wanted = os.path.join(glob.escape(str(root)), os.path.expanduser(pattern))
    matches = sorted(glob.glob(wanted, recursive=True)) if glob.has_magic(pattern) else [full]
    found: list[tuple[str, Any]] = []
    for match in matches:
        kind, st, reason = entry_kind(match)
        if kind == "dir":
            found.extend(images_below(match, skipped))
        elif kind == "file" and is_image_name(match):
            found.append((os.path.abspath(match), (st.st_dev, st.st_ino)))
        elif kind == "file":
            skipped.append(
                (match, f"not an image ({os.path.splitext(match)[1] or 'no extension'})")
            )
        elif glob.has_magic(pattern):
            skipped.append((match, reason))
    if not found:
        raise BenchError(f"{where}: '{pattern}' names no image (under {printable(str(root))})")
    return found


def read_manifest(path: Path, name: str | None = None) -> Any:
    """A pairs manifest as a Listing (see the module docstring for the format)."""
    from bench.data.layouts import Listing, Sample
    from bench.data.walk import images_below
    from bench.options import read_toml

    data = read_toml(path, "pairs manifest")
    where = f"pairs manifest {printable(str(path))}"
    _no_unknown(data, MANIFEST_KEYS, where)
    root = (path.parent / str(data.get("root", "."))).resolve()
    if not root.is_dir():
        raise BenchError(f"{where}: root {printable(str(root))} is not a folder")
    generators = data.get("generators")
    if not isinstance(generators, dict) or not generators:
        raise BenchError(f"{where}: needs at least one [generators.NAME] table")
    name = name or str(data.get("name", path.stem))
    listing = Listing(name, str(root), "", "pairs manifest")
    used: set[str] = set()
    for generator, table in generators.items():
        gwhere = f"{where}, generator '{generator}'"
        if not isinstance(table, dict):
            raise BenchError(f"{gwhere}: must be a table with real = [...] and fake = [...]")
        _no_unknown(table, GENERATOR_KEYS, gwhere)
        for key, label in (("real", 0), ("fake", 1)):
            if key not in table:
                raise BenchError(f"{gwhere}: needs '{key}' (folders or globs of {key} images)")
            seen: set[tuple[int, int]] = set()
            for pattern in _patterns(table[key], f"{gwhere}, {key}"):
                for image, ident in _expand(root, pattern, f"{gwhere}, {key}", listing.skipped):
                    if ident in seen:
                        continue
                    seen.add(ident)
                    used.add(image)
                    listing.samples.append(Sample(image, label, str(generator), name))
    for image, _ in images_below(str(root), listing.skipped):
        if image not in used:
            listing.skipped.append((image, "not named by any generator of the pairs manifest"))
    listing.skipped = sorted(set(listing.skipped))
    shared = len(listing.samples) - len({(s.path, s.label) for s in listing.samples})
    listing.notes.append(
        f"{printable(name)}: {len(generators)} generator(s) from {printable(str(path))}"
        + (f"; {shared} image(s) are scored with more than one generator" if shared else "")
    )
    return listing
