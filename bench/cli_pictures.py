"""The `bench` commands for robustness sweeps and pictures; `bench.cli` adds them.

`bench run --perturb ...`, `bench sweep`, `bench robustness`, `bench plot`,
`bench show-patches` and `bench report`. Import-light like the rest of the CLI: torch,
pandas and matplotlib load inside the commands only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.errors import BenchError

METRIC_CHOICES = ("acc", "r_acc", "f_acc", "ap", "auc")
PERTURB_HELP = (
    "evaluate also under a perturbation: NAME or NAME=LEVEL,LEVEL,... (repeatable; "
    "see `bench list perturbations`); e.g. jpeg=95,75,50,30 resize=0.5 blur=1,2 noise=0.01"
)


def add_run_flags(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--perturb", action="append", default=None, metavar="NAME[=LEVELS]", help=PERTURB_HELP
    )
    run.add_argument(
        "--no-plots", action="store_true", help="do not draw runs/<id>/plots/ at the end"
    )


def run_fields(args: argparse.Namespace, cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """RunSpec's `perturb` and `plots` from the flags, else the config file."""
    from bench.perturb import parse_perturb_flags, perturb_from_config

    if args.perturb is not None:
        perturb = parse_perturb_flags(args.perturb)
    else:
        perturb = perturb_from_config(cfg.get("perturb", {}), source)
    plots = cfg.get("plots", True)
    if not isinstance(plots, bool):
        raise BenchError(f"{source}: 'plots' must be true or false, got {plots!r}")
    return {"perturb": perturb, "plots": plots and not args.no_plots}


def add_commands(sub: Any) -> None:
    sw = sub.add_parser("sweep", help="add robustness levels to a finished run (no training)")
    sw.add_argument("run_dir", metavar="RUN_DIR")
    sw.add_argument("--perturb", action="append", required=True, metavar="NAME[=LEVELS]")
    sw.add_argument("--opt", action="append", default=[], metavar="PERTURBATION.KEY=VALUE")
    sw.add_argument("--device", default="auto")
    sw.add_argument("--workers", type=int, default=None)
    sw.add_argument("--metric", choices=METRIC_CHOICES, default=None)
    sw.add_argument("--no-plots", action="store_true")
    sw.add_argument("--quiet", action="store_true")

    rb = sub.add_parser("robustness", help="table the robustness sweeps of a results folder")
    rb.add_argument("--out", default="results")
    rb.add_argument("--metric", choices=METRIC_CHOICES, default="acc")
    rb.add_argument(
        "--generator", default="mean", help="one generator's column (default: the mean)"
    )
    rb.add_argument("--format", choices=("csv", "md"), default="md")

    pl = sub.add_parser("plot", help="draw a run's pictures into RUN_DIR/plots/")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("--metric", choices=METRIC_CHOICES, default=None)

    sp = sub.add_parser(
        "show-patches", help="the patches Patch Selection keeps of an image, and its output"
    )
    sp.add_argument("image", metavar="IMAGE")
    sp.add_argument("--out", default=None, metavar="PNG", help="default: IMAGE_STEM.patches.png")
    sp.add_argument("--transform", default="patch_select", help="a transform with explain()")
    sp.add_argument("--opt", action="append", default=[], metavar="TRANSFORM.KEY=VALUE")
    sp.add_argument("--train", action="store_true", help="the training view (seeded shuffle)")
    sp.add_argument("--seed", type=int, default=0, help="shuffle seed of the training view")

    rp = sub.add_parser("report", help="one self-contained HTML page of a results folder")
    rp.add_argument("--out", default="results")
    rp.add_argument("--html", default=None, metavar="FILE", help="default: OUT/report.html")
    rp.add_argument("--metric", choices=METRIC_CHOICES, default="acc")


def _run_metric(run_dir: Path, given: str | None) -> str:
    import json

    if given:
        return given
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        return str(config.get("spec", {}).get("metric", "acc"))
    except (OSError, ValueError):
        return "acc"


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.options import parse_opt_flags
    from bench.perturb import parse_perturb_flags
    from bench.robustness import sweep_finished_run

    run_dir = Path(args.run_dir)
    path = sweep_finished_run(
        run_dir,
        parse_perturb_flags(args.perturb),
        parse_opt_flags(args.opt),
        device=args.device,
        workers=args.workers,
        progress=not args.quiet,
    )
    if not args.no_plots:
        from bench.plots import plot_run_logged

        plot_run_logged(run_dir, _run_metric(run_dir, args.metric), print)
    print(path)
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from bench.robustness_board import write

    csv_path, md_path, png = write(Path(args.out), args.metric, args.generator)
    print((md_path if args.format == "md" else csv_path).read_text(encoding="utf-8"), end="")
    print(f"curves: {png}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from bench.plots import plot_run

    for name in args.run_dirs:
        run_dir = Path(name)
        if not (run_dir / "predictions.csv").is_file() or not (run_dir / "metrics.csv").is_file():
            raise BenchError(f"{run_dir} is not a finished run folder (no predictions/metrics)")
        for path in plot_run(run_dir, _run_metric(run_dir, args.metric)):
            print(path)
    return 0


def cmd_show_patches(args: argparse.Namespace) -> int:
    from bench.show_patches import show_patches

    print(show_patches(args.image, args.out, args.transform, args.opt, args.train, args.seed))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    print(write_report(Path(args.out), args.html, args.metric))
    return 0


COMMANDS = {
    "sweep": cmd_sweep,
    "robustness": cmd_robustness,
    "plot": cmd_plot,
    "show-patches": cmd_show_patches,
    "report": cmd_report,
}
