"""Which (test set, generator) each column of a table spec shows: names as users type them.

A spec column lists one or more aliases, ``"SET/GENERATOR"`` or a bare ``"GENERATOR"``
(any set); the first alias that matches a generator present in the data wins. Matching
ignores case and the separators ``-``, ``_``, ``.`` and space (``Glide`` = ``GLIDE``,
``stable-diffusion-v-1-4`` = ``stable_diffusion_v_1_4``); version suffixes need an alias
(``["AIGIBench/Midjourney-V6", "AIGIBench/Midjourney"]``). A column that matches nothing is
an error naming the nearest generators; one alias matching two generators is an error too.
"""

from __future__ import annotations

import difflib
import re

from bench.errors import BenchError
from bench.text import printable

Key = tuple[str, str]  # (test set, generator)


def norm(name: str) -> str:
    return re.sub(r"[-_. ]", "", name.lower())


def _matches(alias: str, available: list[Key]) -> list[Key]:
    set_part, slash, gen_part = alias.rpartition("/")
    found = []
    for test_set, generator in available:
        if slash and norm(set_part) != norm(test_set):
            continue
        if norm(gen_part) == norm(generator):
            found.append((test_set, generator))
    return found


def resolve_columns(
    columns: dict[str, list[str]], available: list[Key], where: str, allow_missing: bool = False
) -> tuple[list[tuple[str, Key | None]], list[str]]:
    """(shown name, matched key or None) per column, and a note per column left empty."""
    resolved: list[tuple[str, Key | None]] = []
    notes: list[str] = []
    for shown, aliases in columns.items():
        match: Key | None = None
        for alias in aliases:
            found = _matches(alias, available)
            if len(found) > 1:
                names = ", ".join(printable(f"{s}/{g}") for s, g in found)
                raise BenchError(
                    f"{where}: column '{shown}' ('{alias}') matches {names}; name the set"
                )
            if found:
                match = found[0]
                break
        if match is None:
            near = _near(aliases, available)
            hint = f"; nearest: {', '.join(printable(n) for n in near)}" if near else ""
            message = (
                f"column '{shown}' ({' or '.join(aliases)}) matches no generator in the test "
                f"sets{hint}"
            )
            if not allow_missing:
                raise BenchError(
                    f"{where}: {message} (add an alias to the spec, or --allow-missing)"
                )
            notes.append(message)
        resolved.append((shown, match))
    return resolved, notes


def _near(aliases: list[str], available: list[Key]) -> list[str]:
    """Up to three generators named like the first alias, from its set when it names one."""
    set_part, slash, gen_part = aliases[0].rpartition("/")
    pool = [(s, g) for s, g in available if not slash or norm(s) == norm(set_part)] or available
    by_norm = {norm(g): (s, g) for s, g in reversed(pool)}
    close = difflib.get_close_matches(norm(gen_part), list(by_norm), n=3, cutoff=0.5)
    return [f"{by_norm[c][0]}/{by_norm[c][1]}" for c in close]


def implicit_columns(keys: list[Key]) -> list[tuple[str, Key | None]]:
    """Every generator tested, in order; named bare when there is only one test set."""
    one_set = len({s for s, _ in keys}) <= 1
    return [(g if one_set else f"{s}/{g}", (s, g)) for s, g in keys]
