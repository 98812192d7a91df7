"""The standard training loop most detectors share: epochs, autocast, optimiser steps."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import torch

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.interfaces import Detector, RunContext, TrainData


def autocast(ctx: RunContext) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU (bf16 there is slow and changes results)."""
    if ctx.amp_dtype is not None and ctx.device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=ctx.amp_dtype)
    return contextlib.nullcontext()


def to_device(batch: dict, device: str) -> dict:
    out = dict(batch)
    for key in ("image", "label"):
        if isinstance(out.get(key), torch.Tensor):
            out[key] = out[key].to(device, non_blocking=True)
    return out


def fit_loop(detector: Detector, train: TrainData, ctx: RunContext) -> list[float]:
    """Train with ``detector.training_step`` for ``train.epochs``; returns per-step losses."""
    from tqdm import tqdm

    optimizer = detector.configure_optimizer()
    chain = detector.transforms(train=True)
    steps_per_epoch = max(1, math.ceil(len(train.samples) / train.batch_size))
    scheduler = detector.configure_scheduler(optimizer, steps_per_epoch, train.epochs)
    losses: list[float] = []
    detector.train_mode(True)
    try:
        for epoch in range(train.epochs):
            loader = train.loader(chain, train=True, shuffle=True, epoch=epoch)
            bar = tqdm(loader, desc=f"train {epoch + 1}/{train.epochs}", disable=not ctx.progress)
            for batch in bar:
                if batch["image"] is None:
                    continue
                batch = to_device(batch, ctx.device)
                losses.append(train_step(detector, batch, optimizer, scheduler, ctx, epoch))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            ctx.log(
                f"epoch {epoch + 1}/{train.epochs}: mean loss {mean_tail(losses, steps_per_epoch):.4f}"
            )
    finally:
        detector.train_mode(False)
    return losses


def train_step(
    detector: Detector, batch: dict, optimizer: Any, scheduler: Any, ctx: RunContext, epoch: int
) -> float:
    """One optimiser step on ``detector.training_step``; a non-finite loss stops the run."""
    with autocast(ctx):
        loss = detector.training_step(batch)
    if not torch.isfinite(loss):
        raise BenchError(f"training diverged: loss is {loss.item()} at epoch {epoch + 1}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(loss.detach())


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
