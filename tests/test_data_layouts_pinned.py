"""Issue 17 (mutation testing): CSV lists, log lines, refusals and per-class sampling of
bench/data/layouts.py, on trees and files built by hand; every expected line written out."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bench.data.layouts import (
    LAYOUTS_LOOKED_FOR,
    Listing,
    Sample,
    list_dataset,
    read_csv,
    sample_per_class,
)
from bench.errors import BenchError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG")
    return path


def refusal(*args, **kwargs) -> str:
    with pytest.raises(BenchError) as info:
        list_dataset(*args, **kwargs)
    return str(info.value)


def test_the_summary_line_counts_classes_generators_and_reasons():
    samples = [Sample("/a", 1, "g1"), Sample("/b", 0, "g1"), Sample("/c", 1, "g2")]
    skipped = [
        ("/x.txt", "not an image (.txt)"),
        ("/.h", "hidden file"),
        ("/y.json", "not an image (.json)"),
        ("/val", "other split (val): not read"),
        ("/d", "duplicate: same file as /a"),
    ]
    listing = Listing("Set", "/r", "test", "0_real/1_fake", samples=samples, skipped=skipped)
    assert listing.summary() == (
        "Set (0_real/1_fake, test): 3 images (1 real, 2 fake) in 2 generator(s); 5 entries not "
        "read (2 not an image, 1 hidden file, 1 other split, 1 duplicate), listed in skipped.txt"
    )
    listing.skipped = []
    assert (
        listing.summary()
        == "Set (0_real/1_fake, test): 3 images (1 real, 2 fake) in 2 generator(s)"
    )


def test_a_folder_of_lists_names_up_to_three_of_them(tmp_path):
    for name in ("d.toml", "a.csv", "c.toml", "b.csv"):
        (tmp_path / name).write_text("x")
    assert refusal(tmp_path) == (
        f"no image folders found under {tmp_path}, but it holds a.csv, b.csv, c.toml: give "
        f"the file itself (e.g. {tmp_path}/a.csv)"
    )
    only = tmp_path / "only"
    only.mkdir()
    (only / "pairs.toml").write_text("x")
    assert refusal(only) == (
        f"no image folders found under {only}, but it holds pairs.toml: give the file itself "
        f"(e.g. {only}/pairs.toml)"
    )


def test_no_images_says_which_split_was_looked_for(tmp_path):
    root = tmp_path / "GenImage"
    touch(root / "sdv4/val/ai/a.png")
    assert refusal(root, "train") == (
        f"no images found under {root} for the train split ({LAYOUTS_LOOKED_FOR})"
    )
    other = tmp_path / "other"
    touch(other / "gen/train/ai/a.png")
    assert refusal(other, "test") == (
        f"no images found under {other} for the test or val split ({LAYOUTS_LOOKED_FOR})"
    )
    plain = tmp_path / "plain"
    touch(plain / "gen/images/a.png")
    assert refusal(plain, "test") == f"no images found under {plain} ({LAYOUTS_LOOKED_FOR})"


def test_a_csv_listing_names_its_file_layout_and_columns(tmp_path):
    for name in ("a.png", "b.png"):
        touch(tmp_path / name)
    csv_file = tmp_path / "set.csv"
    csv_file.write_text("a.png,1,sdxl\nb.png,0,flux\n")  # no header: path,label,generator
    listing = list_dataset(csv_file, "test")
    assert (listing.name, listing.root, listing.role, listing.layout) == (
        "set",
        str(csv_file),
        "test",
        "CSV",
    )
    assert listing.samples == [
        Sample(str(tmp_path / "b.png"), 0, "flux", "set"),
        Sample(str(tmp_path / "a.png"), 1, "sdxl", "set"),
    ]


def test_csv_rows_not_read_are_listed_with_their_line(tmp_path):
    touch(tmp_path / "a.png")
    (tmp_path / "folder").mkdir()
    csv_file = tmp_path / "set.csv"
    csv_file.write_text("path,label\na.png,1\nfolder,0\na.png,1\n")
    listing = list_dataset(csv_file, "test")
    assert listing.samples == [Sample(str(tmp_path / "a.png"), 1, "set", "set")]
    assert listing.skipped == [
        (str(tmp_path / "folder"), "is a folder (line 3)"),
        (str(tmp_path / "a.png"), "duplicate: listed again at line 4"),
    ]


def test_csv_names_with_line_breaks_and_bytes_that_are_not_utf8(tmp_path):
    odd = os.fsencode(tmp_path) + b"/caf\xe9.png"
    open(odd, "wb").close()
    touch(tmp_path / "two\r\nlines.png")
    csv_file = tmp_path / "odd.csv"
    csv_file.write_bytes(b'path,label\ncaf\xe9.png,0\n"two\r\nlines.png",1\n')
    listing = list_dataset(csv_file, "test")
    assert [(s.path, s.label) for s in listing.samples] == [
        (os.fsdecode(odd), 0),
        (str(tmp_path / "two\r\nlines.png"), 1),
    ]
    assert listing.skipped == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "path,label\na.png,1\npath,label\n",
            "line 3: label 'label' is not one of 0, 1, real, fake",
        ),
        (
            "file,label\na.png,1\n",
            "line 1: the header names no 'path' column (expected path,label[,generator])",
        ),
        ("\n ,1\n", "line 2: empty path"),
        ("a.png\n", "line 1: expected path,label[,generator], got 1 column(s)"),
    ],
)
def test_csv_mistakes_name_the_file_and_line(tmp_path, text, message):
    touch(tmp_path / "a.png")
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(text)
    assert refusal(csv_file) == f"{csv_file}, {message}"


def test_read_csv_of_a_missing_file(tmp_path):
    with pytest.raises(BenchError) as info:
        read_csv(tmp_path / "nope.csv")
    assert str(info.value) == f"CSV file does not exist: {tmp_path / 'nope.csv'}"


def test_reals_shared_by_paired_generators_are_trained_on_once(tmp_path):
    root = tmp_path / "diffusion_datasets"
    for rel in (
        "laion/0_real/l1.png",
        "laion/0_real/l2.png",
        "dalle/1_fake/d.png",
        "ldm_100/1_fake/m.png",
    ):
        touch(root / rel)
    listing = list_dataset(root, "train")
    assert sorted((Path(s.path).name, s.label) for s in listing.samples) == [
        ("d.png", 1),
        ("l1.png", 0),
        ("l2.png", 0),
        ("m.png", 1),
    ]
    assert "2 images shared by several generators are trained on once" in listing.notes
    assert len(list_dataset(root, "test").samples) == 6  # scored with each generator


def group(dataset: str, generator: str, label: int, n: int) -> list[Sample]:
    return [
        Sample(f"/d/{generator}/{label}/{i:02d}.png", label, generator, dataset) for i in range(n)
    ]


def by_hand(samples: list[Sample], k: int, seed_text: str) -> list[Sample]:
    """The documented draw: random.Random("seed[:data set]:generator:label").sample(k)."""
    ordered = sorted(samples, key=lambda s: s.path)
    return random.Random(seed_text).sample(ordered, k)


def test_per_class_draws_are_seeded_by_seed_data_set_generator_and_label():
    plain = group("", "g", 1, 20)
    named = group("ds", "g", 0, 20)
    key = lambda s: (s.dataset, s.generator, s.label, s.path)  # noqa: E731
    assert sample_per_class(plain, 3) == sorted(by_hand(plain, 3, "0:g:1"), key=key)
    assert sample_per_class(plain, 3, seed=7) == sorted(by_hand(plain, 3, "7:g:1"), key=key)
    assert sample_per_class(named, 4) == sorted(by_hand(named, 4, "0:ds:g:0"), key=key)
    both = sample_per_class(plain + named, 2)
    assert both == sorted(by_hand(named, 2, "0:ds:g:0") + by_hand(plain, 2, "0:g:1"), key=key)
    assert len(sample_per_class(plain, 1)) == 1
    assert sample_per_class(plain, 20) == sorted(plain, key=key)
    with pytest.raises(BenchError) as info:
        sample_per_class(plain, 0)
    assert str(info.value) == "max per class must be at least 1, got 0"


def test_a_tree_listing_names_its_root_layout_and_notes(tmp_path):
    root = tmp_path / "mixed"
    for rel in (
        "SDXL/0_real/a.png",
        "SDXL/1_fake/b.png",
        "FLUX/1_fake/e.png",
        "ADM/val/ai/c.png",
        "ADM/val/nature/d.png",
    ):
        touch(root / rel)
    listing = list_dataset(root, "test")
    assert (listing.name, listing.root, listing.role, listing.layout) == (
        "mixed",
        str(root),
        "test",
        "0_real/1_fake + GenImage",
    )
    assert listing.notes == [
        "mixed mixes layouts; each generator read by its own: 0_real/1_fake: FLUX, SDXL; "
        "GenImage: ADM",
        "mixed: test split read from 1 val/ folder(s) (no test/ beside them; GenImage ships "
        "only train/ and val/)",
    ]
    assert list_dataset(root / "SDXL", "test").layout == "0_real/1_fake"
    assert list_dataset(root / "ADM", "test").layout == "GenImage"


def test_a_lone_archive_folder_is_looked_through(tmp_path):
    root = tmp_path / "download"
    touch(root / "CNN_synth_testset/0_real/a.png")
    touch(root / "CNN_synth_testset/1_fake/b.png")
    (root / "README.txt").write_text("x")
    listing = list_dataset(root, "test")
    # the classes sit directly in the wrapper: it is the generator
    assert [(s.generator, s.label) for s in listing.samples] == [
        ("CNN_synth_testset", 0),
        ("CNN_synth_testset", 1),
    ]
    assert listing.notes == [
        f"{root} holds only CNN_synth_testset/: reading its sub-folders as the generators"
    ]
    assert listing.skipped == [(str(root / "README.txt"), "not an image (.txt)")]


def test_notes_only_when_there_is_something_to_say(tmp_path):
    root = tmp_path / "bench"
    for rel in ("train/g/0_real/a.png", "test/g/0_real/b.png", "test/g/1_fake/c.png"):
        touch(root / rel)
    for role, n in (("test", 2), ("train", 1)):
        listing = list_dataset(root, role)
        assert (len(listing.samples), listing.layout, listing.notes) == (n, "0_real/1_fake", [])
    genimage = tmp_path / "GenImage"
    for rel in ("sdv4/train/ai/a.png", "sdv4/val/nature/b.png"):
        touch(genimage / rel)
    assert list_dataset(genimage, "train").notes == []


def test_a_generator_holding_both_layouts_is_refused(tmp_path):
    root = tmp_path / "set"
    for gen in ("b", "a"):
        touch(root / f"{gen}/one/0_real/x.png")
        touch(root / f"{gen}/two/val/ai/y.png")
    touch(root / "c/0_real/z.png")
    assert refusal(root) == (
        f"generator folder a under {root} holds both 0_real/1_fake and GenImage ai/nature "
        "folders; point at one of them"
    )


def test_pooled_sub_folders_are_named_up_to_six(tmp_path):
    root = tmp_path / "set"
    for sub in "abcdefg":
        touch(root / f"many/{sub}/0_real/x.png")
    touch(root / "six/0_real/x.png")  # classes directly below, and six sub-folders
    for sub in "pqrstu":
        touch(root / f"six/{sub}/1_fake/x.png")
    touch(root / "one/only/0_real/x.png")  # a single sub-folder: nothing pooled
    touch(root / "two/0_real/x.png")
    touch(root / "two/deeper/still/1_fake/x.png")
    listing = list_dataset(root, "test")
    assert sorted(listing.notes) == [
        "set/many pools 7 sub-folders (a, b, c, d, e, f, ...)",
        "set/six pools 7 sub-folders (p, q, r, s, t, u)",
        "set/two pools 2 sub-folders (deeper/still)",
    ]


def test_display_names():
    from bench.data.layouts import display_name

    assert display_name("/data/GenImage/wukong/val") == "wukong"
    assert display_name("/data/ADM/imagenet_ai_0508_adm/train") == "ADM"
    assert display_name("/data/AIGIBench/test/") == "AIGIBench"
    assert display_name("/data/set") == "set"
    assert display_name("/") == "/"
    assert display_name("/test") == "/"


def test_list_dataset_entry_points_and_their_refusals(tmp_path, monkeypatch):
    touch(tmp_path / "a.png")
    (tmp_path / "LIST.CSV").write_text("a.png,1\n")
    listing = list_dataset(tmp_path / "LIST.CSV", "train")
    assert (listing.name, listing.role, listing.layout) == ("LIST", "train", "CSV")
    (tmp_path / "set.txt").write_text("a.png,1\n")
    assert refusal(tmp_path / "set.txt") == (
        f"dataset file is not a .csv or a pairs manifest (.toml): {tmp_path / 'set.txt'}"
    )
    (tmp_path / "gone.csv").write_text("path,label\nmissing.png,1\nfolder_missing.png,0\n")
    assert refusal(tmp_path / "gone.csv") == (
        f"no readable images listed in {tmp_path / 'gone.csv'} (2 entries skipped)"
    )
    (tmp_path / "empty.csv").write_text("path,label\n")
    assert (
        refusal(tmp_path / "empty.csv") == f"no readable images listed in {tmp_path / 'empty.csv'}"
    )
    os.mkfifo(tmp_path / "fifo")
    assert (
        refusal(tmp_path / "fifo")
        == f"dataset path is neither a folder nor a file: {tmp_path / 'fifo'}"
    )
    assert refusal(tmp_path / "nope") == f"dataset path does not exist: {tmp_path / 'nope'}"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert list_dataset("~/LIST.CSV").samples == [
        Sample(str(tmp_path / "a.png"), 1, "LIST", "LIST")
    ]


def test_a_manifest_given_a_name_or_not(tmp_path):
    touch(tmp_path / "r/a.png")
    touch(tmp_path / "f/b.png")
    body = '[generators.g]\nreal = "r"\nfake = "f"\n'
    (tmp_path / "named.toml").write_text('name = "Inside"\n' + body)
    assert list_dataset(tmp_path / "named.toml").name == "Inside"  # the file's own name
    assert list_dataset(tmp_path / "named.toml", name="named").name == "Inside"  # = its stem
    assert list_dataset(tmp_path / "named.toml", name="Given").name == "Given"


def test_a_split_named_root_is_noted(tmp_path):
    for rel in ("test/g/0_real/a.png", "train/g/1_fake/b.png"):
        touch(tmp_path / rel)
    assert list_dataset(tmp_path / "test", "train").notes == ["training on a folder named test"]
    assert list_dataset(tmp_path / "train", "test").notes == ["testing on a folder named train"]
    assert list_dataset(tmp_path / "test", "test").notes == []
    assert list_dataset(tmp_path / "train", "train").notes == []
    touch(tmp_path / "val/g/0_real/c.png")
    assert list_dataset(tmp_path / "val", "train").notes == ["training on a folder named val"]


def test_samples_come_sorted_by_data_set_generator_label_path(tmp_path):
    for rel in (
        "b/1_fake/a.png",
        "b/0_real/z.png",
        "a/1_fake/c.png",
        "a/0_real/d.png",
        "a/0_real/b.png",
    ):
        touch(tmp_path / "s" / rel)
    got = [(s.generator, s.label, Path(s.path).name) for s in list_dataset(tmp_path / "s").samples]
    assert got == [
        ("a", 0, "b.png"),
        ("a", 0, "d.png"),
        ("a", 1, "c.png"),
        ("b", 0, "z.png"),
        ("b", 1, "a.png"),
    ]
