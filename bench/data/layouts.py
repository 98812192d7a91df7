"""Readers for the dataset layouts people already have on disk, so nothing needs converting.

Import-light on purpose (no torch, no pandas): the CLI imports this at start-up.
Every reader returns absolute paths sorted by (generator, label, path), so two runs over the
same data see the same samples in the same order.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

#: Lower-case suffixes (with the dot) of the files we treat as images; matched case-insensitively.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})

FOLDER_TREE_CLASSES = {"0_real": 0, "1_fake": 1}
GENIMAGE_CLASSES = {"nature": 0, "ai": 1}
CSV_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}

_LAYOUTS_LOOKED_FOR = (
    "looked for 0_real/1_fake folders (ForenSynths, UniversalFakeDetect, AIGIBench), "
    "{train,val}/{ai,nature} folders (GenImage) and .csv files"
)


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # 1 = fake, 0 = real
    generator: str


def _sort_key(sample: Sample) -> tuple[str, int, str]:
    return (sample.generator, sample.label, sample.path)


def _is_hidden(name: str) -> bool:
    # Skips macOS "._x.png" resource forks and ".ipynb_checkpoints"-style folders.
    return name.startswith(".")


def is_image(name: str) -> bool:
    """True for a visible file name with an image suffix (any case)."""
    return not _is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _existing_dir(root: str | os.PathLike[str]) -> Path:
    path = Path(os.path.abspath(os.path.expanduser(root)))
    if not path.exists():
        raise BenchError(f"dataset path does not exist: {path}")
    if not path.is_dir():
        raise BenchError(f"dataset path is not a folder: {path}")
    return path


def _class_dirs(root: Path, is_class_dir: Callable[[Path], bool]) -> list[Path]:
    """Folders below `root` accepted by `is_class_dir(path)`; the walk does not enter them.

    Not entering class folders keeps layout detection cheap on trees with millions of images.
    Symlinked folders are followed: benchmark trees are often assembled from links.
    """
    found = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            if _is_hidden(name):
                continue
            child = Path(dirpath, name)
            if is_class_dir(child):
                found.append(child)
            else:
                keep.append(name)
        dirnames[:] = keep
    return found


def _images_below(folder: Path) -> list[str]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
        paths.extend(os.path.join(dirpath, f) for f in filenames if is_image(f))
    return paths


def _generator_of(root: Path, container: Path) -> str:
    """First folder below the root; the root's own name when `container` is the root."""
    rel = container.relative_to(root)
    return rel.parts[0] if rel.parts else root.name


def read_folder_tree(root: str | os.PathLike[str]) -> list[Sample]:
    """Any tree with 0_real/1_fake folders: ForenSynths/CNNDetection, UniversalFakeDetect, AIGIBench."""
    base = _existing_dir(root)
    samples = []
    for class_dir in _class_dirs(base, lambda p: p.name in FOLDER_TREE_CLASSES):
        label = FOLDER_TREE_CLASSES[class_dir.name]
        generator = _generator_of(base, class_dir.parent)
        samples.extend(Sample(p, label, generator) for p in _images_below(class_dir))
    return sorted(samples, key=_sort_key)


GENIMAGE_SPLITS = ("train", "val")


def _is_genimage_class_dir(path: Path, splits: tuple[str, ...] = GENIMAGE_SPLITS) -> bool:
    return path.name in GENIMAGE_CLASSES and path.parent.name in splits


def read_genimage(root: str | os.PathLike[str], split: str = "val") -> list[Sample]:
    """GenImage: `<generator>[/<subfolder>]/{train,val}/{ai,nature}/*`, ai = fake."""
    base = _existing_dir(root)
    samples = []
    # Every split's class folders are found (and so never entered); only `split`'s are read.
    splits = tuple({*GENIMAGE_SPLITS, split})
    for class_dir in _class_dirs(base, lambda p: _is_genimage_class_dir(p, splits)):
        split_dir = class_dir.parent
        if split_dir.name != split:
            continue
        label = GENIMAGE_CLASSES[class_dir.name]
        # Pointed straight at `<generator>/val`: the generator is the folder above the root.
        generator = base.parent.name if split_dir == base else _generator_of(base, split_dir.parent)
        samples.extend(Sample(p, label, generator) for p in _images_below(class_dir))
    return sorted(samples, key=_sort_key)


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


def read_csv(path: str | os.PathLike[str]) -> list[Sample]:
    """A CSV of `path,label[,generator]`: the escape hatch for any layout we do not know."""
    csv_path = Path(os.path.abspath(os.path.expanduser(path)))
    if not csv_path.is_file():
        raise BenchError(f"CSV file does not exist: {csv_path}")
    folder = csv_path.parent
    columns: tuple[int, int, int | None] = (0, 1, 2)
    samples = []
    first_row = True
    # utf-8-sig: spreadsheets often save a byte-order mark that would spoil the header.
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for row in reader:
            where = f"{csv_path}, line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if first_row:
                first_row = False
                header = _header_columns(row, where)
                if header is not None:
                    columns = header
                    continue
            samples.append(_csv_sample(row, columns, folder, csv_path.stem, where))
    return sorted(samples, key=_sort_key)


def _csv_sample(
    row: list[str], columns: tuple[int, int, int | None], folder: Path, stem: str, where: str
) -> Sample:
    path_col, label_col, gen_col = columns
    if len(row) <= max(path_col, label_col):
        raise BenchError(f"{where}: expected path,label[,generator], got {len(row)} column(s)")
    image = os.path.expanduser(row[path_col].strip())
    if not image:
        raise BenchError(f"{where}: empty path")
    label = _parse_label(row[label_col], where)
    generator = row[gen_col].strip() if gen_col is not None and gen_col < len(row) else ""
    return Sample(os.path.abspath(os.path.join(folder, image)), label, generator or stem)


def read_dataset(spec: str, split: str = "val") -> list[Sample]:
    """Read whatever layout `spec` points at; a single-class result is returned, not refused.

    A tree with {train,val}/{ai,nature} folders is GenImage, any other folder a 0_real/1_fake
    tree. Checking for one class is the caller's job: a reals-only set is a fair thing to run.
    """
    path = Path(os.path.abspath(os.path.expanduser(spec)))
    if not path.exists():
        raise BenchError(f"dataset path does not exist: {path}")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise BenchError(f"dataset file is not a .csv: {path}")
        samples = read_csv(path)
        if not samples:
            raise BenchError(f"no samples in {path} (expected rows of path,label[,generator])")
        return samples
    if _class_dirs(path, _is_genimage_class_dir):
        samples = read_genimage(path, split)
        if not samples:
            raise BenchError(
                f"no images found under {path} for GenImage split {split!r} "
                f"(looked for {split}/ai and {split}/nature folders)"
            )
        return samples
    samples = read_folder_tree(path)
    if not samples:
        raise BenchError(f"no images found under {path} ({_LAYOUTS_LOOKED_FOR})")
    return samples


def sample_per_class(
    samples: Iterable[Sample], max_per_class: int | None, seed: int = 0
) -> list[Sample]:
    """At most `max_per_class` samples per (generator, label), the same ones on every run.

    Each group draws from its own `random.Random` seeded by (seed, generator, label), so adding
    or dropping a generator never changes which images another generator contributes.
    """
    ordered = sorted(samples, key=_sort_key)
    if max_per_class is None:
        return ordered
    if max_per_class < 1:
        raise BenchError(f"max per class must be at least 1, got {max_per_class}")
    groups: dict[tuple[str, int], list[Sample]] = {}
    for sample in ordered:
        groups.setdefault((sample.generator, sample.label), []).append(sample)
    chosen = []
    for (generator, label), group in groups.items():
        if len(group) > max_per_class:
            # A str seed is hashed with SHA-512: stable across processes and PYTHONHASHSEED.
            rng = random.Random(f"{seed}:{generator}:{label}")
            group = rng.sample(group, max_per_class)
        chosen.extend(group)
    return sorted(chosen, key=_sort_key)
