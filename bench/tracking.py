"""Experiment tracking through accelerate's trackers: `bench run --log-with NAME`.

Process 0 logs per-step loss and learning rate, each loop's data-wait share and the
final per-generator metrics, under the run's label, to TensorBoard (event files in
``RUN_DIR/tracking/``), Weights & Biases or MLflow (their own settings: WANDB_MODE,
MLFLOW_TRACKING_URI, ...). The package is checked before any work: a missing one is a
one-line error naming it. Import-light: accelerate loads only when a tracker opens.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from bench.errors import BenchError

#: --log-with NAME -> the package it needs.
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
TRACKING_DIR = "tracking"


def check_log_with(name: str | None) -> None:
    """A known tracker whose package is installed (with accelerate), else a one-line error."""
    if name is None:
        return
    if name not in TRACKERS:
        raise BenchError(f"--log-with must be one of {', '.join(TRACKERS)}, got {name!r}")
    for package in ("accelerate", TRACKERS[name]):
        if importlib.util.find_spec(package) is None:
            raise BenchError(
                f"--log-with {name} needs the '{package}' package, which is not installed "
                f"(pip install {package})"
            )


class Tracker:
    """One accelerate tracker, opened on process 0 for one run."""

    def __init__(self, name: str, run_dir: Path, label: str, config: dict[str, Any]):
        from accelerate import tracking

        if name == "tensorboard":  # RUN_DIR/tracking/<run id>/events.out.tfevents.*
            self.tracker = tracking.TensorBoardTracker(run_dir.name, run_dir / TRACKING_DIR)
        elif name == "wandb":
            self.tracker = tracking.WandBTracker(label, name=run_dir.name)
        else:
            self.tracker = tracking.MLflowTracker(label, run_name=run_dir.name)
        if hasattr(self.tracker, "start"):  # accelerate >= 1.6 opens trackers lazily
            self.tracker.start()
        self.tracker.store_init_configuration(flat_config(config))

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        self.tracker.log(values, step=step)

    def log_metrics(self, table: Any) -> None:
        """The final metrics: one value per (test set/generator, metric) and the means."""
        from bench.metrics import METRICS

        values = {}
        for row in table.to_dict("records"):
            where = "mean" if row["kind"] == "mean" else f"{row['test_set']}/{row['generator']}"
            for metric in METRICS:
                value = row.get(metric)
                if isinstance(value, int | float) and value == value:  # NaN left out
                    values[f"test/{where}/{metric}"] = float(value)
        self.log(values, None)

    def finish(self) -> None:
        self.tracker.finish()


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run's settings as the flat scalars trackers take for hyper-parameters."""
    flat: dict[str, Any] = {}
    for key in ("label", "config", "seed", "device", "precision", "n_train", "n_test"):
        flat[key] = config.get(key)
    flat["processes"] = config.get("processes", 1)
    detector = config.get("detector", {})
    for key, value in detector.get("options", {}).items():
        flat[f"{detector.get('name')}.{key}"] = value
    scalar = (int, float, str, bool)
    return {k: v if isinstance(v, scalar) else str(v) for k, v in flat.items()}
