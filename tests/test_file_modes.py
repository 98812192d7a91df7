"""Output files get the user's umask (a shared results folder stays readable by the group)."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
import torch

from bench.plugins import get_registry
from bench.runner import RunSpec, run


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield 0o640  # what 0666 less the umask gives
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_run_outputs_follow_the_umask(umask_027, tmp_path, tiny_tree, tiny_test_tree):
    test = tmp_path / "test"
    shutil.copytree(tiny_test_tree, test)
    (test / "gan_a" / "0_real" / "broken.png").write_bytes(b"junk")
    out = tmp_path / "out"
    spec = RunSpec(
        detector="spectral_logreg",
        train=str(tiny_tree),
        test=[str(test)],
        out=str(out),
        progress=False,
        workers=0,
        epochs=1,
    )
    run_dir = run(spec, get_registry())
    files = ["leaderboard_acc.csv", "leaderboard_acc.md", "leaderboard_index.csv"]
    files = [out / name for name in files]
    names = ["config.json", "state.safetensors", "predictions.csv", "metrics.csv", "log.txt"]
    files += [run_dir / name for name in [*names, "skipped.txt"]]
    assert {str(p.relative_to(out)): oct(_mode(p)) for p in files} == {
        str(p.relative_to(out)): oct(umask_027) for p in files
    }


def test_feature_cache_shards_follow_the_umask(umask_027, tmp_path):
    from baselines.feature_cache import FeatureStore

    store = FeatureStore(tmp_path / "features", describe={"what": "test"})
    store.add(["ab" * 32], torch.ones(1, 4))
    (shard,) = store.shards()
    assert _mode(shard) == umask_027
    assert _mode(tmp_path / "features" / "meta.json") == umask_027
