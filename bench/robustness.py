"""Robustness sweeps: a trained detector evaluated once per perturbation level, per generator.

`runs/<id>/robustness.csv` has the rows of metrics.csv once per (perturbation, level):
the clean pass first (perturbation `none`, level empty; the very rows of metrics.csv),
then each level's, computed by bench.metrics as the clean pass's are. Like metrics.csv,
each row has its kind (`generator`, `set mean`, `mean`) and test set, so two test sets'
`Midjourney` folders stay two generators and a folder named `mean` stays a generator.
It is rewritten after every level, so an interrupted sweep keeps the levels it finished;
the scores behind it stream to `robustness_predictions.csv`.

Each distinct image is predicted once per level (as in the clean pass, bench.evaluation),
in the batches the detector planned for the clean pass but from perturbed pixels: a plan's
cached features are of the clean images and are never used here.

`bench sweep RUN_DIR --perturb ...` adds levels to a finished run without training it
again (the saved state is loaded as `bench predict` loads it).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.perturb import CLEAN, PerturbedChain, Sweep, format_level

if TYPE_CHECKING:
    import pandas as pd

FILE = "robustness.csv"
PREDICTIONS = "robustness_predictions.csv"
KEY_COLUMNS = ("perturbation", "level")
PREDICTION_COLUMNS = ("perturbation", "level", "path", "test_set", "generator", "label", "p_fake")


def clean_rows(run_dir: Path) -> pd.DataFrame:
    """The clean pass: metrics.csv's rows (bench.results_io) with perturbation `none`."""
    import pandas as pd

    from bench.metrics import COLUMNS
    from bench.results_io import read_metrics

    records = []
    for row in read_metrics(run_dir / "metrics.csv"):
        values = {k: _count(k, v) for k, v in row.values.items()}
        records.append(
            {"kind": row.kind, "test_set": row.test_set, "generator": row.generator}
            | values
            | {"note": row.note}
        )
    table = pd.DataFrame(records, columns=list(COLUMNS), dtype=object)
    table.insert(0, "level", "")
    table.insert(0, "perturbation", CLEAN)
    return table


def _count(key: str, value: float) -> Any:
    """Counts as whole numbers (written 12, not 12.0); other values as they are."""
    if key in ("n_real", "n_fake", "n_generators") and value == value:  # not NaN
        return int(value)
    return value


def read_robustness(run_dir: Path) -> pd.DataFrame:
    """robustness.csv with its text as written before escaping, levels as text ("" clean).

    A file from before test sets existed (no kind, no test_set) reads as one unnamed set
    whose summary row is the one named `mean`, as results_io reads such a metrics.csv.
    """
    import pandas as pd

    from bench.results_io import NUMBERS
    from bench.text import csv_uncell

    table = pd.read_csv(run_dir / FILE, dtype=str, keep_default_na=False)
    for column in ("kind", "test_set", "generator", "note"):
        if column in table.columns:
            table[column] = table[column].map(csv_uncell)
    if "test_set" not in table.columns:
        table.insert(2, "test_set", "")
    if "kind" not in table.columns:
        legacy = ["mean" if g == "mean" else "generator" for g in table["generator"]]
        table.insert(2, "kind", legacy)
    for column in NUMBERS:
        if column in table.columns:
            table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce")
    return table


def select_generator(
    table: pd.DataFrame, name: str, where: str = "", missing_ok: bool = False
) -> pd.DataFrame:
    """The rows of one column: `mean` (kind mean), `SET/GENERATOR`, `SET/mean` (that
    set's mean, unless SET has a generator folder named `mean`; the mean when SET is the
    only set), or a bare generator name
    found in one test set only. A name in several sets is an error naming each; a name
    found nowhere gives no rows with ``missing_ok``, else an error listing the names."""
    from bench.results_io import column_key

    if name == "mean":
        return table[table["kind"] == "mean"]
    generators = table[table["kind"] == "generator"]
    pairs = zip(generators["test_set"], generators["generator"], strict=True)
    keys = [column_key(t, g) for t, g in pairs]
    chosen = generators[[k == name for k in keys]]
    if len(chosen):
        return chosen
    set_name, _, last = name.rpartition("/")
    if last == "mean" and set_name:
        chosen = table[(table["kind"] == "set mean") & (table["test_set"] == set_name)]
        if len(chosen):
            return chosen
        if len(generators) and set(generators["test_set"]) == {set_name}:
            return table[table["kind"] == "mean"]  # the only set: its mean is the mean
    bare = generators[generators["generator"] == name]
    sets = sorted(set(bare["test_set"]))
    if len(sets) == 1:
        return bare
    if len(sets) > 1:
        choices = ", ".join(column_key(t, name) for t in sets)
        raise BenchError(f"generator {name!r} is in several test sets{where}; name one: {choices}")
    if missing_ok:
        return bare
    known = sorted(set(keys))
    raise BenchError(f"no generator {name!r}{where} (known: {', '.join(known) or 'none'}, or mean)")


def _write_table(path: Path, table: pd.DataFrame) -> None:
    """Written as metrics.csv is (bench.results_io: names escaped); atomically."""
    from bench.results_io import TEXT_COLUMNS, write_metrics

    for column in TEXT_COLUMNS:  # a row from a file without the column: empty, not "nan"
        if column in table.columns:
            table[column] = table[column].where(table[column].notna(), "")
    tmp = path.with_name(f".{path.name}.tmp")
    write_metrics(tmp, table)
    os.replace(tmp, path)


def run_sweep(
    detector: Any,
    images: Any,
    factory: Any,
    run_dir: Path,
    ctx: Any,
    sweep: Sweep,
    plan: Any = None,
) -> Path:
    """Evaluate every level of ``sweep`` not yet in robustness.csv; return its path.

    images: the clean pass's DistinctImages (bench.evaluation); plan: its EvalPlan, whose
    batch composition (not its features) every level keeps.
    """
    import pandas as pd
    from tqdm import tqdm

    from bench.data.evaluation import evaluation_batches
    from bench.evaluation import eval_batch_size, score_uses, scored_table
    from bench.interfaces import EvalPlan
    from bench.text import csv_cell

    path = run_dir / FILE
    done = read_robustness(run_dir) if path.is_file() else clean_rows(run_dir)
    have = set(zip(done["perturbation"], done["level"], strict=True))
    _write_table(path, done)
    chain = detector.transforms(train=False)
    fixed = EvalPlan(batches=plan.batches) if plan is not None and plan.batches else None
    detector.train_mode(False)
    new_file = not (run_dir / PREDICTIONS).is_file()
    with open(run_dir / PREDICTIONS, "a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(PREDICTION_COLUMNS)
        for item, level in sweep.passes():
            shown = format_level(level)
            if (item.name, shown) in have:
                ctx.log(f"robustness: {item.name}={shown} already in {FILE}; kept")
                continue
            perturbed = PerturbedChain(item, level, chain)
            source = evaluation_batches(
                images.unique, perturbed, factory, fixed, eval_batch_size(detector)
            )
            batches = tqdm(
                source, total=len(source), desc=f"{item.name}={shown}", disable=not ctx.progress
            )
            test_sets, generators, labels, probs = [], [], [], []
            for sample, prob in score_uses(detector, images, batches, ctx):
                writer.writerow(
                    [item.name, shown, csv_cell(sample.path), csv_cell(sample.dataset)]
                    + [csv_cell(sample.generator), int(sample.label), f"{prob:.6f}"]
                )
                test_sets.append(sample.dataset)
                generators.append(sample.generator)
                labels.append(sample.label)
                probs.append(prob)
            fh.flush()
            if not probs:
                raise BenchError(f"no test image could be read under {item.name}={shown}")
            table = scored_table(
                test_sets, generators, labels, probs, ctx, f"robustness {item.name}={shown}: "
            )
            table.insert(0, "level", shown)
            table.insert(0, "perturbation", item.name)
            done = pd.concat([done.astype(object), table.astype(object)], ignore_index=True)
            _write_table(path, done)
    return path


def merge_records(old: list[dict[str, Any]], sweep: Sweep, run_dir: Path) -> list[dict[str, Any]]:
    """config.json's perturbation records with ``sweep`` added; other options are refused."""
    merged = {r["name"]: dict(r) for r in old}
    for item in sweep.items:
        new = item.record()
        before = merged.get(item.name)
        if before is None:
            merged[item.name] = new
            continue
        if before.get("options", {}) != new["options"]:
            raise BenchError(
                f"{run_dir.name} was swept with {item.name} options {before.get('options')}; "
                f"levels with other options ({new['options']}) need a new run"
            )
        levels = list(before.get("levels", []))
        shown = {format_level(v) for v in levels}
        levels += [v for v in new["levels"] if format_level(v) not in shown]
        before["levels"] = sorted(levels, reverse=new["stronger"] == "lower")
    return list(merged.values())


def sweep_finished_run(
    run_dir: Path,
    perturb: dict[str, dict[str, Any]],
    options: dict[str, dict[str, Any]] | None = None,
    device: str = "auto",
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Add the levels of ``perturb`` to a finished run: no training, the saved state."""
    from bench.data.pipeline import default_workers, load_caption_sidecars, make_loader
    from bench.evaluation import DistinctImages
    from bench.perturb import resolve_sweep
    from bench.plugins import get_registry
    from bench.predict import load_run
    from bench.run_data import read_data
    from bench.run_files import RunLog, write_json

    config_file = run_dir / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{run_dir} is not a run folder: {exc}") from None
    if config.get("status") != "finished" or not (run_dir / "metrics.csv").is_file():
        raise BenchError(f"{run_dir} is not a finished run (status {config.get('status')!r})")
    sweep = resolve_sweep(get_registry(), perturb, options, config["spec"].get("preset"))
    if not sweep.items:
        raise BenchError("bench sweep needs at least one --perturb NAME[=LEVELS]")
    records = merge_records(config.get("perturbations", []), sweep, run_dir)
    spec = config["spec"]
    # the run's test sets as it read them: the same names (absolute paths, so a sweep
    # from another folder finds them), splits and per-class cap
    tests = [f"{t['name']}={t['path']}" for t in config.get("test_sets", [])] or spec["test"]
    data = read_data(None, tests, spec.get("max_per_class"), spec["seed"])
    detector, ctx = load_run(run_dir, device)
    ctx.workers = workers if workers is not None else default_workers()
    ctx.progress = progress
    ctx.run_dir = run_dir
    ctx.captions = load_caption_sidecars([t.root for t in data.tests])
    ctx.log = RunLog(run_dir / "log.txt", echo=progress)
    ctx.log(f"sweep of the finished run: {', '.join(i.name for i in sweep.items)}")

    def factory(samples: list, chain: Any, **kw: Any) -> Any:
        return make_loader(samples, chain, workers=ctx.workers, seed=ctx.seed, **kw)

    images = DistinctImages.of(data.test_samples)
    # the batches the clean pass had (NS-Net's caption reading also captions the test
    # images here); a frozen backbone's cached clean features are not used by the sweep
    plan = detector.plan_evaluation(images.unique, ctx)
    path = run_sweep(detector, images, factory, run_dir, ctx, sweep, plan)
    config["perturbations"] = records
    write_json(config_file, config)
    return path
