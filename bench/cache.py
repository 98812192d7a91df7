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


#: Where ``file_digests`` remembers what it hashed (below the cache root).
DIGEST_INDEX = "digests/index.sqlite3"
_digest_memo: dict[str, dict[str, tuple[int, int, int, str]]] = {}


def file_digests(paths: list[str]) -> list[str | None]:
    """sha256 of each file (None if unreadable), hashing only files new or changed.

    The sha256 of the bytes stays the truth: it is what every cache keys on. It is
    computed once per (real path, size, modification time in ns, inode) and looked up
    afterwards, as git's index and make trust the same metadata. A file rewritten in
    place with the same size and its old mtime restored on purpose would be missed:
    set BENCH_REHASH=1 (or delete ``$BENCH_CACHE/digests``) to hash everything again.
    Paths are stored as their bytes (``os.fsencode``), so a name that is not UTF-8 is
    remembered like any other.
    """
    import sqlite3

    db_path = cache_root() / DIGEST_INDEX
    db_path.parent.mkdir(parents=True, exist_ok=True)
    rehash = os.environ.get("BENCH_REHASH", "") not in ("", "0")
    with sqlite3.connect(db_path, timeout=60) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS digest (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, inode INTEGER, sha256 TEXT)"
        )
        memo = _digest_memo.get(str(db_path))
        if memo is None:
            memo = {
                os.fsdecode(p) if isinstance(p, bytes) else p: (s, m, i, h)
                for p, s, m, i, h in db.execute("SELECT * FROM digest")
            }
            _digest_memo[str(db_path)] = memo
        out: list[str | None] = []
        new_rows = []
        for path in paths:
            try:
                real = os.path.realpath(path)
                st = os.stat(real)
            except OSError:
                out.append(None)
                continue
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            known = memo.get(real)
            if known is not None and known[:3] == stamp and not rehash:
                out.append(known[3])
                continue
            try:
                digest = file_digest(real)
            except OSError:
                out.append(None)
                continue
            memo[real] = (*stamp, digest)
            new_rows.append((os.fsencode(real), *stamp, digest))
            out.append(digest)
        if new_rows:
            db.executemany("INSERT OR REPLACE INTO digest VALUES (?, ?, ?, ?, ?)", new_rows)
    return out
