"""Issue 17 (mutation testing): the NULL-space module's edges, messages and settings, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nsnet_plugin.nullspace import (
    NullSpace,
    is_projector,
    null_space_projector,
    project_own,
    removal_basis,
    right_singular,
    semantic_subspace_projector,
)


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


# ----------------------------------------------------------------------------- mutation survivors
def _diag_rows(*values: float, d: int = 8) -> torch.Tensor:
    """Rows s_i e_i: singular values s_i, right singular vectors the first unit vectors."""
    V = torch.zeros(len(values), d, dtype=torch.float64)
    for i, s in enumerate(values):
        V[i, i] = s
    return V


def test_caption_features_are_checked_with_messages():
    with pytest.raises(
        ValueError, match=r"^caption features must be \(n, d\), got shape \(1, 2, 3\)$"
    ):
        null_space_projector(torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="^caption features have zero dimensions$"):
        null_space_projector(torch.ones(3, 0))
    with pytest.raises(ValueError, match="^caption features contain NaN or inf$"):
        null_space_projector(torch.tensor([[1.0, float("nan")]]))
    # one caption as a vector is one row; one feature dimension is allowed
    v = torch.tensor([3.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    expected = torch.eye(8, dtype=torch.float64) - torch.outer(v, v) / 25.0
    torch.testing.assert_close(null_space_projector(v), expected)
    torch.testing.assert_close(
        null_space_projector(torch.ones(3, 1, dtype=torch.float64), min_null_dim=0),
        torch.zeros(1, 1, dtype=torch.float64),
    )


def test_right_singular_of_no_rows_and_of_a_tiny_singular_value():
    S, Vh = right_singular(torch.zeros(0, 4))
    assert S.shape == (0,) and S.dtype == torch.float64
    torch.testing.assert_close(Vh, torch.eye(4, dtype=torch.float64))
    # n = 4d exactly: still the SVD, which keeps a singular value of 1e-9 (a Gram matrix
    # squares it to 1e-18, below float64's resolution next to 1)
    g = torch.Generator().manual_seed(4)
    R, _ = torch.linalg.qr(torch.randn(2, 2, generator=g, dtype=torch.float64))
    V = torch.zeros(8, 2, dtype=torch.float64)
    V[0, 0], V[1, 1] = 1.0, 1e-9
    S, _ = right_singular(V @ R)  # rotated: the small direction mixes both coordinates
    assert S.dtype == torch.float64 and S.shape == (2,)
    assert S[1].item() == pytest.approx(1e-9, rel=1e-6)
    # float32 input: the singular values come back in float64
    assert right_singular(torch.eye(3))[0].dtype == torch.float64


def test_gram_route_accumulates_every_chunk(monkeypatch):
    import nsnet_plugin.nullspace as ns

    monkeypatch.setattr(ns, "_GRAM_CHUNK", 4)
    g = torch.Generator().manual_seed(0)
    V = torch.randn(40, 3, generator=g, dtype=torch.float64)  # 40 > 4 x 3: the Gram route
    S, Vh = right_singular(V)
    ref = np.linalg.svd(V.numpy(), compute_uv=False)
    np.testing.assert_allclose(S.numpy(), ref, rtol=1e-9)
    assert S.dtype == torch.float64
    half, _ = right_singular(V.float())  # float32 rows summed in float64
    np.testing.assert_allclose(half.numpy(), ref, rtol=1e-5)
    assert Vh.shape == (3, 3)


def test_max_rank_zero_removes_nothing_and_negative_is_refused():
    V = _diag_rows(3.0, 2.0)
    torch.testing.assert_close(
        null_space_projector(V, max_rank=0), torch.eye(8, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="^max_rank must be >= 0, got -1$"):
        null_space_projector(V, max_rank=-1)
    assert removal_basis(V, max_rank=0).shape == (0, 8)


def test_collapse_guard_names_the_function_and_what_to_do():
    V = _diag_rows(*range(1, 8))  # rank 7 of 8: keeping one dimension is below d // 4 = 2
    message = (
        r"^null_space_projector: removing 7 of 8 directions would leave a 1-dimensional "
        r"null space, below min_null_dim=2; the caption features are \(nearly\) full rank\. "
        r"Remove only the dominant directions \(max_rank / k / energy\), or lower "
        r"min_null_dim explicitly\.$"
    )
    with pytest.raises(ValueError, match=message):
        null_space_projector(V)
    with pytest.raises(ValueError, match="^semantic_subspace_projector: removing 7 of 8"):
        semantic_subspace_projector(V, k=7)
    with pytest.raises(ValueError, match="^min_null_dim must be >= 0, got -1$"):
        null_space_projector(V, min_null_dim=-1)
    P = semantic_subspace_projector(V, k=7, min_null_dim=0)  # the guard lowered explicitly
    assert float(torch.trace(P)) == pytest.approx(1.0)


def test_semantic_subspace_arguments():
    V = _diag_rows(1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="^give k or energy, not both$"):
        semantic_subspace_projector(V, k=1, energy=0.5)
    with pytest.raises(ValueError, match="^k must be >= 0, got -1$"):
        semantic_subspace_projector(V, k=-1)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"^energy must be in \(0, 1\], got {bad}$"):
            semantic_subspace_projector(V, energy=bad)
    trace = lambda P: round(float(torch.trace(P)))  # noqa: E731
    assert trace(semantic_subspace_projector(V, k=0)) == 8  # k = 0 removes nothing
    # energy shares 1/2.25, 2/2.25, 1: exactly reaching a share counts (the 1e-12 slack)
    W = _diag_rows(1.0, 1.0)
    assert trace(semantic_subspace_projector(W, energy=0.5)) == 7
    assert trace(semantic_subspace_projector(W, energy=1.0)) == 6
    assert trace(semantic_subspace_projector(V, energy=0.9)) == 5
    # rtol decides the rank when neither k nor energy is given
    assert trace(semantic_subspace_projector(V, k=None, rtol=0.6)) == 6
    assert trace(semantic_subspace_projector(V, k=None)) == 5


def test_nullspace_instance_passes_its_settings_to_the_batch_projection():
    V = _diag_rows(3.0, 2.0, 1.0, 0.1).float()
    U = torch.ones(2, 8)

    def removed(space: NullSpace) -> int:
        return int((space.project_batch(U, V)[0] == 0).sum())

    assert removed(NullSpace("batch")) == 4
    assert removed(NullSpace("batch", max_rank=2)) == 2
    assert removed(NullSpace("batch", rtol=0.5)) == 2  # 3, 2 > 1.5; 1 and 0.1 are "zero"
    many = _diag_rows(*range(1, 8)).float()
    with pytest.raises(ValueError, match="below min_null_dim=2"):
        NullSpace("batch").project_batch(U, many)
    assert int((NullSpace("batch", min_null_dim=0).project_batch(U, many)[0] == 0).sum()) == 7
    P = NullSpace("batch", rtol=0.5).projector_for_batch(V)
    assert round(float(torch.trace(P))) == 6


def test_nullspace_defaults_and_refusals():
    space = NullSpace()
    assert (space.mode, space.fixed_k, space.rtol, space.min_null_dim) == ("batch", 32, None, None)
    assert repr(space) == (
        "NullSpace(mode='batch', rtol=None, max_rank=None, fixed_k=32, fixed_energy=None, "
        "min_null_dim=None, batch_at_eval=False)"
    )
    with pytest.raises(
        ValueError, match=r"^give fixed_k or fixed_energy, not both \(set fixed_k=None\)$"
    ):
        NullSpace("fixed", fixed_energy=0.5)
    with pytest.raises(
        ValueError, match="NullSpace mode must be 'batch', 'fixed' or 'none', got 'all'"
    ):
        NullSpace("all")  # type: ignore[arg-type]
    many = torch.randn(200, 160, generator=torch.Generator().manual_seed(0))
    assert round(float(torch.trace(NullSpace("fixed").fit_fixed(many)))) == 160 - 32


def test_batch_mode_warns_once_when_evaluation_has_nothing_to_project_with():
    import warnings

    space = NullSpace("batch")
    x = torch.ones(2, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(space(x, None, training=False), x)
        assert torch.equal(space(x, None, training=False), x)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1


def test_is_projector_accepts_projectors_only():
    P = null_space_projector(_diag_rows(1.0, 2.0))
    assert is_projector(P) and is_projector(P.float())
    assert not is_projector(P[:4])  # not square
    assert not is_projector(torch.eye(3, dtype=torch.int64))  # not floating point
    assert not is_projector(torch.ones(2, 2, 2))
    assert not is_projector(2 * torch.eye(3))  # not idempotent
    skew = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # idempotent, not symmetric
    assert torch.allclose(skew @ skew, skew) and not is_projector(skew)
    nan = torch.eye(3)
    nan[0, 0] = float("nan")
    assert not is_projector(nan)
    assert is_projector(torch.eye(3) + 1e-5) and not is_projector(torch.eye(3) + 1e-3)


def test_removal_basis_edges():
    from nsnet_plugin.nullspace import default_min_null_dim

    v = torch.tensor([0.0, 2.0, 0.0, 0.0])
    basis = removal_basis(v)  # one caption as a vector
    torch.testing.assert_close(basis.abs(), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="^max_rank must be >= 0, got -1$"):
        removal_basis(v, max_rank=-1)
    empty = removal_basis(torch.zeros(0, 4, dtype=torch.float64))
    assert empty.shape == (0, 4) and empty.dtype == torch.float32
    one = removal_basis(_diag_rows(3.0, 2.0), max_rank=1)
    assert one.shape == (1, 8) and float(one.abs().sum()) == pytest.approx(1.0)
    # a singular value exactly at the tolerance counts as zero ("<=", as numerical_rank)
    at = removal_basis(_diag_rows(2.0, 1.0), rtol=0.5)
    assert float(at[0].abs().sum()) == pytest.approx(1.0) and float(at[1].abs().sum()) == 0.0
    # the guard takes the caller's floor: 8 rows of rank 7 keep 1 dimension, allowed at 1
    rank7 = _diag_rows(1, 2, 3, 4, 5, 6, 7, 0)
    assert int((removal_basis(rank7, min_null_dim=1).abs().sum(1) > 0).sum()) == 7
    with pytest.raises(ValueError, match="^null_space_projector: removing 7 of 8"):
        removal_basis(rank7)
    with pytest.raises(ValueError, match="below min_null_dim=7"):
        removal_basis(_diag_rows(3.0, 2.0), min_null_dim=7)  # 2 of 8 removed, 6 kept < 7
    assert [default_min_null_dim(d) for d in (4, 10, 12, 768)] == [2, 2, 3, 192]
    assert isinstance(default_min_null_dim(10), int)
    assert right_singular(torch.randn(3, 5))[1].shape == (3, 5)  # the reduced SVD


def test_projector_paths_and_their_messages():
    import warnings

    V = _diag_rows(3.0, 2.0).float()
    x = torch.ones(2, 8)
    with pytest.raises(
        RuntimeError, match=r"^NullSpace\(mode='fixed'\) needs fit_fixed\(\.\.\.\) first$"
    ):
        NullSpace("fixed").projector(None, training=False)
    with pytest.raises(
        ValueError,
        match=r"^NullSpace\(mode='batch'\) needs the batch's caption features in training$",
    ):
        NullSpace("batch").projector(None, training=True)
    torch.testing.assert_close(NullSpace("batch").projector(V, True), null_space_projector(V))
    with pytest.warns(RuntimeWarning, match="features pass unprojected"):
        assert NullSpace("batch").projector(V, False) is None  # evaluation ignores V ...
    at_eval = NullSpace("batch", batch_at_eval=True)
    torch.testing.assert_close(
        at_eval.projector(V, False), null_space_projector(V)
    )  # ... unless asked
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = NullSpace("batch")(x, V)  # the default is evaluation: V unused, no fixed P
    assert torch.equal(out, x)
    (warning,) = caught
    assert str(warning.message) == (
        "NullSpace(mode='batch'): no captions at evaluation and no fixed projector fitted; "
        "features pass unprojected"
    )


def test_fit_fixed_honours_mode_rtol_and_the_floor():
    V = _diag_rows(1.0, 1.0, 0.5, 0.1)
    none = NullSpace("none")
    assert none.fit_fixed(V) is None and none.fixed is None
    P = NullSpace("fixed", fixed_k=None, rtol=0.6).fit_fixed(V)
    assert round(float(torch.trace(P))) == 6
    rank7 = _diag_rows(1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(ValueError, match="below min_null_dim=2"):
        NullSpace("fixed", fixed_k=7).fit_fixed(rank7)
    P = NullSpace("fixed", fixed_k=7, min_null_dim=0).fit_fixed(rank7)
    assert round(float(torch.trace(P))) == 1


def test_a_saved_non_projector_is_refused():
    from bench.errors import BenchError

    with pytest.raises(
        BenchError, match=r"^the saved fixed_projector is not a projector \(P = Pᵀ = P²\)$"
    ):
        NullSpace("fixed").load_state({"fixed_projector": 2 * torch.eye(3)})
    space = NullSpace("fixed")
    space.load_state({})
    assert space.fixed is None and space.state() == {}


def test_is_projector_tolerance_is_1e_4_on_both_conditions():
    nearly = torch.eye(3, dtype=torch.float64)
    nearly[0, 1] = 1e-5  # 1e-5 off symmetric, 1e-5 off idempotent: inside 1e-4
    assert is_projector(nearly)
    assert not is_projector(torch.eye(3) * 0.9)  # symmetric, not idempotent


def test_gram_route_sums_float32_rows_in_float64():
    """A small direction (σ 1e-3 of the largest) survives the Gram route only in float64."""
    g = torch.Generator().manual_seed(3)
    R, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    V = (
        (torch.randn(40, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 1e-3])) @ R
    ).float()
    S, _ = right_singular(V)  # 40 > 4 x 3: the Gram route
    ref = np.linalg.svd(V.double().numpy(), compute_uv=False)
    np.testing.assert_allclose(S.numpy(), ref, rtol=1e-3)  # a rotated small direction


def test_precision_choices_of_the_batch_projection_and_the_own_reading():
    from nsnet_plugin.nullspace import NullSpace

    g = torch.Generator().manual_seed(5)
    R, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    V = torch.zeros(3, 6, dtype=torch.float64)
    V[0, 0], V[1, 1], V[2, 2] = 1.0, 1.0, 1e-3
    V = V @ R  # a small direction (1e-3) mixed into every coordinate
    B = removal_basis(V.float())  # float32 captions, SVD in float64
    _, _, vt = np.linalg.svd(V.float().double().numpy(), full_matrices=False)
    np.testing.assert_allclose((B.T @ B).double().numpy(), vt.T @ vt, atol=1e-6)
    many = _diag_rows(*range(1, 8))  # rank 7 of 8: allowed only with the floor lowered
    P = NullSpace("batch", min_null_dim=0).projector_for_batch(many)
    assert round(float(torch.trace(P))) == 1
    own = project_own(torch.ones(2, 6), V[:2])  # float64 captions do not make it float64
    assert own.dtype == torch.float32
