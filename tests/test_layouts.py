"""The dataset layouts people already have, read from tiny trees built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bench.data.layouts import (
    Sample,
    list_dataset,
    read_csv,
    read_dataset,
    read_folder_tree,
    read_genimage,
    sample_per_class,
)
from bench.data.walk import image_extensions
from bench.errors import BenchError


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (255, 0, 0)).save(path, format="PNG")
    return path


def tree(root: Path, *relpaths: str) -> Path:
    for rel in relpaths:
        png(root / rel)
    return root


def summary(samples: list[Sample], root: Path) -> list[tuple[str, int, str]]:
    return [(s.generator, s.label, Path(s.path).relative_to(root).as_posix()) for s in samples]


def test_image_extensions_are_what_pil_opens():
    usual = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif"}
    assert usual <= image_extensions()
    # PostScript would run Ghostscript on a data file; stubs never decode pixels.
    assert not {".eps", ".ps", ".h5", ".pdf"} & image_extensions()


def test_gif_and_jfif_are_read_and_other_files_listed(tmp_path):
    root = tree(tmp_path / "set", "g/0_real/a.gif", "g/1_fake/b.jfif")
    (root / "g/1_fake/notes.txt").write_text("x")
    listing = list_dataset(root)
    assert summary(listing.samples, root) == [
        ("g", 0, "g/0_real/a.gif"),
        ("g", 1, "g/1_fake/b.jfif"),
    ]
    assert [(Path(p).name, r) for p, r in listing.skipped] == [("notes.txt", "not an image (.txt)")]


def test_folder_tree_flat(tmp_path):
    root = tree(
        tmp_path / "cnn",
        "stylegan/1_fake/b.png",
        "stylegan/0_real/a.PNG",
        "biggan/0_real/x.jpg",
        "biggan/1_fake/y.JPEG",
        "biggan/1_fake/notes.txt",
        "biggan/1_fake/._y.png",
    )
    (root / "biggan/1_fake/notes.txt").write_text("not an image")
    listing = list_dataset(root)
    samples = listing.samples
    assert sorted((Path(p).name, r) for p, r in listing.skipped) == [
        ("._y.png", "hidden file"),
        ("notes.txt", "not an image (.txt)"),
    ]
    assert summary(samples, root) == [
        ("biggan", 0, "biggan/0_real/x.jpg"),
        ("biggan", 1, "biggan/1_fake/y.JPEG"),
        ("stylegan", 0, "stylegan/0_real/a.PNG"),
        ("stylegan", 1, "stylegan/1_fake/b.png"),
    ]
    assert all(Path(s.path).is_absolute() for s in samples)


def test_folder_tree_forensynths_with_class_level(tmp_path):
    root = tree(
        tmp_path / "train",
        "progan/car/0_real/1.png",
        "progan/car/1_fake/2.png",
        "progan/cat/0_real/3.png",
        "progan/cat/1_fake/sub/4.png",  # images are found recursively below the class folder
    )
    assert summary(read_folder_tree(root), root) == [
        ("progan", 0, "progan/car/0_real/1.png"),
        ("progan", 0, "progan/cat/0_real/3.png"),
        ("progan", 1, "progan/car/1_fake/2.png"),
        ("progan", 1, "progan/cat/1_fake/sub/4.png"),
    ]


def test_folder_tree_classes_directly_under_root_use_root_name(tmp_path):
    root = tree(tmp_path / "dalle", "0_real/a.png", "1_fake/b.webp")
    assert summary(read_folder_tree(root), root) == [
        ("dalle", 0, "0_real/a.png"),
        ("dalle", 1, "1_fake/b.webp"),
    ]


def test_aigibench_train_and_test(tmp_path):
    root = tree(
        tmp_path / "AIGIBench",
        "train/car/0_real/a.png",
        "train/car/1_fake/b.png",
        "train/cat/0_real/c.png",
        "test/SDXL/0_real/d.png",
        "test/SDXL/1_fake/e.png",
        "test/FLUX/1_fake/f.png",
    )
    test = root / "test"
    assert summary(read_dataset(str(test)), test) == [
        ("FLUX", 1, "FLUX/1_fake/f.png"),
        ("SDXL", 0, "SDXL/0_real/d.png"),
        ("SDXL", 1, "SDXL/1_fake/e.png"),
    ]
    train = root / "train"
    assert [(s.generator, s.label) for s in read_dataset(str(train))] == [
        ("car", 0),
        ("car", 1),
        ("cat", 0),
    ]
    # Pointed at the whole benchmark, each role reads its own split and lists the others.
    assert {s.generator for s in read_dataset(str(root))} == {"FLUX", "SDXL"}
    assert {s.generator for s in read_dataset(str(root), split="train")} == {"car", "cat"}


GENIMAGE_FILES = (
    "sdv4/train/ai/t1.png",
    "sdv4/train/nature/t2.JPEG",
    "sdv4/val/ai/v1.png",
    "sdv4/val/nature/v2.png",
    "midjourney/val/ai/m1.png",
)


def test_genimage_split_selection(tmp_path):
    root = tree(tmp_path / "GenImage", *GENIMAGE_FILES)
    assert summary(read_genimage(root), root) == [
        ("midjourney", 1, "midjourney/val/ai/m1.png"),
        ("sdv4", 0, "sdv4/val/nature/v2.png"),
        ("sdv4", 1, "sdv4/val/ai/v1.png"),
    ]
    assert summary(read_genimage(root, split="train"), root) == [
        ("sdv4", 0, "sdv4/train/nature/t2.JPEG"),
        ("sdv4", 1, "sdv4/train/ai/t1.png"),
    ]


def test_genimage_with_extra_archive_level(tmp_path):
    root = tree(
        tmp_path / "GenImage",
        "stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/val/ai/a.png",
        "stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/val/nature/b.png",
        "BigGAN/imagenet_ai_0419_biggan/val/ai/c.png",
        "BigGAN/imagenet_ai_0419_biggan/train/ai/d.png",
    )
    assert [(s.generator, s.label) for s in read_genimage(root, "val")] == [
        ("BigGAN", 1),
        ("stable_diffusion_v_1_4", 0),
        ("stable_diffusion_v_1_4", 1),
    ]


def test_genimage_root_is_one_generator(tmp_path):
    root = tree(tmp_path / "wukong", "val/ai/a.png", "val/nature/b.png")
    assert [(s.generator, s.label) for s in read_dataset(str(root))] == [
        ("wukong", 0),
        ("wukong", 1),
    ]
    split = root / "val"
    assert [(s.generator, s.label) for s in read_dataset(str(split))] == [
        ("wukong", 0),
        ("wukong", 1),
    ]


def test_read_dataset_detects_genimage_and_passes_split(tmp_path):
    root = tree(tmp_path / "GenImage", *GENIMAGE_FILES)
    assert len(read_dataset(str(root))) == 3
    assert len(read_dataset(str(root), split="train")) == 2


def test_read_dataset_genimage_split_without_images(tmp_path):
    root = tree(tmp_path / "GenImage", "sdv4/train/ai/a.png")
    with pytest.raises(BenchError, match="for the test or val split"):
        read_dataset(str(root))


def test_csv_with_header_and_generator(tmp_path):
    for name in ("imgs/a.png", "abs.png", "imgs/b.png"):
        png(tmp_path / name)
    csv_file = tmp_path / "set.csv"
    csv_file.write_text(
        "path,label,generator\n"
        "imgs/a.png,1,sdxl\n"
        f"{tmp_path / 'abs.png'},real,sdxl\n"
        "imgs/b.png,FAKE,dalle\n"
    )
    samples = read_csv(csv_file)
    assert samples == [
        Sample(str(tmp_path / "imgs/b.png"), 1, "dalle", "set"),
        Sample(str(tmp_path / "abs.png"), 0, "sdxl", "set"),
        Sample(str(tmp_path / "imgs/a.png"), 1, "sdxl", "set"),
    ]


def test_csv_without_header_or_generator_uses_file_stem(tmp_path):
    sub = tmp_path / "lists"
    sub.mkdir()
    csv_file = sub / "chameleon.csv"
    csv_file.write_text("../x.png,0\n\n../y.png,1\n")
    png(tmp_path / "x.png")
    png(tmp_path / "y.png")
    assert read_csv(csv_file) == [
        Sample(str(tmp_path / "x.png"), 0, "chameleon", "chameleon"),
        Sample(str(tmp_path / "y.png"), 1, "chameleon", "chameleon"),
    ]


def test_csv_header_in_other_order_with_bom(tmp_path):
    csv_file = tmp_path / "mix.csv"
    csv_file.write_text("\ufefflabel,path\n0,a.png\n", encoding="utf-8")
    png(tmp_path / "a.png")
    assert read_csv(csv_file) == [Sample(str(tmp_path / "a.png"), 0, "mix", "mix")]


def test_csv_empty_generator_cell_falls_back_to_stem(tmp_path):
    csv_file = tmp_path / "set.csv"
    csv_file.write_text("a.png,1,\nb.png,0\n")
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    assert {s.generator for s in read_csv(csv_file)} == {"set"}


def test_csv_bad_label_names_file_and_line(tmp_path):
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("path,label\na.png,1\nb.png,2\n")
    with pytest.raises(BenchError, match=r"bad\.csv, line 3: label '2'"):
        read_csv(csv_file)


def test_csv_too_few_columns(tmp_path):
    csv_file = tmp_path / "short.csv"
    csv_file.write_text("a.png\n")
    with pytest.raises(BenchError, match="line 1"):
        read_dataset(str(csv_file))


def test_read_dataset_reads_csv(tmp_path):
    csv_file = tmp_path / "set.csv"
    csv_file.write_text("a.png,0\n")
    png(tmp_path / "a.png")
    assert read_dataset(str(csv_file)) == [Sample(str(tmp_path / "a.png"), 0, "set", "set")]


def test_read_dataset_header_only_csv(tmp_path):
    csv_file = tmp_path / "empty.csv"
    csv_file.write_text("path,label\n")
    with pytest.raises(BenchError, match="no readable images"):
        read_dataset(str(csv_file))


def test_missing_path(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        read_dataset(str(tmp_path / "nope"))
    with pytest.raises(BenchError, match="does not exist"):
        read_folder_tree(tmp_path / "nope")


def test_empty_tree_names_the_layouts_looked_for(tmp_path):
    tree(tmp_path / "data", "some/folder/a.png")
    with pytest.raises(BenchError, match="no images found") as err:
        read_dataset(str(tmp_path / "data"))
    message = str(err.value)
    assert "0_real/1_fake" in message and "GenImage" in message and "\n" not in message


def test_one_class_is_returned_not_refused(tmp_path):
    root = tree(tmp_path / "reals", "laion/0_real/a.png")
    assert [s.label for s in read_dataset(str(root))] == [0]


def _many(generator: str, label: int, n: int) -> list[Sample]:
    return [Sample(f"/d/{generator}/{label}/{i:03d}.png", label, generator) for i in range(n)]


def test_sample_per_class_caps_each_generator_and_label():
    samples = _many("a", 0, 10) + _many("a", 1, 3) + _many("b", 1, 7)
    chosen = sample_per_class(samples, 4)
    counts = {}
    for s in chosen:
        counts[(s.generator, s.label)] = counts.get((s.generator, s.label), 0) + 1
    assert counts == {("a", 0): 4, ("a", 1): 3, ("b", 1): 4}
    assert chosen == sorted(chosen, key=lambda s: (s.generator, s.label, s.path))


def test_sample_per_class_is_deterministic_and_seeded():
    samples = _many("a", 0, 50) + _many("b", 1, 50)
    first = sample_per_class(samples, 5, seed=0)
    assert sample_per_class(list(reversed(samples)), 5, seed=0) == first
    assert sample_per_class(samples, 5, seed=1) != first


def test_sample_per_class_group_picks_do_not_depend_on_other_generators():
    a = _many("a", 0, 50)
    alone = sample_per_class(a, 5)
    with_b = [s for s in sample_per_class(a + _many("b", 0, 50), 5) if s.generator == "a"]
    assert alone == with_b


def test_sample_per_class_none_keeps_everything_sorted():
    samples = _many("b", 0, 3) + _many("a", 1, 2)
    assert sample_per_class(samples, None) == sorted(
        samples, key=lambda s: (s.generator, s.label, s.path)
    )
    with pytest.raises(BenchError):
        sample_per_class(samples, 0)


def test_genimage_never_lists_the_other_split(tmp_path, monkeypatch):
    import bench.data.layouts as layouts

    root = tree(tmp_path / "GenImage", *GENIMAGE_FILES)
    listed = []
    real_images_below = layouts.images_below
    monkeypatch.setattr(
        layouts,
        "images_below",
        lambda d, skipped: listed.append(Path(d).parent.name) or real_images_below(d, skipped),
    )
    read_dataset(str(root), split="val")
    assert set(listed) == {"val"}
