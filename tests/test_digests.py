"""Image content hashes: computed once per file version, recomputed when a file changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import bench.cache as cache


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(os.urandom(1000 + i))
        paths.append(str(path))
    calls = []
    real = cache.file_digest

    def counting(path, *a, **kw):
        calls.append(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(cache, "file_digest", counting)
    return paths, calls


def test_hashed_once_then_looked_up(files, tmp_path):
    paths, calls = files
    first = cache.file_digests(paths + [str(tmp_path / "missing.bin")])
    assert first[:4] == [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
    assert first[4] is None and len(calls) == 4
    cache._digest_memo.clear()  # a new process: the index on disk answers
    assert cache.file_digests(paths) == first[:4] and len(calls) == 4


def test_a_changed_file_is_hashed_again(files, monkeypatch):
    paths, calls = files
    before = cache.file_digests(paths)
    with open(paths[2], "wb") as fh:
        fh.write(b"new content")
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = cache.file_digests(paths)
    assert after[2] == hashlib.sha256(b"new content").hexdigest() != before[2]
    assert after[:2] == before[:2] and calls[4:] == [os.path.realpath(paths[2])]
    monkeypatch.setenv("BENCH_REHASH", "1")
    cache.file_digests(paths)
    assert len(calls) == 9  # everything, when asked


def test_a_name_that_is_not_utf8_is_hashed_and_remembered(files, tmp_path):
    """The index keeps a path as its bytes: a Latin-1 name (as old archives hold) works."""
    paths, calls = files
    odd = os.path.join(os.fsdecode(bytes(tmp_path)), os.fsdecode(b"caf\xe9.bin"))
    with open(odd, "wb") as fh:
        fh.write(b"latin-1 named")
    want = hashlib.sha256(b"latin-1 named").hexdigest()
    assert cache.file_digests([odd]) == [want] and len(calls) == 1
    cache._digest_memo.clear()  # a new process: the index on disk answers, no new hash
    assert cache.file_digests([odd]) == [want] and len(calls) == 1
