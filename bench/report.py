"""`bench report --out DIR`: one self-contained HTML page to share a results folder.

The leaderboard, the robustness table and curves (when runs have sweeps) and, for each
leaderboard row's run, its pictures and its resolved configuration. Pictures are embedded
as base64 PNG and the style is inline: the page needs no other file and loads nothing.
Missing run pictures are drawn first (as `bench plot` would).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import leaderboard
from bench.errors import BenchError

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
"""


def _cell(value: Any) -> str:
    """Numbers right-aligned at one decimal (missing: an en dash), text escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f'<td class="num">{leaderboard.MISSING}</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{float(value):.1f}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def html_table(frame: Any) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = [
        "<tr>" + "".join(_cell(v) for v in record) + "</tr>"
        for record in frame.astype(object).itertuples(index=False)
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def run_section(out_dir: Path, entry: dict[str, str], metric: str) -> str:
    from bench.plots import plot_run_logged

    run_dir = leaderboard.run_dir(out_dir, entry["run_id"])
    title = f"{entry['label']} (trained on {entry['train']})"
    parts = [f"<h3>{html.escape(title)}</h3>", f'<p class="note">run {entry["run_id"]}</p>']
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return "".join(parts) + f"<p>config.json cannot be read: {html.escape(str(exc))}</p>"
    wanted = [run_dir / "plots" / name for name in ("roc.png", f"bars_{metric}.png")]
    if not all(p.is_file() for p in wanted) and (run_dir / "predictions.csv").is_file():
        plot_run_logged(run_dir, metric, lambda line: print(f"bench: {line}", file=sys.stderr))
    names = ("roc.png", f"bars_{metric}.png", "histograms.png", f"robustness_{metric}.png")
    pictures = [run_dir / "plots" / n for n in names if (run_dir / "plots" / n).is_file()]
    parts.extend(png_tag(p, f"{title}: {p.stem}") for p in pictures)
    shown = json.dumps(config, indent=2, default=str)
    parts.append(
        f"<details><summary>configuration (config.json)</summary><pre>{html.escape(shown)}</pre>"
        "</details>"
    )
    return "".join(parts)


def write_report(
    out_dir: str | Path, html_path: str | Path | None = None, metric: str = "acc"
) -> Path:
    """Write OUT/report.html (or ``html_path``) and return its path."""
    from bench import robustness_board
    from bench.metrics import METRIC_NAMES

    out = Path(out_dir)
    index = leaderboard.read_index(out)
    if not index:
        raise BenchError(f"no runs recorded in {out} (run `bench run` first)")
    table = leaderboard.build_table(out, metric)
    heading = leaderboard._heading(metric, 0.5).lstrip("# ")
    body = [
        "<h1>nsnet-bench results</h1>",
        f'<p class="note">{html.escape(str(out.resolve()))}, written '
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
        f"<h2>{html.escape(heading)}</h2>",
        html_table(table),
        '<p class="note">One row per (detector+addons, train set); cells x100 per generator '
        "and the mean over generators.</p>",
    ]
    board = robustness_board.collect(out, metric)
    if board.rows:
        from bench.plots import board_curves

        png = board_curves(board, out / "plots" / f"robustness_{metric}.png")
        body += [
            f"<h2>{html.escape(robustness_board.heading(board).lstrip('# '))}</h2>",
            html_table(robustness_board.to_frame(board)),
            png_tag(png, "robustness curves"),
        ]
    body.append(f"<h2>Runs ({METRIC_NAMES[metric]})</h2>")
    body.extend(run_section(out, entry, metric) for entry in index)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>nsnet-bench results: {html.escape(out.name)}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    target = Path(html_path) if html_path else out / "report.html"
    write_text(target, page)
    return target


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename; the file gets the usual (umask) mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
