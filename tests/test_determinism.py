"""Results do not depend on the number of DataLoader workers."""

from __future__ import annotations

import csv
import random

import numpy as np
import torch

from bench.data.layouts import Sample
from bench.data.pipeline import ImageDataset
from bench.interfaces import Transform, TransformChain
from bench.plugins import get_registry
from bench.runner import RunSpec, run


class GlobalDraws(Transform):
    """A plugin-style step that draws from every global generator (as torchvision does)."""

    def __call__(self, image, *, train: bool, seed: int):
        return torch.tensor([torch.rand(()).item(), np.random.rand(), random.random()])


def test_loading_a_sample_leaves_the_global_generators_alone(tiny_tree):
    paths = sorted(str(p) for p in (tiny_tree / "gan_a" / "0_real").iterdir())[:3]
    samples = [Sample(p, 0, "gan_a") for p in paths]
    data = ImageDataset(samples, TransformChain([GlobalDraws()]), train=True, seed=5, epoch=0)
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    forwards = [data[i]["image"] for i in range(3)]
    after = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(after[0], expected[0])
    assert np.array_equal(after[1], expected[1]) and after[2] == expected[2]
    backwards = [data[i]["image"] for i in reversed(range(3))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forwards, backwards, strict=True))
    assert not torch.equal(forwards[0], forwards[1])  # each sample has its own seed


def _predictions(tmp_path, tiny_tree, tiny_test_tree, workers: int) -> list[tuple[str, str]]:
    spec = RunSpec(
        detector="vibnet",  # dropout and sampled z in training: both use the global RNG
        train=str(tiny_tree),
        test=[str(tiny_test_tree)],
        options={"vibnet": {"feature_cache": "off"}},
        preset="demo",
        epochs=1,
        batch_size=4,
        max_per_class=2,
        out=str(tmp_path / f"out{workers}"),
        progress=False,
        workers=workers,
    )
    run_dir = run(spec, get_registry())
    with open(run_dir / "predictions.csv", encoding="utf-8") as fh:
        return [(row["path"], row["p_fake"]) for row in csv.DictReader(fh)]


def test_vibnet_gives_identical_results_with_0_and_2_workers(tmp_path, tiny_tree, tiny_test_tree):
    without = _predictions(tmp_path, tiny_tree, tiny_test_tree, workers=0)
    with_two = _predictions(tmp_path, tiny_tree, tiny_test_tree, workers=2)
    assert len(without) == 8
    assert without == with_two
