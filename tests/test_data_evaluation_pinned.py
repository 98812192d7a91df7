"""Issue 17 (mutation testing): the test batches of bench/data/evaluation.py, pinned by hand.

A recording factory stands in for the image loader, so each test sees exactly what the
loader would be asked for; precomputed features are a small tensor whose rows say which
sample they belong to.
"""

from __future__ import annotations

import pytest
import torch

from bench.data.evaluation import FeatureBatches, batch_list, evaluation_batches
from bench.data.layouts import Sample
from bench.data.pipeline import ReadLog, recording
from bench.interfaces import EvalPlan

SAMPLES = [Sample(f"/d/g{i % 2}/{i}.png", i % 2, f"g{i % 2}") for i in range(7)]
CHAIN = object()


class Factory:
    """Records the call the loader gets and returns a marker."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return "loader"


def test_batch_list_is_consecutive_runs_of_batch_size_or_the_plans_batches():
    assert batch_list(7, None, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batch_list(6, None, 3) == [[0, 1, 2], [3, 4, 5]]
    assert batch_list(1, None, 5) == [[0]]
    assert batch_list(0, None, 4) == []
    assert batch_list(5, EvalPlan(), 2) == [[0, 1], [2, 3], [4]]  # a plan without batches
    plan = EvalPlan(batches=[(4, 0), (2,), [1, 3]])
    got = batch_list(5, plan, 2)
    assert got == [[4, 0], [2], [1, 3]] and all(type(b) is list for b in got)


def test_without_a_plan_the_loader_reads_every_image_in_order_for_evaluation():
    factory = Factory()
    assert evaluation_batches(SAMPLES, CHAIN, factory, None, 3) == "loader"
    assert factory.calls == [
        (
            (SAMPLES, CHAIN),
            {"train": False, "shuffle": False, "batch_size": 3, "batches": None},
        )
    ]
    factory = Factory()
    evaluation_batches(SAMPLES, CHAIN, factory, None, 3, shard=(0, 1))  # one process
    assert factory.calls[0][1]["batches"] is None


def test_a_plans_fixed_batches_reach_the_loader():
    factory = Factory()
    plan = EvalPlan(batches=[[6, 0], [1, 2, 3], [4, 5]])
    evaluation_batches(SAMPLES, CHAIN, factory, plan, 3)
    assert factory.calls == [
        (
            (SAMPLES, CHAIN),
            {"train": False, "shuffle": False, "batch_size": 3, "batches": plan.batches},
        )
    ]


@pytest.mark.parametrize(
    ("plan", "rank", "world", "expected"),
    [
        (None, 0, 2, [[0, 1], [4, 5]]),  # batches [0,1] [2,3] [4,5] [6]: every 2nd from 0
        (None, 1, 2, [[2, 3], [6]]),
        (None, 2, 3, [[4, 5]]),
        (EvalPlan(batches=[[6], [5, 4], [3], [2, 1, 0]]), 1, 3, [[5, 4]]),
        (EvalPlan(batches=[[6], [5, 4], [3], [2, 1, 0]]), 0, 3, [[6], [2, 1, 0]]),
    ],
)
def test_a_process_of_several_gets_every_worlds_batch_from_its_rank(plan, rank, world, expected):
    factory = Factory()
    evaluation_batches(SAMPLES, CHAIN, factory, plan, 2, shard=(rank, world))
    ((args, kwargs),) = factory.calls
    assert args == (SAMPLES, CHAIN)
    assert kwargs == {"train": False, "shuffle": False, "batch_size": 2, "batches": expected}


def features_plan(**kw) -> EvalPlan:
    # row i holds (i, 10 i): a batch's rows say which samples they came from
    rows = torch.tensor([[float(i), 10.0 * i] for i in range(len(SAMPLES))])
    return EvalPlan(features=rows, **kw)


def test_precomputed_features_are_batched_without_the_loader():
    factory = Factory()
    plan = features_plan(missing={3: "truncated file"})
    log = ReadLog()
    with recording(log):
        batches = evaluation_batches(SAMPLES, CHAIN, factory, plan, 3)
    assert factory.calls == [] and isinstance(batches, FeatureBatches)
    assert len(batches) == 3
    got = list(batches)
    assert len(got) == 3
    first, second, third = got
    assert first["features"].tolist() == [[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]]
    assert first["image"] is None
    assert first["label"].tolist() == [0.0, 1.0, 0.0] and first["label"].dtype == torch.float32
    assert first["path"] == ["/d/g0/0.png", "/d/g1/1.png", "/d/g0/2.png"]
    assert first["generator"] == ["g0", "g1", "g0"]
    assert first["index"].tolist() == [0, 1, 2] and first["index"].dtype == torch.long
    assert first["skipped"] == [] and first["unreadable"] == []
    # sample 3 has no features: left out of the batch and listed with its reason
    assert second["features"].tolist() == [[4.0, 40.0], [5.0, 50.0]]
    assert second["path"] == ["/d/g0/4.png", "/d/g1/5.png"]
    assert second["label"].tolist() == [0.0, 1.0]
    assert second["index"].tolist() == [4, 5]
    assert second["skipped"] == ["/d/g1/3.png (truncated file)"]
    assert second["unreadable"] == [("/d/g1/3.png", "truncated file")]
    assert third["features"].tolist() == [[6.0, 60.0]] and third["index"].tolist() == [6]
    assert log.unreadable == {"/d/g1/3.png": "truncated file"}


def test_a_feature_batch_with_no_readable_image_carries_only_the_reasons():
    plan = features_plan(missing={0: "a", 1: "b"}, batches=[[0, 1], [2]])
    first, second = list(evaluation_batches(SAMPLES, CHAIN, Factory(), plan, 5))
    assert first["features"] is None
    assert first["label"].tolist() == [] and first["path"] == [] and first["index"].tolist() == []
    assert first["index"].dtype == torch.long  # an empty index is still an index tensor
    assert first["unreadable"] == [("/d/g0/0.png", "a"), ("/d/g1/1.png", "b")]
    assert first["skipped"] == ["/d/g0/0.png (a)", "/d/g1/1.png (b)"]
    assert second["features"].tolist() == [[2.0, 20.0]]


def test_feature_batches_follow_the_plan_and_the_shard():
    plan = features_plan(batches=[[5, 1], [0], [2, 3, 4, 6]])
    whole = FeatureBatches(SAMPLES, plan, 2)
    assert whole.order == [[5, 1], [0], [2, 3, 4, 6]] and len(whole) == 3
    assert [b["index"].tolist() for b in whole] == [[5, 1], [0], [2, 3, 4, 6]]
    part = evaluation_batches(SAMPLES, CHAIN, Factory(), plan, 2, shard=(1, 2))
    assert part.order == [[0]] and len(part) == 1
    assert [b["features"].tolist() for b in part] == [[[0.0, 0.0]]]
    plain = FeatureBatches(SAMPLES, features_plan(), 4)
    assert plain.order == [[0, 1, 2, 3], [4, 5, 6]]


def test_feature_batches_outside_a_recording_list_without_a_log():
    batches = FeatureBatches(SAMPLES, features_plan(missing={0: "gone"}), 7)
    assert batches.read_log is None
    (batch,) = list(batches)
    assert batch["unreadable"] == [("/d/g0/0.png", "gone")]
    log = ReadLog()
    with recording(log):
        inside = FeatureBatches(SAMPLES, features_plan(), 7)
    assert inside.read_log is log
    list(inside)
    assert log.unreadable == {}  # nothing missing: nothing recorded
