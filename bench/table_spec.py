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
#: Where an installed wheel keeps its copy of benchmarks/ (setup.py puts it there).
PACKAGED = Path(__file__).resolve().parent / "_data"


def _data_dir(*parts: str) -> Path:
    """benchmarks/<parts> of the checkout, else the copy shipped inside the package."""
    checkout = PROJECT_ROOT.joinpath("benchmarks", *parts)
    return checkout if checkout.is_dir() else PACKAGED.joinpath(*parts)


SPEC_DIR = _data_dir("tables")
PAPER_DIR = _data_dir("paper")
METRICS = ("acc", "r_acc", "f_acc", "ap", "auc")
PRESETS = ("demo", "paper")
TOP_KEYS = {"name", "title", "paper_table", "metric", "real_column", "mean_column"}
TOP_KEYS |= {"switches", "presets", "rows"}
TOP_KEYS |= {"kind", "perturb", "generator"}  # kind = "robustness" (bench.robustness_table)
KINDS = ("generators", "robustness")
ROW_KEYS = {"label", "detector", "addons", "options", "base", "paper_row", "unavailable"}
ROW_KEYS |= {"switches"}
PRESET_KEYS = {"train", "test", "train_name", "columns", "max_per_class", "seen"}


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
    #: (name or None, path) per test set; a None name is the folder's own.
    test: list[tuple[str | None, str]]
    train_name: str | None = None
    #: shown name -> the generators it may be, first match wins ("SET/GEN", or "GEN" in
    #: any set); matched ignoring case and the separators - _ . and space.
    columns: dict[str, list[str]] = field(default_factory=dict)
    max_per_class: int | None = None
    seen: list[str] = field(default_factory=list)


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
    #: "generators" (a column per generator) or "robustness" (a column per perturbation level).
    kind: str = "generators"
    #: Robustness tables: perturbation -> option overrides, as a run's `perturb`.
    perturb: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Robustness tables: the generator whose metric fills the cells ("mean": over generators).
    generator: str = "mean"

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
    kind, perturb, generator = _kind(data, where)
    return TableSpec(
        kind=kind,
        perturb=perturb,
        generator=generator,
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


def _kind(data: dict[str, Any], where: str) -> tuple[str, dict[str, dict[str, Any]], str]:
    """(kind, perturb, generator); a robustness table must name its perturbations."""
    from bench.perturb import perturb_from_config

    kind = data.get("kind", "generators")
    if kind not in KINDS:
        raise BenchError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind != "robustness":
        for key in ("perturb", "generator"):
            if key in data:
                raise BenchError(f"{where}: '{key}' belongs to kind = \"robustness\" tables")
        return kind, {}, "mean"
    perturb = perturb_from_config(data.get("perturb", {}), where)
    if not perturb:
        raise BenchError(f"{where}: a robustness table needs [perturb] NAME = [levels]")
    generator = data.get("generator", "mean")
    if not isinstance(generator, str) or not generator:
        raise BenchError(f"{where}: 'generator' must be a generator name or \"mean\"")
    return kind, perturb, generator


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


def _test_entry(entry: Any, where: str) -> tuple[str | None, str]:
    if isinstance(entry, str):
        return None, entry
    if isinstance(entry, dict) and set(entry) == {"name", "path"}:
        return str(entry["name"]), str(entry["path"])
    raise BenchError(f"{where}: a test entry is a path or {{ name = ..., path = ... }}")


def _aliases(value: Any, where: str) -> list[str]:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BenchError(f"{where}: a column maps to a generator or a list of aliases")
    return value


def _preset(data: dict[str, Any], where: str) -> TablePreset:
    _no_unknown(data, PRESET_KEYS, where)
    test = data.get("test")
    if not isinstance(data.get("train"), str) or not isinstance(test, list) or not test:
        raise BenchError(f"{where}: needs 'train' (a path) and 'test' (a list of paths)")
    tests = [_test_entry(t, where) for t in test]
    names = [n for n, _ in tests if n]
    for name in names:
        if names.count(name) > 1:
            raise BenchError(f"{where}: two test sets are named '{name}'")
    return TablePreset(
        train=data["train"],
        test=tests,
        train_name=data.get("train_name"),
        columns={
            str(k): _aliases(v, f"{where} column '{k}'") for k, v in data.get("columns", {}).items()
        },
        max_per_class=data.get("max_per_class"),
        seen=[str(s) for s in data.get("seen", [])],
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
