"""What users expect around a run: refused no-op combinations, progress they can see."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.errors import BenchError
from bench.plugins import get_registry
from bench.runner import RunSpec, resolve_components


@pytest.mark.parametrize(
    ("addon", "hint"),
    [
        ("patchselect", "--opt nsnet.patch_selection=true (the default) or false"),
        ("nullspace", "--opt nsnet.nullspace=batch (the default), fixed or none"),
    ],
)
def test_nsnet_refuses_the_addons_it_already_has(addon: str, hint: str) -> None:
    spec = RunSpec(detector="nsnet", addons=[addon])
    with pytest.raises(BenchError) as err:
        resolve_components(get_registry(), spec)
    message = str(err.value)
    assert f"already has {addon} built in" in message and hint in message
    assert "\n" not in message


def test_other_detectors_still_take_both_addons() -> None:
    for addon in ("patchselect", "nullspace"):
        resolve_components(get_registry(), RunSpec(detector="univfd", addons=[addon]))


def test_feature_extraction_shows_progress(tiny_tree: Path, tmp_path, monkeypatch, capsys) -> None:
    """The frozen-backbone feature pass draws a bar (hours at ViT-L scale, silent before)."""
    from baselines.feature_cache import cached_features, image_digests
    from bench.builtin.transforms import CenterCrop, ToTensor
    from bench.data.layouts import read_folder_tree
    from bench.interfaces import RunContext, TransformChain

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    samples = read_folder_tree(tiny_tree)[:5]
    chain = TransformChain([CenterCrop(16), ToTensor()])
    ctx = RunContext(progress=True, log=lambda m: None)
    feats, found, computed = cached_features(
        samples,
        image_digests(samples),
        chain,
        lambda images: images.mean(dim=(2, 3)),
        key={"backbone": "test"},
        train=False,
        view=0,
        batch_size=2,
        ctx=ctx,
    )
    assert computed == 5 and feats is not None and bool(found.all())
    assert torch.allclose(
        feats[0], chain(_open(samples[0].path), train=False, seed=0).mean(dim=(1, 2))
    )
    err = capsys.readouterr().err
    assert "features (eval view 0)" in err and "3/3" in err  # 5 images in batches of 2


def _open(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def test_bench_table_says_which_row_it_is_on(
    tmp_path: Path, tiny_tree: Path, monkeypatch, capsys
) -> None:
    import bench.tables as tables

    spec = tmp_path / "t.toml"
    spec.write_text(
        f'[presets.demo]\ntrain = "{tiny_tree}"\ntest = ["{tiny_tree}"]\n'
        '[[rows]]\nlabel = "a"\ndetector = "spectral_logreg"\n'
        '[[rows]]\nlabel = "b"\ndetector = "ghost"\nunavailable = "not written yet"\n'
    )
    monkeypatch.setattr(
        tables, "run", lambda spec, registry: (_ for _ in ()).throw(RuntimeError("stop"))
    )
    with pytest.raises(BenchError):
        tables.run_table(spec, out=tmp_path / "out")
    err = capsys.readouterr().err
    assert "bench table: row 1 of 2 (a): running spectral_logreg" in err
    assert "bench table: row 2 of 2 (b): skipped: not written yet" in err


def test_caption_errors_name_the_exact_flag(tmp_path: Path, monkeypatch) -> None:
    """A user without BLIP or captions is told the flag to type, not a bare option name."""
    from bench.data.layouts import Sample
    from bench.interfaces import RunContext
    from nsnet_plugin.captions import captions_for, load_blip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(BenchError) as offline:
        load_blip("Salesforce/blip-image-captioning-base", option="nsnet.caption_model")
    assert "--opt nsnet.captions=prompt" in str(offline.value)
    samples = [Sample(str(tmp_path / "a.png"), 1, "g")]
    with pytest.raises(BenchError) as missing:
        captions_for(
            samples, {"captions": "file", "missing_captions": "error"}, RunContext(), "nsnet"
        )
    assert "--opt nsnet.captions=prompt" in str(missing.value)
    assert "--opt nsnet.missing_captions=prompt" in str(missing.value)


def test_seen_generators_by_name_or_declared() -> None:
    from bench.data.layouts import Sample
    from bench.run_data import RunData, seen_columns

    data = RunData(
        train_samples=[Sample("/t/a.png", 1, "ProGAN", "train"), Sample("/t/b.png", 1, "car", "t")],
        test_samples=[
            Sample("/x/1.png", 1, "progan", "ForenSynths"),  # named like a training generator
            Sample("/x/2.png", 1, "stable_diffusion_v_1_4", "GenImage"),
            Sample("/x/3.png", 1, "stable_diffusion_v_1_4", "Other"),
            Sample("/x/4.png", 1, "SDXL", "AIGIBench"),
        ],
    )
    assert seen_columns(data, []) == [("ForenSynths", "progan")]
    declared = seen_columns(data, ["GenImage/stable_diffusion_v_1_4", "sdxl"])
    assert declared == [
        ("AIGIBench", "SDXL"),
        ("ForenSynths", "progan"),
        ("GenImage", "stable_diffusion_v_1_4"),  # SET/NAME: not Other's folder of that name
    ]
