"""A run's data: test sets named and kept apart, every listing logged, seen generators found.

Each ``--test`` entry is a data set with a name (its folder, or ``NAME=PATH``); a
generator is (set, folder), so two sets with a ``Midjourney`` folder give two generators.
Reading happens before the run folder exists: a bad path fails with nothing written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.text import printable


def parse_test_entry(text: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a plain path (even one containing "=") -> (None, path)."""
    if "=" in text and not os.path.exists(os.path.expanduser(text)):
        name, _, path = text.partition("=")
        if name.strip() and "/" not in name and os.sep not in name and path:
            return name.strip(), path
    return None, text


def name_test_sets(entries: list[str]) -> list[tuple[str, str]]:
    """(name, absolute path) per test entry; derived names made unique with parent folders."""
    from bench.data.layouts import display_name

    parsed = [parse_test_entry(e) for e in entries]
    paths = [os.path.abspath(os.path.expanduser(p)) for _, p in parsed]
    names = [n or display_name(p) for (n, _), p in zip(parsed, paths, strict=True)]
    explicit = [n for n, _ in parsed if n]
    for n in explicit:
        if explicit.count(n) > 1:
            raise BenchError(f"two --test sets are both named '{n}'; give each its own name")
    for i, ((given, _), path) in enumerate(zip(parsed, paths, strict=True)):
        if given or names.count(names[i]) == 1:
            continue
        parts = Path(path).parts
        for k in range(2, len(parts) + 1):
            candidate = "/".join(parts[-k:])
            others = [
                "/".join(Path(p).parts[-k:])
                for j, p in enumerate(paths)
                if j != i and not parsed[j][0]
            ]
            if candidate not in others and candidate not in explicit:
                names[i] = candidate
                break
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise BenchError(f"--test names {printable(dup)} twice")
    return list(zip(names, paths, strict=True))


@dataclass
class RunData:
    train: Any = None  # Listing or None
    tests: list[Any] = field(default_factory=list)  # Listing per test set
    train_samples: list[Any] = field(default_factory=list)
    test_samples: list[Any] = field(default_factory=list)

    @property
    def test_sets(self) -> list[tuple[str, str]]:
        return [(t.name, t.root) for t in self.tests]


def read_data(train: str | None, tests: list[str], max_per_class: int | None, seed: int) -> RunData:
    """List the training set (its train split) and every test set (its test split)."""
    from bench.data.layouts import list_dataset, sample_per_class

    data = RunData()
    if train:
        data.train = list_dataset(train, "train")
        data.train_samples = data.train.samples
    for name, path in name_test_sets(tests):
        listing = list_dataset(path, "test", name=name)
        listing.root = path
        data.tests.append(listing)
        data.test_samples.extend(listing.samples)
    if max_per_class:
        data.train_samples = sample_per_class(data.train_samples, max_per_class, seed=seed)
        data.test_samples = sample_per_class(data.test_samples, max_per_class, seed=seed)
    return data


def log_listings(data: RunData, log: Any) -> None:
    """One summary line per data set (counts per reason of what was not read), and its notes."""
    for listing in ([data.train] if data.train else []) + data.tests:
        log(f"listed {listing.summary()}")
        for note in listing.notes:
            log(f"  {note}")


def listed_entries(data: RunData) -> list[tuple[str, str, str]]:
    """(split, path, reason) of every entry the listings did not read, for skipped.txt."""
    return [
        (listing.role, path, reason)
        for listing in ([data.train] if data.train else []) + data.tests
        for path, reason in listing.skipped
    ]


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def seen_columns(data: RunData, declared: list[str]) -> list[tuple[str, str]]:
    """Test (set, generator) pairs seen in training: by name, or named with ``--seen``.

    A test generator counts as seen when its folder name matches (case and punctuation
    aside) a generator of the training set, or a ``--seen`` entry (``NAME`` for that name
    in any set, ``SET/NAME`` for one set).
    """
    trained = {_norm(s.generator) for s in data.train_samples}
    bare = {_norm(d) for d in declared if "/" not in d}
    qualified = {_norm(d) for d in declared if "/" in d}
    found = []
    for test_set, generator in sorted({(s.dataset, s.generator) for s in data.test_samples}):
        g = _norm(generator)
        if g in trained or g in bare or _norm(f"{test_set}/{generator}") in qualified:
            found.append((test_set, generator))
    return found
