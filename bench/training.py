"""The standard training loop most detectors share: epochs, autocast, optimiser steps.

A step reads nothing back from the GPU: losses stay on the device and are read (and
checked finite) every ``READ_EVERY`` steps and at the end of each epoch, so the host can
queue the next step while the GPU runs this one. The run's very first loss is the
exception: it is read at once (one sync per run), so a run that diverges from the start
fails there, before an epoch is spent on NaN weights. A later non-finite loss stops the
run at most ``READ_EVERY`` steps after it appeared; nothing is saved from a failed run.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import torch

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.interfaces import Detector, RunContext, TrainData

#: Steps between two reads of the losses (one host-device sync each).
READ_EVERY = 25


def autocast(ctx: RunContext) -> contextlib.AbstractContextManager:
    """Autocast to ``ctx.amp_dtype`` when the run's precision is bf16, else nothing.

    bf16 is the default on CUDA (``--precision``); on the CPU only when asked for.
    """
    if ctx.amp_dtype is not None:
        return torch.autocast(device_type=torch.device(ctx.device).type, dtype=ctx.amp_dtype)
    return contextlib.nullcontext()


def to_device(batch: dict, device: str) -> dict:
    out = dict(batch)
    for key in ("image", "label", "features"):
        if isinstance(out.get(key), torch.Tensor):
            out[key] = out[key].to(device, non_blocking=True)
    return out


def fit_loop(detector: Detector, train: TrainData, ctx: RunContext) -> list[float]:
    """Train with ``detector.training_step`` for ``train.epochs``; returns per-step losses."""
    from tqdm import tqdm

    from bench.data.pipeline import DataWait

    optimizer = detector.configure_optimizer()
    chain = detector.transforms(train=True)
    steps_per_epoch = max(1, math.ceil(len(train.samples) / train.batch_size))
    scheduler = detector.configure_scheduler(optimizer, steps_per_epoch, train.epochs)
    losses: list[float] = []
    wait = DataWait()
    detector.train_mode(True)
    try:
        for epoch in range(train.epochs):
            loader = train.loader(chain, train=True, shuffle=True, epoch=epoch)
            bar = tqdm(
                wait(loader),
                total=len(loader),
                desc=f"train {epoch + 1}/{train.epochs}",
                disable=not ctx.progress,
            )
            pending: list[torch.Tensor] = []
            for batch in bar:
                if batch["image"] is None:
                    continue
                batch = to_device(batch, ctx.device)
                pending.append(step(detector, batch, optimizer, scheduler, ctx))
                if not losses:  # the first step of the run: read and checked at once
                    losses.extend(read_losses(pending, epoch, first=True))
                elif len(pending) >= READ_EVERY:
                    losses.extend(read_losses(pending, epoch))
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
            losses.extend(read_losses(pending, epoch))
            ctx.log(
                f"epoch {epoch + 1}/{train.epochs}: mean loss {mean_tail(losses, steps_per_epoch):.4f}"
            )
    finally:
        detector.train_mode(False)
    record_wait(ctx, wait, "train")
    return losses


def record_wait(ctx: RunContext, wait: Any, what: str) -> None:
    """Log a loop's data-wait share and keep it for config.json (notes.data_wait)."""
    if wait.batches == 0:
        return
    ctx.log(wait.summary(what, ctx.workers))
    ctx.notes.setdefault("data_wait", {})[what] = round(wait.share(), 4)


def step(
    detector: Detector, batch: dict, optimizer: Any, scheduler: Any, ctx: RunContext
) -> torch.Tensor:
    """One optimiser step on ``detector.training_step``; the detached loss, not yet read."""
    with autocast(ctx):
        loss = detector.training_step(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def read_losses(pending: list[torch.Tensor], epoch: int, first: bool = False) -> list[float]:
    """The pending losses as floats (one sync for all of them); empties ``pending``.

    first: these are the run's first losses (a non-finite one is reported as at the first
    step, as ``check_losses`` reports it for a detector with its own loop).
    """
    if not pending:
        return []
    values = torch.stack([p.float().reshape(()) for p in pending]).cpu().tolist()
    pending.clear()
    if first and not math.isfinite(values[0]):
        raise BenchError(f"training diverged at the first step: loss is {values[0]}")
    bad = next((v for v in values if not math.isfinite(v)), None)
    if bad is not None:
        raise BenchError(f"training diverged: loss is {bad} at epoch {epoch + 1}")
    return values


def train_step(
    detector: Detector, batch: dict, optimizer: Any, scheduler: Any, ctx: RunContext, epoch: int
) -> float:
    """One optimiser step, its loss read at once (a sync); a non-finite loss stops the run."""
    return read_losses([step(detector, batch, optimizer, scheduler, ctx)], epoch)[0]


def mean_tail(values: list[float], n: int) -> float:
    tail = values[-n:] if values else [math.nan]
    return sum(tail) / len(tail)


def no_training_image(read_log: Any, train_samples: list) -> None:
    """A training set none of whose images could be read fails the run (no silent NaN row)."""
    paths = {s.path for s in train_samples}
    if paths and len(read_log.among(paths)) == len(paths):
        raise BenchError(
            f"no training image could be read (all {len(paths)} are listed in skipped.txt)"
        )


def check_losses(losses: list[float]) -> None:
    """A first loss that is NaN or infinite means nothing was learned: the run fails."""
    if losses and not math.isfinite(losses[0]):
        raise BenchError(f"training diverged at the first step: loss is {losses[0]}")
