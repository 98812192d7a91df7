"""Skeleton trees of each public data set, as downloaded, read as their authors meant.

Each tree is built here with the real folder names, nesting and extensions (files hold a
few bytes: listing never decodes). Where each structure comes from:

- ForenSynths/CNNDetection (PeterWang512/CNNDetection): README ("separated in 20 object
  categories", "ProGAN, StyleGAN, StyleGAN2, CycleGAN testset contains multiple classes"),
  train.py's --classes list, eval_config.py's 13 test sets, dataset/test/
  download_testset.sh (CNN_synth_testset.zip); whichfaceisreal files are .jpeg.
- UniversalFakeDetect (WisconsinAIVision/UniversalFakeDetect): README (diffusion_datasets,
  1k real + 1k fake per domain) and dataset_paths.py (which real folder each fake folder
  is scored against).
- GenImage: <generator>/imagenet_ai_*/{train,val}/{ai,nature}; nature files are ImageNet
  names (n01440764_12548.JPEG), ADM's fakes .PNG (shared/REFERENCE.md "Real dataset layouts").
- AIGIBench (HorizonTEL/AIGIBench README and the authors' log_test.log): train/{car,cat,
  chair,horse,sdv1.4}, val/, test/<generators>, with some downloads adding a
  METHOD/METHOD_VARIANT level; mixed extensions.
- AIGCDetectBenchmark (Ekko-zn/AIGCDetectBenchmark eval_config.py): test/ with 16 sets.
- Chameleon: test/{0_real,1_fake}.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from bench.data.layouts import list_dataset
from bench.errors import BenchError

LSUN_20 = [
    "airplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def touch(root: Path, rel: str, n: int = 1, ext: str = ".png") -> None:
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:03d}{ext}").write_bytes(b"\x89PNG")


def counts(listing) -> dict[tuple[str, int], int]:
    return dict(Counter((s.generator, s.label) for s in listing.samples))


def pairs(root: Path, rel: str, n_real: int, n_fake: int, ext: str = ".png") -> None:
    touch(root, f"{rel}/0_real", n_real, ext)
    touch(root, f"{rel}/1_fake", n_fake, ext)


# ------------------------------------------------------------------ ForenSynths


@pytest.fixture(scope="module")
def forensynths(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("forensynths") / "ForenSynths"
    for cls in LSUN_20:
        pairs(root, f"progan_train/{cls}", 2, 2)
        pairs(root, f"progan_val/{cls}", 1, 1)
        pairs(root, f"CNN_synth_testset/progan/{cls}", 1, 1)
    for gan, classes in {
        "stylegan": ["bedroom", "car", "cat"],
        "stylegan2": ["car", "cat", "church", "horse"],
        "cyclegan": ["apple", "horse", "orange", "summer", "winter", "zebra"],
    }.items():
        for cls in classes:
            pairs(root, f"CNN_synth_testset/{gan}/{cls}", 1, 2)
    for gan in ["biggan", "stargan", "gaugan", "deepfake", "crn", "imle", "seeingdark", "san"]:
        pairs(root, f"CNN_synth_testset/{gan}", 3, 3)
    pairs(root, "CNN_synth_testset/whichfaceisreal", 2, 2, ext=".jpeg")
    return root


def test_forensynths_training_reads_only_progan_train(forensynths: Path) -> None:
    listing = list_dataset(forensynths, "train")
    # The 20 LSUN classes (one of them named "train") are the training "generators".
    assert sorted(listing.generators()) == sorted(LSUN_20)
    assert len(listing.samples) == 20 * 4 and {s.dataset for s in listing.samples} == {
        "ForenSynths"
    }
    assert all("/progan_train/" in s.path for s in listing.samples)
    assert sorted((Path(p).name, r) for p, r in listing.skipped) == [
        ("CNN_synth_testset", "other split (test): not read"),
        ("progan_val", "other split (val): not read"),
    ]


def test_forensynths_test_set_as_unzipped(forensynths: Path) -> None:
    for root in (forensynths, forensynths / "CNN_synth_testset"):
        listing = list_dataset(root, "test")
        got = counts(listing)
        assert len({g for g, _ in got}) == 13
        assert got[("progan", 0)] == 20 and got[("progan", 1)] == 20  # 20 classes pooled
        assert got[("stylegan", 1)] == 6 and got[("cyclegan", 0)] == 6
        assert got[("whichfaceisreal", 0)] == 2 and got[("biggan", 1)] == 3
        assert any("progan pools 20 sub-folders" in n for n in listing.notes)


# ------------------------------------------------------------------ UniversalFakeDetect

UFD_FAKES = [
    "guided",
    "ldm_200",
    "ldm_200_cfg",
    "ldm_100",
    "glide_100_27",
    "glide_50_27",
    "glide_100_10",
    "dalle",
]


@pytest.fixture(scope="module")
def ufd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ufd") / "UniversalFakeDetect"
    touch(root, "diffusion_datasets/imagenet/0_real", 3)
    touch(root, "diffusion_datasets/laion/0_real", 4)
    for fake in UFD_FAKES:
        touch(root, f"diffusion_datasets/{fake}/1_fake", 2)
    return root


def test_universalfakedetect_diffusion_pairs_as_dataset_paths_py(ufd: Path) -> None:
    for root in (ufd / "diffusion_datasets", ufd):  # the folder itself, or where it was unzipped
        listing = list_dataset(root, "test")
        got = counts(listing)
        assert sorted(listing.generators()) == sorted(UFD_FAKES)  # imagenet/laion: not generators
        assert got[("guided", 0)] == 3  # guided is scored against imagenet
        for fake in UFD_FAKES[1:]:  # every LDM, GLIDE and DALL-E folder against laion
            assert (got[(fake, 0)], got[(fake, 1)]) == (4, 2), fake
        reals = {s.path for s in listing.samples if s.generator == "ldm_100" and s.label == 0}
        assert {Path(p).parent.parent.name for p in reals} == {"laion"}
        assert any("dataset_paths.py" in n for n in listing.notes)


def test_a_manifest_describes_any_paired_layout(ufd: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "pairs.toml"
    base = ufd / "diffusion_datasets"
    manifest.write_text(
        f'name = "UFD-subset"\nroot = "{base}"\n'
        '[generators.guided]\nreal = ["imagenet/0_real"]\nfake = ["guided/1_fake/*.png"]\n'
        '[generators.dalle]\nreal = "laion/0_real"\nfake = ["dalle/1_fake"]\n'
    )
    listing = list_dataset(manifest, "test")
    assert listing.name == "UFD-subset"
    assert counts(listing) == {("guided", 0): 3, ("guided", 1): 2, ("dalle", 0): 4, ("dalle", 1): 2}
    not_named = [p for p, r in listing.skipped if r.startswith("not named by any generator")]
    assert len(not_named) == 2 * 6  # the fakes of the six folders the manifest leaves out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'root = "{base}"\n[generators.x]\nreal = ["nowhere"]\nfake = ["dalle/1_fake"]\n'
    )
    with pytest.raises(BenchError, match="'nowhere' names no image"):
        list_dataset(bad)
    bad.write_text(f'root = "{base}"\n[generators.x]\nreal = ["laion/0_real"]\nfakes = ["d"]\n')
    with pytest.raises(BenchError, match="did you mean 'fake'"):
        list_dataset(bad)


# ------------------------------------------------------------------ GenImage


@pytest.fixture(scope="module")
def genimage(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("genimage") / "GenImage"
    for gen, sub, fake_ext in [
        ("ADM", "imagenet_ai_0508_adm", ".PNG"),
        ("stable_diffusion_v_1_4", "imagenet_ai_0419_sdv4", ".png"),
        ("wukong", "imagenet_ai_0424_wukong", ".png"),
    ]:
        for split, n in (("train", 3), ("val", 2)):
            touch(root, f"{gen}/{sub}/{split}/ai", n, fake_ext)
            folder = root / gen / sub / split / "nature"
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"n01440764_{12548 + i}.JPEG").write_bytes(b"\xff\xd8")
    return root


def test_genimage_reads_val_for_test_and_train_for_training(genimage: Path) -> None:
    test = list_dataset(genimage, "test")
    assert counts(test) == {
        (g, lab): 2 for g in ("ADM", "stable_diffusion_v_1_4", "wukong") for lab in (0, 1)
    }
    assert all("/val/" in s.path for s in test.samples)
    assert {Path(s.path).suffix for s in test.samples} == {".JPEG", ".PNG", ".png"}
    train = list_dataset(genimage, "train")
    assert len(train.samples) == 3 * 6 and all("/train/" in s.path for s in train.samples)
    one = list_dataset(genimage / "wukong", "test")  # one generator's folder
    assert one.generators() == ["wukong"] and one.name == "wukong"


# ------------------------------------------------------------------ AIGIBench


@pytest.fixture(scope="module")
def aigibench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aigibench") / "AIGIBench"
    for cls in ("car", "cat", "chair", "horse", "sdv1.4"):
        pairs(root, f"train/{cls}", 2, 2)
        pairs(root, f"val/{cls}", 1, 1)
    pairs(root, "test/ProGAN", 2, 2)
    pairs(root, "test/Midjourney", 2, 2, ext=".jpg")
    pairs(root, "test/FLUX1-dev", 1, 1, ext=".webp")
    # A METHOD/METHOD_VARIANT level, as some downloads have it.
    pairs(root, "test/SocialRF/SocialRF_part1", 1, 2)
    pairs(root, "test/SocialRF/SocialRF_part2", 2, 1, ext=".JPEG")
    return root


def test_aigibench_splits_and_nested_variants(aigibench: Path) -> None:
    train = list_dataset(aigibench, "train")
    assert sorted(train.generators()) == ["car", "cat", "chair", "horse", "sdv1.4"]
    assert len(train.samples) == 20 and all("/train/" in s.path for s in train.samples)
    test = list_dataset(aigibench, "test")
    assert counts(test) == {
        ("FLUX1-dev", 0): 1,
        ("FLUX1-dev", 1): 1,
        ("Midjourney", 0): 2,
        ("Midjourney", 1): 2,
        ("ProGAN", 0): 2,
        ("ProGAN", 1): 2,
        ("SocialRF", 0): 3,
        ("SocialRF", 1): 3,
    }
    assert any("SocialRF pools 2 sub-folders" in n for n in test.notes)
    assert test.name == "AIGIBench" and list_dataset(aigibench / "test").name == "AIGIBench"


def test_a_root_mixing_splits_with_other_folders_is_refused(aigibench: Path, tmp_path) -> None:
    root = tmp_path / "mixed"
    pairs(root, "train/car", 1, 1)
    pairs(root, "test/SDXL", 1, 1)
    pairs(root, "extra/SDXL", 1, 1)
    with pytest.raises(BenchError, match=r"mixes split folders \(test, train\) with other folders"):
        list_dataset(root, "test")


# ------------------------------------------------------------------ AIGCDetectBenchmark, Chameleon

AIGCDB = [
    "progan",
    "stylegan",
    "biggan",
    "cyclegan",
    "stargan",
    "gaugan",
    "stylegan2",
    "whichfaceisreal",
    "ADM",
    "Glide",
    "Midjourney",
    "stable_diffusion_v_1_4",
    "stable_diffusion_v_1_5",
    "VQDM",
    "wukong",
    "DALLE2",
]


def test_aigcdetectbenchmark_test_folder(tmp_path: Path) -> None:
    root = tmp_path / "AIGCDetectBenchmark"
    for gen in AIGCDB:
        if gen in ("progan", "stylegan", "cyclegan", "stylegan2"):
            pairs(root, f"test/{gen}/car", 1, 1)
            pairs(root, f"test/{gen}/cat", 1, 1)
        else:
            pairs(root, f"test/{gen}", 1, 1)
    listing = list_dataset(root, "test")
    assert sorted(listing.generators()) == sorted(AIGCDB)
    assert counts(listing)[("progan", 0)] == 2 and counts(listing)[("Glide", 1)] == 1


def test_chameleon(tmp_path: Path) -> None:
    root = tmp_path / "Chameleon"
    pairs(root, "test", 3, 2, ext=".jpg")
    for given in (root, root / "test"):
        listing = list_dataset(given, "test")
        assert counts(listing) == {("Chameleon", 0): 3, ("Chameleon", 1): 2}
        assert listing.name == "Chameleon"


# ------------------------------------------------------------------ mixed layouts, odd entries


def test_mixed_layouts_under_one_root_are_read_completely(genimage: Path, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    os.symlink(genimage / "ADM", root / "ADM", target_is_directory=True)
    pairs(root, "SDXL", 2, 3)
    listing = list_dataset(root, "test")
    assert counts(listing) == {("ADM", 0): 2, ("ADM", 1): 2, ("SDXL", 0): 2, ("SDXL", 1): 3}
    assert any("mixes layouts" in n for n in listing.notes)


def test_symlink_cycles_count_each_file_once(tmp_path: Path) -> None:
    root = tmp_path / "set"
    pairs(root, "gen", 2, 2)
    os.symlink(".", root / "gen" / "0_real" / "again")
    os.symlink(".", root / "gen" / "0_real" / "and_again")  # two loops: exponential if followed
    os.symlink("..", root / "gen" / "up")
    listing = list_dataset(root, "test")
    assert counts(listing) == {("gen", 0): 2, ("gen", 1): 2}
    cycles = sorted(Path(p).name for p, r in listing.skipped if r.startswith("symbolic link cycle"))
    assert cycles == ["again", "and_again", "up"]


def test_special_files_are_listed_never_opened(tmp_path: Path) -> None:
    root = tmp_path / "set"
    pairs(root, "gen", 1, 1)
    os.mkfifo(root / "gen" / "1_fake" / "x.png")  # opening it would block forever
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        f"path,label\n{root / 'gen/0_real/000.png'},0\n/dev/zero,1\nmissing.png,1\n"
    )
    listing = list_dataset(root, "test")
    assert [(Path(p).name, r) for p, r in listing.skipped] == [
        ("x.png", "not a regular file (a FIFO)")
    ]
    from_csv = list_dataset(csv_file, "test")
    assert len(from_csv.samples) == 1
    assert [(Path(p).name, r) for p, r in from_csv.skipped] == [
        ("zero", "not a regular file (a character device) (line 3)"),
        ("missing.png", "does not exist (line 4)"),
    ]


def test_non_utf8_names_are_read(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path / "set")
    folder = os.path.join(root, b"caf\xe9", b"1_fake")
    os.makedirs(folder)
    open(os.path.join(folder, b"\xff.png"), "wb").close()
    os.makedirs(os.path.join(root, b"caf\xe9", b"0_real"))
    open(os.path.join(root, b"caf\xe9", b"0_real", b"a.png"), "wb").close()
    listing = list_dataset(os.fsdecode(root), "test")
    assert [s.generator for s in listing.samples] == ["caf\udce9", "caf\udce9"]
    assert all(os.path.exists(s.path) for s in listing.samples)
    listing.summary().encode("utf-8")  # log lines never carry undecodable bytes


def test_a_folder_of_csv_files_says_to_give_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "chameleon.csv").write_text("a.png,0\n")
    with pytest.raises(BenchError, match=r"holds chameleon\.csv: give the file itself"):
        list_dataset(folder, "test")
