"""Core transforms: padding instead of resizing, determinism given a seed."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from bench.builtin.transforms import CenterCrop, HorizontalFlip, RandomCrop, ToTensor
from bench.interfaces import TransformChain


def image(w: int, h: int) -> Image.Image:
    return Image.fromarray(np.arange(w * h * 3, dtype=np.uint32).reshape(h, w, 3).astype(np.uint8))


def test_center_crop_takes_the_middle_and_pads_small_images():
    out = CenterCrop(4)(image(10, 8), train=False, seed=0)
    assert out.size == (4, 4)
    assert np.array_equal(np.asarray(out), np.asarray(image(10, 8))[2:6, 3:7])
    small = CenterCrop(6)(image(2, 2), train=False, seed=0)
    arr = np.asarray(small)
    assert (
        small.size == (6, 6)
        and arr[0, 0].sum() == 0
        and np.array_equal(arr[2:4, 2:4], np.asarray(image(2, 2)))
    )


def test_random_crop_is_deterministic_given_the_seed_and_central_at_eval():
    a = RandomCrop(5)(image(20, 20), train=True, seed=7)
    b = RandomCrop(5)(image(20, 20), train=True, seed=7)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    crops = {
        np.asarray(RandomCrop(5)(image(20, 20), train=True, seed=s)).tobytes() for s in range(20)
    }
    assert len(crops) > 5
    evaluation = RandomCrop(5)(image(20, 20), train=False, seed=3)
    assert np.array_equal(np.asarray(evaluation), np.asarray(image(20, 20))[7:12, 7:12])


def test_flip_only_at_train_time():
    img = image(6, 6)
    assert all(
        np.array_equal(np.asarray(HorizontalFlip(p=1.0)(img, train=False, seed=s)), np.asarray(img))
        for s in range(5)
    )
    assert np.array_equal(
        np.asarray(HorizontalFlip(p=1.0)(img, train=True, seed=0)), np.asarray(img)[:, ::-1]
    )


def test_to_tensor_normalises_with_mean_and_std():
    img = Image.fromarray(np.full((2, 2, 3), 255, dtype=np.uint8))
    t = ToTensor(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(img, train=False, seed=0)
    assert t.shape == (3, 2, 2) and torch.allclose(t, torch.full((3, 2, 2), 2.0))


def test_chain_replaces_the_geometry_step():
    chain = TransformChain([RandomCrop(8), HorizontalFlip(), ToTensor()])
    swapped = chain.replace_role("geometry", CenterCrop(4))
    assert [type(s).__name__ for s in swapped.steps] == ["CenterCrop", "HorizontalFlip", "ToTensor"]
    assert swapped(image(10, 10), train=True, seed=1).shape == (3, 4, 4)
