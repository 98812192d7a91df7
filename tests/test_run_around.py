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
