"""Test batches for the runner: from the image loader, or from a detector's own inputs.

A detector may plan its evaluation (``Detector.plan_evaluation``): a fixed batch
composition (the loader then follows it), or features it computed already (a frozen
backbone's cache: batches then carry ``batch["features"]`` and no image is decoded).
Either way the files that could not be read travel in the batches and reach the run's
ReadLog, as the loader's do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def evaluation_batches(
    samples: list, chain: Any, factory: Any, plan: Any, batch_size: int, shard: Any = None
) -> Any:
    """The test batches: from the image loader (in the detector's fixed composition when
    it asks for one), or from inputs the detector computed already (no decoding).

    shard: (rank, world) of several processes: process ``rank`` gets every ``world``-th of
    the batches one process would use (whole batches, so a detector whose score depends on
    its batch scores each image as one process does).
    """
    fixed = plan.batches if plan is not None else None
    if shard is not None and shard[1] > 1:
        rank, world = shard
        fixed = batch_list(len(samples), plan, batch_size)[rank::world]
    if plan is not None and plan.features is not None:
        return FeatureBatches(samples, plan, batch_size, order=fixed)
    return factory(samples, chain, train=False, shuffle=False, batch_size=batch_size, batches=fixed)


def batch_list(n: int, plan: Any, batch_size: int) -> list[list[int]]:
    """Every test batch one process uses, as lists of sample indices, in its order."""
    if plan is not None and plan.batches is not None:
        return [list(b) for b in plan.batches]
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


class FeatureBatches:
    """Batches of precomputed features, shaped as the loader's (skipped files listed)."""

    def __init__(self, samples: list, plan: Any, batch_size: int, order: Any = None):
        from bench.data.pipeline import active_read_log

        self.samples, self.plan = samples, plan
        self.read_log = active_read_log()
        self.order = order if order is not None else batch_list(len(samples), plan, batch_size)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        samples, plan = self.samples, self.plan
        for idx in self.order:
            good = [i for i in idx if i not in plan.missing]
            unreadable = [(samples[i].path, plan.missing[i]) for i in idx if i in plan.missing]
            if self.read_log is not None and unreadable:
                self.read_log.add(unreadable)
            yield {
                "features": plan.features[good] if good else None,
                "image": None,
                "label": torch.tensor([float(samples[i].label) for i in good]),
                "path": [samples[i].path for i in good],
                "generator": [samples[i].generator for i in good],
                "index": torch.tensor(good, dtype=torch.long),
                "skipped": [f"{path} ({reason})" for path, reason in unreadable],
                "unreadable": unreadable,
            }
