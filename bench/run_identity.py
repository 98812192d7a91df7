"""What decides a result, so that a leaderboard row is never replaced by another configuration.

A run's identity is everything its numbers depend on that the user chose: the detector and
its addons, every resolved option (preset, config file, --opt, --epochs and --batch-size
all end up there), the training set, the test sets and the per-class cap. Its short hash
(``config``) keys a leaderboard row; the seed is kept beside it, so the runs of one
configuration with several seeds make one row (mean ± std over seeds). Device, workers
and the row's display name are not part of it: they do not change what is measured.

When several configurations share a label and training set, each row's label gets the
settings that tell it apart ("nsnet (lr=0.0001)", "univfd (nullspace.fixed_k=64)").
Stdlib only: the leaderboard imports this at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

#: Bump when the meaning of an identity field changes.
IDENTITY_VERSION = 1


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def make_identity(
    detector: str,
    addons: list[str],
    options: dict[str, dict[str, Any]],
    train: str | None,
    test_sets: list[tuple[str, str]],
    max_per_class: int | None,
) -> dict[str, Any]:
    """The identity of a run (see the module docstring); paths are made absolute."""
    return _jsonable(
        {
            "version": IDENTITY_VERSION,
            "label": "+".join([detector, *addons]),
            "detector": detector,
            "addons": list(addons),
            "options": {name: dict(opts) for name, opts in options.items()},
            "train": os.path.abspath(train) if train else None,
            "test": [[name, os.path.abspath(path)] for name, path in test_sets],
            "max_per_class": max_per_class,
        }
    )


def config_key(identity: dict[str, Any]) -> str:
    """10 hex digits of sha256 over the identity's canonical JSON."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:10]


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    """Settings by the name a label shows: detector options bare, addon options dotted."""
    flat: dict[str, Any] = {}
    detector = identity.get("detector")
    for component, opts in (identity.get("options") or {}).items():
        for key, value in opts.items():
            flat[key if component == detector else f"{component}.{key}"] = value
    flat["train"] = identity.get("train")
    flat["test"] = "+".join(name for name, _ in identity.get("test") or [])
    flat["test paths"] = [path for _, path in identity.get("test") or []]
    flat["max_per_class"] = identity.get("max_per_class")
    return flat


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(show_value(v) for v in value) + "]"
    if value is None:
        return "none"
    return str(value)


def differences(identities: list[dict[str, Any]]) -> list[str]:
    """For each identity, "k=v, ..." of the settings in which the group's identities differ."""
    flats = [_flat(i) for i in identities]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
    if "test" in differing and "test paths" in differing:
        differing.remove("test paths")
    return [", ".join(f"{k}={show_value(f.get(k))}" for k in differing) for f in flats]
