"""Issue 17 (mutation testing): NS-Net's "own" reading, each image away from its own caption."""

from __future__ import annotations

import numpy as np
import torch

from nsnet_plugin.nullspace import project_own


def test_project_own_removes_each_rows_own_caption_direction():
    U = torch.tensor([[3.0, 4.0, 1.0], [1.0, 2.0, 3.0]])
    V = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # row 2: a zero caption
    out = project_own(U, V)
    # by hand: row 1 loses its x part (v = 2 e_x); row 2 keeps everything
    torch.testing.assert_close(out, torch.tensor([[0.0, 4.0, 1.0], [1.0, 2.0, 3.0]]))
    assert out.dtype == torch.float32


def test_project_own_against_numpy_and_in_float32_for_half_inputs():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    expected = u - (u * unit).sum(1, keepdims=True) * unit
    got = project_own(torch.from_numpy(u), torch.from_numpy(v))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    half = project_own(torch.from_numpy(u).bfloat16(), torch.from_numpy(v).float())
    assert half.dtype == torch.float32  # never a half-precision projection
    np.testing.assert_allclose((half * torch.from_numpy(unit).float()).sum(1), 0, atol=1e-5)
