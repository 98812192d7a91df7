"""`bench table --preset paper` for Tables 1, 2, 3, 5 and 6 on the data sets as downloaded.

A skeleton DATA_ROOT holds the four test sets and the training set in their download
layouts (see test_public_layouts.py for where each comes from). The detectors are not
trained here: `run` is replaced by one that lists the data exactly as a run does and
scores every fake 0.9 and every real 0.1, so every cell a spec column matched must read
100.0, and any column that matched nothing, or matched the wrong set, shows up.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import bench.tables as tables
from bench import leaderboard

FORENSYNTHS = ["progan", "cyclegan", "biggan", "stylegan", "stylegan2", "gaugan", "stargan"]
FORENSYNTHS += ["whichfaceisreal", "deepfake", "crn", "imle", "seeingdark", "san"]
GENIMAGE = ["stable_diffusion_v_1_4", "stable_diffusion_v_1_5", "ADM", "glide", "Midjourney"]
GENIMAGE += ["wukong", "VQDM", "BigGAN", "DALLE2"]
UFD = ["guided", "ldm_200", "ldm_200_cfg", "ldm_100", "glide_100_27", "glide_50_27"]
UFD += ["glide_100_10", "dalle"]
AIGIBENCH = ["ProGAN", "R3GAN", "StyleGAN3", "StyleGAN-XL", "StyleSwim", "FLUX1-dev"]
AIGIBENCH += ["Midjourney", "GLIDE", "Imagen3", "SD3", "SDXL", "BLIP", "Infinite-ID"]
AIGIBENCH += ["IP-Adapter", "SocialRF", "CommunityAI", "DALLE-3", "InstantID"]


def put(folder: Path, n: int = 1, ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}{ext}").write_bytes(b"x")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paper-data")
    for cls in ("car", "cat", "chair", "horse", "sdv1.4"):
        for label in ("0_real", "1_fake"):
            put(root / "AIGIBench" / "train" / cls / label)
            put(root / "AIGIBench" / "val" / cls / label)
    for gen in AIGIBENCH:
        for label in ("0_real", "1_fake"):
            put(root / "AIGIBench" / "test" / gen / label)
    for gen in GENIMAGE:
        for split in ("train", "val"):
            put(
                root / "GenImage" / gen / f"imagenet_ai_0000_{gen.lower()}" / split / "ai",
                ext=".PNG",
            )
            put(
                root / "GenImage" / gen / f"imagenet_ai_0000_{gen.lower()}" / split / "nature",
                ext=".JPEG",
            )
    for gan in FORENSYNTHS:
        classes = ["car", "cat"] if gan in ("progan", "stylegan", "stylegan2", "cyclegan") else [""]
        for cls in classes:
            for label in ("0_real", "1_fake"):
                put(root / "ForenSynths" / "CNN_synth_testset" / gan / cls / label)
    put(root / "UniversalFakeDetect" / "diffusion_datasets" / "imagenet" / "0_real", 2)
    put(root / "UniversalFakeDetect" / "diffusion_datasets" / "laion" / "0_real", 2)
    for gen in UFD:
        put(root / "UniversalFakeDetect" / "diffusion_datasets" / gen / "1_fake", 2)
    return root


def scored_run(spec, registry) -> Path:
    """What `bench run` records, from the real listing, with perfect scores."""
    from bench.metrics import per_generator_metrics
    from bench.results_io import write_metrics
    from bench.run_data import read_data
    from bench.run_identity import config_key
    from bench.runner import identity_of, resolve_components

    data = read_data(spec.train, spec.test, spec.max_per_class, spec.seed)
    samples = data.test_samples
    table = per_generator_metrics(
        [s.generator for s in samples],
        [s.label for s in samples],
        [0.9 if s.label else 0.1 for s in samples],
        test_sets=[s.dataset for s in samples],
    )
    key = config_key(identity_of(spec, resolve_components(registry, spec), data.test_sets))
    run_dir = Path(spec.out) / "runs" / spec.label
    run_dir.mkdir(parents=True)
    write_metrics(run_dir / "metrics.csv", table)
    (run_dir / "config.json").write_text(json.dumps({"status": "finished"}), encoding="utf-8")
    leaderboard.record(
        spec.out, config=key, seed=spec.seed, label=spec.label, train="t", run_id=run_dir.name
    )
    return run_dir


@pytest.mark.parametrize(
    "name",
    [
        "table1_genimage",
        "table2_universalfakedetect",
        "table3_aigibench",
        "table5_genimage_ap",
        "table6_universalfakedetect_ap",
    ],
)
def test_paper_table_on_download_layouts(name, data_root, tmp_path_factory, monkeypatch):
    monkeypatch.setattr(tables, "run", scored_run)
    out = tmp_path_factory.getbasetemp() / "paper-out"  # shared: tables reuse each other's runs
    csv_path, _ = tables.run_table(
        name, preset="paper", data_root=data_root, out=out, progress=False
    )
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["source"] == "ours" and not r["note"]]
    assert {r["method"] for r in rows} >= {"univfd", "safe", "vibnet", "nsnet"}
    spec = tables.load_spec(name)
    shown = (["Real"] if spec.real_column else []) + list(spec.presets["paper"].columns)
    for row in rows:
        assert [row[c] for c in shown] == ["100.0"] * len(shown), row["method"]
