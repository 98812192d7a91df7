"""Metrics as the AI-generated-image detection papers report them.

Labels: 1 = fake, 0 = real; a probability is the detector's belief that the image is fake.
An image counts as fake when `prob > threshold` (strictly), as UnivFD's and CNNDetection's
evaluation code do (`y_pred > 0.5`); a prob exactly at the threshold counts as real.
Accuracies, AP and AUC are fractions in [0, 1]; the leaderboard scales them to percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

METRICS = ("acc", "r_acc", "f_acc", "ap", "auc")
METRIC_NAMES = {"acc": "Acc", "r_acc": "R.Acc", "f_acc": "F.Acc", "ap": "AP", "auc": "AUC"}
#: Metrics that need a decision threshold (AP and AUC rank the probabilities instead).
THRESHOLD_METRICS = ("acc", "r_acc", "f_acc")
COLUMNS = ("generator", "n_real", "n_fake", "r_acc", "f_acc", "acc", "ap", "auc")

_NAN = math.nan


def _as_arrays(labels: Sequence[int], probs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(int, copy=False).ravel()
    p = np.asarray(probs, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if np.isnan(p).any():
        raise ValueError("probabilities contain NaN")
    return y, p


def _accuracy(correct: np.ndarray) -> float:
    """Mean of a boolean array, NaN (not a warning) when it is empty."""
    return float(correct.mean()) if correct.size else _NAN


def compute_metrics(
    labels: Sequence[int], probs: Sequence[float], threshold: float = 0.5
) -> dict[str, float]:
    """R.Acc, F.Acc, Acc, AP and AUC; a missing class gives NaN rather than an exception."""
    y, p = _as_arrays(labels, probs)
    pred_fake = p > threshold
    real, fake = y == 0, y == 1
    n_real, n_fake = int(real.sum()), int(fake.sum())
    ap = auc = _NAN
    if n_real and n_fake:
        # Imported here: sklearn is slow to import and only needed once both classes exist.
        from sklearn.metrics import average_precision_score, roc_auc_score

        ap = float(average_precision_score(y, p))
        auc = float(roc_auc_score(y, p))
    return {
        "n_real": n_real,
        "n_fake": n_fake,
        "r_acc": _accuracy(~pred_fake[real]),
        "f_acc": _accuracy(pred_fake[fake]),
        "acc": _accuracy(pred_fake == fake),
        "ap": ap,
        "auc": auc,
    }


def per_generator_metrics(
    generators: Sequence[str],
    labels: Sequence[int],
    probs: Sequence[float],
    threshold: float = 0.5,
) -> pd.DataFrame:
    """One row per generator (sorted) plus a `mean` row: the papers' mAcc/mAP over generators.

    The mean row averages each metric over generators, skipping NaN (a reals-only generator has
    no AP); n_real and n_fake are totals.
    """
    y, p = _as_arrays(labels, probs)
    gens = np.asarray([str(g) for g in generators], dtype=object)
    if gens.shape != y.shape:
        raise ValueError(f"{len(gens)} generators but {len(y)} labels")
    rows = []
    for generator in sorted(set(gens)):
        mask = gens == generator
        rows.append({"generator": generator, **compute_metrics(y[mask], p[mask], threshold)})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table[["n_real", "n_fake"]] = table[["n_real", "n_fake"]].astype(int)
    mean = {"generator": "mean", "n_real": int(table["n_real"].sum())}
    mean["n_fake"] = int(table["n_fake"].sum())
    mean.update({m: float(table[m].mean(skipna=True)) for m in METRICS})
    mean_row = pd.DataFrame([mean], columns=list(COLUMNS))
    return pd.concat([table, mean_row], ignore_index=True) if rows else mean_row
