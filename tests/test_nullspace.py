"""NULL-space projectors against scipy's null_space, their algebra, and the collapse guard."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from nsnet_plugin.nullspace import (
    NullSpace,
    default_min_null_dim,
    default_rtol,
    null_space_projector,
    project,
    project_out,
    removal_basis,
    semantic_subspace_projector,
)


def low_rank(n: int, d: int, rank: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, rank, generator=g, dtype=torch.float64)
    b = torch.randn(rank, d, generator=g, dtype=torch.float64)
    return a @ b


def reference_projector(V: torch.Tensor) -> np.ndarray:
    N = scipy.linalg.null_space(V.double().numpy())
    return N @ N.T


@pytest.mark.parametrize("rank", [1, 10, 32])
def test_matches_scipy_null_space(rank: int) -> None:
    V = low_rank(32, 64, rank)
    P = null_space_projector(V)
    np.testing.assert_allclose(P.numpy(), reference_projector(V), atol=1e-10)


def test_projector_algebra_and_rank() -> None:
    V = low_rank(32, 64, 12).float()
    P = null_space_projector(V)
    assert P.dtype == torch.float32 and P.shape == (64, 64)
    Pd = P.double()
    torch.testing.assert_close(Pd @ Pd, Pd, atol=1e-5, rtol=0)
    torch.testing.assert_close(Pd, Pd.T, atol=1e-6, rtol=0)
    assert (V.double() @ Pd).abs().max() < 1e-4 * V.abs().max()
    assert round(float(torch.trace(Pd))) == 64 - 12
    eig = torch.linalg.eigvalsh(Pd)
    assert int((eig > 0.5).sum()) == 64 - 12


def test_project_is_features_times_P() -> None:
    V = low_rank(8, 16, 8)
    P = null_space_projector(V)
    U = torch.randn(5, 16, dtype=torch.float32)
    out = project(U, P)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, U @ P.float())
    assert (project(V, P)).abs().max() < 1e-9 * V.abs().max()


def test_half_precision_input_gives_float32() -> None:
    V = low_rank(4, 16, 4).to(torch.float16)
    assert null_space_projector(V).dtype == torch.float32
    assert null_space_projector(V.to(torch.float64)).dtype == torch.float64


def test_zero_V_is_identity() -> None:
    torch.testing.assert_close(null_space_projector(torch.zeros(5, 12)), torch.eye(12))
    torch.testing.assert_close(null_space_projector(torch.zeros(0, 12)), torch.eye(12))


def test_rtol_decides_near_zero_singular_values() -> None:
    # exact singular values 1, 1e-3, 1e-9 along the first three axes
    d = 10
    V = torch.zeros(3, d, dtype=torch.float64)
    V[0, 0], V[1, 1], V[2, 2] = 1.0, 1e-3, 1e-9
    assert default_rtol(3, d) == pytest.approx(10 * 2.0**-23)
    # default (~1.2e-6): 1e-9 is noise, 1e-3 is signal
    assert round(float(torch.trace(null_space_projector(V)))) == d - 2
    assert round(float(torch.trace(null_space_projector(V, rtol=1e-12)))) == d - 3
    assert round(float(torch.trace(null_space_projector(V, rtol=1e-2)))) == d - 1
    # "<=" counts as zero: a singular value exactly at the tolerance is removed from the rank
    assert round(float(torch.trace(null_space_projector(V, rtol=1e-3)))) == d - 1


def test_max_rank_removes_only_top_directions() -> None:
    V = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0], dtype=torch.float64))
    V = torch.cat([V, torch.zeros(4, 8, dtype=torch.float64)], dim=1)  # d = 12
    P = null_space_projector(V, max_rank=2)
    expected = torch.eye(12, dtype=torch.float64)
    expected[0, 0] = expected[1, 1] = 0.0
    torch.testing.assert_close(P, expected, atol=1e-12, rtol=0)


def test_collapse_guard_on_many_captions() -> None:
    d = 64
    V = torch.randn(300, d, generator=torch.Generator().manual_seed(1))  # full rank
    assert default_min_null_dim(d) == 16
    with pytest.raises(ValueError, match="null space"):
        null_space_projector(V)
    with pytest.raises(ValueError, match="min_null_dim"):
        semantic_subspace_projector(V)  # the literal null space: 0 dimensions
    with pytest.raises(ValueError, match="min_null_dim"):
        semantic_subspace_projector(V, energy=1.0)
    with pytest.raises(ValueError, match="min_null_dim"):
        semantic_subspace_projector(V, k=60)  # would keep 4 < 16
    # explicitly lowered guard returns the literal (empty) null space
    assert float(null_space_projector(V, min_null_dim=0).abs().max()) < 1e-5


def test_semantic_subspace_top_k_and_energy() -> None:
    d = 64
    g = torch.Generator().manual_seed(2)
    scales = torch.tensor([10.0, 8.0, 6.0] + [0.1] * (d - 3), dtype=torch.float64)
    V = torch.randn(500, d, generator=g, dtype=torch.float64) * scales  # > 4 d rows: Gram route
    P = semantic_subspace_projector(V, k=3)
    assert round(float(torch.trace(P))) == d - 3
    # the removed directions are the three dominant axes
    assert float(P[:3, :3].abs().max()) < 0.05 and float(P[3:, 3:].diagonal().min()) > 0.95
    # energy: the three axes hold ~ 200 / (200 + 61 · 0.01) of Σσ²
    assert round(float(torch.trace(semantic_subspace_projector(V, energy=0.9)))) == d - 3
    Pd = P
    torch.testing.assert_close(Pd @ Pd, Pd, atol=1e-10, rtol=0)
    torch.testing.assert_close(Pd, Pd.T, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="not both"):
        semantic_subspace_projector(V, k=3, energy=0.9)


def test_gram_route_agrees_with_svd_route() -> None:
    V = low_rank(300, 64, 20, seed=3)  # 300 > 4 · 64: the Gram route
    _, _, vh = np.linalg.svd(V.numpy())
    top = vh[:5].T
    expected = np.eye(64) - top @ top.T
    np.testing.assert_allclose(semantic_subspace_projector(V, k=5).numpy(), expected, atol=1e-8)
    np.testing.assert_allclose(null_space_projector(V).numpy(), reference_projector(V), atol=1e-8)


def test_nullspace_modes() -> None:
    d = 32
    V_all = torch.randn(400, d, generator=torch.Generator().manual_seed(4))
    V_batch = low_rank(6, d, 6, seed=5).float()
    U = torch.randn(6, d)

    none = NullSpace("none")
    assert none(U, V_batch, training=True) is U

    fixed = NullSpace("fixed", fixed_k=4)
    with pytest.raises(RuntimeError, match="fit_fixed"):
        fixed(U, None, training=False)
    P_fixed = fixed.fit_fixed(V_all)
    assert P_fixed is not None and round(float(torch.trace(P_fixed))) == d - 4
    torch.testing.assert_close(fixed(U, V_batch, training=True), U @ P_fixed)
    torch.testing.assert_close(fixed(U, None, training=False), U @ P_fixed)

    batch = NullSpace("batch", fixed_k=4)
    out = batch(U, V_batch, training=True)
    torch.testing.assert_close(out, U @ null_space_projector(V_batch))
    assert (batch(V_batch, V_batch, training=True)).abs().max() < 1e-4
    with pytest.raises(ValueError, match="caption"):
        batch(U, None, training=True)
    # evaluation without captions and without a fixed P: identity, warned once
    with pytest.warns(RuntimeWarning, match="unprojected"):
        assert batch(U, None, training=False) is U
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert batch(U, None, training=False) is U
    # evaluation ignores captions by default (order independence), uses the fixed P
    batch.fit_fixed(V_all)
    torch.testing.assert_close(batch(U, V_batch, training=False), U @ batch.fixed)
    eval_batch = NullSpace("batch", batch_at_eval=True)
    torch.testing.assert_close(
        eval_batch(U, V_batch, training=False), U @ null_space_projector(V_batch)
    )


def test_nullspace_state_round_trip_and_options() -> None:
    ns = NullSpace("fixed", fixed_k=None, fixed_energy=0.5)
    ns.fit_fixed(torch.randn(200, 16, generator=torch.Generator().manual_seed(6)))
    other = NullSpace("fixed")
    other.load_state(ns.state())
    U = torch.randn(3, 16, dtype=torch.float64)
    torch.testing.assert_close(other(U), ns(U))
    assert other(U).dtype == torch.float64
    with pytest.raises(ValueError, match="not both"):
        NullSpace("fixed", fixed_energy=0.5)
    with pytest.raises(ValueError, match="mode"):
        NullSpace("sometimes")  # type: ignore[arg-type]
    assert "mode='fixed'" in repr(ns)


def test_batch_mode_max_rank_prevents_collapse() -> None:
    V_big = torch.randn(100, 32, generator=torch.Generator().manual_seed(7))
    with pytest.raises(ValueError, match="null space"):
        NullSpace("batch").projector_for_batch(V_big)
    P = NullSpace("batch", max_rank=8).projector_for_batch(V_big)
    assert round(float(torch.trace(P))) == 24


@pytest.mark.parametrize(
    ("n", "rank", "kwargs"),
    [(32, 32, {}), (32, 7, {}), (20, 20, {"max_rank": 5}), (12, 12, {"rtol": 0.5}), (0, 0, {})],
)
def test_low_rank_projection_equals_dense_projector(n: int, rank: int, kwargs: dict) -> None:
    """U − (U Bᵀ) B with B from a reduced SVD is U P of the dense projector (scipy's too)."""
    d = 96
    V = low_rank(n, d, rank, seed=n + rank) if n else torch.zeros(0, d, dtype=torch.float64)
    U = torch.randn(9, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    B = removal_basis(V, **kwargs)
    assert B.shape == (min(n, kwargs.get("max_rank", n)), d) and B.dtype == torch.float32
    dense = null_space_projector(V, **kwargs)
    torch.testing.assert_close(project_out(U, B), U @ dense, atol=1e-6, rtol=0)
    if not kwargs and n:
        expected = U.numpy() @ reference_projector(V)
        np.testing.assert_allclose(project_out(U, B).numpy(), expected, atol=1e-6)


def test_low_rank_projection_keeps_the_collapse_guard() -> None:
    V_big = torch.randn(100, 32, generator=torch.Generator().manual_seed(7))
    with pytest.raises(ValueError, match="null space"):
        removal_basis(V_big)
    assert removal_basis(V_big, max_rank=8).shape == (8, 32)


def test_projection_under_bf16_autocast_leaks_no_more_than_float32() -> None:
    """A bf16 U P lets ~5e-4 of a removed caption direction back in; float32 keeps it < 1e-5.

    The removed directions are the rows of V (32 captions, 768-d as ViT-L/14); the leak
    is |(U P) v̂| / |U| for unit v̂ in V's row space, over 64 images.
    """
    g = torch.Generator().manual_seed(0)
    V = torch.randn(32, 768, generator=g)
    U = (torch.randn(64, 768, generator=g) + 3 * torch.randn(64, 32, generator=g) @ V / 28).to(
        torch.bfloat16
    )  # U carries caption semantics, and arrives in bf16 from an autocast backbone
    Q = torch.linalg.qr(V.double().T).Q  # (768, 32): orthonormal basis of the removed space

    def leak(f: torch.Tensor) -> float:
        return float(((f.double() @ Q).norm(dim=1) / U.double().norm(dim=1)).max())

    P = null_space_projector(V)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense = project(U, P)
        low_rank_out = project_out(U, removal_basis(V))
        naive = U @ P.to(torch.bfloat16)  # what a bf16 projection does
    assert dense.dtype == low_rank_out.dtype == torch.float32
    assert leak(naive) > 1e-4  # the failure this guards against is real
    assert leak(dense) < 1e-5 and leak(low_rank_out) < 1e-5


def test_per_batch_projection_reads_nothing_back_from_the_device() -> None:
    """On the meta device any value read back (a sync on CUDA) raises: none happens.

    V stays on the CPU (caption features); only the (k, d) basis goes to the features'
    device, and U − (U Bᵀ) B is shape-static.
    """
    V = low_rank(32, 768, 32).float()
    U = torch.empty(32, 768, device="meta")
    out = NullSpace("batch").project_batch(U, V)
    assert out.device.type == "meta" and out.shape == (32, 768) and out.dtype == torch.float32


def test_addon_batch_mode_projects_by_the_batchs_captions_in_float32() -> None:
    from nsnet_plugin.captions import CaptionBank
    from nsnet_plugin.nullspace_addon import NullSpaceAddon

    table = {
        f"text {i}": torch.randn(48, generator=torch.Generator().manual_seed(i)) for i in range(6)
    }
    addon = NullSpaceAddon({"mode": "batch", "captions": "file"})
    addon.bank = CaptionBank(lambda texts: torch.stack([table[t] for t in texts]))
    addon.bank.set({f"/img/{i}.png": f"text {i}" for i in range(6)})
    U = torch.randn(6, 48, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = addon.apply(U.to(torch.bfloat16), {"path": [f"/img/{i}.png" for i in range(6)]}, True)
    assert out.dtype == torch.float32
    V = torch.stack([table[f"text {i}"] for i in range(6)]).double()
    want = U.to(torch.bfloat16).double() @ null_space_projector(V)
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=0)
