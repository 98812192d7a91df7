"""NULL-space projection of image features away from caption features (NS-Net eqs. 5-10).

V holds caption features as rows (n, d). Its SVD V = M Σ Nᵀ splits R^d into the row space
(right singular vectors with non-zero σ: what the captions say) and the null space (the rest).
P = Ñ Ñᵀ projects onto the null space, so V P = 0 and U P keeps only what no caption spans.

What the paper leaves open is an option here, each default argued where it is declared:
the rank tolerance, a cap on how many directions one projector removes, the smallest null
space a projector may keep (the collapse guard), and where V comes from (``NullSpace``).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from bench.errors import BenchError

#: Above this many rows per feature dimension the right singular vectors come from the
#: d × d Gram matrix VᵀV, accumulated in chunks: a float64 copy (and SVD) of 144k × 768
#: training captions would need gigabytes for the same d × d answer.
GRAM_ROWS_PER_DIM = 4
_GRAM_CHUNK = 8192

Mode = Literal["batch", "fixed", "none"]


def default_rtol(n: int, d: int) -> float:
    """numpy.linalg.matrix_rank's numerical-rank rule, with float32's machine epsilon.

    CLIP features arrive in float32 (or coarser); a singular value below
    max(n, d) · eps₃₂ · σ_max is indistinguishable from the rounding noise of an
    exactly rank-deficient float32 V. float32's eps, not the input dtype's: with
    float16's eps (1e-3) the rule would call three quarters of a 768-d spectrum zero.
    """
    return max(n, d) * torch.finfo(torch.float32).eps


def default_min_null_dim(d: int) -> int:
    """The collapse guard: a projector must keep at least a quarter of the dimensions.

    A guard, not a tuned value: it separates the intended use (32 captions remove 32 of
    768 directions) from the reported failure (thousands of captions leave 0 or 1), and
    never allows a rank-0 or rank-1 projector (floor 2).
    """
    return max(2, d // 4)


def _as_matrix(V: torch.Tensor) -> torch.Tensor:
    if V.ndim == 1:
        V = V.unsqueeze(0)
    if V.ndim != 2:
        raise ValueError(f"caption features must be (n, d), got shape {tuple(V.shape)}")
    if V.shape[1] == 0:
        raise ValueError("caption features have zero dimensions")
    if V.numel() and not bool(torch.isfinite(V).all()):
        raise ValueError("caption features contain NaN or inf")
    return V


def _out_dtype(V: torch.Tensor) -> torch.dtype:
    """float64 and float32 stay; half precision and integers give float32 (P is reused)."""
    return V.dtype if V.dtype in (torch.float32, torch.float64) else torch.float32


def right_singular(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ descending, Nᵀ as a full d × d matrix), computed in float64.

    σ has min(n, d) entries (d on the Gram route); directions past them have σ = 0.
    """
    V = _as_matrix(V)
    n, d = V.shape
    if n == 0:
        eye = torch.eye(d, dtype=torch.float64, device=V.device)
        return torch.zeros(0, dtype=torch.float64, device=V.device), eye
    if n > GRAM_ROWS_PER_DIM * d:
        gram = torch.zeros(d, d, dtype=torch.float64, device=V.device)
        for start in range(0, n, _GRAM_CHUNK):
            chunk = V[start : start + _GRAM_CHUNK].to(torch.float64)
            gram += chunk.T @ chunk
        evals, evecs = torch.linalg.eigh(gram)  # ascending; VᵀV = N Σ² Nᵀ
        return evals.flip(0).clamp_min(0).sqrt(), evecs.flip(1).T.contiguous()
    # full_matrices only when n < d (Vh must be d × d); for n >= d it would build an n × n M
    _, S, Vh = torch.linalg.svd(V.to(torch.float64), full_matrices=n < d)
    return S, Vh


def numerical_rank(sigma: torch.Tensor, n: int, d: int, rtol: float | None = None) -> int:
    """How many singular values exceed rtol · σ_max ("<=" counts as zero, as in the paper)."""
    if sigma.numel() == 0:
        return 0
    tol = (default_rtol(n, d) if rtol is None else rtol) * sigma.max()
    return int((sigma > tol).sum())


def _complement(
    Vh: torch.Tensor, removed: int, min_null_dim: int | None, what: str
) -> torch.Tensor:
    """P = Ñ Ñᵀ over the rows of Vh past ``removed``; refuses a collapsed null space."""
    d = Vh.shape[1]
    floor = default_min_null_dim(d) if min_null_dim is None else min_null_dim
    if floor < 0:
        raise ValueError(f"min_null_dim must be >= 0, got {floor}")
    kept = d - removed
    if kept < floor:
        raise ValueError(
            f"{what}: removing {removed} of {d} directions would leave a {kept}-dimensional "
            f"null space, below min_null_dim={floor}; the caption features are (nearly) full "
            "rank. Remove only the dominant directions (max_rank / k / energy), or lower "
            "min_null_dim explicitly."
        )
    if removed <= kept:  # I − N_r N_rᵀ: same P, fewer flops when few directions go
        top = Vh[:removed].T
        eye = torch.eye(d, dtype=Vh.dtype, device=Vh.device)
        return eye - top @ top.T
    rest = Vh[removed:].T
    return rest @ rest.T


def null_space_projector(
    V: torch.Tensor,
    rtol: float | None = None,
    *,
    max_rank: int | None = None,
    min_null_dim: int | None = None,
) -> torch.Tensor:
    """The (d, d) projector onto V's null space: P² = P, Pᵀ = P, V P ≈ 0.

    rtol: singular values <= rtol · σ_max count as zero; None = ``default_rtol``.
    max_rank: remove at most this many (top) directions; None = the numerical rank, as
        the paper does. It keeps a projector of many captions from collapsing.
    min_null_dim: refuse (ValueError) a null space smaller than this; None =
        ``default_min_null_dim`` (d // 4, at least 2). 0 disables the guard explicitly.
    V all zero (or no rows) gives the identity. Computed in float64; returned in V's
    dtype (float32 for half precision).
    """
    V = _as_matrix(V)
    n, d = V.shape
    if max_rank is not None and max_rank < 0:
        raise ValueError(f"max_rank must be >= 0, got {max_rank}")
    S, Vh = right_singular(V)
    removed = numerical_rank(S, n, d, rtol)
    if max_rank is not None:
        removed = min(removed, max_rank)
    P = _complement(Vh, removed, min_null_dim, "null_space_projector")
    return P.to(_out_dtype(V))


def semantic_subspace_projector(
    V: torch.Tensor,
    *,
    k: int | None = None,
    energy: float | None = None,
    rtol: float | None = None,
    min_null_dim: int | None = None,
) -> torch.Tensor:
    """A fixed projector that removes the dominant semantic directions of many captions.

    For images without captions (evaluation): V stacks all training captions and is
    typically full rank, so its literal null space is empty; instead remove the top
    right singular directions:
      k: the top k (``NullSpace`` defaults to 32, what each training batch removed);
      energy: the fewest reaching this fraction of Σσ² (0 < energy <= 1);
      neither: the numerical rank under rtol, i.e. the literal null space.
    Never more than the numerical rank. A null space below ``min_null_dim`` (default
    d // 4, at least 2) raises ValueError instead of returning a rank-0 or rank-1 P.
    """
    if k is not None and energy is not None:
        raise ValueError("give k or energy, not both")
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    V = _as_matrix(V)
    n, d = V.shape
    S, Vh = right_singular(V)
    rank = numerical_rank(S, n, d, rtol)
    removed = rank
    if k is not None:
        removed = min(k, rank)
    elif energy is not None and rank > 0:
        power = S.square()
        share = power.cumsum(0) / power.sum()
        # a small slack so that energy=1.0 is reached despite rounding in the cumsum
        reach = int(torch.searchsorted(share, share.new_tensor([energy - 1e-12]))[0])
        removed = min(reach + 1, rank)
    P = _complement(Vh, removed, min_null_dim, "semantic_subspace_projector")
    return P.to(_out_dtype(V))


def project(features: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """U P (eq. 10): features as rows; P is moved to the features' device and dtype."""
    return features @ P.to(device=features.device, dtype=features.dtype)


class NullSpace:
    """Where each projector comes from; a detector or addon holds one.

    mode "batch" (the paper's training): P from the batch's own caption features, whose
        rank is at most the batch size (32 ≪ 768). At evaluation images have no captions:
        the fixed P serves if ``fit_fixed`` was called, else identity (warned once).
    mode "fixed": one P from all training captions (``semantic_subspace_projector`` with
        fixed_k / fixed_energy), used at training and evaluation alike.
    mode "none": identity (the ablation without NULL-space).
    batch_at_eval: use captions given at evaluation for a per-batch P. Off by default:
        then an image's score would depend on which images share its batch.
    """

    def __init__(
        self,
        mode: Mode = "batch",
        *,
        rtol: float | None = None,
        max_rank: int | None = None,
        fixed_k: int | None = 32,
        fixed_energy: float | None = None,
        min_null_dim: int | None = None,
        batch_at_eval: bool = False,
    ):
        if mode not in ("batch", "fixed", "none"):
            raise ValueError(f"NullSpace mode must be 'batch', 'fixed' or 'none', got {mode!r}")
        if fixed_k is not None and fixed_energy is not None:
            raise ValueError("give fixed_k or fixed_energy, not both (set fixed_k=None)")
        self.mode = mode
        self.rtol = rtol
        self.max_rank = max_rank
        self.fixed_k = fixed_k
        self.fixed_energy = fixed_energy
        self.min_null_dim = min_null_dim
        self.batch_at_eval = batch_at_eval
        self.fixed: torch.Tensor | None = None
        self._fixed_on: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._warned_identity = False

    def __repr__(self) -> str:
        return (
            f"NullSpace(mode={self.mode!r}, rtol={self.rtol}, max_rank={self.max_rank}, "
            f"fixed_k={self.fixed_k}, fixed_energy={self.fixed_energy}, "
            f"min_null_dim={self.min_null_dim}, batch_at_eval={self.batch_at_eval})"
        )

    def fit_fixed(self, V_all: torch.Tensor) -> torch.Tensor | None:
        """Estimate the fixed P from all training captions (no-op in mode "none")."""
        if self.mode == "none":
            return None
        P = semantic_subspace_projector(
            V_all,
            k=self.fixed_k,
            energy=self.fixed_energy,
            rtol=self.rtol,
            min_null_dim=self.min_null_dim,
        )
        self._set_fixed(P)
        return P

    def projector_for_batch(self, V_batch: torch.Tensor) -> torch.Tensor:
        """The per-batch P of the paper, under this instance's rtol / max_rank / guard."""
        return null_space_projector(
            V_batch, self.rtol, max_rank=self.max_rank, min_null_dim=self.min_null_dim
        )

    def projector(self, V_batch: torch.Tensor | None, training: bool) -> torch.Tensor | None:
        """The P this call uses, or None for identity."""
        if self.mode == "none":
            return None
        if self.mode == "fixed":
            if self.fixed is None:
                raise RuntimeError("NullSpace(mode='fixed') needs fit_fixed(...) first")
            return self.fixed
        if V_batch is not None and (training or self.batch_at_eval):
            return self.projector_for_batch(V_batch)
        if training:
            raise ValueError(
                "NullSpace(mode='batch') needs the batch's caption features in training"
            )
        if self.fixed is not None:
            return self.fixed
        if not self._warned_identity:
            warnings.warn(
                "NullSpace(mode='batch'): no captions at evaluation and no fixed projector "
                "fitted; features pass unprojected",
                RuntimeWarning,
                stacklevel=3,
            )
            self._warned_identity = True
        return None

    def __call__(
        self, features: torch.Tensor, V_batch: torch.Tensor | None = None, training: bool = False
    ) -> torch.Tensor:
        P = self.projector(V_batch, training)
        if P is None:
            return features
        if P is self.fixed:
            P = self._fixed_for(features)
        return project(features, P)

    def _fixed_for(self, features: torch.Tensor) -> torch.Tensor:
        key = (features.device, features.dtype)
        if key not in self._fixed_on:
            assert self.fixed is not None
            self._fixed_on[key] = self.fixed.to(device=features.device, dtype=features.dtype)
        return self._fixed_on[key]

    def _set_fixed(self, P: torch.Tensor | None) -> None:
        self.fixed = P
        self._fixed_on.clear()

    def state(self) -> dict[str, torch.Tensor]:
        """The fitted fixed P (what prediction needs later), on the CPU."""
        return {} if self.fixed is None else {"fixed_projector": self.fixed.detach().cpu()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        P = state.get("fixed_projector")
        if P is not None and not is_projector(P):
            raise BenchError("the saved fixed_projector is not a projector (P = Pᵀ = P²)")
        self._set_fixed(P)


def is_projector(P: torch.Tensor, atol: float = 1e-4) -> bool:
    """A finite, square, symmetric and idempotent float matrix (checked in float64)."""
    if P.ndim != 2 or P.shape[0] != P.shape[1] or not P.is_floating_point():
        return False
    Q = P.detach().double().cpu()
    if not bool(torch.isfinite(Q).all()):
        return False
    return bool(torch.allclose(Q, Q.T, atol=atol) and torch.allclose(Q @ Q, Q, atol=atol))
