"""Robustness sweeps: a trained detector evaluated once per perturbation level, per generator.

`runs/<id>/robustness.csv` has one row per (perturbation, level, generator), the clean pass
first (perturbation `none`, level empty; the very rows of metrics.csv), each generator's
metrics computed by bench.metrics as the clean pass's are, plus a `mean` row per level.
It is rewritten after every level, so an interrupted sweep keeps the levels it finished;
the scores behind it stream to `robustness_predictions.csv`.

`bench sweep RUN_DIR --perturb ...` adds levels to a finished run without training it
again (the saved state is loaded as `bench predict` loads it).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.perturb import CLEAN, PerturbedChain, Sweep, format_level

if TYPE_CHECKING:
    import pandas as pd

FILE = "robustness.csv"
PREDICTIONS = "robustness_predictions.csv"
KEY_COLUMNS = ("perturbation", "level")


def eval_batch_size(detector: Any) -> int:
    """What the clean pass uses (runner.evaluate): eval_batch_size, else batch_size."""
    options = detector.options
    return int(options.get("eval_batch_size", options.get("batch_size", 32)))


def predict_rows(
    detector: Any, samples: list, chain: Any, factory: Any, ctx: Any, desc: str
) -> Iterator[tuple[str, str, int, float]]:
    """(path, generator, label, p_fake) for every readable test image through ``chain``."""
    import torch
    from tqdm import tqdm

    from bench.training import autocast, to_device

    loader = factory(
        samples, chain, train=False, shuffle=False, batch_size=eval_batch_size(detector)
    )
    detector.train_mode(False)
    for batch in tqdm(loader, desc=desc, disable=not ctx.progress):
        if batch["image"] is None:
            continue
        batch = to_device(batch, ctx.device)
        with torch.no_grad(), autocast(ctx):
            p = detector.predict_proba(batch).float().cpu()
        if p.shape != (len(batch["path"]),) or not torch.all((p >= 0) & (p <= 1)):
            raise BenchError(f"detector returned invalid probabilities (shape {tuple(p.shape)})")
        yield from zip(
            batch["path"],
            batch["generator"],
            batch["label"].int().tolist(),
            p.tolist(),
            strict=True,
        )


def clean_rows(run_dir: Path) -> pd.DataFrame:
    """The clean pass: metrics.csv as robustness rows (perturbation `none`, level empty)."""
    import pandas as pd

    from bench.metrics import COLUMNS

    metrics = pd.read_csv(
        run_dir / "metrics.csv", dtype={"generator": str}, keep_default_na=False, na_values=[""]
    )
    table = metrics[list(COLUMNS)].copy()
    table.insert(0, "level", "")
    table.insert(0, "perturbation", CLEAN)
    return table


def read_robustness(run_dir: Path) -> pd.DataFrame:
    """robustness.csv with generator and level kept as text (level "" for the clean pass)."""
    import pandas as pd

    return pd.read_csv(
        run_dir / FILE,
        dtype={"generator": str, "level": str, "perturbation": str},
        keep_default_na=False,
        na_values={c: [""] for c in ("n_real", "n_fake", "r_acc", "f_acc", "acc", "ap", "auc")},
    )


def _write_table(path: Path, table: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def run_sweep(
    detector: Any, samples: list, factory: Any, run_dir: Path, ctx: Any, sweep: Sweep
) -> Path:
    """Evaluate every level of ``sweep`` not yet in robustness.csv; return its path."""
    import pandas as pd

    from bench.metrics import per_generator_metrics

    path = run_dir / FILE
    done = read_robustness(run_dir) if path.is_file() else clean_rows(run_dir)
    have = set(zip(done["perturbation"], done["level"], strict=True))
    _write_table(path, done)
    chain = detector.transforms(train=False)
    new_file = not (run_dir / PREDICTIONS).is_file()
    with open(run_dir / PREDICTIONS, "a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(["perturbation", "level", "path", "generator", "label", "p_fake"])
        for item, level in sweep.passes():
            shown = format_level(level)
            if (item.name, shown) in have:
                ctx.log(f"robustness: {item.name}={shown} already in {FILE}; kept")
                continue
            generators, labels, probs = [], [], []
            perturbed = PerturbedChain(item, level, chain)
            for row in predict_rows(
                detector, samples, perturbed, factory, ctx, f"{item.name}={shown}"
            ):
                writer.writerow([item.name, shown, row[0], row[1], row[2], f"{row[3]:.6f}"])
                generators.append(row[1])
                labels.append(row[2])
                probs.append(row[3])
            fh.flush()
            if not probs:
                raise BenchError(f"no test image could be read under {item.name}={shown}")
            table = per_generator_metrics(generators, labels, probs)
            table.insert(0, "level", shown)
            table.insert(0, "perturbation", item.name)
            done = pd.concat([done, table], ignore_index=True)
            _write_table(path, done)
            mean = table[table["generator"] == "mean"].iloc[0]
            ctx.log(
                f"robustness {item.name}={shown}: mean acc {mean['acc']:.4f}  "
                f"ap {mean['ap']:.4f}  auc {mean['auc']:.4f}"
            )
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
    from bench.data.pipeline import make_loader
    from bench.perturb import resolve_sweep
    from bench.plugins import get_registry
    from bench.predict import load_run
    from bench.runner import RunLog, read_sets, write_json

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
    sets = SimpleNamespace(
        train=None, test=spec["test"], max_per_class=spec.get("max_per_class"), seed=spec["seed"]
    )
    _, test_samples = read_sets(sets)
    detector, ctx = load_run(run_dir, device)
    ctx.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    ctx.progress = progress
    ctx.run_dir = run_dir
    ctx.log = RunLog(run_dir / "log.txt", echo=progress)
    ctx.log(f"sweep of the finished run: {', '.join(i.name for i in sweep.items)}")

    def factory(samples: list, chain: Any, **kw: Any) -> Any:
        return make_loader(samples, chain, workers=ctx.workers, seed=ctx.seed, **kw)

    path = run_sweep(detector, test_samples, factory, run_dir, ctx, sweep)
    config["perturbations"] = records
    write_json(config_file, config)
    return path
