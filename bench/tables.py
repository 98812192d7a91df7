"""`bench table`: regenerate one of the paper's tables from a spec in benchmarks/tables/.

Each row of a spec is one `bench run`; a row whose configuration (detector, addons,
resolved options, train set, test sets, seed: ``bench.run_identity``) already has a
finished run in OUT is reused, so an interrupted table resumes and tables sharing rows
(Tables 4, 7 and 8 share NS-Net runs) train each row once.
Import-light: torch loads only when a row runs, pandas never.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from bench import leaderboard
from bench.errors import BenchError, interruption
from bench.runner import RunSpec, dataset_name, resolve_components, run
from bench.table_columns import resolve_columns
from bench.table_render import RowResult, render
from bench.table_spec import (
    PAPER_DIR,
    TablePreset,
    TableRow,
    TableSpec,
    check_components,
    load_spec,
    skip_reason,
)
from bench.text import printable

LAYOUT_DOC = "benchmarks/tables/README.md"


def run_table(
    spec_path_or_name: str | os.PathLike[str],
    preset: str = "demo",
    data_root: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    device: str = "auto",
    workers: int | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
    allow_missing: bool = False,
    plan: bool = False,
    jobs: int = 1,
    devices: list[str] | None = None,
    checkpoint_every: int | None = None,
) -> list[Path]:
    """Run the rows that are not finished yet, then write OUT/<name>.csv and OUT/<name>.md.

    plan: write the unfinished rows as `bench run` commands (OUT/plan/) instead, and
    return the scripts' paths; jobs > 1: run that many rows at once (``bench.table_plan``),
    each on the next of ``devices``, then draw the table from their runs.
    checkpoint_every: each row's run checkpoints every N steps too (``bench run`` flag).
    """
    from bench.plugins import get_registry

    spec = load_spec(spec_path_or_name)
    if preset not in spec.presets:
        known = ", ".join(spec.presets) or "none"
        raise BenchError(f"table spec {spec.name} has no '{preset}' preset (it has: {known})")
    registry = get_registry()
    check_components(spec, registry)
    chosen = spec.presets[preset]
    if spec.kind == "robustness":  # names, levels and options checked before any training
        from bench.robustness_table import level_columns

        level_columns(spec, registry)
    train, tests = fill_paths(chosen, data_root, progress, overrides or [])
    columns, missing = table_columns(spec, chosen, tests, allow_missing, progress)
    paper = paper_rows(spec) if preset == "paper" else {}  # a bad paper_row fails before training
    out_dir = Path(out) if out is not None else Path("results") / "tables" / preset
    train_name = chosen.train_name or dataset_name(train)
    common = {  # the RunSpec fields every row shares
        "train": train,
        "test": [f"{name}={path}" for name, path in tests],
        "preset": preset,
        "device": device,
        "out": str(out_dir),
        "max_per_class": chosen.max_per_class,
        "workers": workers,
        "progress": progress,
        "metric": spec.metric,
        "train_name": train_name,
        "checkpoint_every": checkpoint_every,
    }
    rows = row_specs(spec, chosen, registry, common)
    parallel = jobs > 1 or devices is not None
    if plan or parallel:
        from bench.table_plan import planned_rows, run_parallel, write_plan

        planned = planned_rows(spec, rows, out_dir, registry)
        if plan:
            return write_plan(spec, preset, out_dir, planned, progress)
        run_parallel(planned, out_dir, jobs, devices or [device], progress)
    results, failures = [], []
    for number, row, run_spec, reason in rows:
        where = f"row {number} of {len(spec.rows)} ({row.label})"
        if reason:
            log(f"{where}: skipped: {reason}", progress)
            results.append(RowResult(row, note=f"skipped: {reason}"))
            continue
        result = run_row(row, run_spec, out_dir, registry, progress, where, start=not parallel)
        if result.note:
            failures.append(f"{row.label}: {result.note}")
        results.append(result)
    if spec.kind == "robustness":
        from bench.robustness_table import render_robustness

        paths = render_robustness(spec, preset, train_name, results, registry, out_dir)
    else:
        paths = render(spec, preset, train_name, results, paper, out_dir, columns, missing)
    if failures:
        raise BenchError(
            f"{len(failures)} row(s) of {spec.name} failed ({'; '.join(failures)}); "
            f"the other rows are in {paths[1]}"
        )
    return paths


def row_specs(
    spec: TableSpec, chosen: TablePreset, registry: Any, common: dict[str, Any]
) -> list[tuple[int, TableRow, RunSpec | None, str | None]]:
    """(number, row, its RunSpec, None) per row; (number, row, None, why) for a row skipped.

    common: the RunSpec fields every row shares (data, device, out, ...)."""
    out = []
    for number, row in enumerate(spec.rows, start=1):
        reason = skip_reason(row, registry) if row.unavailable else None
        if reason:
            out.append((number, row, None, reason))
            continue
        run_spec = RunSpec(
            detector=row.detector,
            addons=list(row.addons),
            options={k: dict(v) for k, v in row.options.items()},
            name=row.label,
            seen=list(chosen.seen),
            perturb={k: dict(v) for k, v in spec.perturb.items()},
            **{**common, "test": list(common["test"])},
        )
        out.append((number, row, run_spec, None))
    return out


def table_columns(
    spec: TableSpec,
    preset: TablePreset,
    tests: list[tuple[str, str]],
    allow_missing: bool,
    progress: bool,
) -> tuple[list[tuple[str, tuple[str, str] | None]] | None, list[str]]:
    """The spec's columns matched against the generators the test sets hold (listed now).

    Listing first means a column that matches nothing, or a test set in the wrong layout,
    stops the table in seconds, before any training.
    """
    from bench.data.layouts import list_dataset

    if not preset.columns:
        return None, []
    available: list[tuple[str, str]] = []
    for name, path in tests:
        listing = list_dataset(path, "test", name=name)
        log(f"test set {listing.summary()}", progress)
        available.extend((name, g) for g in listing.generators())
    return resolve_columns(preset.columns, available, f"table spec {spec.path.name}", allow_missing)


def run_row(
    row: TableRow,
    spec: RunSpec,
    out_dir: Path,
    registry: Any,
    progress: bool,
    where: str = "",
    start: bool = True,
) -> RowResult:
    """Reuse a finished run, resume a stopped one or start one; a failing row is reported,
    not fatal to the table. start=False: only reuse (the rows ran in parallel already)."""
    from bench.run_resume import unfinished_run

    where = where or row.label
    run_dir = reusable_run(out_dir, spec, registry)
    if run_dir is None and not start:
        return RowResult(row, note="failed: see its log in plan/logs/")
    if run_dir is not None and spec.perturb:
        from bench.robustness_table import ensure_sweep

        run_dir, note = ensure_sweep(run_dir, spec, progress)
        if note:
            return RowResult(row, note=note)
    if run_dir is not None:
        log(f"{where}: reusing finished run {run_dir.name}", progress)
    else:
        stopped = unfinished_run(out_dir, row_key(spec, registry), spec.seed)
        what = f"resuming {stopped.name}" if stopped else "running"
        log(f"{where}: {what} {'+'.join([spec.detector, *spec.addons])}", progress)
        try:
            run_dir = run(spec, registry, resume=stopped) if stopped else run(spec, registry)
        except Exception as exc:  # one broken detector must not cost the other rows
            stop = interruption(exc)
            if stop is not None:  # Ctrl-C or SIGTERM: stop the table, not just this row
                raise stop from exc
            if not isinstance(exc, BenchError):
                traceback.print_exc()  # a bug, not bad input: keep what is needed to fix it
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return RowResult(row, note=f"failed: {message}")
    return RowResult(row, read_scores(run_dir), run_dir.name)


def log(message: str, progress: bool = True) -> None:
    if progress:
        print(f"bench table: {printable(message)}", file=sys.stderr)


def _fill(path: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        path = path.replace(key, value)
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise BenchError(f"data set path does not exist: {full} (layout in {LAYOUT_DOC})")
    return full


def fill_paths(
    preset: TablePreset,
    data_root: str | os.PathLike[str] | None,
    progress: bool,
    overrides: list[str] | None = None,
) -> tuple[str, list[tuple[str, str]]]:
    """Absolute train and (name, test path) with `{data_root}` / `{demo_root}` filled in.

    ``overrides`` ("NAME=PATH", NAME a test set's name or "train") replace a preset path.
    """
    from bench.data.layouts import display_name

    given: dict[str, str] = {}
    for text in overrides or []:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise BenchError(f"--set expects NAME=PATH, got {text!r}")
        given[name] = os.path.abspath(os.path.expanduser(path))
    names = ["train"] + [name or display_name(path) for name, path in preset.test]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise BenchError(f"--set {unknown[0]}: not a data set of this preset ({', '.join(names)})")
    templates = [preset.train, *(path for _, path in preset.test)]
    pending = [t for n, t in zip(names, templates, strict=True) if n not in given]
    values = {}
    if any("{data_root}" in p for p in pending):
        if data_root is None:
            raise BenchError(
                f"this preset needs --data-root DIR (the folder holding the data sets; "
                f"layout in {LAYOUT_DOC})"
            )
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise BenchError(f"--data-root {root} is not an existing folder")
        values["{data_root}"] = str(root)
    if any("{demo_root}" in p for p in pending):
        values["{demo_root}"] = str(demo_root(progress))
    filled = [
        given[n] if n in given else _fill(t, values) for n, t in zip(names, templates, strict=True)
    ]
    for path in given.values():
        if not os.path.exists(path):
            raise BenchError(f"--set path does not exist: {path}")
    tests = [
        (name or display_name(path), path)
        for (name, _), path in zip(preset.test, filled[1:], strict=True)
    ]
    return filled[0], tests


def demo_root(progress: bool) -> Path:
    try:
        from bench.demo import build_demo
    except ImportError:
        raise BenchError("the embedded demo benchmark is not available in this install") from None
    return Path(build_demo(progress=progress))


def reusable_run(out_dir: Path, spec: RunSpec, registry: Any) -> Path | None:
    """The finished run in OUT's index with this row's configuration and seed, if any."""
    key = row_key(spec, registry)
    for entry in leaderboard.read_index(out_dir):
        if (entry.get("config"), entry.get("seed")) != (key, str(spec.seed)):
            continue
        run_dir = leaderboard.run_dir(out_dir, entry["run_id"])
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if config.get("status") == "finished" and (run_dir / "metrics.csv").is_file():
            return run_dir
    return None


def row_key(spec: RunSpec, registry: Any) -> str:
    """The configuration key a row's run has (``bench.run_identity``)."""
    from bench.run_data import name_test_sets
    from bench.run_identity import config_key
    from bench.runner import identity_of

    resolved = resolve_components(registry, spec)
    return config_key(identity_of(spec, resolved, name_test_sets(spec.test)))


def read_scores(run_dir: Path) -> dict[tuple[str, str], dict[str, float]]:
    """metrics.csv's generator rows as {(test set, generator): {column: value}}; NaN if empty."""
    from bench.results_io import read_metrics

    return {
        (r.test_set, r.generator): r.values
        for r in read_metrics(run_dir / "metrics.csv")
        if r.kind == "generator"
    }


def paper_rows(spec: TableSpec) -> dict[str, tuple[dict[str, str], str]]:
    """{row label: (the paper's row, its mean column)} for rows that name a `paper_row`."""
    if spec.paper_table is None:
        return {}
    with open(PAPER_DIR / "index.csv", newline="", encoding="utf-8") as fh:
        info = next(r for r in csv.DictReader(fh) if r["table"] == str(spec.paper_table))
    with open(PAPER_DIR / info["file"], newline="", encoding="utf-8") as fh:
        printed = list(csv.DictReader(fh))
    found = {}
    for row in spec.rows:
        if row.paper_row:
            found[row.label] = (paper_row(spec, row, printed, info["file"]), info["mean_column"])
    return found


def paper_row(
    spec: TableSpec, row: TableRow, printed: list[dict[str, str]], file: str
) -> dict[str, str]:
    """The printed row `row.paper_row`; a "+" row is told apart by its base's paper row."""
    base = spec.row(row.base).paper_row if row.base else None
    matches = [
        p
        for p in printed
        if p["method"] == row.paper_row and ("base" not in p or (p["base"] or None) == base)
    ]
    if len(matches) != 1:
        raise BenchError(
            f"table spec {spec.name}, row '{row.label}': paper_row '{row.paper_row}' matches "
            f"{len(matches)} rows of {file}"
        )
    return matches[0]
