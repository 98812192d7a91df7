"""Cache folder for derived data (demo builds, captions, features).

Keys are hashes of everything the content depends on, so a change of model, weights,
transform or code version never serves a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """`$BENCH_CACHE`, else `$XDG_CACHE_HOME/nsnet-bench`, else `~/.cache/nsnet-bench`."""
    env = os.environ.get("BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nsnet-bench"


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (dicts are key-sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir(kind: str, *key_parts: Any) -> Path:
    """`<cache_root>/<kind>/<key>`; created on demand."""
    path = cache_root() / kind / cache_key(*key_parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes: the content part of per-image cache keys.

    Only regular files are read (NotRegularFileError, an OSError, for a FIFO or device).
    """
    from bench.fileio import open_regular

    h = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
