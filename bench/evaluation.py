"""Evaluation: every distinct test image predicted once, scored per (test set, generator).

A real image that several generators pair with (UniversalFakeDetect's LAION reals serve
seven fake folders) is predicted once and written once per generator in predictions.csv,
so each generator's metrics can be recomputed from that file alone.

The detector plans its evaluation first (``Detector.plan_evaluation``, given the distinct
images): a frozen backbone answers with its cached test features (no image is decoded),
NS-Net's ``caption`` reading with a fixed batch composition. Files that cannot be read
reach the run's skipped list either way. A robustness pass (bench.robustness) goes
through ``score_uses`` too, on perturbed pixels, in the plan's batches but never from its
features (those are of the clean images).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError


@dataclass
class DistinctImages:
    """The scored samples of a run grouped by image: ``unique[i]`` is scored as ``uses[i]``."""

    unique: list[Any]
    uses: list[list[Any]]

    @classmethod
    def of(cls, samples: list[Any]) -> DistinctImages:
        groups: dict[str, list[Any]] = {}
        for sample in samples:
            groups.setdefault(sample.path, []).append(sample)
        return cls([group[0] for group in groups.values()], list(groups.values()))


@dataclass
class Evaluation:
    """What the clean pass leaves for later passes (a robustness sweep)."""

    table: Any  # the metrics DataFrame (bench.metrics columns)
    images: DistinctImages
    plan: Any  # the detector's EvalPlan, or None


def eval_batch_size(detector: Any) -> int:
    """eval_batch_size, else batch_size, else 32: every pass over the test sets uses it."""
    options = detector.options
    return int(options.get("eval_batch_size", options.get("batch_size", 32)))


def score_uses(
    detector: Any, images: DistinctImages, batches: Any, ctx: Any
) -> Iterator[tuple[Any, float]]:
    """(sample, p_fake) for every use of every readable image, batch by batch."""
    for index, prob in score_images(detector, batches, ctx):
        for sample in images.uses[index]:
            yield sample, prob


def score_images(detector: Any, batches: Any, ctx: Any) -> Iterator[tuple[int, float]]:
    """(distinct image index, p_fake) for every readable image, batch by batch."""
    import torch

    from bench.training import autocast, to_device

    for batch in batches:
        if not batch["path"]:  # every image of the batch unreadable
            continue
        batch = to_device(batch, ctx.device)
        with torch.no_grad(), autocast(ctx):
            p = detector.predict_proba(batch).float().cpu()
        if p.shape != (len(batch["path"]),) or not torch.all((p >= 0) & (p <= 1)):
            raise BenchError(f"detector returned invalid probabilities (shape {tuple(p.shape)})")
        yield from zip(batch["index"].tolist(), p.tolist(), strict=True)


def evaluate(
    detector: Any, samples: list[Any], factory: Any, run_dir: Path, ctx: Any
) -> Evaluation:
    """Stream predictions.csv, then write metrics.csv; returns the table and the plan."""
    from tqdm import tqdm

    from bench.data.evaluation import batch_list, evaluation_batches
    from bench.data.pipeline import DataWait
    from bench.distributed import SINGLE
    from bench.results_io import PredictionWriter, write_metrics
    from bench.training import record_wait

    processes = ctx.processes or SINGLE
    images = DistinctImages.of(samples)
    if len(images.unique) < len(samples):
        ctx.log(
            f"{len(samples)} scored test samples are {len(images.unique)} distinct images: "
            "each is predicted once"
        )
    chain = detector.transforms(train=False)
    detector.train_mode(False)
    # with several processes every one plans (captions, cached features: shared out
    # among them, into one cache) and gets the same plan
    plan = detector.plan_evaluation(images.unique, ctx)
    shard = (processes.rank, processes.world)
    source = evaluation_batches(
        images.unique, chain, factory, plan, eval_batch_size(detector), shard
    )
    wait = DataWait()
    skipped = 0

    def counted(batches: Any) -> Iterator[Any]:
        nonlocal skipped
        for batch in batches:
            skipped += len(batch["skipped"])  # the run's ReadLog lists them in skipped.txt
            yield batch

    batches = tqdm(wait(source), total=len(source), desc="evaluate", disable=not ctx.progress)
    test_sets, generators, labels, probs = [], [], [], []
    if processes.several:
        mine = list(score_images(detector, counted(batches), ctx))
        order = batch_list(len(images.unique), plan, eval_batch_size(detector))
        scored = gathered_scores(processes, mine, order)
        skipped = sum(processes.all_gather(skipped))
    else:
        scored = score_images(detector, counted(batches), ctx)
    writer = PredictionWriter(run_dir / "predictions.csv") if processes.main else None
    try:
        for index, prob in scored:
            for sample in images.uses[index]:
                if writer is not None:
                    writer.write(sample.path, sample.dataset, sample.generator, sample.label, prob)
                test_sets.append(sample.dataset)
                generators.append(sample.generator)
                labels.append(sample.label)
                probs.append(prob)
    finally:
        if writer is not None:
            writer.close()
    record_wait(ctx, wait, "evaluate")
    if skipped:
        ctx.log(f"skipped {skipped} unreadable test images (listed in skipped.txt)")
    if not probs:
        raise BenchError("no test image could be read")
    table = scored_table(test_sets, generators, labels, probs, ctx, "")
    if processes.main:
        write_metrics(run_dir / "metrics.csv", table)
    return Evaluation(table, images, plan)


def gathered_scores(
    processes: Any, mine: list[tuple[int, float]], order: list[list[int]]
) -> list[tuple[int, float]]:
    """Every process's (index, p_fake), on every process, in one process's order.

    Each image is in exactly one batch and each batch on exactly one process, so the
    union has every readable image once; it is sorted back into the order one process
    scores the batches in, so predictions.csv reads as a single process writes it.
    """
    everyone = [pair for part in processes.all_gather(mine) for pair in part]
    position = {index: k for k, index in enumerate(i for batch in order for i in batch)}
    everyone.sort(key=lambda pair: position[pair[0]])
    if len({index for index, _ in everyone}) != len(everyone):
        raise BenchError("an image was scored by two processes (sharding bug)")
    return everyone


def scored_table(
    test_sets: list[str],
    generators: list[str],
    labels: list[int],
    probs: list[float],
    ctx: Any,
    what: str,
) -> Any:
    """The metrics table of one pass, its single-class warning and mean logged."""
    from bench.metrics import per_generator_metrics, single_class_generators
    from bench.text import printable

    table = per_generator_metrics(generators, labels, probs, test_sets=test_sets)
    single = single_class_generators(table)
    if single and not what:  # a sweep's levels have the very same generators: said once
        ctx.log(
            "warning: generator(s) with one class only (AP/AUC undefined, left out of the "
            f"mean): {', '.join(printable(s) for s in single)}"
        )
    mean = table[table["kind"] == "mean"].iloc[0]
    ctx.log(
        f"{what}mean over {int(mean['n_generators'])} generator(s): acc {mean['acc']:.4f}  "
        f"ap {mean['ap']:.4f}  auc {mean['auc']:.4f}"
    )
    return table
