"""The `bench` command. Start-up imports neither torch nor pandas: they load per command."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from bench.cli_pictures import COMMANDS as PICTURE_COMMANDS
from bench.cli_pictures import add_commands as add_picture_commands
from bench.cli_pictures import add_run_flags, run_fields
from bench.cli_scale import (
    add_scale_flags,
    add_table_flags,
    check_num_processes,
    launched,
    parse_devices,
    resumed_spec,
)
from bench.errors import BenchError, Terminated
from bench.text import printable

KIND_WORDS = {
    "detectors": "detector",
    "addons": "addon",
    "transforms": "transform",
    "perturbations": "perturbation",
}
METRIC_CHOICES = ("acc", "r_acc", "f_acc", "ap", "auc")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``bench: error: ...``) with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"bench: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="bench",
        description="Train and compare detectors of AI-generated images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train (when the detector trains) and evaluate one detector")
    run.add_argument("--detector", help="detector name (see `bench list detectors`)")
    run.add_argument(
        "--addon",
        action="append",
        default=None,
        metavar="NAME",
        help="addon to attach, in order (repeatable)",
    )
    run.add_argument(
        "--train", metavar="PATH", help="training set (0_real/1_fake tree, GenImage, CSV)"
    )
    run.add_argument(
        "--test",
        action="append",
        default=None,
        metavar="[NAME=]PATH",
        help="test set (repeatable), named by its folder or NAME; each (set, generator) "
        "is evaluated separately",
    )
    run.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    run.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default=None,
        help="bf16 autocast or full precision (default: the detector's preset, else bf16 on CUDA)",
    )
    run.add_argument("--batch-size", type=int, default=None)
    run.add_argument("--epochs", type=int, default=None)
    run.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="COMPONENT.KEY=VALUE",
        help="set an option of the detector or an addon (repeatable)",
    )
    run.add_argument("--config", metavar="FILE.toml", help="run settings as TOML (flags win)")
    run.add_argument("--preset", default=None, help="option preset (the demo uses 'demo')")
    run.add_argument("--out", default=None, help="results folder (default: results/)")
    run.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="seed, or several (one run each; the leaderboard shows mean ± std)",
    )
    run.add_argument("--name", default=None, help="leaderboard label for this configuration")
    run.add_argument(
        "--seen",
        action="append",
        default=None,
        metavar="[SET/]GENERATOR",
        help="mark a test generator as seen in training (repeatable; same-named ones are found)",
    )
    run.add_argument(
        "--max-per-class",
        type=int,
        default=None,
        help="at most N images per generator and class (fixed-seed sample)",
    )
    run.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    run.add_argument(
        "--metric", choices=METRIC_CHOICES, default=None, help="leaderboard cell (default acc)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars or log echo")
    add_run_flags(run)
    add_scale_flags(run)

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", nargs="?", choices=sorted(KIND_WORDS), help="only this kind")

    lb = sub.add_parser("leaderboard", help="write and print the leaderboard of a results folder")
    lb.add_argument("--out", default="results")
    lb.add_argument("--metric", choices=METRIC_CHOICES, default="acc")
    lb.add_argument("--format", choices=("csv", "md"), default="md")
    lb.add_argument("--by-seed", action="store_true", help="one row per seed instead of mean ± std")
    lb.add_argument("--label", default=None, metavar="TEXT", help="only rows whose label has TEXT")
    lb.add_argument("--config", default=None, metavar="HASH", help="only this configuration")

    sub.add_parser("validate", help="check registry.toml, every plugin and their default options")

    op = sub.add_parser(
        "options", help="a component's options: default, allowed values, why, presets"
    )
    op.add_argument("name", metavar="NAME", help="a detector, addon or transform name")

    data = sub.add_parser("data", help="data sets the toolkit builds itself")
    data.add_argument("name", choices=("demo",), help="the embedded demo benchmark")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--force", action="store_true", help="rebuild even if cached")

    pr = sub.add_parser("predict", help="p(fake) for images, from a finished run")
    pr.add_argument("--run", required=True, metavar="RUN_DIR")
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--device", default="auto")
    pr.add_argument(
        "--format",
        choices=("tsv", "csv", "json"),
        default="tsv",
        help="tsv (default) and csv have a header line; json is one object per line",
    )

    tb = sub.add_parser("table", help="regenerate a paper table from a spec (benchmarks/tables)")
    tb.add_argument("spec", metavar="SPEC")
    tb.add_argument("--preset", choices=("demo", "paper"), default="demo")
    tb.add_argument("--data-root", default=None, metavar="DIR")
    tb.add_argument("--out", default=None)
    tb.add_argument("--device", default="auto")
    tb.add_argument("--workers", type=int, default=None)
    tb.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="read the preset's data set NAME (or 'train') from PATH (repeatable)",
    )
    tb.add_argument(
        "--allow-missing",
        action="store_true",
        help="draw spec columns that match no generator as missing instead of stopping",
    )
    tb.add_argument("--quiet", action="store_true", help="no progress bars or log echo")
    add_table_flags(tb)
    add_picture_commands(sub)
    return parser


def version() -> str:
    """The installed distribution's version, else the package's own."""
    from importlib import metadata

    try:
        return metadata.version("nsnet-bench")
    except metadata.PackageNotFoundError:
        from bench import __version__

        return __version__


#: Config keys holding paths: resolved against the config file's folder, as CSV paths are.
PATH_KEYS = ("train", "test", "out")


def _config_path(value: Any, base: Path, key: str, where: str) -> Any:
    """A path from a config file, relative to the file; ``NAME=PATH`` and tables kept."""
    from bench.run_data import parse_test_entry

    if isinstance(value, dict) and key == "test":
        if set(value) != {"name", "path"}:
            raise BenchError(f"{where}: a test entry table needs exactly name and path")
        return f"{value['name']}={_config_path(value['path'], base, key, where)}"
    if not isinstance(value, str):
        raise BenchError(f"{where}: '{key}' must be a path (a string), got {value!r}")
    name, path = parse_test_entry(value) if key == "test" else (None, value)
    full = Path(os.path.expanduser(path))
    full = full if full.is_absolute() else base / full
    return f"{name}={full}" if name else str(full)


def spec_from_args(args: argparse.Namespace) -> Any:
    from bench.options import parse_opt_flags, read_toml
    from bench.run_checks import check_config
    from bench.runner import RunSpec

    cfg = read_toml(args.config, "config file") if args.config else {}
    check_config(cfg, f"config file {args.config}")
    if args.config:
        base = Path(args.config).resolve().parent
        where = f"config file {args.config}"
        for key in PATH_KEYS:
            if key not in cfg:
                continue
            value = cfg[key]
            if key == "test" and isinstance(value, list):
                cfg[key] = [_config_path(v, base, key, where) for v in value]
            else:
                cfg[key] = _config_path(value, base, key, where)
    detector = args.detector or cfg.get("detector")
    if not detector:
        raise BenchError("bench run needs --detector NAME (see `bench list detectors`)")
    options: dict[str, dict[str, Any]] = {k: dict(v) for k, v in cfg.get("options", {}).items()}
    for component, values in parse_opt_flags(args.opt).items():
        options.setdefault(component, {}).update(values)
    test = args.test if args.test is not None else cfg.get("test", [])
    if isinstance(test, str):
        test = [test]
    addons = args.addon if args.addon is not None else cfg.get("addons", [])
    if isinstance(addons, str):
        addons = [addons]

    def pick(flag: Any, key: str, default: Any = None) -> Any:
        return flag if flag is not None else cfg.get(key, default)

    return RunSpec(
        detector=detector,
        addons=list(addons),
        train=pick(args.train, "train"),
        test=list(test),
        options=options,
        preset=pick(args.preset, "preset"),
        device=pick(args.device, "device", "auto"),
        batch_size=pick(args.batch_size, "batch_size"),
        epochs=pick(args.epochs, "epochs"),
        out=pick(args.out, "out", "results"),
        seed=seeds_of(args, cfg)[0],
        max_per_class=pick(args.max_per_class, "max_per_class"),
        workers=pick(args.workers, "workers"),
        precision=pick(args.precision, "precision"),
        progress=not args.quiet,
        metric=pick(args.metric, "metric", "acc"),
        name=pick(args.name, "name"),
        train_name=pick(args.train_name, "train_name"),
        seen=list(args.seen if args.seen is not None else cfg.get("seen", [])),
        **run_fields(args, cfg, f"config file {args.config}"),
    )


def seeds_of(args: argparse.Namespace, cfg: dict[str, Any]) -> list[int]:
    """--seed N [N ...], else the config's ``seeds = [...]`` or ``seed = N``, else [0]."""
    if args.seed is not None:
        seeds = list(args.seed)
    elif "seeds" in cfg and "seed" in cfg:
        raise BenchError(f"{args.config} sets both seed and seeds; keep one")
    elif "seeds" in cfg:
        seeds = cfg["seeds"] if isinstance(cfg["seeds"], list) else [cfg["seeds"]]
    else:
        seeds = [cfg.get("seed", 0)]
    from bench.run_checks import check_int

    if not seeds:
        raise BenchError("seeds = [] names no seed")
    for seed in seeds:
        check_int("seed", seed)
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"a seed is given twice: {' '.join(str(s) for s in seeds)}")
    return seeds


def use_demo(spec: Any, entries: list[Any]) -> None:
    """No data given: the embedded demo benchmark, with each component's demo preset."""
    try:
        from bench.demo import build_demo
    except ImportError:
        raise BenchError(
            "no --train/--test given and the embedded demo benchmark is not "
            "available in this install: give --train PATH --test PATH"
        ) from None
    root = build_demo(progress=spec.progress)
    spec.train = str(Path(root) / "train")
    spec.test = [f"demo={Path(root) / 'test'}"]
    spec.train_name = "demo"
    if spec.preset is None and any("demo" in e.presets for e in entries):
        spec.preset = "demo"


def cmd_run(args: argparse.Namespace) -> int:
    from bench.distributed import close_all
    from bench.plugins import get_registry
    from bench.run_checks import check_out, check_preset
    from bench.runner import choose_device, resolve_components, run

    check_num_processes(args.num_processes)
    if args.resume is not None:
        spec = resumed_spec(args)
        seeds = [spec.seed]
    else:
        spec = spec_from_args(args)
        spec.checkpoint_every, spec.log_with = args.checkpoint_every, args.log_with
        seeds = seeds_of(args, read_toml_quiet(args.config))
    registry = get_registry()
    # Names, values, options, preset, output folder and device all fail before the demo build.
    resolve_components(registry, spec)
    entries = [registry.get("detector", spec.detector)]
    entries += [registry.get("addon", name) for name in spec.addons]
    every_preset = {
        p for kind in ("detector", "addon") for e in registry.entries(kind) for p in e.presets
    }
    check_preset(spec, entries, every_preset)
    check_out(spec.out)
    choose_device(spec.device)
    if not spec.train and not spec.test and args.resume is None:
        use_demo(spec, entries)
    status = launched(args, spec)  # --num-processes N: the launcher runs this command N times
    if status is not None:
        return status
    for i, seed in enumerate(seeds):
        if len(seeds) > 1 and spec.progress:
            print(f"bench: seed {seed} ({i + 1} of {len(seeds)})", file=sys.stderr)
        run_dir = run(dataclasses.replace(spec, seed=seed), registry, resume=args.resume)
        if os.environ.get("RANK", "0") == "0":  # under a launcher, process 0 says it
            print(printable(str(run_dir)), flush=True)
    close_all()
    return 0


def read_toml_quiet(path: str | None) -> dict[str, Any]:
    from bench.options import read_toml

    return read_toml(path, "config file") if path else {}


def cmd_list(args: argparse.Namespace) -> int:
    from bench.plugins import get_registry

    registry = get_registry()
    kinds = [KIND_WORDS[args.kind]] if args.kind else list(KIND_WORDS.values())
    for kind in kinds:
        entries = registry.entries(kind)
        print(f"{kind}s:")
        if not entries:
            print("  (none)")
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            print(f"  {e.name:<{width}}  [{e.origin}]  {e.summary}".rstrip())
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench import leaderboard

    if not (Path(args.out) / "leaderboard_index.csv").is_file():
        raise BenchError(f"no runs recorded in {args.out} (run `bench run` first)")
    filters = {"by_seed": args.by_seed, "label": args.label, "config": args.config}
    if any(filters.values()):  # a filtered view is printed, never written over the files
        table = leaderboard.build_table(Path(args.out), args.metric, **filters)
        text = (
            leaderboard.to_markdown(table, args.metric)
            if args.format == "md"
            else leaderboard.to_csv(table)
        )
        print(text, end="")
        return 0
    csv_path, md_path = leaderboard.write(Path(args.out), metric=args.metric)
    path = md_path if args.format == "md" else csv_path
    print(path.read_text(encoding="utf-8"), end="")
    return 0


def cmd_options(args: argparse.Namespace) -> int:
    from bench.plugins import get_registry
    from bench.registry import unknown_name_message

    registry = get_registry()
    entries = [
        registry.get(k, args.name) for k in KIND_WORDS.values() if args.name in registry.names(k)
    ]
    if not entries:
        known = [n for k in KIND_WORDS.values() for n in registry.names(k)]
        raise BenchError(unknown_name_message("component", args.name, known))
    for entry in entries:
        print(f"{entry.kind} {entry.name} [{entry.origin}]: {entry.summary}".rstrip())
        if not entry.specs:
            print("  (no options)")
        width = max((len(k) for k in entry.specs), default=0)
        for key, spec in entry.specs.items():
            print(f"  {key:<{width}}  = {spec.default!r}  ({spec.describe()})")
            if spec.doc:
                print(f"  {'':<{width}}    {spec.doc}")
        for preset, values in entry.presets.items():
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            print(f"  preset {preset}: {shown}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.validate import validate

    problems = validate()
    return 2 if problems else 0


def cmd_data(args: argparse.Namespace) -> int:
    from bench.run_checks import check_int

    check_int("seed", args.seed)
    from bench.demo import build_demo

    root = build_demo(seed=args.seed, force=args.force, progress=True)
    print(root)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import json

    from bench.predict import predict_images

    # Each score is printed as soon as it exists: a later failure loses none of them. The
    # header comes with the first result, so a run folder that cannot be used prints nothing.
    # Paths print as given (their own bytes, see main()), so a script can use them again.
    writer = csv.writer(
        sys.stdout, delimiter="\t" if args.format == "tsv" else ",", lineterminator="\n"
    )
    unreadable = 0
    for i, (path, prob) in enumerate(
        predict_images(Path(args.run), args.images, device=args.device)
    ):
        if i == 0 and args.format != "json":
            writer.writerow(["p_fake", "path"])
        unreadable += prob is None
        if args.format == "json":
            print(json.dumps({"path": str(path), "p_fake": prob}))
        else:
            writer.writerow(["" if prob is None else f"{prob:.4f}", str(path)])
        sys.stdout.flush()
    if unreadable:
        print(
            f"bench: {unreadable} of {len(args.images)} image(s) could not be read "
            "(empty p_fake above)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from bench.run_checks import check_device, check_int, check_out

    check_device(args.device)  # before the demo build and the first row
    if args.workers is not None:
        check_int("workers", args.workers)
    if args.checkpoint_every is not None:
        check_int("checkpoint_every", args.checkpoint_every)
    if args.out is not None:
        check_out(args.out)
    jobs = args.jobs
    if jobs is not None and (jobs < 1 or jobs > 1024):
        raise BenchError(f"--jobs must be a whole number from 1 to 1024, got {jobs}")
    devices = parse_devices(args.devices, args.device) if args.devices is not None else None
    if jobs is None:
        jobs = len(devices) if devices else 1
    if args.plan and (args.jobs is not None or devices is not None):
        raise BenchError("--plan writes the rows for others to run: drop --jobs/--devices")
    try:
        from bench.tables import run_table
    except ImportError:
        raise BenchError("bench table is not available in this install yet") from None
    for path in run_table(
        args.spec,
        preset=args.preset,
        data_root=args.data_root,
        out=args.out,
        device=args.device,
        workers=args.workers,
        progress=not args.quiet,
        overrides=args.set,
        allow_missing=args.allow_missing,
        plan=args.plan,
        jobs=jobs,
        devices=devices,
        checkpoint_every=args.checkpoint_every,
    ):
        print(path)
    return 0


COMMANDS = {
    "run": cmd_run,
    "list": cmd_list,
    "leaderboard": cmd_leaderboard,
    "validate": cmd_validate,
    "options": cmd_options,
    "data": cmd_data,
    "predict": cmd_predict,
    "table": cmd_table,
    **PICTURE_COMMANDS,
}


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated("SIGTERM")


def _os_error_line(exc: OSError) -> str:
    from bench.fileio import is_disk_full

    where = f" ({exc.filename})" if exc.filename else ""
    if is_disk_full(exc):
        return f"no space left on device{where}"
    return f"{exc.strerror or exc}{where}"


def main(argv: list[str] | None = None) -> int:
    import signal

    for stream in (sys.stdout, sys.stderr):  # paths that are not UTF-8 print as their bytes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a launcher repeats
    if not args.command:
        parser.print_help()
        return 0
    import threading

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None
    if in_main:  # Slurm and `timeout` stop jobs with SIGTERM
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[args.command](args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, an unwritable folder: the environment, not a bug
        print(f"bench: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print("bench: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
