"""Every run-level value checked before any work: one line naming the flag, exit status 2.

Flags and config-file keys reach the runner through one RunSpec, so both are checked
here, once, before a data set is listed, a model is built or a run folder exists.
Import-light (stdlib only): the CLI calls this before torch is imported.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from bench.errors import BenchError

#: (flag, config key, smallest, largest) of the integer settings of a run.
INT_LIMITS = {
    "batch_size": ("--batch-size", 1, 2**20),
    "epochs": ("--epochs", 1, 100_000),
    "workers": ("--workers", 0, 256),
    "seed": ("--seed", 0, 2**32 - 1),
    "max_per_class": ("--max-per-class", 1, 2**31 - 1),
    "checkpoint_every": ("--checkpoint-every", 1, 2**31 - 1),
}
METRICS = ("acc", "r_acc", "f_acc", "ap", "auc")
#: Run-level precisions (``--precision``); None leaves it to the detector and the device.
PRECISIONS = ("bf16", "fp32")
DEVICE_FORM = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,3})?")
#: Keys a --config file may hold, and the type each must have.
CONFIG_TYPES: dict[str, str] = {
    "detector": "str",
    "addons": "names",
    "train": "str",
    "test": "paths",
    "options": "options",
    "preset": "str",
    "device": "str",
    "batch_size": "int",
    "epochs": "int",
    "out": "str",
    "seed": "int",
    "max_per_class": "int",
    "workers": "int",
    "metric": "str",
    "precision": "str",
    "name": "str",
    "seeds": "ints",
    "seen": "names",
    "perturb": "any",  # checked by bench.perturb.perturb_from_config
    "plots": "bool",
    "checkpoint_every": "int",
    "log_with": "str",
    "train_name": "str",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_path_entry(value: Any) -> bool:
    """A test entry: a path, or a table naming the set ({ name = ..., path = ... })."""
    if isinstance(value, dict):
        return set(value) == {"name", "path"} and all(isinstance(v, str) for v in value.values())
    return isinstance(value, str)


def check_int(key: str, value: Any) -> None:
    flag, low, high = INT_LIMITS[key]
    where = f"{flag} ({key})"
    if not _is_int(value):
        raise BenchError(f"{where} must be a whole number, got {_shown(value)}")
    if not low <= value <= high:
        raise BenchError(f"{where} must be from {low} to {high}, got {value}")


def check_device(value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_FORM.fullmatch(value.strip()):
        raise BenchError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {_shown(value)}")
    return value.strip()


def check_config(cfg: dict[str, Any], source: str) -> None:
    """A --config file's shape: known keys, each of the right type (values checked later)."""
    unknown = sorted(set(cfg) - set(CONFIG_TYPES))
    if unknown:
        raise BenchError(
            f"unknown key(s) in {source}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(CONFIG_TYPES))})"
        )
    for key, value in cfg.items():
        kind = CONFIG_TYPES[key]
        ok = {
            "str": lambda v: isinstance(v, str),
            "int": _is_int,
            "bool": lambda v: isinstance(v, bool),
            "any": lambda v: True,
            "names": lambda v: (
                isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
            ),
            "paths": lambda v: (
                isinstance(v, str) or (isinstance(v, list) and all(_is_path_entry(x) for x in v))
            ),
            "ints": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
            "options": lambda v: (
                isinstance(v, dict) and all(isinstance(t, dict) for t in v.values())
            ),
        }[kind](value)
        if not ok:
            wanted = {
                "str": "a string",
                "int": "a whole number",
                "bool": "true or false",
                "any": "anything",
                "names": "a name or a list of names",
                "paths": "a path or a list of paths (or of { name = ..., path = ... })",
                "ints": "a list of whole numbers",
                "options": "tables [options.COMPONENT] of key = value",
            }[kind]
            raise BenchError(f"{source}: '{key}' must be {wanted}, got {_shown(value)}")


def check_spec(spec: Any) -> None:
    """The run-level values of a RunSpec (flags and config alike)."""
    if not isinstance(spec.detector, str) or not spec.detector:
        raise BenchError(f"--detector must be a name, got {_shown(spec.detector)}")
    if not all(isinstance(a, str) and a for a in spec.addons):
        raise BenchError(f"--addon must be a name, got {_shown(spec.addons)}")
    for key in ("train", "preset", "name"):
        value = getattr(spec, key)
        if value is not None and not isinstance(value, str):
            raise BenchError(f"--{key} must be a string, got {_shown(value)}")
    if not all(isinstance(t, str) and t for t in spec.test):
        raise BenchError(f"--test must be a path, got {_shown(spec.test)}")
    if not isinstance(spec.options, dict) or not all(
        isinstance(v, dict) for v in spec.options.values()
    ):
        raise BenchError(f"options must map component -> {{key: value}}, got {spec.options!r}")
    spec.device = check_device(spec.device)
    for key in INT_LIMITS:
        value = getattr(spec, key)
        if value is not None or key == "seed":
            check_int(key, value)
    if spec.precision is not None and spec.precision not in PRECISIONS:
        raise BenchError(
            f"--precision must be one of {', '.join(PRECISIONS)}, got {_shown(spec.precision)}"
        )
    if spec.metric not in METRICS:
        raise BenchError(f"--metric must be one of {', '.join(METRICS)}, got {_shown(spec.metric)}")
    if not isinstance(spec.out, str) or not spec.out:
        raise BenchError(f"--out must be a folder path, got {_shown(spec.out)}")
    from bench.tracking import check_log_with

    check_log_with(spec.log_with)


def check_preset(spec: Any, entries: list[Any], known: set[str]) -> None:
    """A preset the user names must be defined by a component of the run."""
    preset = spec.preset
    if preset is None:
        return
    defined = sorted({p for e in entries for p in e.presets})
    if preset in defined:
        return
    close = difflib.get_close_matches(preset, sorted(known | set(defined)), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    names = ", ".join(e.name for e in entries)
    have = f"they define: {', '.join(defined)}" if defined else "they define none"
    raise BenchError(f"unknown preset '{preset}' for {names}{hint} ({have})")


def check_out(out: str) -> None:
    """--out must be a folder (or creatable as one) that this user can write into."""
    path = Path(os.path.abspath(os.path.expanduser(out)))
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise BenchError(f"--out {out}: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"is under {probe}, which is a file"
        raise BenchError(f"--out {out} {where}, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"--out {out}: no permission to write in {probe}")
