"""Evaluation: every distinct test image predicted once, scored per (test set, generator).

A real image that several generators pair with (UniversalFakeDetect's LAION reals serve
seven fake folders) is predicted once and written once per generator in predictions.csv,
so each generator's metrics can be recomputed from that file alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchError


def evaluate(detector: Any, samples: list[Any], factory: Any, run_dir: Path, ctx: Any) -> Any:
    """Stream predictions.csv, then write metrics.csv; returns the metrics table."""
    import torch
    from tqdm import tqdm

    from bench.metrics import per_generator_metrics, single_class_generators
    from bench.results_io import PredictionWriter, write_metrics
    from bench.text import printable
    from bench.training import autocast, to_device

    uses: dict[str, list[Any]] = {}
    for sample in samples:
        uses.setdefault(sample.path, []).append(sample)
    unique = [group[0] for group in uses.values()]
    if len(unique) < len(samples):
        ctx.log(
            f"{len(samples)} scored test samples are {len(unique)} distinct images: "
            "each is predicted once"
        )
    chain = detector.transforms(train=False)
    batch_size = int(
        detector.options.get("eval_batch_size", detector.options.get("batch_size", 32))
    )
    loader = factory(unique, chain, train=False, shuffle=False, batch_size=batch_size)
    test_sets, generators, labels, probs = [], [], [], []
    skipped = 0
    detector.train_mode(False)
    writer = PredictionWriter(run_dir / "predictions.csv")
    try:
        for batch in tqdm(loader, desc="evaluate", disable=not ctx.progress):
            skipped += len(batch["skipped"])  # the run's ReadLog lists them in skipped.txt
            if batch["image"] is None:
                continue
            batch = to_device(batch, ctx.device)
            with torch.no_grad(), autocast(ctx):
                p = detector.predict_proba(batch).float().cpu()
            if p.shape != (len(batch["path"]),) or not torch.all((p >= 0) & (p <= 1)):
                raise BenchError(
                    f"detector returned invalid probabilities (shape {tuple(p.shape)})"
                )
            for index, prob in zip(batch["index"].tolist(), p.tolist(), strict=True):
                for sample in uses[unique[index].path]:
                    writer.write(sample.path, sample.dataset, sample.generator, sample.label, prob)
                    test_sets.append(sample.dataset)
                    generators.append(sample.generator)
                    labels.append(sample.label)
                    probs.append(prob)
            writer.flush()
    finally:
        writer.close()
    if skipped:
        ctx.log(f"skipped {skipped} unreadable test images (listed in skipped.txt)")
    if not probs:
        raise BenchError("no test image could be read")
    table = per_generator_metrics(generators, labels, probs, test_sets=test_sets)
    write_metrics(run_dir / "metrics.csv", table)
    single = single_class_generators(table)
    if single:
        ctx.log(
            "warning: generator(s) with one class only (AP/AUC undefined, left out of the "
            f"mean): {', '.join(printable(s) for s in single)}"
        )
    mean = table[table["kind"] == "mean"].iloc[0]
    ctx.log(
        f"mean over {int(mean['n_generators'])} generator(s): acc {mean['acc']:.4f}  "
        f"ap {mean['ap']:.4f}  auc {mean['auc']:.4f}"
    )
    return table
