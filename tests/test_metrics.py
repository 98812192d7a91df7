"""Metric values checked against numbers worked out by hand from the definitions."""

from __future__ import annotations

import math
import warnings

import pytest

from bench.metrics import (
    METRICS,
    compute_metrics,
    per_generator_metrics,
    single_class_generators,
)

# Six images. Sorted by prob, highest first: 0.9 F, 0.8 F, 0.7 R, 0.4 R, 0.3 F, 0.1 R.
LABELS = [0, 0, 0, 1, 1, 1]
PROBS = [0.1, 0.4, 0.7, 0.3, 0.8, 0.9]
# R.Acc: reals 0.1, 0.4 are <= 0.5 (right), 0.7 is not -> 2/3.
# F.Acc: fakes 0.8, 0.9 are > 0.5 (right), 0.3 is not -> 2/3.  Acc: 4 of 6 right.
# AUC: (fake, real) pairs with fake ranked higher: 0.3 beats 0.1 (1); 0.8 and 0.9 beat all
#      three reals (3 + 3) -> 7 of 9 pairs.
# AP: precision at each fake in rank order: 1/1, 2/2, 3/5 -> mean (1 + 1 + 0.6) / 3 = 13/15.
HAND = {
    "n_real": 3,
    "n_fake": 3,
    "r_acc": 2 / 3,
    "f_acc": 2 / 3,
    "acc": 4 / 6,
    "ap": 13 / 15,
    "auc": 7 / 9,
}


def test_metrics_match_hand_computation():
    result = compute_metrics(LABELS, PROBS)
    assert set(result) == set(HAND)
    for key, expected in HAND.items():
        assert result[key] == pytest.approx(expected), key


def test_metric_names():
    assert METRICS == ("acc", "r_acc", "f_acc", "ap", "auc")


def test_prob_at_threshold_counts_as_real():
    # Real at 0.5 -> called real (right); fake at 0.5 -> called real (wrong).
    result = compute_metrics([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])
    assert result["r_acc"] == 1.0
    assert result["f_acc"] == 0.5
    assert result["acc"] == 0.75


def test_threshold_moves_the_decision():
    # At threshold 0.75: real 0.7 is now right, fake 0.3 still wrong, 0.8 and 0.9 right.
    result = compute_metrics(LABELS, PROBS, threshold=0.75)
    assert result["r_acc"] == 1.0
    assert result["f_acc"] == pytest.approx(2 / 3)
    # At threshold 0.8 the fake at exactly 0.8 flips to real.
    assert compute_metrics(LABELS, PROBS, threshold=0.8)["f_acc"] == pytest.approx(1 / 3)
    # AP and AUC do not depend on the threshold.
    assert compute_metrics(LABELS, PROBS, threshold=0.75)["auc"] == pytest.approx(7 / 9)


def test_tied_scores_give_half_credit():
    # One real and one fake at the same prob: half a pair for AUC; one cut-off with
    # precision 1/2 at recall 1 for AP.
    result = compute_metrics([0, 1], [0.5, 0.5])
    assert result["auc"] == 0.5
    assert result["ap"] == 0.5


def test_missing_class_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reals = compute_metrics([0, 0], [0.6, 0.1])
        fakes = compute_metrics([1], [0.9])
        empty = compute_metrics([], [])
    assert reals["r_acc"] == 0.5 and reals["acc"] == 0.5
    assert math.isnan(reals["f_acc"]) and math.isnan(reals["ap"]) and math.isnan(reals["auc"])
    assert fakes["f_acc"] == 1.0 and math.isnan(fakes["r_acc"])
    assert (empty["n_real"], empty["n_fake"]) == (0, 0)
    assert all(math.isnan(empty[m]) for m in METRICS)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.5])
    with pytest.raises(ValueError):
        compute_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.5, float("nan")])


def test_per_generator_rows_and_mean():
    # zeta: the six-image example; alpha: one real + one fake, both right;
    # beta: two reals, one wrong (no fakes: F.Acc, AP, AUC undefined; left out of the mean).
    generators = ["zeta"] * 6 + ["alpha", "alpha", "beta", "beta"]
    labels = LABELS + [0, 1, 0, 0]
    probs = PROBS + [0.2, 0.9, 0.6, 0.1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = per_generator_metrics(generators, labels, probs)
    assert list(table.columns) == [
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
    ]
    assert list(table["generator"]) == ["alpha", "beta", "zeta", "mean"]
    assert list(table["kind"]) == ["generator", "generator", "generator", "mean"]
    rows = table.set_index("generator")
    assert rows.loc["alpha", "acc"] == 1.0 and rows.loc["alpha", "auc"] == 1.0
    assert rows.loc["beta", "r_acc"] == 0.5 and math.isnan(rows.loc["beta", "ap"])
    assert rows.loc["beta", "note"].startswith("reals only")
    assert rows.loc["zeta", "ap"] == pytest.approx(13 / 15)
    mean = rows.loc["mean"]
    # The mean is over the two generators with both classes: alpha and zeta.
    assert (mean["n_real"], mean["n_fake"], mean["n_generators"]) == (4, 4, 2)
    assert mean["acc"] == pytest.approx((1 + 2 / 3) / 2)
    assert mean["r_acc"] == pytest.approx((1 + 2 / 3) / 2)
    assert mean["f_acc"] == pytest.approx((1 + 2 / 3) / 2)
    assert mean["ap"] == pytest.approx((1 + 13 / 15) / 2)
    assert mean["auc"] == pytest.approx((1 + 7 / 9) / 2)
    assert mean["note"] == "mean over 2 generator(s); left out (one class only): beta"
    assert single_class_generators(table) == ["beta"]


def test_test_sets_keep_same_named_generators_apart():
    # "Midjourney" in two sets: two rows, two set means, and the mean over both.
    sets = ["GenImage"] * 2 + ["AIGIBench"] * 4
    gens = ["Midjourney"] * 6
    labels = [0, 1, 0, 1, 0, 1]
    probs = [0.2, 0.9, 0.6, 0.4, 0.1, 0.8]  # GenImage: 2/2 right; AIGIBench: 2/4 right
    table = per_generator_metrics(gens, labels, probs, test_sets=sets)
    assert list(zip(table["kind"], table["test_set"], table["generator"], strict=True)) == [
        ("generator", "AIGIBench", "Midjourney"),
        ("generator", "GenImage", "Midjourney"),
        ("set mean", "AIGIBench", "mean"),
        ("set mean", "GenImage", "mean"),
        ("mean", "", "mean"),
    ]
    assert list(table["acc"]) == [0.5, 1.0, 0.5, 1.0, 0.75]
    assert list(table["n_real"]) == [2, 1, 2, 1, 3]


def test_a_generator_named_mean_keeps_its_row():
    table = per_generator_metrics(["mean", "mean", "b", "b"], [0, 1, 0, 1], [0.1, 0.9, 0.9, 0.1])
    generator_rows = table[table["kind"] == "generator"]
    assert list(generator_rows["generator"]) == ["b", "mean"]
    assert list(generator_rows["acc"]) == [0.0, 1.0]
    assert table[table["kind"] == "mean"]["acc"].item() == 0.5


def test_only_single_class_generators_give_a_mean_that_says_so():
    table = per_generator_metrics(["a", "b"], [1, 1], [0.9, 0.2])
    mean = table[table["kind"] == "mean"].iloc[0]
    assert mean["f_acc"] == 0.5 and math.isnan(mean["ap"]) and mean["n_generators"] == 2
    assert "none has both classes" in mean["note"]


def test_per_generator_threshold_is_passed_through():
    table = per_generator_metrics(["g", "g"], [0, 1], [0.3, 0.4], threshold=0.35)
    assert list(table["acc"]) == [1.0, 1.0]
