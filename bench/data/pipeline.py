"""From samples to batches: image loading, the transform chain, seeds and the DataLoader.

Each sample's seed is derived from (run seed, epoch, index), so a transform chain gives
the same image in any worker, in any order, on any rerun. Transforms draw from generators
seeded with it (``random.Random(seed)``, albumentations' seed); one that draws from a global
generator (torch, numpy, ``random``) gets it seeded with the sample's seed for the length
of the call and restored after, so the main process's generators, which dropout and
sampling use, are the same whatever the number of workers.

Files that cannot be read are listed, never dropped silently: each batch carries them, and
the loaders made while a ``ReadLog`` is active (the runner keeps one per run) record them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from bench.data.layouts import Sample
from bench.interfaces import TransformChain

CAPTION_SIDECAR = "captions.json"
#: The most DataLoader workers chosen by default (each holds a copy of the dataset list).
MAX_DEFAULT_WORKERS = 32


def default_workers() -> int:
    """Workers when ``--workers`` is not given: the cores this process may run on, less one.

    ``os.sched_getaffinity`` counts what a Slurm allocation, taskset or a container
    grants, not the machine's cores; one core stays with the main process, which
    collates nothing but feeds the GPU. At most MAX_DEFAULT_WORKERS; 0 (load in the main
    process) on a single core.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_DEFAULT_WORKERS))


class DataWait:
    """How long a loop waits for its next batch, against the loop's whole time.

    Wrap the loader (``for batch in wait(loader)``); ``share()`` is the waiting share of
    the time since the first batch was asked for. Near 0: the loader keeps up; near 1:
    the GPU (or the CPU model) starves for data.
    """

    def __init__(self) -> None:
        self.waited = 0.0
        self.batches = 0
        self._start: float | None = None
        self._end: float | None = None

    def __call__(self, iterable: Iterable[Any]) -> Iterator[Any]:
        if self._start is None:
            self._start = time.perf_counter()
        iterator = iter(iterable)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.waited += time.perf_counter() - t0
                self._end = time.perf_counter()
            self.batches += 1
            yield item

    def elapsed(self) -> float:
        if self._start is None:
            return 0.0
        return max(1e-9, (self._end or time.perf_counter()) - self._start)

    def share(self) -> float:
        return self.waited / self.elapsed() if self._start is not None else 0.0

    def summary(self, what: str, workers: int) -> str:
        return (
            f"data wait ({what}): {100 * self.share():.0f}% of {self.elapsed():.1f} s spent "
            f"waiting for batches ({self.batches} batches, {workers} loader workers)"
        )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**31 - 1)


class ImageDataset(Dataset):
    """Loads RGB images and applies a chain; unreadable files come back as None (skipped)."""

    def __init__(
        self, samples: list[Sample], chain: TransformChain, *, train: bool, seed: int, epoch: int
    ):
        self.samples = samples
        self.chain = chain
        self.train = train
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        from bench.data.images import UnreadableImage, load_rgb

        sample = self.samples[index]
        try:
            image = load_rgb(sample.path)
        except UnreadableImage as exc:
            return {"skip": sample.path, "reason": exc.reason}
        s = sample_seed(self.seed, self.epoch, index)
        with seeded_global_rngs(s):
            tensor = self.chain(image, train=self.train, seed=s)
        return {
            "image": tensor,
            "label": float(sample.label),
            "path": sample.path,
            "generator": sample.generator,
            "index": index,
        }


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """torch's CPU, numpy's and Python's global generators seeded with ``seed``, then restored."""
    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; unreadable files travel in ``batch["skipped"]`` ("path (reason)") and
    ``batch["unreadable"]`` ((path, reason) pairs)."""
    good = [it for it in items if "skip" not in it]
    unreadable = [(it["skip"], it["reason"]) for it in items if "skip" in it]
    skipped = [f"{path} ({reason})" for path, reason in unreadable]
    if not good:
        return {
            "image": None,
            "label": None,
            "path": [],
            "generator": [],
            "skipped": skipped,
            "unreadable": unreadable,
        }
    return {
        "image": torch.stack([it["image"] for it in good]),
        "label": torch.tensor([it["label"] for it in good], dtype=torch.float32),
        "path": [it["path"] for it in good],
        "generator": [it["generator"] for it in good],
        "index": torch.tensor([it["index"] for it in good]),
        "skipped": skipped,
        "unreadable": unreadable,
    }


class ReadLog:
    """The files one run's loaders could not read: path -> first reason, in order met."""

    def __init__(self) -> None:
        self.unreadable: dict[str, str] = {}

    def add(self, pairs: list[tuple[str, str]]) -> None:
        for path, reason in pairs:
            self.unreadable.setdefault(path, reason)

    def among(self, paths: set[str]) -> dict[str, str]:
        return {p: r for p, r in self.unreadable.items() if p in paths}


_active_logs: list[ReadLog] = []


@contextlib.contextmanager
def recording(log: ReadLog) -> Iterator[ReadLog]:
    """Loaders made inside this block report their unreadable files to ``log``."""
    _active_logs.append(log)
    try:
        yield log
    finally:
        _active_logs.remove(log)


def active_read_log() -> ReadLog | None:
    """The ReadLog of the innermost ``recording`` block, if any."""
    return _active_logs[-1] if _active_logs else None


class RecordingLoader(DataLoader):
    """A DataLoader that hands each batch's unreadable files to the run's ReadLog."""

    read_log: ReadLog | None = None

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            if self.read_log is not None and batch.get("unreadable"):
                self.read_log.add(batch["unreadable"])
            yield batch


def make_loader(
    samples: list[Sample],
    chain: TransformChain,
    *,
    train: bool,
    shuffle: bool,
    batch_size: int,
    epoch: int = 0,
    drop_last: bool = False,
    workers: int = 0,
    seed: int = 0,
    batches: list[list[int]] | None = None,
    rank: int = 0,
    world: int = 1,
    skip: int = 0,
) -> DataLoader:
    """A DataLoader over ``samples`` whose order and augmentations depend only on the seeds.

    batches: a fixed batch composition (lists of sample indices) instead of
    batch_size / shuffle / drop_last. rank, world: yield only process ``rank``'s part of
    each batch one process would draw (bench.distributed); skip: leave out the first
    ``skip`` batches (a resumed epoch). Both keep every batch's composition and every
    image's augmentation exactly as one uninterrupted process has them.
    """
    dataset = ImageDataset(samples, chain, train=train, seed=seed, epoch=epoch)
    if batches is None and (world > 1 or skip):
        order = batch_order(len(samples), batch_size, shuffle, drop_last, seed, epoch)
        batches = [part_of(b, rank, world) for b in order[skip:]]
    if batches is not None:
        loader = RecordingLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=collate,
            # its own generator: drawing worker seeds must not move the global RNG
            generator=torch.Generator().manual_seed(sample_seed(seed, epoch, 0)),
        )
        loader.read_log = active_read_log()
        return loader
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch, 0))
    loader = RecordingLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        persistent_workers=False,
    )
    loader.read_log = active_read_log()
    return loader


def batch_order(
    n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int, epoch: int
) -> list[list[int]]:
    """The batches (sample indices) ``make_loader`` draws for this epoch, read from the
    very sampler it uses (a DataLoader over the indices, seeded the same way)."""
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch, 0))
    indices = DataLoader(
        range(n),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        collate_fn=list,
    )
    return [list(b) for b in indices]


def part_of(batch: list[int], rank: int, world: int) -> list[int]:
    """Process ``rank``'s contiguous part of one batch (sizes differ by at most one)."""
    n = len(batch)
    return list(batch[rank * n // world : (rank + 1) * n // world])


def load_caption_sidecars(roots: list[str | Path]) -> dict[str, str]:
    """Captions shipped beside a data set: ``<root>/captions.json`` maps relative path -> text.

    Searched at each root and its parent (a demo's train/ and test/ share one file).
    """
    captions: dict[str, str] = {}
    seen: set[Path] = set()
    for root in roots:
        root = Path(root).resolve()
        base = root if root.is_dir() else root.parent
        for folder in (base, base.parent):
            file = folder / CAPTION_SIDECAR
            if file in seen or not file.is_file():
                continue
            seen.add(file)
            for rel, text in read_sidecar(file).items():
                captions[str((folder / rel).resolve())] = str(text)
    return captions


def read_sidecar(file: Path) -> dict[str, Any]:
    """A captions.json as a dict; a damaged one is a one-line error naming it."""
    from bench.errors import BenchError
    from bench.fileio import open_regular

    try:
        with open_regular(file) as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad UTF-8 or bad JSON
        raise BenchError(f"caption sidecar {file} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"caption sidecar {file} must map image paths to captions")
    return data
