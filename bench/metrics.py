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
COLUMNS = (
    "kind",
    "test_set",
    "generator",
    "n_real",
    "n_fake",
    "r_acc",
    "f_acc",
    "acc",
    "ap",
    "auc",
    "n_generators",
    "note",
)
#: ``kind`` values of metrics.csv rows: one per generator, per-test-set means, the mean.
ROW_KINDS = ("generator", "set mean", "mean")

_NAN = math.nan


def _as_arrays(labels: Sequence[int], probs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(labels).ravel()
    y = raw.astype(int, copy=False)
    p = np.asarray(probs, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    # checked before the cast too: int() would turn a label 0.6 into 0 without a word
    if not np.isin(y, (0, 1)).all() or not np.array_equal(y, raw.astype(float)):
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


def _class_note(n_real: int, n_fake: int) -> str:
    if n_real and not n_fake:
        return "reals only: F.Acc, AP and AUC undefined; not in the mean"
    if n_fake and not n_real:
        return "fakes only: R.Acc, AP and AUC undefined; not in the mean"
    return ""


def _mean_row(kind: str, test_set: str, rows: list[dict]) -> dict:
    """Mean over the generators with both classes (all of them if none has both)."""
    both = [r for r in rows if r["n_real"] and r["n_fake"]]
    members = both or rows
    left_out = [r["generator"] for r in rows if r not in members]
    mean: dict = {"kind": kind, "test_set": test_set, "generator": "mean"}
    mean["n_real"] = int(sum(r["n_real"] for r in members))
    mean["n_fake"] = int(sum(r["n_fake"] for r in members))
    for metric in METRICS:
        values = [r[metric] for r in members if not math.isnan(r[metric])]
        mean[metric] = float(np.mean(values)) if values else _NAN
    mean["n_generators"] = len(members)
    note = f"mean over {len(members)} generator(s)"
    if left_out:
        note += f"; left out (one class only): {', '.join(left_out)}"
    elif not both and rows:
        note += "; none has both classes, so AP and AUC are undefined"
    mean["note"] = note
    return mean


def per_generator_metrics(
    generators: Sequence[str],
    labels: Sequence[int],
    probs: Sequence[float],
    threshold: float = 0.5,
    test_sets: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (test set, generator), then the means, as the papers' mAcc/mAP.

    Rows have ``kind`` "generator"; with several test sets each set gets a "set mean" row;
    the last row (kind "mean") averages over every generator. A generator with one class
    only (reals only, fakes only) keeps its row, with the undefined metrics empty and a
    note, and stays out of the means, which say over how many generators they are taken
    (``n_generators``). The kind column, not the name, marks a summary row, so a
    generator folder named "mean" keeps its own row.
    """
    y, p = _as_arrays(labels, probs)
    gens = np.asarray([str(g) for g in generators], dtype=object)
    sets = np.asarray(
        [str(t) for t in test_sets] if test_sets is not None else [""] * len(gens), dtype=object
    )
    if gens.shape != y.shape or sets.shape != y.shape:
        raise ValueError(f"{len(gens)} generators, {len(sets)} test sets but {len(y)} labels")
    rows: list[dict] = []
    for test_set, generator in sorted(set(zip(sets, gens, strict=True))):
        mask = (gens == generator) & (sets == test_set)
        metrics = compute_metrics(y[mask], p[mask], threshold)
        note = _class_note(metrics["n_real"], metrics["n_fake"])
        rows.append(
            {"kind": "generator", "test_set": test_set, "generator": generator, **metrics}
            | {"n_generators": 1, "note": note}
        )
    out = list(rows)
    set_names = sorted({r["test_set"] for r in rows})
    if len(set_names) > 1:
        for name in set_names:
            out.append(_mean_row("set mean", name, [r for r in rows if r["test_set"] == name]))
    out.append(_mean_row("mean", "", rows))
    table = pd.DataFrame(out, columns=list(COLUMNS))
    table[["n_real", "n_fake", "n_generators"]] = table[
        ["n_real", "n_fake", "n_generators"]
    ].astype(int)
    return table


def single_class_generators(table: pd.DataFrame) -> list[str]:
    """``set/generator`` names of the generators that have only reals or only fakes."""
    rows = table[(table["kind"] == "generator") & ((table["n_real"] == 0) | (table["n_fake"] == 0))]
    return [
        f"{t}/{g}" if t else str(g)
        for t, g in zip(rows["test_set"], rows["generator"], strict=True)
    ]
