"""On-disk features of a frozen backbone, so a head trains again without a backbone forward.

With the backbone frozen, a feature is a function of (backbone, weights, transform chain,
view, image bytes) and nothing else. A folder under ``cache_dir("features", ...)`` is keyed
by everything but the image; inside it, rows are keyed by the image's sha256, so renamed or
copied files hit, edited ones miss, and two detectors that share backbone and chain
(UnivFD and VIB-Net do) share their features. Features are pre-head and pre-addon: a
feature addon (NULL-space projection) runs after the cache, so the cache stays valid
whichever addon is attached.

Storage is append-only shards (``shard-*.safetensors``: ``digest`` uint8 (n, 32),
``features`` float32 (n, d)), each written to a temporary name and renamed, so concurrent
or interrupted runs never leave a half-written file; a run that dies keeps the shards it
flushed.

Cache modes (the ``feature_cache`` option of the frozen-CLIP detectors):
  - "off": no cache, the standard loop (a fresh augmentation each epoch, as UnivFD trains);
  - "eval-view": one deterministic view per image (the evaluation chain), reused each epoch;
  - "views:N": N augmented views per image from the training chain, view e mod N at epoch e;
  - "views": one view per epoch (N = epochs), the same distribution of inputs as "off".
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.data.layouts import Sample
    from bench.interfaces import RunContext, TransformChain

#: Bump when the meaning of a stored feature changes (it is part of every folder key).
CACHE_VERSION = 1
#: Rows computed before a shard is written, so an interrupted run loses little.
FLUSH_ROWS = 8192


@dataclass(frozen=True)
class CacheMode:
    kind: str  # "off", "eval-view" or "views"
    views: int | None  # None = one per epoch

    def n_views(self, epochs: int) -> int:
        if self.kind == "off":
            return 0
        if self.kind == "eval-view":
            return 1
        return max(1, min(self.views or epochs, epochs))


def parse_cache_mode(text: str, option: str = "feature_cache") -> CacheMode:
    """'off' | 'eval-view' | 'views' | 'views:N' -> CacheMode; anything else is a BenchError."""
    value = str(text).strip().lower()
    if value in {"off", "eval-view"}:
        return CacheMode(value, None)
    if value == "views":
        return CacheMode("views", None)
    if value.startswith("views:"):
        count = value.partition(":")[2]
        if count.isdigit() and int(count) > 0:
            return CacheMode("views", int(count))
    raise BenchError(
        f"option {option} must be 'off', 'eval-view', 'views' or 'views:N' (N >= 1), got {text!r}"
    )


def weights_fingerprint(module: torch.nn.Module, per_tensor: int = 64) -> str:
    """A cheap hash of the weights: the first values of every parameter and buffer.

    The backbone's identity names a tag or file; this also tells two random
    initialisations (or a file changed in place) apart, without hashing 300M parameters.
    """
    h = hashlib.sha256()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        head = tensor.detach().flatten()[:per_tensor].float().cpu()
        h.update(f"{name}:{tuple(tensor.shape)}".encode())
        h.update(head.numpy().tobytes())
    return h.hexdigest()[:16]


def image_digests(samples: Sequence[Sample]) -> list[str | None]:
    """sha256 of each image file (None for a file that cannot be read), hashed once per
    file version (``bench.cache.file_digests``)."""
    from bench.cache import file_digests

    return file_digests([sample.path for sample in samples])


class FeatureStore:
    """One cache folder: image sha256 -> feature row, across append-only shards."""

    def __init__(self, folder: Path, describe: dict[str, Any] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "meta.json"
        if describe is not None and not meta.exists():
            _atomic_write_text(meta, json.dumps(describe, indent=2, default=str))

    def shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors"))

    def lookup(self, digests: Sequence[str | None]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(features (n, d) with zeros where missing or None if nothing is stored, found (n,))."""
        from safetensors.torch import load_file

        found = torch.zeros(len(digests), dtype=torch.bool)
        wanted: dict[str, list[int]] = {}
        for i, digest in enumerate(digests):
            if digest is not None:
                wanted.setdefault(digest, []).append(i)
        out: torch.Tensor | None = None
        for shard in self.shards():
            try:
                data = load_file(str(shard))
            except Exception:  # a foreign or damaged file is a miss, never a crash
                continue
            keys, feats = data["digest"], data["features"]
            if out is None:
                out = torch.zeros(len(digests), feats.shape[1], dtype=torch.float32)
            if feats.shape[1] != out.shape[1]:
                continue
            for row, raw in enumerate(keys.numpy()):
                for i in wanted.get(raw.tobytes().hex(), ()):
                    out[i] = feats[row]
                    found[i] = True
        return out, found

    def add(self, digests: Sequence[str], features: torch.Tensor) -> None:
        """Write one new shard (atomically) holding ``features`` for ``digests``."""
        import numpy as np
        from safetensors.torch import save

        from bench.fileio import atomic_write_bytes

        if not digests:
            return
        raw = np.frombuffer(b"".join(bytes.fromhex(d) for d in digests), dtype=np.uint8)
        tensors = {
            "digest": torch.from_numpy(raw.reshape(len(digests), 32).copy()),
            "features": features.detach().float().cpu().contiguous(),
        }
        name = f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        # Atomic, with the user's umask (safetensors' save_file makes 0600 files), and no
        # temporary file left behind by a full disk or an interrupt.
        atomic_write_bytes(self.folder / name, save(tensors), fsync=False)


def _atomic_write_text(path: Path, text: str) -> None:
    from bench.fileio import atomic_write_text

    atomic_write_text(path, text, fsync=False)


def _unreadable(path: str) -> str:
    """Why a file that could not be hashed cannot be read, as the image reader says it."""
    from bench.data.images import UnreadableImage, load_rgb

    try:
        load_rgb(path)
    except UnreadableImage as exc:
        return exc.reason
    return "unreadable file"


def cached_features(
    samples: Sequence[Sample],
    digests: Sequence[str | None],
    chain: TransformChain,
    encode: Callable[[torch.Tensor], torch.Tensor],
    *,
    key: dict[str, Any],
    train: bool,
    view: int,
    batch_size: int,
    ctx: RunContext,
    skipped: dict[int, str] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """Features of ``samples`` through ``chain`` (view ``view``), computing only the missing.

    key: what the features depend on besides chain, view and image (backbone identity,
    weights fingerprint, precision). Returns (features (n, d) float32 on the CPU, a mask of
    the samples that have one (unreadable images have none), how many were computed now);
    ``skipped``, if given, collects index -> reason for the images that could not be read.
    """
    from bench.cache import cache_dir
    from bench.data.pipeline import make_loader

    parts = {
        "version": CACHE_VERSION,
        **key,
        "chain": chain.describe(),
        "train": train,
        "view": view,
        # A view depends on the seeds the chain is given (at train time always; at
        # evaluation too when an input addon shuffles, as Patch Selection does).
        "seed": ctx.seed,
    }
    from bench.distributed import SINGLE

    processes = getattr(ctx, "processes", None) or SINGLE
    store = FeatureStore(cache_dir("features", parts), describe=parts)
    feats, found = store.lookup(digests)
    if skipped is not None:
        skipped.update(
            {i: _unreadable(samples[i].path) for i, d in enumerate(digests) if d is None}
        )
    missing = [i for i, d in enumerate(digests) if d is not None and not found[i]]
    missing = processes.broadcast(missing)  # several processes: process 0's list decides
    if not missing:
        return feats, found, 0
    shard = None
    if processes.several:  # whole batches, each to one process; the seeds stay the same
        n = len(missing)
        chunks = [list(range(k, min(k + batch_size, n))) for k in range(0, n, batch_size)]
        shard = chunks[processes.rank :: processes.world]
    loader = make_loader(
        [samples[i] for i in missing],
        chain,
        train=train,
        shuffle=False,
        batch_size=batch_size,
        epoch=view,
        workers=ctx.workers,
        seed=ctx.seed,
        batches=shard,
    )
    pending_digests: list[str] = []
    pending: list[torch.Tensor] = []
    computed = 0
    from tqdm import tqdm

    from bench.data.pipeline import DataWait
    from bench.training import record_wait

    by_path = {samples[i].path: i for i in missing} if skipped is not None else {}
    mine: list[tuple[list[int], torch.Tensor]] = []
    wait = DataWait()
    bar = tqdm(
        wait(loader),
        total=len(loader),
        desc=f"features ({'train' if train else 'eval'} view {view})",
        disable=not ctx.progress,
    )
    for batch in bar:
        if skipped is not None:
            for path, reason in batch["unreadable"]:
                if path in by_path:
                    skipped[by_path[path]] = reason
        if batch["image"] is None:
            continue
        rows = [missing[int(j)] for j in batch["index"]]
        out = encode(batch["image"]).detach().float().cpu()
        if feats is None:
            feats = torch.zeros(len(samples), out.shape[1], dtype=torch.float32)
        feats[rows] = out
        found[rows] = True
        pending_digests.extend(digests[r] for r in rows)
        pending.append(out)
        if processes.several:
            mine.append((rows, out))
        computed += len(rows)
        if len(pending_digests) >= FLUSH_ROWS and processes.main:
            store.add(pending_digests, torch.cat(pending))
            pending_digests, pending = [], []
    record_wait(ctx, wait, "features")  # the backbone's forwards wait on images here
    if processes.main:
        store.add(pending_digests, torch.cat(pending) if pending else torch.zeros(0))
    if processes.several:
        return shared_features(processes, store, mine, skipped, feats, found, digests)
    return feats, found, computed


def shared_features(
    processes: Any,
    store: FeatureStore,
    mine: list[tuple[list[int], torch.Tensor]],
    skipped: dict[int, str] | None,
    feats: torch.Tensor | None,
    found: torch.Tensor,
    digests: Sequence[str | None],
) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """Every process's computed rows, stored once (by process 0, which stored its own
    already) and handed to every process as process 0 has them."""
    everyone = processes.all_gather((mine, dict(skipped or {})))
    computed = 0
    if processes.main:
        for rank, (parts, unreadable) in enumerate(everyone):
            for rows, out in parts:
                if feats is None:
                    feats = torch.zeros(len(digests), out.shape[1], dtype=torch.float32)
                feats[rows] = out
                found[rows] = True
                computed += len(rows)
            if rank > 0 and parts:  # one shard per other process
                rows = [r for part_rows, _ in parts for r in part_rows]
                store.add([digests[r] for r in rows], torch.cat([out for _, out in parts]))
            if skipped is not None:
                skipped.update(unreadable)
    feats, found, computed, unreadable = processes.broadcast((feats, found, computed, skipped))
    if skipped is not None:
        skipped.update(unreadable or {})
    return feats, found, computed
