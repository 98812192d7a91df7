"""`bench table`: regenerate one of the paper's tables from a spec in benchmarks/tables/.

Each row of a spec is one `bench run`; rows already finished in OUT with the same label,
train set, options, addons and test sets are reused, so an interrupted table resumes and
tables sharing rows (Tables 4, 7 and 8 share NS-Net runs) train each row once.
Import-light: torch loads only when a row runs, pandas never.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from bench import leaderboard
from bench.errors import BenchError
from bench.runner import RunSpec, dataset_name, resolve_components, run
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

LAYOUT_DOC = "benchmarks/tables/README.md"


def run_table(
    spec_path_or_name: str | os.PathLike[str],
    preset: str = "demo",
    data_root: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    device: str = "auto",
    workers: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Run the rows that are not finished yet, then write OUT/<name>.csv and OUT/<name>.md."""
    from bench.plugins import get_registry

    spec = load_spec(spec_path_or_name)
    if preset not in spec.presets:
        known = ", ".join(spec.presets) or "none"
        raise BenchError(f"table spec {spec.name} has no '{preset}' preset (it has: {known})")
    registry = get_registry()
    check_components(spec, registry)
    if spec.kind == "robustness":  # names, levels and options checked before any training
        from bench.robustness_table import level_columns

        level_columns(spec, registry)
    train, tests = fill_paths(spec.presets[preset], data_root, progress)
    check_generator_names(tests)
    paper = paper_rows(spec) if preset == "paper" else {}  # a bad paper_row fails before training
    out_dir = Path(out) if out is not None else Path("results") / "tables" / preset
    train_name = spec.presets[preset].train_name or dataset_name(train)
    results, failures = [], []
    for row in spec.rows:
        reason = skip_reason(row, registry) if row.unavailable else None
        if reason:
            results.append(RowResult(row, note=f"skipped: {reason}"))
            continue
        run_spec = RunSpec(
            detector=row.detector,
            addons=list(row.addons),
            train=train,
            test=list(tests),
            options={k: dict(v) for k, v in row.options.items()},
            preset=preset,
            device=device,
            out=str(out_dir),
            max_per_class=spec.presets[preset].max_per_class,
            workers=workers,
            progress=progress,
            metric=spec.metric,
            train_name=train_name,
            name=row.label,
            perturb={k: dict(v) for k, v in spec.perturb.items()},
        )
        result = run_row(row, run_spec, out_dir, registry, progress)
        if result.note:
            failures.append(f"{row.label}: {result.note}")
        results.append(result)
    if spec.kind == "robustness":
        from bench.robustness_table import render_robustness

        paths = render_robustness(spec, preset, train_name, results, registry, out_dir)
    else:
        paths = render(spec, preset, train_name, results, paper, out_dir)
    if failures:
        raise BenchError(
            f"{len(failures)} row(s) of {spec.name} failed ({'; '.join(failures)}); "
            f"the other rows are in {paths[1]}"
        )
    return paths


def run_row(
    row: TableRow, spec: RunSpec, out_dir: Path, registry: Any, progress: bool
) -> RowResult:
    """Reuse a finished run or start one; a failing row is reported, not fatal to the table."""
    run_dir = reusable_run(out_dir, spec, registry)
    if run_dir is not None and spec.perturb:
        from bench.robustness_table import ensure_sweep

        run_dir, note = ensure_sweep(run_dir, spec, progress)
        if note:
            return RowResult(row, note=note)
    if run_dir is not None:
        log(f"{row.label}: reusing finished run {run_dir.name}", progress)
    else:
        log(f"{row.label}: running {'+'.join([spec.detector, *spec.addons])}", progress)
        try:
            run_dir = run(spec, registry)
        except Exception as exc:  # one broken detector must not cost the other rows
            if not isinstance(exc, BenchError):
                traceback.print_exc()  # a bug, not bad input: keep what is needed to fix it
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return RowResult(row, note=f"failed: {message}")
    return RowResult(row, read_scores(run_dir), run_dir.name)


def log(message: str, progress: bool = True) -> None:
    if progress:
        print(f"bench table: {message}", file=sys.stderr)


def fill_paths(
    preset: TablePreset, data_root: str | os.PathLike[str] | None, progress: bool
) -> tuple[str, list[str]]:
    """Absolute train and test paths with `{data_root}` / `{demo_root}` filled in, all present."""
    paths = [preset.train, *preset.test]
    values = {}
    if any("{data_root}" in p for p in paths):
        if data_root is None:
            raise BenchError(
                f"this preset needs --data-root DIR (the folder holding the data sets; "
                f"layout in {LAYOUT_DOC})"
            )
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise BenchError(f"--data-root {root} is not an existing folder")
        values["{data_root}"] = str(root)
    if any("{demo_root}" in p for p in paths):
        values["{demo_root}"] = str(demo_root(progress))
    filled = []
    for path in paths:
        for key, value in values.items():
            path = path.replace(key, value)
        full = os.path.abspath(os.path.expanduser(path))
        if not os.path.exists(full):
            raise BenchError(f"data set path does not exist: {full} (layout in {LAYOUT_DOC})")
        filled.append(full)
    return filled[0], filled[1:]


def demo_root(progress: bool) -> Path:
    try:
        from bench.demo import build_demo
    except ImportError:
        raise BenchError("the embedded demo benchmark is not available in this install") from None
    return Path(build_demo(progress=progress))


def check_generator_names(tests: list[str]) -> None:
    """Generators are named by their folder: two test sets must not share a folder name."""
    seen: dict[str, str] = {}
    for test in tests:
        if not os.path.isdir(test):
            continue
        for entry in sorted(os.scandir(test), key=lambda e: e.name):
            if entry.is_dir() and not entry.name.startswith("."):
                if entry.name in seen:
                    raise BenchError(
                        f"generator folder '{entry.name}' is in both {seen[entry.name]} and "
                        f"{test}; their images would be pooled: rename or link one "
                        f"(see {LAYOUT_DOC})"
                    )
                seen[entry.name] = test


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def reusable_run(out_dir: Path, spec: RunSpec, registry: Any) -> Path | None:
    """The finished run in OUT's index for this row, if it was made exactly this way."""
    entry = next(
        (
            e
            for e in leaderboard.read_index(out_dir)
            if (e.get("label"), e.get("train")) == (spec.label, spec.train_name)
        ),
        None,
    )
    if entry is None:
        return None
    run_dir = leaderboard.run_dir(out_dir, entry["run_id"])
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if config.get("status") != "finished" or not (run_dir / "metrics.csv").is_file():
        return None
    resolved = resolve_components(registry, spec)
    wanted = {
        "detector": {"name": spec.detector, "options": resolved.detector_options},
        "addons": [
            {"name": n, "options": o}
            for n, o in zip(spec.addons, resolved.addon_options, strict=True)
        ],
    }
    if _jsonable(wanted) != _jsonable({k: config.get(k) for k in wanted}):
        return None
    old = config.get("spec", {})
    same_data = old.get("train") == spec.train and set(spec.test) <= set(old.get("test", []))
    same_sampling = (old.get("seed"), old.get("max_per_class")) == (spec.seed, spec.max_per_class)
    return run_dir if same_data and same_sampling else None


def read_scores(run_dir: Path) -> dict[str, dict[str, float]]:
    """metrics.csv as {generator: {column: value}}; empty cells are NaN."""
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as fh:
        return {
            row["generator"]: {
                k: float(v) if v != "" else math.nan for k, v in row.items() if k != "generator"
            }
            for row in csv.DictReader(fh)
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
