"""Issue 17 (mutation testing): odd entries below class folders (bench/data/walk.py), each
built by hand in tmp_path; the expected samples and skipped lines are written out.

The machine's tests run as root, which can list any folder, so a folder that cannot be
listed is made by making ``os.scandir`` / ``os.listdir`` refuse that one path.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from bench.data.layouts import list_dataset
from bench.data.walk import _kind_of_special, entry_kind
from bench.errors import BenchError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG")
    return path


def read(root: Path, role: str = "test"):
    listing = list_dataset(root, role)
    samples = [
        (s.generator, s.label, Path(s.path).relative_to(root).as_posix()) for s in listing.samples
    ]
    skipped = sorted((Path(p).relative_to(root).as_posix(), r) for p, r in listing.skipped)
    return samples, skipped


def test_special_file_kinds_by_mode():
    assert _kind_of_special(stat.S_IFIFO) == "a FIFO"
    assert _kind_of_special(stat.S_IFCHR) == "a character device"
    assert _kind_of_special(stat.S_IFBLK) == "a block device"
    assert _kind_of_special(stat.S_IFSOCK) == "a socket"
    assert _kind_of_special(0) == "not a regular file"
    assert entry_kind("/dev/null")[0::2] == ("skip", "not a regular file (a character device)")


def test_links_hidden_folders_and_sockets_below_a_class_folder(tmp_path):
    root = tmp_path / "set"
    touch(root / "gen/0_real/a.png")
    touch(root / "gen/1_fake/b.png")
    touch(root / "gen/0_real/z.png")  # after the duplicate: still read
    os.symlink(root / "gen/0_real/a.png", root / "gen/0_real/same.png")  # the same file again
    os.symlink(root / "gen/0_real/a.png", root / "gen/1_fake/real_as_fake.png")
    os.symlink(root / "gen/0_real/gone.png", root / "gen/0_real/broken.png")
    touch(root / "gen/1_fake/.ipynb_checkpoints/c.png")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(root / "gen/1_fake/sock.png"))
        samples, skipped = read(root)
    finally:
        server.close()
    assert samples == [
        ("gen", 0, "gen/0_real/a.png"),
        ("gen", 0, "gen/0_real/z.png"),
        ("gen", 1, "gen/1_fake/b.png"),
    ]
    a = root / "gen/0_real/a.png"
    assert skipped == [
        ("gen/0_real/broken.png", "broken symbolic link"),
        ("gen/0_real/same.png", f"duplicate: same file as {a}"),
        ("gen/1_fake/.ipynb_checkpoints", "hidden folder"),
        ("gen/1_fake/real_as_fake.png", f"duplicate: same file as {a} (labelled real there)"),
        ("gen/1_fake/sock.png", "not a regular file (a socket)"),
    ]


def refuse_listing(monkeypatch, name: str, refused: Path) -> None:
    real = getattr(os, name)

    def listing(path="."):
        if os.fspath(path) == str(refused):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, name, listing)


def test_a_folder_below_a_class_folder_that_cannot_be_listed(tmp_path, monkeypatch):
    root = tmp_path / "set"
    for rel in (
        "gen/0_real/a/1.png",
        "gen/0_real/b/2.png",
        "gen/0_real/c/3.png",
        "gen/1_fake/4.png",
    ):
        touch(root / rel)
    refuse_listing(monkeypatch, "scandir", root / "gen/0_real/b")
    samples, skipped = read(root)
    assert samples == [
        ("gen", 0, "gen/0_real/a/1.png"),
        ("gen", 0, "gen/0_real/c/3.png"),
        ("gen", 1, "gen/1_fake/4.png"),
    ]
    assert skipped == [("gen/0_real/b", "folder cannot be listed (Permission denied)")]


def test_a_generator_folder_that_cannot_be_listed(tmp_path, monkeypatch):
    root = tmp_path / "set"
    for rel in ("a/0_real/1.png", "b/0_real/2.png", "c/1_fake/3.png"):
        touch(root / rel)
    refuse_listing(monkeypatch, "listdir", root / "b")
    samples, skipped = read(root)
    assert samples == [("a", 0, "a/0_real/1.png"), ("c", 1, "c/1_fake/3.png")]
    assert skipped == [("b", "folder cannot be listed (Permission denied)")]


def test_a_split_beside_a_folder_that_cannot_be_listed_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "set"
    touch(root / "train/0_real/1.png")
    touch(root / "extra/0_real/2.png")
    # both hold class folders: read as categories (ForenSynths has an LSUN class "train")
    assert len(list_dataset(root, "test").samples) == 2
    refuse_listing(monkeypatch, "listdir", root / "extra")  # unknown: not categories
    with pytest.raises(
        BenchError, match=r"mixes split folders \(train\) with other folders \(extra\)"
    ):
        list_dataset(root, "test")


OUTSIDE = "image outside any class folder (0_real/1_fake, or ai/nature in a split folder)"


def test_every_entry_outside_the_class_folders_is_listed_with_its_reason(tmp_path):
    root = tmp_path / "set"
    touch(root / "gen/0_real/a.png")
    touch(root / "gen/1_fake/b.png")
    touch(root / "README.md")
    touch(root / ".DS_Store")
    touch(root / ".cache/x.png")
    touch(root / "gen/notes.txt")
    touch(root / "gen/loose.png")
    touch(root / "gen/LICENSE")
    touch(root / "gen/.hidden.png")
    os.mkfifo(root / "gen/pipe.png")
    os.symlink(root / "gone", root / "gen/broken")
    samples, skipped = read(root)
    assert samples == [("gen", 0, "gen/0_real/a.png"), ("gen", 1, "gen/1_fake/b.png")]
    assert skipped == [
        (".DS_Store", "hidden file"),
        (".cache", "hidden folder"),
        ("README.md", "not an image (.md)"),
        ("gen/.hidden.png", "hidden file"),
        ("gen/LICENSE", "not an image (no extension)"),
        ("gen/broken", "broken symbolic link"),
        ("gen/loose.png", OUTSIDE),
        ("gen/notes.txt", "not an image (.txt)"),
        ("gen/pipe.png", "not a regular file (a FIFO)"),
    ]
