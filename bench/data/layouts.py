"""Readers for the dataset layouts people already have on disk, so nothing needs converting.

``list_dataset(path, role)`` reads any of them and returns a ``Listing``: the samples, and
every entry under the root that was not read with its reason (``skipped``), plus the lines
the run log shows (splits chosen, sub-folders pooled, pairs made). Layouts:

- a folder tree with ``0_real``/``1_fake`` folders (ForenSynths/CNNDetection,
  UniversalFakeDetect, AIGIBench, AIGCDetectBenchmark, Chameleon), GenImage's
  ``{train,val}/{ai,nature}``, or both side by side (each generator read by its own kind);
- UniversalFakeDetect's ``diffusion_datasets``: fake-only folders scored against the real
  folder its authors pair them with (``bench.data.pairs``);
- a CSV of ``path,label[,generator]`` and a TOML manifest of real/fake folders per generator.

A generator is identified by (data set, generator): the data set's name travels with each
sample, so two test sets that both have a ``Midjourney`` folder are never pooled.
Import-light on purpose (no torch, no pandas): the CLI imports this at start-up.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.data.walk import (
    FOLDER_TREE_CLASSES,
    GENIMAGE_CLASSES,
    entry_kind,
    images_below,
    is_archive_level,
    split_kind,
    walk_root,
)
from bench.errors import BenchError
from bench.text import printable

CSV_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}
LAYOUTS_LOOKED_FOR = (
    "looked for 0_real/1_fake folders (ForenSynths, UniversalFakeDetect, AIGIBench, "
    "Chameleon) and {train,val,test}/{ai,nature} folders (GenImage); for any other layout "
    "give a CSV of path,label[,generator] or a pairs manifest (.toml)"
)


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # 1 = fake, 0 = real
    generator: str
    #: The data set the sample comes from (a test set's name); "" when there is only one.
    dataset: str = ""


def _sort_key(sample: Sample) -> tuple[str, str, int, str]:
    return (sample.dataset, sample.generator, sample.label, sample.path)


@dataclass
class Listing:
    """What reading one data root gave: samples, and everything else with its reason."""

    name: str
    root: str
    role: str
    layout: str
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[str] = field(default_factory=list)

    def generators(self) -> list[str]:
        return sorted({s.generator for s in self.samples})

    def summary(self) -> str:
        """One line for the log: images per class, generators, entries not read by reason."""
        n_fake = sum(s.label for s in self.samples)
        line = (
            f"{printable(self.name)} ({self.layout}, {self.role}): {len(self.samples)} images "
            f"({len(self.samples) - n_fake} real, {n_fake} fake) in "
            f"{len(self.generators())} generator(s)"
        )
        if self.skipped:
            reasons = Counter(_reason_kind(r) for _, r in self.skipped)
            parts = ", ".join(f"{n} {kind}" for kind, n in reasons.most_common())
            line += f"; {len(self.skipped)} entries not read ({parts}), listed in skipped.txt"
        return line


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def display_name(path: str | os.PathLike[str]) -> str:
    """A data set's name: its folder (the parent's when the folder is a split), a file's stem."""
    p = Path(os.path.abspath(os.path.expanduser(path)))
    if p.is_file():
        return p.stem
    while p.parent != p and (split_kind(p.name) or is_archive_level(p.name)):
        p = p.parent
    return p.name or str(p)


# ------------------------------------------------------------------ folder trees


def _read_tree(root: Path, role: str, name: str) -> Listing:
    from bench.data.pairs import pair_universalfakedetect

    generator_root = root
    while generator_root.parent != generator_root and (
        split_kind(generator_root.name) or is_archive_level(generator_root.name)
    ):
        generator_root = generator_root.parent
    walk = walk_root(root, role, generator_root.name or root.name)
    listing = Listing(name, str(root), role, "", skipped=list(walk.skipped), notes=walk.notes)
    kinds: dict[str, set[str]] = {}
    subs: dict[str, set[str]] = {}
    for cd in walk.class_dirs:
        kind = "GenImage" if os.path.basename(cd.path) in GENIMAGE_CLASSES else "0_real/1_fake"
        kinds.setdefault(cd.generator, set()).add(kind)
        subs.setdefault(cd.generator, set()).add(cd.sub)
    mixed_gens = sorted(g for g, k in kinds.items() if len(k) > 1)
    if mixed_gens:
        raise BenchError(
            f"generator folder {printable(mixed_gens[0])} under {printable(str(root))} holds both "
            "0_real/1_fake and GenImage ai/nature folders; point at one of them"
        )
    all_kinds = sorted({k for ks in kinds.values() for k in ks})
    listing.layout = " + ".join(all_kinds) or "empty"
    if len(all_kinds) > 1:
        by_kind = {k: sorted(printable(g) for g, ks in kinds.items() if k in ks) for k in all_kinds}
        listing.notes.append(
            f"{printable(name)} mixes layouts; each generator read by its own: "
            + "; ".join(f"{k}: {', '.join(gs)}" for k, gs in by_kind.items())
        )
    val_as_test = [p for p, k in walk.splits_read if role == "test" and k == "val"]
    if val_as_test:
        listing.notes.append(
            f"{printable(name)}: test split read from {len(val_as_test)} val/ folder(s) "
            "(no test/ beside them; GenImage ships only train/ and val/)"
        )
    seen: dict[tuple[str, tuple[int, int]], tuple[str, int]] = {}
    for cd in walk.class_dirs:
        for path, ident in images_below(cd.path, listing.skipped):
            first = seen.get((cd.generator, ident))
            if first is not None:
                also = (
                    ""
                    if first[1] == cd.label
                    else f" (labelled {'fake' if first[1] else 'real'} there)"
                )
                listing.skipped.append(
                    (path, f"duplicate: same file as {printable(first[0])}{also}")
                )
                continue
            seen[(cd.generator, ident)] = (path, cd.label)
            listing.samples.append(Sample(path, cd.label, cd.generator, name))
    for generator, paths in sorted(subs.items()):
        pooled = sorted(s for s in paths if s)
        if len(pooled) > 1 or (pooled and "" in paths):
            shown = ", ".join(printable(s) for s in pooled[:6]) + (
                ", ..." if len(pooled) > 6 else ""
            )
            listing.notes.append(
                f"{printable(name)}/{printable(generator)} pools {len(paths)} sub-folders ({shown})"
            )
    listing.samples, pair_notes = pair_universalfakedetect(listing.samples)
    listing.notes.extend(pair_notes)
    if pair_notes:
        listing.layout += " (UniversalFakeDetect pairs)"
    return listing


def _no_images_error(root: Path, role: str, listing: Listing) -> BenchError:
    csvs = sorted(p.name for p in root.glob("*.csv"))
    tomls = sorted(p.name for p in root.glob("*.toml"))
    if csvs or tomls:
        files = ", ".join([*csvs, *tomls][:3])
        return BenchError(
            f"no image folders found under {printable(str(root))}, but it holds {files}: give "
            f"the file itself (e.g. {printable(str(root / [*csvs, *tomls][0]))})"
        )
    split = "train" if role == "train" else "test or val"
    # only when split folders were left out ("in a split folder" in other reasons is no split)
    other_splits = any(r.startswith("other split") for _, r in listing.skipped)
    where = f" for the {split} split" if other_splits else ""
    return BenchError(f"no images found under {printable(str(root))}{where} ({LAYOUTS_LOOKED_FOR})")


# ------------------------------------------------------------------ CSV


def _parse_label(cell: str, where: str) -> int:
    label = CSV_LABELS.get(cell.strip().lower())
    if label is None:
        raise BenchError(f"{where}: label {cell!r} is not one of 0, 1, real, fake")
    return label


def _header_columns(row: list[str], where: str) -> tuple[int, int, int | None] | None:
    """Column positions of path, label, generator when `row` is a header, else None."""
    names = [cell.strip().lower() for cell in row]
    if "label" not in names:
        return None
    if "path" not in names:
        raise BenchError(
            f"{where}: the header names no 'path' column (expected path,label[,generator])"
        )
    generator = names.index("generator") if "generator" in names else None
    return names.index("path"), names.index("label"), generator


def _read_csv_listing(csv_path: Path, name: str) -> Listing:
    listing = Listing(name, str(csv_path), "", "CSV")
    columns: tuple[int, int, int | None] = (0, 1, 2)
    first_row = True
    seen: dict[str, int] = {}
    # utf-8-sig: spreadsheets often save a byte-order mark that would spoil the header;
    # surrogateescape: bytes that are not UTF-8 stay as the file system spells the name.
    with open(csv_path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        reader = csv.reader(fh)
        for row in reader:
            where = f"{printable(str(csv_path))}, line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if first_row:
                first_row = False
                header = _header_columns(row, where)
                if header is not None:
                    columns = header
                    continue
            sample = _csv_sample(row, columns, csv_path.parent, csv_path.stem, where, name)
            kind, _, reason = entry_kind(sample.path)
            if kind != "file":
                reason = "is a folder" if kind == "dir" else reason
                listing.skipped.append((sample.path, f"{reason} (line {reader.line_num})"))
            elif sample.path in seen:
                listing.skipped.append(
                    (sample.path, f"duplicate: listed again at line {reader.line_num}")
                )
            else:
                seen[sample.path] = reader.line_num
                listing.samples.append(sample)
    return listing


def _csv_sample(
    row: list[str],
    columns: tuple[int, int, int | None],
    folder: Path,
    stem: str,
    where: str,
    name: str,
) -> Sample:
    path_col, label_col, gen_col = columns
    if len(row) <= max(path_col, label_col):
        raise BenchError(f"{where}: expected path,label[,generator], got {len(row)} column(s)")
    image = os.path.expanduser(row[path_col].strip())
    if not image:
        raise BenchError(f"{where}: empty path")
    label = _parse_label(row[label_col], where)
    generator = row[gen_col].strip() if gen_col is not None and gen_col < len(row) else ""
    return Sample(os.path.abspath(os.path.join(folder, image)), label, generator or stem, name)


# ------------------------------------------------------------------ entry points


def list_dataset(
    spec: str | os.PathLike[str], role: str = "test", name: str | None = None
) -> Listing:
    """Read whatever layout ``spec`` points at, for ``role`` ("train" or "test").

    A folder holding split folders is read at the role's split (train: ``train/``; test:
    ``test/``, else ``val/``), never the others. A single-class result is returned, not
    refused: a reals-only set is a fair thing to run; the metrics say what is undefined.
    """
    from bench.data.pairs import read_manifest

    path = Path(os.path.abspath(os.path.expanduser(spec)))
    if not os.path.exists(path):
        raise BenchError(f"dataset path does not exist: {printable(str(path))}")
    name = name or display_name(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            listing = _read_csv_listing(path, name)
        elif suffix == ".toml":
            listing = read_manifest(path, name if name != path.stem else None)
        else:
            raise BenchError(
                f"dataset file is not a .csv or a pairs manifest (.toml): {printable(str(path))}"
            )
        listing.role = role
        if not listing.samples:
            raise BenchError(
                f"no readable images listed in {printable(str(path))}"
                + (f" ({len(listing.skipped)} entries skipped)" if listing.skipped else "")
            )
    elif path.is_dir():
        listing = _read_tree(path, role, name)
        if not listing.samples:
            raise _no_images_error(path, role, listing)
    else:
        raise BenchError(f"dataset path is neither a folder nor a file: {printable(str(path))}")
    if role == "train":
        _dedupe_training(listing)
        if split_kind(path.name) in ("test", "val"):
            listing.notes.append(f"training on a folder named {printable(path.name)}")
    elif split_kind(path.name) == "train":
        listing.notes.append(f"testing on a folder named {printable(path.name)}")
    listing.samples.sort(key=_sort_key)
    return listing


def _dedupe_training(listing: Listing) -> None:
    """A training set holds each file once (paired reals shared by generators train once)."""
    unique: dict[str, Sample] = {}
    for sample in listing.samples:
        unique.setdefault(sample.path, sample)
    extra = len(listing.samples) - len(unique)
    if extra:
        listing.notes.append(f"{extra} images shared by several generators are trained on once")
    listing.samples = list(unique.values())


def read_dataset(spec: str, split: str = "val") -> list[Sample]:
    """The samples of ``list_dataset``; ``split`` "train" reads the training split."""
    return list_dataset(spec, "train" if split == "train" else "test").samples


def read_folder_tree(root: str | os.PathLike[str]) -> list[Sample]:
    """A tree with 0_real/1_fake folders, read as a test set."""
    return list_dataset(root, "test").samples


def read_genimage(root: str | os.PathLike[str], split: str = "val") -> list[Sample]:
    """GenImage: ``<generator>[/<subfolder>]/{train,val}/{ai,nature}/*``, ai = fake."""
    return read_dataset(str(root), split)


def read_csv(path: str | os.PathLike[str]) -> list[Sample]:
    """A CSV of ``path,label[,generator]`` (paths relative to the CSV); missing files skipped."""
    csv_path = Path(os.path.abspath(os.path.expanduser(path)))
    if not csv_path.is_file():
        raise BenchError(f"CSV file does not exist: {printable(str(csv_path))}")
    return sorted(_read_csv_listing(csv_path, csv_path.stem).samples, key=_sort_key)


def sample_per_class(
    samples: Iterable[Sample], max_per_class: int | None, seed: int = 0
) -> list[Sample]:
    """At most `max_per_class` samples per (data set, generator, label), the same every run.

    Each group draws from its own `random.Random` seeded by (seed, data set, generator,
    label), so adding or dropping a generator never changes what another one contributes.
    """
    ordered = sorted(samples, key=_sort_key)
    if max_per_class is None:
        return ordered
    if max_per_class < 1:
        raise BenchError(f"max per class must be at least 1, got {max_per_class}")
    groups: dict[tuple[str, str, int], list[Sample]] = {}
    for sample in ordered:
        groups.setdefault((sample.dataset, sample.generator, sample.label), []).append(sample)
    chosen = []
    for (dataset, generator, label), group in groups.items():
        if len(group) > max_per_class:
            # A str seed is hashed with SHA-512: stable across processes and PYTHONHASHSEED.
            parts = [str(seed), *([printable(dataset)] if dataset else []), printable(generator)]
            group = random.Random(":".join([*parts, str(label)])).sample(group, max_per_class)
        chosen.extend(group)
    return sorted(chosen, key=_sort_key)


__all__ = [
    "FOLDER_TREE_CLASSES",
    "GENIMAGE_CLASSES",
    "Listing",
    "Sample",
    "display_name",
    "list_dataset",
    "read_csv",
    "read_dataset",
    "read_folder_tree",
    "read_genimage",
    "sample_per_class",
]
