"""One run over the layouts that used to give wrong numbers with exit 0 (issue 10).

1. two test sets with a `Midjourney` folder were pooled into one generator;
2. UniversalFakeDetect's diffusion set gave single-class "generators";
3. `--train ROOT` with train/val/test folders trained on every split;
4. a root mixing GenImage and 0_real/1_fake generators dropped part of its data;
plus names that broke outputs: a generator folder named `mean`, one whose name is not
UTF-8, and one named like a spreadsheet formula with a `|` in it. One small run (the
built-in spectral detector, 32-px input, one epoch) checks all of them.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.plugins import get_registry
from bench.runner import RunSpec, run

NON_UTF8 = b"caf\xe9"
FORMULA = "=1+2|x"


def images(folder: bytes | Path, n: int, fake: bool, rng: np.random.Generator) -> None:
    folder = os.fsencode(folder)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        image = rng.normal(128, 45, (40, 40, 3))
        if fake:
            image = np.repeat(np.repeat(image[::2, ::2], 2, axis=0), 2, axis=1)
        array = image.clip(0, 255).astype(np.uint8)
        Image.fromarray(array).save(os.path.join(folder, b"%03d.png" % i), format="PNG")


def both(root: Path, rel: str | bytes, rng, n: int = 3) -> None:
    base = os.path.join(os.fsencode(root), os.fsencode(rel))
    images(os.path.join(base, b"0_real"), n, False, rng)
    images(os.path.join(base, b"1_fake"), n, True, rng)


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    base = tmp_path_factory.mktemp("e2e")
    bench_root = base / "Bench"  # failure 3: --train at a root with train/val/test
    for gen in ("gan_a", "gan_b"):
        both(bench_root / "train", gen, rng, n=4)
        both(bench_root / "val", gen, rng, n=1)
        both(bench_root / "test", gen, rng, n=1)
    a = base / "A" / "test"  # failure 1 with B; odd names
    for rel in ("Midjourney", "mean", NON_UTF8, FORMULA):
        both(a, rel, rng)
    b = base / "B"  # failure 4: GenImage-style beside 0_real/1_fake
    images(b / "Midjourney" / "imagenet_ai_0000_mj" / "val" / "ai", 2, True, rng)
    images(b / "Midjourney" / "imagenet_ai_0000_mj" / "val" / "nature", 2, False, rng)
    both(b, "sdxl", rng, n=2)
    c = base / "C" / "diffusion_datasets"  # failure 2: UniversalFakeDetect as released
    images(c / "imagenet" / "0_real", 2, False, rng)
    images(c / "laion" / "0_real", 3, False, rng)
    for fake in ("guided", "ldm_200", "dalle"):
        images(c / fake / "1_fake", 2, True, rng)
    spec = RunSpec(
        detector="spectral_logreg",
        train=str(bench_root),
        test=[str(base / "A" / "test"), str(b), f"UFD={base / 'C'}"],
        options={"spectral_logreg": {"input_size": 32, "bins": 8}},
        epochs=1,
        out=str(base / "out"),
        progress=False,
        workers=0,
        device="cpu",
    )
    return run(spec, get_registry())


def metrics(run_dir: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as fh:
        return {(r["kind"], r["test_set"], r["generator"]): r for r in csv.DictReader(fh)}


def test_training_reads_only_the_train_split(result: Path) -> None:
    config = json.loads((result / "config.json").read_text())
    assert config["n_train"] == 2 * 8  # Bench/train only: val/ and test/ are listed, not read
    with open(result / "skipped.txt", newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t")
        listed = [(r["split"], Path(r["path"]).name, r["reason"]) for r in rows]
    assert ("train", "test", "other split (test): not read") in listed
    assert ("train", "val", "other split (val): not read") in listed
    log = (result / "log.txt").read_text(encoding="utf-8")
    assert (
        "listed Bench (0_real/1_fake, train): 16 images (8 real, 8 fake) in 2 generator(s); 2 entries not read"
        in log
    )


def test_same_named_generators_of_two_sets_stay_apart(result: Path) -> None:
    rows = metrics(result)
    a, b = rows[("generator", "A", "Midjourney")], rows[("generator", "B", "Midjourney")]
    assert (a["n_real"], a["n_fake"], b["n_real"], b["n_fake"]) == ("3", "3", "2", "2")
    assert ("generator", "B", "sdxl") in rows  # the mixed root was read completely
    header = (
        (result.parent.parent / "leaderboard_acc.csv").read_text(encoding="utf-8").splitlines()[0]
    )
    assert "A/Midjourney" in header and "B/Midjourney" in header


def test_universalfakedetect_folders_are_paired(result: Path) -> None:
    rows = metrics(result)
    gens = {g for k, t, g in rows if k == "generator" and t == "UFD"}
    assert gens == {"guided", "ldm_200", "dalle"}  # imagenet and laion are not generators
    assert (
        rows[("generator", "UFD", "guided")]["n_real"],
        rows[("generator", "UFD", "ldm_200")]["n_real"],
    ) == ("2", "3")
    assert all(rows[("generator", "UFD", g)]["ap"] != "" for g in gens)
    with open(result / "predictions.csv", newline="", encoding="utf-8") as fh:
        preds = [r for r in csv.DictReader(fh) if r["test_set"] == "UFD"]
    laion = [r for r in preds if "/laion/" in r["path"]]
    assert len(laion) == 2 * 3  # scored with ldm_200 and dalle...
    by_path = {}
    for r in laion:
        by_path.setdefault(r["path"], set()).add(r["p_fake"])
    assert all(len(v) == 1 for v in by_path.values())  # ... from one prediction each
    assert "distinct images: each is predicted once" in (result / "log.txt").read_text()


def test_odd_names_keep_their_rows_and_break_no_file(result: Path) -> None:
    rows = metrics(result)
    assert ("generator", "A", "mean") in rows  # a folder named mean is a generator
    assert ("generator", "A", "caf\\xe9") in rows  # undecodable byte written as \xe9
    assert ("generator", "A", "'" + FORMULA) in rows  # neutralised for spreadsheets
    mean = rows[("mean", "", "mean")]
    assert mean["n_generators"] == str(4 + 2 + 3)
    for name in ("predictions.csv", "metrics.csv", "skipped.txt", "log.txt"):
        (result / name).read_bytes().decode("utf-8")  # valid UTF-8 throughout
    out = result.parent.parent
    board = (out / "leaderboard_acc.md").read_text(encoding="utf-8")
    table = [line for line in board.splitlines() if line.startswith("|")]
    assert len(table) == 3 and "A/=1+2\\|x" in table[0] and "A/caf\\\\xe9" in table[0]
    with open(out / "leaderboard_acc.csv", newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert "A/mean" in header and "A/caf\\xe9" in header and "A/=1+2|x" in header
    with open(result / "predictions.csv", newline="", encoding="utf-8") as fh:
        paths = [r["path"] for r in csv.DictReader(fh)]
    assert any("/caf\\xe9/" in p for p in paths)
