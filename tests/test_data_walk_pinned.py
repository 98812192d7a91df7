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


def test_split_names_and_archive_levels():
    from bench.data.walk import is_archive_level, split_kind

    for name, kind in {
        "train": "train",
        "Training": "train",
        "progan_train": "train",
        "val": "val",
        "VALID": "val",
        "x-validation": "val",
        "test": "test",
        "CNN_synth_testset": "test",
        "a.testing": "test",
        "contest": None,
        "trainee": None,
        "interval": None,
        "0_real": None,
    }.items():
        assert split_kind(name) == kind, name
    assert is_archive_level("imagenet_ai_0508_adm") and is_archive_level("ImageNet_AI_x")
    assert not is_archive_level("imagenet") and not is_archive_level("x_imagenet_ai_")


def test_walk_root_refuses_an_unknown_role(tmp_path):
    from bench.data.walk import walk_root

    with pytest.raises(ValueError) as info:
        walk_root(tmp_path, "val", "x")
    assert str(info.value) == "role must be one of ('train', 'test'), got 'val'"


def test_two_folders_of_the_wanted_split_are_refused(tmp_path):
    root = tmp_path / "set"
    for split in ("train", "progan_train", "val"):
        touch(root / f"{split}/g/0_real/a.png")
    with pytest.raises(BenchError) as info:
        list_dataset(root, "train")
    assert str(info.value) == (
        f"{root} holds 2 train split folders (progan_train, train): point at one of them"
    )
    # the test role reads val/ and lists both train folders as other splits
    samples, skipped = read(root)
    assert samples == [("g", 0, "val/g/0_real/a.png")]
    assert skipped == [
        ("progan_train", "other split (train): not read"),
        ("train", "other split (train): not read"),
    ]


def test_a_generator_without_the_wanted_split_is_noted(tmp_path):
    root = tmp_path / "set"
    touch(root / "a/train/ai/1.png")
    touch(root / "a/val/nature/2.png")
    touch(root / "b/train/ai/3.png")
    touch(root / "c/val/ai/4.png")
    test = list_dataset(root, "test")
    assert [(s.generator, s.label) for s in test.samples] == [("a", 0), ("c", 1)]
    assert f"{root}/b has no test or val split (only train): nothing read there" in test.notes
    train = list_dataset(root, "train")
    assert [(s.generator, s.label) for s in train.samples] == [("a", 1), ("b", 1)]
    assert f"{root}/c has no train split (only val): nothing read there" in train.notes
    assert sorted((Path(p).relative_to(root).as_posix(), r) for p, r in train.skipped) == [
        ("a/val", "other split (val): not read"),
        ("c/val", "other split (val): not read"),
    ]


def test_mixing_splits_and_other_folders_names_them(tmp_path):
    root = tmp_path / "set"
    touch(root / "train/g/0_real/a.png")
    touch(root / "test/g/0_real/b.png")
    touch(root / "extra/g/0_real/c.png")
    touch(root / "0_real/d.png")
    with pytest.raises(BenchError) as info:
        list_dataset(root, "test")
    assert str(info.value) == (
        f"{root} mixes split folders (test, train) with other folders (0_real, extra); point at "
        f"one of them, e.g. {root}/test"
    )


def test_genimage_class_names_count_only_inside_a_split(tmp_path):
    root = tmp_path / "set"
    touch(root / "g/ai/a.png")  # no split folder above: not a class folder
    touch(root / "g/0_real/b.png")
    touch(root / "h/Val/nature/c.png")  # split names are read case-insensitively
    samples, skipped = read(root)
    assert samples == [("g", 0, "g/0_real/b.png"), ("h", 0, "h/Val/nature/c.png")]
    assert skipped == [("g/ai/a.png", OUTSIDE)]


def test_wrapper_folders_are_looked_through_one_after_another(tmp_path):
    root = tmp_path / "dl"
    touch(root / "diffusion_datasets/CNN_synth_testset/gan/0_real/a.png")
    touch(root / "diffusion_datasets/CNN_synth_testset/gan/1_fake/b.png")
    touch(root / "diffusion_datasets/info.txt")
    listing = list_dataset(root, "test")
    assert [(s.generator, s.label) for s in listing.samples] == [("gan", 0), ("gan", 1)]
    assert listing.notes == [
        f"{root} holds only diffusion_datasets/: reading its sub-folders as the generators",
        f"{root}/diffusion_datasets holds only CNN_synth_testset/: reading its sub-folders as "
        "the generators",
    ]
    assert listing.skipped == [(str(root / "diffusion_datasets/info.txt"), "not an image (.txt)")]
    # beside another folder a wrapper is an ordinary generator folder
    touch(root / "other/0_real/c.png")
    again = list_dataset(root, "test")
    assert sorted({s.generator for s in again.samples}) == ["diffusion_datasets", "other"]
    assert not any("holds only" in n for n in again.notes)


def test_entries_that_cannot_be_stat_ed(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert entry_kind(str(tmp_path / "a"))[0::2] == (
        "skip",
        "cannot be read (Too many levels of symbolic links)",
    )
    assert entry_kind(str(tmp_path / "nothing"))[0::2] == ("skip", "does not exist")
    assert entry_kind(str(tmp_path / "x/y"))[0::2] == ("skip", "does not exist")
    kind, st, reason = entry_kind(str(tmp_path))
    assert (kind, reason, st.st_ino) == ("dir", "", os.stat(tmp_path).st_ino)
    os.symlink(tmp_path / "gone", tmp_path / "broken")
    assert entry_kind(str(tmp_path / "broken")) == ("skip", None, "broken symbolic link")
    touch(tmp_path / "f.png")
    kind, st, reason = entry_kind(str(tmp_path / "f.png"))
    assert (kind, reason, st.st_size) == ("file", "", 4)


def test_the_real_copy_of_a_file_wins_whichever_folder_is_walked_first(tmp_path):
    root = tmp_path / "set"
    fake = touch(root / "gen/a/1_fake/x.png")
    (root / "gen/b/0_real").mkdir(parents=True)
    os.link(fake, root / "gen/b/0_real/x.png")  # one file, two names
    touch(root / "gen/b/0_real/y.png")
    samples, skipped = read(root)
    # class folders are read real first (by generator, label, path), not in walking order
    assert samples == [("gen", 0, "gen/b/0_real/x.png"), ("gen", 0, "gen/b/0_real/y.png")]
    assert skipped == [
        (
            "gen/a/1_fake/x.png",
            f"duplicate: same file as {root}/gen/b/0_real/x.png (labelled real there)",
        )
    ]


def test_the_test_role_prefers_test_over_val_and_lists_the_rest(tmp_path):
    root = tmp_path / "set"
    for split in ("train", "val", "test"):
        touch(root / f"{split}/g/0_real/a.png")
    samples, skipped = read(root)
    assert samples == [("g", 0, "test/g/0_real/a.png")]
    assert skipped == [
        ("train", "other split (train): not read"),
        ("val", "other split (val): not read"),
    ]


def test_entries_not_read_come_in_walking_order(tmp_path):
    """skipped.txt lists them as the walk meets them: depth first, by name, class folders last."""
    root = tmp_path / "set"
    for rel in ("a/0_real/1.png", "a/0_real/n.txt", "c/1_fake/2.png", "c/1_fake/m.txt"):
        touch(root / rel)
    for rel in ("b.txt", "a/x.txt", "c/y.txt", ".h"):
        touch(root / rel)
    listing = list_dataset(root, "test")
    assert [Path(p).relative_to(root).as_posix() for p, _ in listing.skipped] == [
        ".h",
        "b.txt",
        "a/x.txt",
        "c/y.txt",
        "a/0_real/n.txt",
        "c/1_fake/m.txt",
    ]


def test_walk_root_says_which_split_folders_it_read(tmp_path):
    from bench.data.walk import walk_root

    root = tmp_path / "GenImage"
    for rel in ("a/train/ai/1.png", "a/val/ai/2.png", "b/val/nature/3.png"):
        touch(root / rel)
    walk = walk_root(root, "test", "GenImage")
    assert walk.splits_read == [(str(root / "a/val"), "val"), (str(root / "b/val"), "val")]
    assert walk_root(root, "train", "GenImage").splits_read == [(str(root / "a/train"), "train")]


def test_a_note_lists_every_split_a_generator_has_instead(tmp_path):
    root = tmp_path / "set"
    touch(root / "a/train/0_real/1.png")
    touch(root / "a/progan_train/0_real/2.png")
    touch(root / "b/test/0_real/3.png")
    listing = list_dataset(root, "test")
    assert [s.generator for s in listing.samples] == ["b"]
    assert f"{root}/a has no test or val split (only progan_train, train): nothing read there" in (
        listing.notes
    )


def test_a_cycle_does_not_stop_the_folders_beside_it(tmp_path):
    root = tmp_path / "set"
    touch(root / "a/0_real/x.png")
    touch(root / "b/1_fake/y.png")
    os.symlink(".", root / "loop")  # walked first: the walk takes folders in reverse order
    samples, skipped = read(root)
    assert samples == [("a", 0, "a/0_real/x.png"), ("b", 1, "b/1_fake/y.png")]
    assert skipped == [("loop", "symbolic link cycle (links to one of its own parents)")]


def test_a_split_named_category_folder_still_holds_genimage_classes(tmp_path):
    # train/, val/ and car/ all hold 0_real folders: read as categories (ForenSynths has an
    # LSUN class "train"); val/ is still a split folder, so its ai/ is GenImage's fake class
    root = tmp_path / "set"
    touch(root / "car/0_real/d.png")
    touch(root / "train/0_real/a.png")
    touch(root / "val/0_real/b.png")
    touch(root / "val/ai/c.png")
    with pytest.raises(BenchError) as info:
        list_dataset(root, "test")
    assert str(info.value).startswith(f"generator folder val under {root} holds both")
