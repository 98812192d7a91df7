"""Issue 17 (mutation testing): the fast ranking against a brute-force sort of the exact values.

``ranked_order`` and ``kept_sets`` see float32 entropies within 2e-6 bits of the exact
ones and may ask ``exact_of`` for the exact value of near-ties. The expected answer here is
Python's ``sorted`` by (exact entropy, patch index), the rule in patch_entropy's docstring;
the data put exact ties, near-ties and float32 order reversals on the cut-offs.
"""

from __future__ import annotations

import numpy as np
import pytest

from nsnet_plugin.patch_entropy import kept_sets, ranked_order

#: patch_entropy's documented tolerance (bits): float32 entropies closer than this are re-ranked
TOLERANCE = 1e-4


def clustered_values(rng: np.random.Generator, b: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(exact float64, float32 seen) entropies: a few centres, each copied with offsets of
    0 (exact ties), 1e-7..5e-5 (near-ties, often reversed in float32) and 3e-4..2e-3."""
    exact = np.empty((b, n))
    for r in range(b):
        centres = rng.uniform(1.0, 9.0, size=max(2, n // 4))
        offsets = rng.choice([0.0, 0.0, 1e-7, 8e-7, 5e-6, 5e-5, 3e-4, 2e-3], size=n)
        exact[r] = rng.choice(centres, size=n) + offsets * rng.choice([-1, 1], size=n)
    noise = rng.uniform(-2e-6, 2e-6, size=(b, n))
    return exact, (exact + noise).astype(np.float32)


def brute_force(exact_row: np.ndarray, n_high: int, n_low: int) -> tuple[list[int], list[int]]:
    """(highest first, lowest first) under the (entropy, index) order."""
    n = len(exact_row)
    ascending = sorted(range(n), key=lambda i: (exact_row[i], i))
    return ascending[n - n_high :][::-1], ascending[:n_low]


def spy(exact: np.ndarray) -> tuple[list[tuple[int, int]], object]:
    asked: list[tuple[int, int]] = []

    def exact_of(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        asked.extend(zip(rows.tolist(), cols.tolist(), strict=True))
        return exact[rows, cols]

    return asked, exact_of


def deciding_near_ties(seen: np.ndarray, n_high: int, n_low: int) -> set[tuple[int, int]]:
    out = set()
    n = seen.shape[1]
    for r, row in enumerate(seen):
        ascending = sorted(range(n), key=lambda i: (row[i], i))
        groups, current = [], [0]
        for pos in range(1, n):
            gap = float(row[ascending[pos]]) - float(row[ascending[pos - 1]])
            if gap < TOLERANCE:
                current.append(pos)
            else:
                groups.append(current)
                current = [pos]
        groups.append(current)
        for group in groups:
            kept = any(pos < n_low or pos >= n - n_high for pos in group)
            if len(group) > 1 and kept:
                out |= {(r, ascending[pos]) for pos in group}
    return out


SPLITS = [(3, 2), (2, 3), (1, 1), (0, 4), (4, 0), (5, 5), (6, 4), (10, 0), (0, 10)]


@pytest.mark.parametrize("n_high,n_low", SPLITS)
def test_ranked_order_is_the_exact_rank_for_every_image_of_a_batch(n_high, n_low):
    rng = np.random.default_rng(n_high * 10 + n_low)
    for _ in range(40):
        exact, seen = clustered_values(rng, 3, 10)
        asked, exact_of = spy(exact)
        got = ranked_order(seen, exact_of, n_high, n_low)
        assert got.shape == (3, n_high + n_low)
        for r in range(3):
            high, low = brute_force(exact[r], n_high, n_low)
            assert got[r].tolist() == high + low, (exact[r], seen[r])
        # recomputed: only near-ties (chains of float32 gaps under the tolerance) that
        # reach a kept position, i.e. whose order can change the answer
        assert set(asked) <= deciding_near_ties(seen, n_high, n_low)


@pytest.mark.parametrize("n_high,n_low", SPLITS)
def test_kept_sets_are_the_exact_sets_in_index_order(n_high, n_low):
    rng = np.random.default_rng(100 + n_high * 10 + n_low)
    for _ in range(40):
        exact, seen = clustered_values(rng, 3, 10)
        asked, exact_of = spy(exact)
        got = kept_sets(seen, exact_of, n_high, n_low)
        assert got.shape == (3, n_high + n_low)
        window: set[tuple[int, int]] = set()
        for r in range(3):
            high, low = brute_force(exact[r], n_high, n_low)
            assert got[r].tolist() == sorted(high) + sorted(low), (exact[r], seen[r])
            values = np.sort(seen[r])
            for k in {n_low, 10 - n_high} & set(range(1, 10)):
                lo, hi = float(values[k - 1]), float(values[k])
                near = (seen[r] >= hi - TOLERANCE - 1e-6) & (seen[r] <= lo + TOLERANCE + 1e-6)
                window |= {(r, int(i)) for i in np.nonzero(near)[0]}
        # exact values are asked for once each, and only inside a cut-off's window
        assert len(asked) == len(set(asked))
        assert set(asked) <= window


def test_well_separated_entropies_are_never_recomputed():
    seen = np.asarray([[5.0, 1.0, 3.0, 2.0, 4.0, 0.5], [0.1, 0.3, 0.2, 0.6, 0.5, 0.4]], np.float32)
    asked, exact_of = spy(seen.astype(np.float64))
    assert ranked_order(seen, exact_of, 2, 2).tolist() == [[0, 4, 5, 1], [3, 4, 0, 2]]
    assert kept_sets(seen, exact_of, 2, 2).tolist() == [[0, 4, 1, 5], [3, 4, 0, 2]]
    assert asked == []


def test_a_float32_reversal_on_the_cut_is_settled_by_the_exact_values():
    # float32 says patch 1 < patch 2 (by 1e-6); exactly, patch 2 < patch 1: the lowest one
    # kept must be patch 2, and the highest patch 0 (well separated, never recomputed)
    seen = np.asarray([[7.0, 3.000001, 3.0, 1.0]], np.float32)
    exact = np.asarray([[7.0, 3.0000005, 3.0000010, 1.0]])
    asked, exact_of = spy(exact)
    assert ranked_order(seen, exact_of, 1, 2).tolist() == [[0, 3, 1]]
    assert kept_sets(seen, exact_of, 1, 2).tolist() == [[0, 1, 3]]
    assert ranked_order(seen, exact_of, 2, 1).tolist() == [[0, 2, 3]]
    assert kept_sets(seen, exact_of, 2, 1).tolist() == [[0, 2, 3]]
    assert {i for _, i in asked} == {1, 2}


def test_a_patch_exactly_one_tolerance_below_the_cut_is_counted_once():
    # v = hi - 1e-4 in float32 (how numpy computes the window's edge): v sits on the edge
    # of the window, not in the certain set too, or it would take two of the places
    hi = np.float32(1.0)
    v = hi - np.float32(1e-4)
    seen = np.asarray([[v, np.float32(0.99995), hi, np.float32(3.0)]], np.float32)
    asked, exact_of = spy(seen.astype(np.float64))
    assert kept_sets(seen, exact_of, 2, 2).tolist() == [[2, 3, 0, 1]]
