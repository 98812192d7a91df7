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
    """Train with ``detector.training_step`` for ``train.epochs``; returns per-step losses.

    Several processes (``ctx.processes``) each take their part of every batch and step with
    the whole batch's gradient; ``ctx.checkpoints`` are written at every epoch's end and
    every N steps, and a run that has one goes on from it (``bench.checkpoint``).
    """
    from tqdm import tqdm

    from bench.data.pipeline import DataWait
    from bench.distributed import SINGLE

    processes = ctx.processes or SINGLE
    checkpoints = ctx.checkpoints
    optimizer = detector.configure_optimizer()
    chain = detector.transforms(train=True)
    steps_per_epoch = max(1, math.ceil(len(train.samples) / train.batch_size))
    scheduler = detector.configure_scheduler(optimizer, steps_per_epoch, train.epochs)
    book = LossBook(ctx, optimizer)
    start_epoch, start_batch = 0, 0
    if checkpoints is not None:
        saved = checkpoints.restore(detector, optimizer, scheduler)
        if saved is not None:
            start_epoch, start_batch = saved["epoch"], saved["batch"]
            book.losses = list(saved["losses"])
    wait = DataWait()
    detector.train_mode(True)
    try:
        for epoch in range(start_epoch, train.epochs):
            done = start_batch if epoch == start_epoch else 0
            loader = train.loader(
                chain, train=True, shuffle=True, epoch=epoch, part=processes.several, skip=done
            )
            bar = tqdm(
                wait(loader),
                total=len(loader),
                desc=f"train {epoch + 1}/{train.epochs}",
                disable=not ctx.progress,
            )
            for batch in bar:
                done += 1
                rate = book.rate()  # the rate this step uses, before its scheduler step
                if batch["image"] is not None:
                    batch = to_device(batch, ctx.device)
                    book.add(step(detector, batch, optimizer, scheduler, ctx), epoch, rate)
                elif processes.several:  # the others may have images: join their step
                    book.add(empty_step(optimizer, scheduler, ctx), epoch, rate)
                if book.due():
                    book.read(epoch)
                    bar.set_postfix(loss=f"{book.losses[-1]:.4f}")
                due = checkpoints is not None and done < steps_per_epoch
                if due and checkpoints.due(epoch * steps_per_epoch + done):
                    book.read(epoch)
                    checkpoints.save(
                        detector, optimizer, scheduler, epoch=epoch, batch=done, losses=book.losses
                    )
            book.read(epoch)
            ctx.log(
                f"epoch {epoch + 1}/{train.epochs}: mean loss "
                f"{mean_tail(book.losses, steps_per_epoch):.4f}"
            )
            if checkpoints is not None:
                checkpoints.save(
                    detector, optimizer, scheduler, epoch=epoch + 1, batch=0, losses=book.losses
                )
    finally:
        detector.train_mode(False)
    record_wait(ctx, wait, "train")
    return book.losses


class LossBook:
    """The losses of a training loop, read from the device in groups (one sync each) and
    handed to the experiment tracker with each step's learning rate."""

    def __init__(self, ctx: RunContext, optimizer: Any):
        self.ctx = ctx
        self.optimizer = optimizer
        self.losses: list[float] = []
        self.pending: list[torch.Tensor] = []
        self.rates: list[float] = []

    def rate(self) -> float:
        """The optimiser's learning rate now (read before a step: after it, the scheduler
        has already moved it to the next step's)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def add(self, loss: torch.Tensor | None, epoch: int, rate: float) -> None:
        """``loss`` of a step taken at learning rate ``rate``."""
        if loss is None:  # no process had a readable image: no step, as in one process
            return
        self.pending.append(loss)
        self.rates.append(rate)
        if not self.losses and len(self.pending) == 1:  # the run's first step: at once
            self.read(epoch, first=True)

    def due(self) -> bool:
        return len(self.pending) >= READ_EVERY

    def read(self, epoch: int, first: bool = False) -> None:
        start = len(self.losses)
        values = read_losses(self.pending, epoch, first=first)
        self.losses.extend(values)
        if self.ctx.track is not None:
            for i, (value, rate) in enumerate(zip(values, self.rates, strict=True)):
                self.ctx.track({"train/loss": value, "train/lr": rate}, start + i + 1)
        self.rates.clear()


def record_wait(ctx: RunContext, wait: Any, what: str) -> None:
    """Log a loop's data-wait share and keep it for config.json (notes.data_wait)."""
    if wait.batches == 0:
        return
    ctx.log(wait.summary(what, ctx.workers))
    ctx.notes.setdefault("data_wait", {})[what] = round(wait.share(), 4)
    if ctx.track is not None:
        ctx.track({f"{what}/data_wait_share": wait.share()}, None)


def step(
    detector: Detector, batch: dict, optimizer: Any, scheduler: Any, ctx: RunContext
) -> torch.Tensor | None:
    """One optimiser step on ``detector.training_step``; the detached loss, not yet read.

    With several processes the gradients are first made the whole batch's (each process's
    weighted by its share of the readable images) and the loss is the whole batch's mean.
    """
    with autocast(ctx):
        loss = detector.training_step(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    processes = ctx.processes
    if processes is not None and processes.several:
        loss = processes.average_gradients(parameters(optimizer), len(batch["path"]), loss)
        if loss is None:
            return None
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def empty_step(optimizer: Any, scheduler: Any, ctx: RunContext) -> torch.Tensor | None:
    """This process's part of a batch had no readable image: it still joins the step."""
    optimizer.zero_grad(set_to_none=True)
    loss = ctx.processes.average_gradients(parameters(optimizer), 0, None)
    if loss is None:
        return None
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def parameters(optimizer: Any) -> list[Any]:
    return [p for group in optimizer.param_groups for p in group["params"]]


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
