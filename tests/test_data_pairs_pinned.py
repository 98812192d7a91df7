"""Issue 17 (mutation testing): pairs manifests (bench/data/pairs.py) on trees built by hand.

Every expected sample, skipped entry and message is written out in the test from the tree
it builds; nothing is read back from the code under test.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from bench.data.layouts import list_dataset
from bench.data.pairs import read_manifest
from bench.errors import BenchError


def touch(path: Path, data: bytes = b"\x89PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for rel in (
        "imagenet/0_real/000.png",
        "imagenet/0_real/001.png",
        "imagenet/0_real/002.png",
        "laion/0_real/a.png",
        "guided/1_fake/x.png",
        "guided/1_fake/deep/y.png",
        "dalle/1_fake/z.png",
    ):
        touch(root / rel)
    touch(root / "imagenet/0_real/readme.txt", b"text")
    touch(root / "NOTES", b"text")
    return root


def manifest(folder: Path, text: str, name: str = "pairs.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def rel(listing, root: Path) -> list[tuple[str, int, str, str]]:
    return sorted(
        (s.generator, s.label, Path(s.path).relative_to(root).as_posix(), s.dataset)
        for s in listing.samples
    )


def test_a_manifest_beside_the_data_with_defaults(data: Path):
    path = manifest(
        data,
        '[generators.guided]\nreal = ["imagenet/0_real/000.png", "imagenet/0_real"]\n'
        'fake = "guided/1_fake/**/*.png"\n',
    )
    listing = read_manifest(path)
    # root defaults to the manifest's folder, the name to its stem; the image named twice
    # (alone, then inside its folder) is read once and the rest of the folder still is
    assert (listing.name, listing.root, listing.role, listing.layout) == (
        "pairs",
        str(data),
        "",
        "pairs manifest",
    )
    assert rel(listing, data) == [
        ("guided", 0, "imagenet/0_real/000.png", "pairs"),
        ("guided", 0, "imagenet/0_real/001.png", "pairs"),
        ("guided", 0, "imagenet/0_real/002.png", "pairs"),
        ("guided", 1, "guided/1_fake/deep/y.png", "pairs"),  # ** reaches sub-folders
        ("guided", 1, "guided/1_fake/x.png", "pairs"),
    ]
    assert [(Path(p).relative_to(data).as_posix(), r) for p, r in listing.skipped] == [
        ("NOTES", "not an image (no extension)"),
        ("dalle/1_fake/z.png", "not named by any generator of the pairs manifest"),
        ("imagenet/0_real/readme.txt", "not an image (.txt)"),
        ("laion/0_real/a.png", "not named by any generator of the pairs manifest"),
        ("pairs.toml", "not an image (.toml)"),  # the manifest itself is listed too
    ]
    assert listing.notes == [f"pairs: 1 generator(s) from {path}"]
    assert read_manifest(path, "Other").name == "Other"
    assert {s.dataset for s in read_manifest(path, "Other").samples} == {"Other"}


def test_shared_reals_and_a_named_root(data: Path, tmp_path: Path):
    path = manifest(
        tmp_path,
        f'name = "UFD"\nroot = "{data}"\n'
        '[generators.guided]\nreal = "laion/0_real"\nfake = ["guided/1_fake/x.png"]\n'
        '[generators.dalle]\nreal = ["laion/0_real/*.png"]\nfake = ["dalle/1_fake/z.png"]\n',
    )
    listing = list_dataset(path, "test")
    assert listing.name == "UFD" and listing.role == "test"
    assert rel(listing, data) == [
        ("dalle", 0, "laion/0_real/a.png", "UFD"),
        ("dalle", 1, "dalle/1_fake/z.png", "UFD"),
        ("guided", 0, "laion/0_real/a.png", "UFD"),
        ("guided", 1, "guided/1_fake/x.png", "UFD"),
    ]
    assert listing.notes == [
        f"UFD: 2 generator(s) from {path}; 1 image(s) are scored with more than one generator"
    ]
    # without a name, the data set is the manifest's stem
    plain = manifest(
        tmp_path, f'root = "{data}"\n[generators.g]\nreal = "laion"\nfake = "dalle"\n', "mine.toml"
    )
    got = list_dataset(plain, "test")
    assert got.name == "mine" and {s.dataset for s in got.samples} == {"mine"}


def test_globs_list_what_they_match_but_cannot_read(data: Path):
    os.symlink(data / "gone.png", data / "guided/1_fake/broken.png")
    touch(data / "guided/1_fake/notes.txt", b"x")
    touch(data / "guided/1_fake/LICENSE", b"x")
    path = manifest(data, '[generators.g]\nreal = "laion/0_real"\nfake = "guided/1_fake/*"\n')
    listing = read_manifest(path)
    assert rel(listing, data) == [  # "*" matches the folder deep/: every image below it
        ("g", 0, "laion/0_real/a.png", "pairs"),
        ("g", 1, "guided/1_fake/deep/y.png", "pairs"),
        ("g", 1, "guided/1_fake/x.png", "pairs"),
    ]
    reasons = Counter(r for _, r in listing.skipped)
    assert {
        (Path(p).relative_to(data).as_posix(), r)
        for p, r in listing.skipped
        if p.startswith(str(data / "guided"))
    } == {
        ("guided/1_fake/LICENSE", "not an image (no extension)"),
        ("guided/1_fake/broken.png", "broken symbolic link"),
        ("guided/1_fake/notes.txt", "not an image (.txt)"),
    }
    assert reasons["not an image (.txt)"] == 2  # notes.txt (glob) and imagenet's readme.txt
    # a plain (not glob) path that does not exist names no image: an error, not a skip
    bad = manifest(
        data, '[generators.g]\nreal = "laion/0_real"\nfake = "missing.png"\n', "bad.toml"
    )
    with pytest.raises(BenchError) as info:
        read_manifest(bad)
    assert str(info.value) == (
        f"pairs manifest {bad}, generator 'g', fake: 'missing.png' names no image (under {data})"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "nmae = 'x'\n[generators.g]\nreal='laion'\nfake='dalle'\n",
            ": unknown key 'nmae'; did you mean 'name'?",
        ),
        (
            "[generators.g]\nreal='laion'\nfake='dalle'\nzzz = 1\n",
            ", generator 'g': unknown key 'zzz' (known: fake, real)",
        ),
        (
            "[generators.g]\nreal='laion'\nfake='dalle'\nrel = 1\n",
            ", generator 'g': unknown key 'rel'; did you mean 'real'?",
        ),
        # difflib ratio("fake_paths", "fake") = 2 * 4 / 14 = 0.57: a hint from 0.5 up
        (
            "[generators.g]\nreal='laion'\nfake='dalle'\nfake_paths = 1\n",
            ", generator 'g': unknown key 'fake_paths'; did you mean 'fake'?",
        ),
        (
            "root = 'nowhere'\n[generators.g]\nreal='laion'\nfake='dalle'\n",
            ": root {data}/nowhere is not a folder",
        ),
        ("name = 'x'\n", ": needs at least one [generators.NAME] table"),
        ("generators = {}\n", ": needs at least one [generators.NAME] table"),
        ("generators = 3\n", ": needs at least one [generators.NAME] table"),
        (
            "[generators]\ng = 1\n",
            ", generator 'g': must be a table with real = [...] and fake = [...]",
        ),
        (
            "[generators.g]\nreal='laion'\n",
            ", generator 'g': needs 'fake' (folders or globs of fake images)",
        ),
        (
            "[generators.g]\nfake='dalle'\n",
            ", generator 'g': needs 'real' (folders or globs of real images)",
        ),
        (
            "[generators.g]\nreal=[]\nfake='dalle'\n",
            ", generator 'g', real must be a folder, a glob or a list of them",
        ),
        (
            "[generators.g]\nreal=5\nfake='dalle'\n",
            ", generator 'g', real must be a folder, a glob or a list of them",
        ),
        (
            "[generators.g]\nreal=['laion', 5]\nfake='dalle'\n",
            ", generator 'g', real must be a folder, a glob or a list of them",
        ),
        (
            "[generators.g]\nreal='laion'\nfake='*.jpg'\n",
            ", generator 'g', fake: '*.jpg' names no image (under {data})",
        ),
        ("[generators", " is not valid TOML: "),
    ],
)
def test_manifest_mistakes_are_one_line_errors_naming_the_place(data: Path, text, message):
    path = manifest(data, text)
    with pytest.raises(BenchError) as info:
        read_manifest(path)
    expected = f"pairs manifest {path}" + message.format(data=data)
    assert str(info.value).startswith(expected), str(info.value)


def test_universalfakedetect_folders_are_paired_as_its_authors_pair_them(tmp_path: Path):
    root = tmp_path / "diffusion_datasets"
    for rel_path in (
        "imagenet/0_real/i.png",
        "laion/0_real/l1.png",
        "laion/0_real/l2.png",
        "guided/1_fake/g.png",
        "dalle/1_fake/d.png",
        "ldm_100/1_fake/m.png",
    ):
        touch(root / rel_path)
    listing = list_dataset(root, "test", name="UFD")
    assert rel(listing, root) == [
        ("dalle", 0, "laion/0_real/l1.png", "UFD"),
        ("dalle", 0, "laion/0_real/l2.png", "UFD"),
        ("dalle", 1, "dalle/1_fake/d.png", "UFD"),
        ("guided", 0, "imagenet/0_real/i.png", "UFD"),
        ("guided", 1, "guided/1_fake/g.png", "UFD"),
        ("ldm_100", 0, "laion/0_real/l1.png", "UFD"),
        ("ldm_100", 0, "laion/0_real/l2.png", "UFD"),
        ("ldm_100", 1, "ldm_100/1_fake/m.png", "UFD"),
    ]
    assert listing.layout == "0_real/1_fake (UniversalFakeDetect pairs)"
    assert listing.notes == [
        "UniversalFakeDetect diffusion layout: real folders paired with fake folders as in "
        "WisconsinAIVision/UniversalFakeDetect dataset_paths.py (imagenet -> guided; "
        "laion -> dalle, ldm_100); each real image is predicted once and scored with every "
        "generator it pairs"
    ]


def test_a_root_whose_name_looks_like_a_glob_is_taken_literally(tmp_path: Path):
    root = tmp_path / "set[1]"  # "[1]" as a pattern would match "set1"
    touch(root / "real/a.png")
    touch(root / "fake/b.png")
    touch(tmp_path / "set1/fake/decoy.png")
    path = manifest(root, '[generators.g]\nreal = "real"\nfake = "fake/*.png"\n')
    assert rel(read_manifest(path), root) == [
        ("g", 0, "real/a.png", "pairs"),
        ("g", 1, "fake/b.png", "pairs"),
    ]
