"""One walk over a data root: class folders, splits, and a reason for every file not read.

The walk finds the folders that say what an image is (``0_real``/``1_fake`` anywhere, and
GenImage's ``ai``/``nature`` inside a ``train``/``val``/``test`` folder) without entering
them, then lists the files inside the chosen ones. Everything else it meets is recorded
with its reason: files outside any class folder, other splits, hidden entries, special
files (FIFOs, devices), symlink cycles, duplicates. Nothing is dropped without a line.

Splits: a folder whose child folders are all split-named (``train``, ``val``, ``test`` and
spellings such as ``progan_train`` or ``CNN_synth_testset``) is a split point; the walk
enters the split the role asks for (train: ``train``; test: ``test``, else ``val``, as
GenImage ships only ``val``) and lists the others as not read. A folder that mixes split
folders with other folders is refused, unless every one of them directly holds class
folders (ForenSynths has an LSUN class named ``train``). Symlinks are followed; a folder
that links back to one of its own ancestors is a cycle and is not entered.

Stdlib only at import time (PIL loads when the image extensions are first needed).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from bench.errors import BenchError
from bench.text import printable

FOLDER_TREE_CLASSES = {"0_real": 0, "1_fake": 1}
GENIMAGE_CLASSES = {"nature": 0, "ai": 1}
ROLES = ("train", "test")

_SPLIT_PATTERNS = (
    ("train", re.compile(r"(?:^|[_\-.])(train|training)$")),
    ("val", re.compile(r"(?:^|[_\-.])(val|valid|validation)$")),
    ("test", re.compile(r"(?:^|[_\-.])(test|testing|testset)$")),
)

#: Extensions PIL registers but which need outside programs (PostScript runs Ghostscript)
#: or are stubs that never decode pixels; files with them are listed as not images.
_NOT_IMAGES = frozenset({".eps", ".ps", ".bufr", ".grib", ".h5", ".hdf", ".mpeg", ".mpg"})
_NOT_IMAGES |= {".wmf", ".emf"}


@cache
def image_extensions() -> frozenset[str]:
    """Lower-case suffixes of every format PIL can open here (``.png``, ``.gif``, ``.jfif``...)."""
    from PIL import Image

    Image.init()
    found = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset(found - _NOT_IMAGES)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in image_extensions()


def split_kind(name: str) -> str | None:
    """ "train", "val" or "test" for a split-named folder, else None."""
    lower = name.lower()
    for kind, pattern in _SPLIT_PATTERNS:
        if pattern.search(lower):
            return kind
    return None


def is_archive_level(name: str) -> bool:
    """GenImage's per-archive folder (``ADM/imagenet_ai_0508_adm``): not a generator's name."""
    return name.lower().startswith("imagenet_ai_")


def is_hidden(name: str) -> bool:
    # macOS "._x.png" resource forks, ".DS_Store", ".ipynb_checkpoints".
    return name.startswith(".")


@dataclass(frozen=True)
class ClassDir:
    """A folder whose images all have one label, and the generator it belongs to."""

    path: str
    label: int
    generator: str
    #: Path below the generator folder, without split folders ("" when directly below).
    sub: str


@dataclass
class Walk:
    class_dirs: list[ClassDir] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[str] = field(default_factory=list)
    #: Split folders read: (path, kind); lets the caller say which split it used.
    splits_read: list[tuple[str, str]] = field(default_factory=list)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _kind_of_special(mode: int) -> str:
    for test, what in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def entry_kind(path: str) -> tuple[str, os.stat_result | None, str]:
    """("dir" | "file" | "skip", stat, reason): follows symlinks; never opens the file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "skip", None, "broken symbolic link"
        return "skip", None, "does not exist"
    except OSError as exc:
        return "skip", None, f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "dir", st, ""
    if stat.S_ISREG(st.st_mode):
        return "file", st, ""
    return "skip", st, f"not a regular file ({_kind_of_special(st.st_mode)})"


def _children(folder: str, walk: Walk) -> tuple[list[str], list[str]] | None:
    """(sub-folder names, file names), sorted; hidden and special entries are recorded."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        walk.skipped.append((folder, f"folder cannot be listed ({exc.strerror or exc})"))
        return None
    dirs, files = [], []
    for name in names:
        path = os.path.join(folder, name)
        kind, _, reason = entry_kind(path)
        if is_hidden(name):
            walk.skipped.append((path, "hidden " + ("folder" if kind == "dir" else "file")))
        elif kind == "dir":
            dirs.append(name)
        elif kind == "file":
            files.append(name)
        else:
            walk.skipped.append((path, reason))
    return dirs, files


def _is_class_dir(name: str, parent_is_split: bool) -> int | None:
    if name in FOLDER_TREE_CLASSES:
        return FOLDER_TREE_CLASSES[name]
    if parent_is_split and name in GENIMAGE_CLASSES:
        return GENIMAGE_CLASSES[name]
    return None


def _holds_class_dirs(folder: str) -> bool:
    try:
        return any(n in FOLDER_TREE_CLASSES for n in os.listdir(folder))
    except OSError:
        return False


def _wanted_splits(kinds: dict[str, str], role: str) -> list[str]:
    """The split folders a role reads at a split point: train -> train; test -> test or val."""
    order = ("train",) if role == "train" else ("test", "val")
    for kind in order:
        chosen = [name for name, k in kinds.items() if k == kind]
        if chosen:
            return chosen
    return []


def _record_files(folder: str, files: list[str], walk: Walk) -> None:
    for name in files:
        reason = (
            "image outside any class folder (0_real/1_fake, or ai/nature in a split folder)"
            if is_image_name(name)
            else f"not an image ({os.path.splitext(name)[1] or 'no extension'})"
        )
        walk.skipped.append((os.path.join(folder, name), reason))


#: Top-level folders of the public archives, not generators: the ForenSynths test zip
#: (PeterWang512/CNNDetection ``dataset/test/download_testset.sh``) unpacks to
#: ``CNN_synth_testset/``, UniversalFakeDetect's diffusion zip (its README) to
#: ``diffusion_datasets/``. When such a folder is the only one under the root given,
#: its sub-folders are the generators.
ARCHIVE_WRAPPERS = frozenset({"cnn_synth_testset", "diffusion_datasets"})


def _is_wrapper(folder: str, name: str) -> bool:
    return name.lower() in ARCHIVE_WRAPPERS


def descend_wrappers(root: Path, walk: Walk) -> Path:
    """Below ``root``, skip lone wrapper folders (see ``_is_wrapper``); say so in the notes."""
    current = root
    while True:
        before = len(walk.skipped)
        listed = _children(str(current), walk)
        if (
            listed is None
            or len(listed[0]) != 1
            or not _is_wrapper(str(current / listed[0][0]), listed[0][0])
        ):
            del walk.skipped[before:]  # the walk records this folder's entries itself
            return current
        dirs, files = listed
        _record_files(str(current), files, walk)
        walk.notes.append(
            f"{printable(str(current))} holds only {printable(dirs[0])}/: reading its "
            "sub-folders as the generators"
        )
        current = current / dirs[0]


def walk_root(root: Path, role: str, root_name: str) -> Walk:
    """Class folders under ``root`` for ``role``; every other entry recorded with a reason."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    walk = Walk()
    start = descend_wrappers(root, walk)
    if start != root:
        root_name = start.name
    root = start
    root_st = os.stat(root)
    # (folder, parts below root that name things (split folders left out), ancestor ids,
    # whether the folder itself is a split folder)
    stack: list[tuple[str, tuple[str, ...], tuple[tuple[int, int], ...], bool]] = [
        (str(root), (), (_identity(root_st),), split_kind(root.name) is not None)
    ]
    while stack:
        folder, parts, ancestors, in_split = stack.pop()
        listed = _children(folder, walk)
        if listed is None:
            continue
        dirs, files = listed
        _record_files(folder, files, walk)
        classes = {n: lab for n in dirs if (lab := _is_class_dir(n, in_split)) is not None}
        splits = {n: k for n in dirs if n not in classes and (k := split_kind(n))}
        others = [n for n in dirs if n not in classes and n not in splits]
        enter: list[tuple[str, bool]] = []  # (child name, is a chosen split folder)
        if splits and not (others or classes):
            chosen = _wanted_splits(splits, role)
            if len(chosen) > 1:
                raise BenchError(
                    f"{printable(folder)} holds {len(chosen)} {role} split folders "
                    f"({', '.join(chosen)}): point at one of them"
                )
            for name in splits:
                if name in chosen:
                    enter.append((name, True))
                    walk.splits_read.append((os.path.join(folder, name), splits[name]))
                else:
                    walk.skipped.append(
                        (os.path.join(folder, name), f"other split ({splits[name]}): not read")
                    )
            if not chosen:
                walk.notes.append(
                    f"{printable(folder)} has no {'train' if role == 'train' else 'test or val'} "
                    f"split (only {', '.join(sorted(splits))}): nothing read there"
                )
        elif splits:
            categories = not classes and all(
                _holds_class_dirs(os.path.join(folder, n)) for n in [*splits, *others]
            )
            if not categories:
                raise BenchError(
                    f"{printable(folder)} mixes split folders ({', '.join(sorted(splits))}) with "
                    f"other folders ({', '.join(sorted([*others, *classes]))}); point at one "
                    f"of them, e.g. {printable(os.path.join(folder, sorted(splits)[0]))}"
                )
            enter.extend((n, False) for n in dirs)
        else:
            enter.extend((n, False) for n in others)
        named = [p for p in parts if not is_archive_level(p)]
        for name, label in classes.items():
            generator = named[0] if named else root_name
            sub = "/".join(named[1:])
            walk.class_dirs.append(ClassDir(os.path.join(folder, name), label, generator, sub))
        for name, is_split in reversed(enter):
            path = os.path.join(folder, name)
            st = os.stat(path)
            ident = _identity(st)
            if ident in ancestors:
                walk.skipped.append((path, "symbolic link cycle (links to one of its own parents)"))
                continue
            child_parts = parts if is_split else (*parts, name)
            stack.append(
                (path, child_parts, (*ancestors, ident), is_split or bool(split_kind(name)))
            )
    walk.class_dirs.sort(key=lambda c: (c.generator, c.label, c.path))
    return walk


def images_below(folder: str, skipped: list[tuple[str, str]]) -> list[tuple[str, tuple[int, int]]]:
    """Regular image files below ``folder`` (recursively), each with its file identity.

    Symlink cycles are not entered; hidden, special and non-image files are recorded.
    Plain entries are classified from the directory listing itself (no stat per file,
    which matters for folders of a million images); symbolic links are stat-ed.
    """
    out: list[tuple[str, tuple[int, int]]] = []
    stack = [(folder, (_identity(os.stat(folder)),))]
    while stack:
        current, ancestors = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append((current, f"folder cannot be listed ({exc.strerror or exc})"))
            continue
        device = ancestors[-1][0]
        subdirs = []
        for entry in entries:
            path = entry.path
            if entry.is_symlink():
                kind, st, reason = entry_kind(path)
                ident = _identity(st) if st is not None else None
            elif entry.is_dir(follow_symlinks=False):
                kind, reason = "dir", ""
                ident = (device, entry.inode())
            elif entry.is_file(follow_symlinks=False):
                kind, reason = "file", ""
                ident = (device, entry.inode())
            else:
                kind, _, reason = entry_kind(path)
                ident = None
            if is_hidden(entry.name):
                skipped.append((path, "hidden " + ("folder" if kind == "dir" else "file")))
            elif kind == "dir":
                if ident in ancestors:
                    skipped.append((path, "symbolic link cycle (links to one of its own parents)"))
                else:
                    subdirs.append((path, (*ancestors, ident)))
            elif kind != "file":
                skipped.append((path, reason))
            elif not is_image_name(entry.name):
                ext = os.path.splitext(entry.name)[1] or "no extension"
                skipped.append((path, f"not an image ({ext})"))
            else:
                out.append((path, ident))
        stack.extend(reversed(subdirs))
    return out
