"""Table specs (benchmarks/tables/*.toml): which runs make up a paper table, and how to show it.

Parsing checks the shape of a spec only; `check_components` then checks its names and
option keys against a registry, so a typo fails in a second, before any training.
Import-light (stdlib only): the CLI loads this at `bench table` start-up.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.options import read_toml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = PROJECT_ROOT / "benchmarks" / "tables"
PAPER_DIR = PROJECT_ROOT / "benchmarks" / "paper"
METRICS = ("acc", "r_acc", "f_acc", "ap", "auc")
PRESETS = ("demo", "paper")
TOP_KEYS = {"name", "title", "paper_table", "metric", "real_column", "mean_column"}
TOP_KEYS |= {"switches", "presets", "rows"}
ROW_KEYS = {"label", "detector", "addons", "options", "base", "paper_row", "unavailable"}
ROW_KEYS |= {"switches"}
PRESET_KEYS = {"train", "test", "train_name", "columns", "max_per_class"}


@dataclass
class TableRow:
    """One row of the table: one run (detector + addons + options) under a unique label."""

    label: str
    detector: str
    addons: list[str] = field(default_factory=list)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    base: str | None = None  # label of the "without" row this row's delta is taken against
    paper_row: str | None = None  # `method` of the paper CSV's row that this row regenerates
    unavailable: str | None = None  # why this row may be skipped while its parts are missing
    switches: dict[str, bool] = field(default_factory=dict)


@dataclass
class TablePreset:
    """Where the data of one preset lives; `{data_root}`/`{demo_root}` are filled in later."""

    train: str
    test: list[str]
    train_name: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # shown name -> generator name
    max_per_class: int | None = None


@dataclass
class TableSpec:
    name: str
    path: Path
    title: str
    metric: str
    mean_column: str
    real_column: bool
    rows: list[TableRow]
    presets: dict[str, TablePreset]
    paper_table: int | None = None
    switches: list[str] = field(default_factory=list)

    def row(self, label: str) -> TableRow:
        return next(r for r in self.rows if r.label == label)


def available_specs() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.toml"))


def resolve_spec_path(spec: str | Path) -> Path:
    """A path to a TOML file, or a bare name looked up in benchmarks/tables/."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.suffix != ".toml" and len(path.parts) == 1:
        named = SPEC_DIR / f"{path.name}.toml"
        if named.is_file():
            return named
        close = difflib.get_close_matches(path.name, available_specs(), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise BenchError(
            f"no table spec '{spec}' in {SPEC_DIR}{hint} (known: {', '.join(available_specs())})"
        )
    raise BenchError(f"table spec not found: {path}")


def load_spec(spec: str | Path) -> TableSpec:
    """Read and shape-check a spec; names are checked by `check_components`."""
    path = resolve_spec_path(spec)
    data = read_toml(path, "table spec")
    where = f"table spec {path.name}"
    _no_unknown(data, TOP_KEYS, where)
    metric = data.get("metric", "acc")
    if metric not in METRICS:
        raise BenchError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
    switches = list(data.get("switches", []))
    rows = [_row(r, i, switches, where) for i, r in enumerate(_list(data, "rows", where))]
    _check_rows(rows, where)
    presets = {k: _preset(v, f"{where} [presets.{k}]") for k, v in data.get("presets", {}).items()}
    for name in presets:
        if name not in PRESETS:
            raise BenchError(f"{where}: unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return TableSpec(
        name=str(data.get("name", path.stem)),
        path=path,
        title=str(data.get("title", path.stem)),
        metric=metric,
        mean_column=str(data.get("mean_column", "mean")),
        real_column=bool(data.get("real_column", False)),
        rows=rows,
        presets=presets,
        paper_table=data.get("paper_table"),
        switches=switches,
    )


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise BenchError(f"{where}: unknown key '{key}'{hint}")


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise BenchError(f"{where}: needs at least one [[{key}]] entry")
    return value


def _row(data: dict[str, Any], index: int, switches: list[str], where: str) -> TableRow:
    where = f"{where}, row {index + 1}"
    _no_unknown(data, ROW_KEYS, where)
    for key in ("label", "detector"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise BenchError(f"{where}: '{key}' must be a non-empty string")
    options = data.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise BenchError(f"{where}: 'options' must map component names to option tables")
    row_switches = dict(data.get("switches", {}))
    if set(row_switches) != set(switches):
        raise BenchError(f"{where}: 'switches' must set exactly {', '.join(switches) or 'none'}")
    return TableRow(
        label=data["label"],
        detector=data["detector"],
        addons=list(data.get("addons", [])),
        options={k: dict(v) for k, v in options.items()},
        base=data.get("base"),
        paper_row=data.get("paper_row"),
        unavailable=data.get("unavailable"),
        switches={k: bool(v) for k, v in row_switches.items()},
    )


def _check_rows(rows: list[TableRow], where: str) -> None:
    labels = [r.label for r in rows]
    for label in labels:
        if labels.count(label) > 1:
            raise BenchError(f"{where}: row label '{label}' is used twice")
    for row in rows:
        if row.base is not None and row.base not in labels:
            raise BenchError(f"{where}: row '{row.label}' has base '{row.base}', not a row label")
        if row.base == row.label:
            raise BenchError(f"{where}: row '{row.label}' is its own base")


def _preset(data: dict[str, Any], where: str) -> TablePreset:
    _no_unknown(data, PRESET_KEYS, where)
    test = data.get("test")
    if not isinstance(data.get("train"), str) or not isinstance(test, list) or not test:
        raise BenchError(f"{where}: needs 'train' (a path) and 'test' (a list of paths)")
    return TablePreset(
        train=data["train"],
        test=[str(t) for t in test],
        train_name=data.get("train_name"),
        columns={str(k): str(v) for k, v in data.get("columns", {}).items()},
        max_per_class=data.get("max_per_class"),
    )


def check_components(spec: TableSpec, registry: Any) -> list[TableRow]:
    """The rows that can run; a row naming unknown parts must say why (`unavailable`).

    Option keys of runnable rows are checked against each component's defaults.
    """
    from bench.options import merge_options

    runnable = []
    for row in spec.rows:
        missing = _missing_names(row, registry)
        if missing:
            if row.unavailable:
                continue
            raise BenchError(
                f"table spec {spec.path.name}, row '{row.label}': {missing[0]} "
                '(mark the row with unavailable = "why" if it is not implemented yet)'
            )
        parts = {row.detector: ("detector", row.detector)}
        parts.update({a: ("addon", a) for a in row.addons})
        for component, values in row.options.items():
            if component not in parts:
                raise BenchError(
                    f"table spec {spec.path.name}, row '{row.label}': options for "
                    f"'{component}', which is not part of the row"
                )
            merge_options(component, registry.get(*parts[component]).specs, values)
        runnable.append(row)
    return runnable


def _missing_names(row: TableRow, registry: Any) -> list[str]:
    """One-line reasons for each name of the row the registry does not know."""
    from bench.registry import unknown_name_message

    missing = []
    for kind, name in [("detector", row.detector), *(("addon", a) for a in row.addons)]:
        if name not in registry.names(kind):
            missing.append(unknown_name_message(kind, name, registry.names(kind)))
    return missing


def skip_reason(row: TableRow, registry: Any) -> str | None:
    """Why a row marked `unavailable` is skipped now, or None when it can run."""
    parts = [("detector", row.detector), *(("addon", a) for a in row.addons)]
    missing = [f"{k} '{n}' is not registered" for k, n in parts if n not in registry.names(k)]
    return f"{row.unavailable} ({'; '.join(missing)})" if missing else None
