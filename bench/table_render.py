"""Drawing a regenerated table in the paper's layout: cells x100 at one decimal, the mean last.

Plug-and-play rows show their change against their "without" row on the mean, as the
paper prints it ("80.7 (+13.9)"); the paper preset interleaves the paper's own rows.
Stdlib only, so `bench table` starts fast and the output is byte-stable for golden tests.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from bench.table_spec import TableRow, TableSpec
from bench.text import csv_cell, md_cell

MISSING = "–"
METRIC_NAMES = {"acc": "Acc", "r_acc": "R.Acc", "f_acc": "F.Acc", "ap": "AP", "auc": "AUC"}
DEMO_NOTE = (
    "**Demo preset: small-scale numbers, not the paper's.** Trained and tested on the "
    "embedded demo benchmark (`bench data demo`) with random-weight backbones and each "
    "component's `demo` options. They check the whole pipeline and show relative effects "
    "at small scale; they are not comparable with the paper's numbers."
)


Key = tuple[str, str]  # (test set, generator)
Columns = list[tuple[str, Key | None]]  # (shown name, the generator it shows, or None)


@dataclass
class RowResult:
    """What one row produced: per-generator metrics, or a note saying why there are none."""

    row: TableRow
    scores: dict[Key, dict[str, float]] | None = None  # (set, generator) -> metrics.csv row
    run_id: str | None = None
    note: str = ""


@dataclass
class Line:
    """One drawn row: its source, label, switch marks, cells (None = missing) and mean."""

    source: str
    label: str
    switches: list[str]
    cells: list[float | None]
    mean: float | None
    delta: str = ""
    run_id: str = ""
    note: str = ""


def columns_for(columns: Columns | None, results: list[RowResult]) -> Columns:
    """The spec's matched columns, else every generator a run tested (first seen first)."""
    from bench.table_columns import implicit_columns

    if columns is not None:
        return columns
    seen: dict[Key, None] = {}
    for result in results:
        seen.update(dict.fromkeys(result.scores or {}))
    return implicit_columns(list(seen))


def _value(scores: dict[str, float], metric: str) -> float | None:
    value = scores.get(metric)
    return None if value is None or math.isnan(value) else 100.0 * value


def pooled_real(scores: dict[Key, dict[str, float]], generators: list[Key | None]) -> float | None:
    """R.Acc over all real images of the shown generators (the paper prints one Real cell)."""
    hits = total = 0.0
    for generator in generators:
        row = scores.get(generator, {}) if generator else {}
        n_real, r_acc = row.get("n_real", 0.0), row.get("r_acc", math.nan)
        if n_real and not math.isnan(r_acc):
            hits += n_real * r_acc
            total += n_real
    return 100.0 * hits / total if total else None


def mean_of(cells: list[float | None]) -> float | None:
    present = [c for c in cells if c is not None]
    return sum(present) / len(present) if present else None


def our_line(spec: TableSpec, result: RowResult, columns: Columns) -> Line:
    scores = result.scores or {}
    cells = [_value(scores[g], spec.metric) if g in scores else None for _, g in columns]
    if spec.real_column:
        cells.insert(0, pooled_real(scores, [g for _, g in columns]) if scores else None)
    return Line(
        source="ours",
        label=result.row.label,
        switches=[mark(result.row.switches[s]) for s in spec.switches],
        cells=cells,
        mean=mean_of(cells),
        run_id=result.run_id or "",
        note=result.note,
    )


def paper_line(
    spec: TableSpec,
    row: TableRow,
    paper: dict[str, str],
    mean_key: str,
    columns: Columns,
) -> Line:
    """The paper's printed row under our columns (shown names are the paper's names)."""
    names = (["Real"] if spec.real_column else []) + [shown for shown, _ in columns]
    cells = [float(paper[n]) if paper.get(n) else None for n in names]
    return Line(
        source="paper",
        label=f"{paper['method']} (paper)",
        switches=[mark(row.switches[s]) for s in spec.switches],
        cells=cells,
        mean=float(paper[mean_key]),
        delta=paper.get("delta", ""),
    )


def mark(on: bool) -> str:
    return "✓" if on else ""


def add_deltas(spec: TableSpec, lines: list[Line]) -> None:
    """Our "with" rows: mean minus their base row's mean, both as shown (one decimal)."""
    ours = {line.label: line for line in lines if line.source == "ours"}
    for row in spec.rows:
        line, base = ours.get(row.label), ours.get(row.base or "")
        if line and base and line.mean is not None and base.mean is not None:
            line.delta = f"{round(line.mean, 1) - round(base.mean, 1):+.1f}"


def fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


def mean_cell(line: Line) -> str:
    return (
        f"{fmt(line.mean)} ({line.delta})"
        if line.delta and line.mean is not None
        else fmt(line.mean)
    )


def header(spec: TableSpec, columns: Columns) -> list[str]:
    real = ["Real"] if spec.real_column else []
    return ["method", *spec.switches, *real, *(c for c, _ in columns), spec.mean_column]


def cells_of(line: Line) -> list[str]:
    return [line.label, *line.switches, *(fmt(c) for c in line.cells), mean_cell(line)]


def to_csv(spec: TableSpec, columns: Columns, lines: list[Line]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(h) for h in ["source", *header(spec, columns), "run_id", "note"]])
    for line in lines:
        writer.writerow(
            [csv_cell(c) for c in [line.source, *cells_of(line), line.run_id, line.note]]
        )
    return buf.getvalue()


def markdown_table(head: list[str], body: list[list[str]], text_columns: int) -> str:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def fmt_row(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (w + 2) if i < text_columns else "-" * (w + 1) + ":" for i, w in enumerate(widths)
    ]
    return "\n".join([fmt_row(head), "|" + "|".join(rule) + "|", *map(fmt_row, body)])


def to_markdown(
    spec: TableSpec,
    preset_name: str,
    columns: Columns,
    lines: list[Line],
    footer: list[str],
) -> str:
    title = f"# {spec.title} ({preset_name} preset)"
    table = markdown_table(
        [md_cell(h) for h in header(spec, columns)],
        [[md_cell(c) for c in cells_of(line)] for line in lines],
        1 + len(spec.switches),
    )
    intro = DEMO_NOTE if preset_name == "demo" else ""
    parts = [title, intro, table, "\n".join(f"- {f}" for f in footer)]
    return "\n\n".join(p for p in parts if p) + "\n"


def footer_lines(
    spec: TableSpec,
    preset_name: str,
    train_name: str,
    results: list[RowResult],
    columns: Columns,
) -> list[str]:
    metric = METRIC_NAMES[spec.metric]
    cells = f"{metric} (%) per generator" + (" at threshold 0.5" if "acc" in spec.metric else "")
    lines = [f"Trained on `{train_name}`; cells: {cells}."]
    if spec.real_column:
        lines.append("Real: R.Acc (%) over the real images of the generators shown.")
    real = ", Real included as the paper averages" if spec.real_column else ""
    lines.append(
        f"{spec.mean_column}: mean of the row's cells{real}; a missing cell (–) is left out."
    )
    if spec.metric == "f_acc" and not spec.real_column:
        shown = [g for _, g in columns]
        reals = [f"{r.row.label} {fmt(pooled_real(r.scores, shown))}" for r in results if r.scores]
        if reals:
            lines.append(
                "F.Acc alone rewards calling everything fake; R.Acc (%) over the real images "
                f"of the generators shown, to read it by: {', '.join(reals)}."
            )
    pairs = [f"{r.label} vs {r.base}" for r in spec.rows if r.base]
    if pairs:
        lines.append(f"(±x.x) on the mean: change against the row without: {'; '.join(pairs)}.")
    if preset_name == "paper" and spec.paper_table:
        lines.append(f"Rows marked (paper): the paper's Table {spec.paper_table} as printed.")
    for result in results:
        if result.note:
            lines.append(f"{result.row.label}: {result.note}")
    runs = [f"{r.row.label} = runs/{r.run_id}" for r in results if r.run_id]
    if runs:
        lines.append("Runs: " + ", ".join(runs) + ".")
    return lines


def render(
    spec: TableSpec,
    preset_name: str,
    train_name: str,
    results: list[RowResult],
    paper: dict[str, tuple[dict[str, str], str]],
    out_dir: Path,
    matched: Columns | None = None,
    missing: list[str] | None = None,
) -> list[Path]:
    """Write OUT/<name>.csv and OUT/<name>.md; `paper` maps row labels to (paper row, mean key).

    ``matched`` are the spec's columns resolved against the data (None: every generator);
    ``missing`` notes the columns that matched nothing (``--allow-missing``).
    """
    columns = columns_for(matched, results)
    ours = [our_line(spec, result, columns) for result in results]
    add_deltas(spec, ours)
    lines = []
    for result, line in zip(results, ours, strict=True):
        lines.append(line)
        if result.row.label in paper:
            row, mean_key = paper[result.row.label]
            lines.append(paper_line(spec, result.row, row, mean_key, columns))
    footer = footer_lines(spec, preset_name, train_name, results, columns)
    footer.extend(f"Missing: {note}." for note in missing or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{spec.name}.csv", out_dir / f"{spec.name}.md"
    csv_path.write_text(to_csv(spec, columns, lines), encoding="utf-8")
    md_path.write_text(to_markdown(spec, preset_name, columns, lines, footer), encoding="utf-8")
    return [csv_path, md_path]
