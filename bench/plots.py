"""Pictures of results: PNG files drawn with matplotlib's Agg backend (no display needed).

Per run (`runs/<id>/plots/`, drawn by `bench run` and `bench plot RUN_DIR`):
  - roc.png: ROC curve per generator, with each generator's operating point at threshold 0.5;
  - bars_<metric>.png: the chosen metric per generator and their mean;
  - histograms.png: the p(fake) scores of reals and fakes, one panel per generator;
  - robustness_<metric>.png (runs with a sweep): the metric against the level, a line per
    generator and the mean, a panel per perturbation.
Across runs (`bench robustness`): the same curves with a line per detector.
matplotlib is imported only here, only when a picture is drawn.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.robustness_board import Board, PerturbationAxis

DPI = 110
#: The mean over generators: black and dashed, so generator lines under it stay visible.
MEAN_STYLE = {"color": "black", "linewidth": 2.0, "linestyle": "--", "marker": "s", "zorder": 5}


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colours(names: list[str]) -> dict[str, Any]:
    """A fixed tab10/tab20 colour per name, in the order given (sorted generators)."""
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    pyplot().close(fig)
    tmp.replace(path)
    return path


def read_predictions(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{generator: (labels, p_fake)} from predictions.csv (column `p_fake` or `prob`)."""
    by_generator: dict[str, tuple[list[int], list[float]]] = {}
    with open(run_dir / "predictions.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        column = "p_fake" if "p_fake" in (reader.fieldnames or []) else "prob"
        for row in reader:
            labels, probs = by_generator.setdefault(row["generator"], ([], []))
            labels.append(int(row["label"]))
            probs.append(float(row[column]))
    return dict(sorted(by_generator.items()))


def _grid(n: int, max_cols: int = 3, size: tuple[float, float] = (3.6, 3.0)) -> tuple[Any, list]:
    plt = pyplot()
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False, sharey=False
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def roc_plot(scores: dict[str, tuple[list[int], list[float]]], path: Path, title: str) -> Path:
    """One ROC curve per generator (both classes needed), AUC in the legend, 0.5 marked."""
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    colours = _colours(list(scores))
    for generator, (labels, probs) in scores.items():
        y, p = np.asarray(labels), np.asarray(probs)
        if y.min() == y.max():
            continue  # one class only: no ROC
        fpr, tpr, _ = roc_curve(y, p)
        auc = roc_auc_score(y, p)
        colour = colours[generator]
        ax.plot(fpr, tpr, color=colour, linewidth=1.8, label=f"{generator} (AUC {auc:.3f})")
        ax.plot(np.mean(p[y == 0] > 0.5), np.mean(p[y == 1] > 0.5), "o", color=colour, ms=6)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.set_xlabel("false positive rate (reals called fake)")
    ax.set_ylabel("true positive rate (fakes called fake)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="dot: threshold 0.5", title_fontsize=8)
    return _save(fig, path)


def bar_plot(run_dir: Path, metric: str, path: Path, title: str) -> Path:
    """The metric per generator (x100) and the mean over generators, values printed on bars."""
    import pandas as pd

    from bench.metrics import METRIC_NAMES, THRESHOLD_METRICS

    plt = pyplot()
    table = pd.read_csv(
        run_dir / "metrics.csv", dtype={"generator": str}, keep_default_na=False, na_values=[""]
    )
    names = list(table["generator"])
    values = [100 * float(v) for v in table[metric]]
    colours = _colours([n for n in names if n != "mean"])
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(names) + 1.5), 4.0))
    bars = ax.bar(
        names,
        [0 if math.isnan(v) else v for v in values],
        color=[colours.get(n, "black") for n in names],
        edgecolor="black",
        linewidth=0.6,
    )
    for bar, value in zip(bars, values, strict=True):
        text = "–" if math.isnan(value) else f"{value:.1f}"
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    if metric in THRESHOLD_METRICS or metric in ("ap", "auc"):
        ax.axhline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 108)
    at = " at threshold 0.5" if metric in THRESHOLD_METRICS else ""
    ax.set_ylabel(f"{METRIC_NAMES[metric]} (%){at}")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def histogram_plot(
    scores: dict[str, tuple[list[int], list[float]]], path: Path, title: str
) -> Path:
    """p(fake) of reals and of fakes, one panel per generator, threshold 0.5 drawn."""
    import numpy as np

    fig, axes = _grid(len(scores))
    bins = np.linspace(0, 1, 21)
    for ax, (generator, (labels, probs)) in zip(axes, scores.items(), strict=True):
        y, p = np.asarray(labels), np.asarray(probs)
        ax.hist(p[y == 0], bins=bins, alpha=0.6, color="tab:blue", label=f"real ({(y == 0).sum()})")
        ax.hist(p[y == 1], bins=bins, alpha=0.6, color="tab:red", label=f"fake ({(y == 1).sum()})")
        ax.axvline(0.5, color="black", linestyle="--", linewidth=1)
        ax.set_title(generator, fontsize=10)
        ax.set_xlabel("p(fake)")
        ax.set_ylabel("images")
        ax.legend(fontsize=8, loc="upper center")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def curves(
    panels: list[tuple[PerturbationAxis, dict[str, list[float | None]], dict[str, Any]]],
    path: Path,
    ylabel: str,
    title: str,
) -> Path:
    """Metric (%) against level: one panel per perturbation, the clean pass first on each.

    panels: (axis, {series label: values over ["clean", *levels]}, {label: plot style}).
    Levels are placed evenly from mild to strong: their spacing is not to scale.
    """
    fig, axes = _grid(len(panels), max_cols=4, size=(3.8, 3.3))
    handles: dict[str, Any] = {}
    for ax, (axis, series, styles) in zip(axes, panels, strict=True):
        ticks = ["clean", *axis.levels]
        x = list(range(len(ticks)))
        for label, values in series.items():
            ys = [math.nan if v is None else 100 * v for v in values]
            style = {"marker": "o", "linewidth": 1.5, "markersize": 4, **styles.get(label, {})}
            (line,) = ax.plot(x, ys, label=label, **style)
            handles.setdefault(label, line)
        ax.set_xticks(x, ticks)
        ax.set_xlabel(f"{axis.level_name} (milder → stronger)", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_ylim(-3, 103)
        ax.axhline(50, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
        ax.set_title(axis.name, fontsize=10)
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="lower center",
        ncol=min(6, len(handles)),
        fontsize=8,
        bbox_to_anchor=(0.5, -0.02),
        frameon=False,
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.07 + 0.03 * ((len(handles) - 1) // 6), 1, 1))
    return _save(fig, path)


def _ylabel(metric: str) -> str:
    from bench.metrics import METRIC_NAMES, THRESHOLD_METRICS

    return f"{METRIC_NAMES[metric]} (%)" + (" at 0.5" if metric in THRESHOLD_METRICS else "")


def run_curves(run_dir: Path, metric: str, path: Path, title: str) -> Path:
    """A run's sweep: one line per generator, the mean in black, one panel per perturbation."""
    from bench.robustness import read_robustness
    from bench.robustness_board import Board, run_cells

    board = Board(metric, "mean")
    generators = sorted(set(read_robustness(run_dir)["generator"]) - {"mean"})
    cells = {g: run_cells(run_dir, metric, g, board) for g in [*generators, "mean"]}
    colours = _colours(generators)
    styles = {g: {"color": colours[g]} for g in generators}
    styles["mean"] = MEAN_STYLE
    panels = []
    for axis in board.axes.values():
        columns = ["clean", *axis.columns()]
        series = {g: [cells[g].get(c) for c in columns] for g in cells}
        panels.append((axis, series, styles))
    return curves(panels, path, _ylabel(metric), title)


def board_curves(board: Board, path: Path) -> Path:
    """Across runs: one line per detector (its train set added when several are shown)."""
    from bench.robustness_board import heading

    trains = {row.train for row in board.rows}
    names = [row.label if len(trains) == 1 else f"{row.label} ({row.train})" for row in board.rows]
    colours = _colours(names)
    styles = {n: {"color": colours[n]} for n in names}
    panels = []
    for axis in board.axes.values():
        columns = ["clean", *axis.columns()]
        series = {
            name: [row.cells.get(c) for c in columns]
            for name, row in zip(names, board.rows, strict=True)
        }
        panels.append((axis, series, styles))
    return curves(panels, path, _ylabel(board.metric), heading(board).lstrip("# "))


def run_title(run_dir: Path) -> str:
    import json

    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return run_dir.name
    return f"{config.get('label', '?')} trained on {config.get('train_name', '?')}"


def plot_run(run_dir: Path, metric: str = "acc") -> list[Path]:
    """Draw every picture of one run into runs/<id>/plots/; return their paths."""
    run_dir = Path(run_dir)
    folder = run_dir / "plots"
    title = run_title(run_dir)
    scores = read_predictions(run_dir)
    paths = [
        roc_plot(scores, folder / "roc.png", f"ROC per generator: {title}"),
        bar_plot(run_dir, metric, folder / f"bars_{metric}.png", title),
        histogram_plot(scores, folder / "histograms.png", f"Scores of reals and fakes: {title}"),
    ]
    if (run_dir / "robustness.csv").is_file():
        paths.append(
            run_curves(run_dir, metric, folder / f"robustness_{metric}.png", f"Robustness: {title}")
        )
    return paths


def plot_run_logged(run_dir: Path, metric: str, log: Callable[[str], None]) -> list[Path]:
    """plot_run for the end of a run: a drawing failure is logged, the results stay."""
    try:
        paths = plot_run(run_dir, metric)
    except Exception as exc:  # a picture must never cost the numbers already written
        log(f"plots: not drawn ({type(exc).__name__}: {exc}); `bench plot {run_dir}` retries")
        return []
    log(f"plots: {', '.join(p.name for p in paths)} in {run_dir / 'plots'}")
    return paths
