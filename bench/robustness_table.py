"""`bench table` for specs with `kind = "robustness"`: a detector per row, a level per column.

The spec names its perturbations and levels (`[perturb] jpeg = [95, 75, 50, 30]`); each
row is a run with that sweep. A finished run that matches a row but lacks some levels is
swept in place (`bench sweep`, no training) rather than trained again. Cells are the
spec's metric (x100, one decimal) of one generator or the mean over generators, the clean
pass first. Stdlib and bench only at import, like the other table modules.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.perturb import format_level, resolve_sweep
from bench.table_render import DEMO_NOTE, METRIC_NAMES, RowResult, fmt, markdown_table
from bench.table_spec import TableSpec

CLEAN_COLUMN = "clean"


def level_columns(spec: TableSpec, registry: Any) -> list[str]:
    """`clean`, then NAME=LEVEL for every level of the spec, each from mild to strong."""
    sweep = resolve_sweep(registry, spec.perturb)
    columns = [CLEAN_COLUMN]
    for item in sweep.items:
        columns += [f"{item.name}={format_level(level)}" for level in item.levels]
    return columns


def ensure_sweep(run_dir: Path, run_spec: Any, progress: bool) -> tuple[Path | None, str]:
    """(the run, "") once it has every level of ``run_spec.perturb``, sweeping what it lacks.

    (None, "") when the run was swept with other options of a perturbation (a new run is
    needed); (None, "failed: ...") when the sweep fails, so the other rows still run.
    """
    import sys
    import traceback

    from bench.plugins import get_registry
    from bench.robustness import sweep_finished_run
    from bench.robustness_board import run_cells, run_records

    sweep = resolve_sweep(get_registry(), run_spec.perturb, run_spec.options, run_spec.preset)
    before = {r["name"]: r.get("options", {}) for r in run_records(run_dir)}
    if any(i.name in before and before[i.name] != i.record()["options"] for i in sweep.items):
        return None, ""
    wanted = {f"{i.name}={format_level(v)}" for i in sweep.items for v in i.levels}
    swept = (run_dir / "robustness.csv").is_file()
    if swept and wanted <= set(run_cells(run_dir, "acc", "mean")):
        return run_dir, ""
    if progress:
        print(
            f"bench table: {run_spec.label}: sweeping finished run {run_dir.name}", file=sys.stderr
        )
    try:
        sweep_finished_run(
            run_dir,
            run_spec.perturb,
            run_spec.options,
            device=run_spec.device,
            workers=run_spec.workers,
            progress=progress,
        )
    except Exception as exc:  # one failing sweep must not cost the other rows
        if not isinstance(exc, BenchError):
            traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"failed: sweep of {run_dir.name}: {message}"
    return run_dir, ""


def _cells(spec: TableSpec, result: RowResult, out_dir: Path, columns: list[str]) -> list[Any]:
    from bench.robustness_board import run_cells

    if not result.run_id:
        return [None] * len(columns)
    values = run_cells(out_dir / "runs" / result.run_id, spec.metric, spec.generator)
    out = []
    for column in columns:
        value = values.get(column)
        out.append(None if value is None or math.isnan(value) else 100.0 * value)
    return out


def render_robustness(
    spec: TableSpec,
    preset_name: str,
    train_name: str,
    results: list[RowResult],
    registry: Any,
    out_dir: Path,
) -> list[Path]:
    """Write OUT/<name>.csv and OUT/<name>.md: a row per detector, a column per level."""
    columns = level_columns(spec, registry)
    lines = [(r, _cells(spec, r, out_dir, columns)) for r in results]
    head = ["method", *columns]
    body = [[r.row.label, *(fmt(c) for c in cells)] for r, cells in lines]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*head, "run_id", "note"])
    for (result, _), row in zip(lines, body, strict=True):
        writer.writerow([*row, result.run_id or "", result.note])
    where = "mean over generators" if spec.generator == "mean" else f"generator {spec.generator}"
    at = " at threshold 0.5" if "acc" in spec.metric else ""
    footer = [
        f"Trained on `{train_name}`; cells: {METRIC_NAMES[spec.metric]} (%){at}, {where}.",
        "Each column is one pass over the test sets: `clean`, then each perturbation "
        "level (`NAME=LEVEL`, mild to strong) applied to every image before the "
        "detector's own preprocessing; the detector is trained once.",
        *(f"{r.row.label}: {r.note}" for r in results if r.note),
    ]
    runs = [f"{r.row.label} = runs/{r.run_id}" for r in results if r.run_id]
    if runs:
        footer.append("Runs: " + ", ".join(runs) + ".")
    parts = [
        f"# {spec.title} ({preset_name} preset)",
        DEMO_NOTE if preset_name == "demo" else "",
        markdown_table(head, body, 1),
        "\n".join(f"- {f}" for f in footer),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{spec.name}.csv", out_dir / f"{spec.name}.md"
    csv_path.write_text(buf.getvalue(), encoding="utf-8")
    md_path.write_text("\n\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return [csv_path, md_path]
