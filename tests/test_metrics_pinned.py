"""Issue 17 (mutation testing): what metrics.csv says, word for word, and what it refuses.

The notes and the error messages are read by people (metrics.csv, one-line errors), so
they are pinned exactly; the values are worked out by hand as in tests/test_metrics.py.
"""

from __future__ import annotations

import warnings

import pytest

from bench.metrics import compute_metrics, per_generator_metrics, single_class_generators

REALS_ONLY = "reals only: F.Acc, AP and AUC undefined; not in the mean"
FAKES_ONLY = "fakes only: R.Acc, AP and AUC undefined; not in the mean"


def test_refusals_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"^2 labels but 1 probabilities$"):
        compute_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match=r"^labels must be 0 \(real\) or 1 \(fake\)$"):
        compute_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"^probabilities contain NaN$"):
        compute_metrics([0, 1], [0.5, float("nan")])
    with pytest.raises(ValueError, match=r"^3 generators, 2 test sets but 2 labels$"):
        per_generator_metrics(["a", "b", "c"], [0, 1], [0.1, 0.9], test_sets=["s", "s"])
    with pytest.raises(ValueError, match=r"^2 generators, 3 test sets but 2 labels$"):
        per_generator_metrics(["a", "b"], [0, 1], [0.1, 0.9], test_sets=["s", "s", "s"])


def test_a_fractional_label_is_refused_not_truncated():
    """int(0.6) is 0: a label of 0.6 (a soft label, a mean) must not pass as a real."""
    for bad in ([0, 0.6], [1.5, 0], [0, -0.2]):
        with pytest.raises(ValueError, match="labels must be 0"):
            compute_metrics(bad, [0.1, 0.9])
    assert compute_metrics([0.0, 1.0], [0.1, 0.9])["acc"] == 1.0  # 0.0 and 1.0 are labels
    assert compute_metrics([False, True], [0.1, 0.9])["acc"] == 1.0


def test_a_missing_probability_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([0, 1], [0.2, None])


def test_notes_per_generator_and_means_word_for_word():
    table = per_generator_metrics(
        ["both", "both", "reals", "fakes"], [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]
    )
    rows = table.set_index("generator")
    assert rows.loc["both", "note"] == ""
    assert rows.loc["reals", "note"] == REALS_ONLY
    assert rows.loc["fakes", "note"] == FAKES_ONLY
    assert list(table["n_generators"]) == [1, 1, 1, 1]
    assert (
        rows.loc["mean", "note"]
        == "mean over 1 generator(s); left out (one class only): fakes, reals"
    )
    assert all(str(table[c].dtype).startswith("int") for c in ("n_real", "n_fake", "n_generators"))
    none = per_generator_metrics(["a", "b"], [1, 0], [0.9, 0.2])
    assert none.iloc[-1]["note"] == (
        "mean over 2 generator(s); none has both classes, so AP and AUC are undefined"
    )
    assert per_generator_metrics(["a", "a"], [0, 1], [0.1, 0.9]).iloc[-1]["note"] == (
        "mean over 1 generator(s)"
    )


def test_means_of_undefined_metrics_are_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.mean([]) would warn "Mean of empty slice"
        table = per_generator_metrics(["a", "b"], [1, 1], [0.9, 0.2])
    mean = table.iloc[-1]
    assert mean["ap"] != mean["ap"] and mean["r_acc"] != mean["r_acc"]  # NaN
    assert mean["f_acc"] == 0.5


def test_single_class_generators_are_named_with_their_test_set():
    table = per_generator_metrics(
        ["g", "g", "h"], [0, 1, 0], [0.1, 0.9, 0.2], test_sets=["SetA", "SetA", "SetB"]
    )
    assert single_class_generators(table) == ["SetB/h"]
    plain = per_generator_metrics(["g", "g", "h"], [0, 1, 1], [0.1, 0.9, 0.8])
    assert single_class_generators(plain) == ["h"]
