"""One benchmark run: build the detector with its addons, train, evaluate per generator, record.

Everything a run produces lands in OUT/runs/<run-id>/ as soon as it exists (config first,
predictions streamed), so a failure late in a run never loses what came before it.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.options import merge_options
from bench.registry import Registry
from bench.run_files import (
    TEXT_ERRORS,
    RunLog,
    record_failure,
    report_skipped,
    split_of_paths,
    write_json,
)
from bench.run_files import save_state as write_state

DEMO_TRAIN_NAME = "demo"


@dataclass
class RunSpec:
    """Everything that decides a run; written to config.json (resolved) at its start."""

    detector: str
    addons: list[str] = field(default_factory=list)
    train: str | None = None
    test: list[str] = field(default_factory=list)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    preset: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    epochs: int | None = None
    out: str = "results"
    seed: int = 0
    max_per_class: int | None = None
    workers: int | None = None
    progress: bool = True
    metric: str = "acc"
    train_name: str | None = None
    #: Leaderboard row label; default ``detector+addon1+addon2`` in the order given.
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or "+".join([self.detector, *self.addons])


@dataclass
class ResolvedComponents:
    detector_cls: type
    detector_options: dict[str, Any]
    addon_classes: list[type]
    addon_options: list[dict[str, Any]]


def resolve_components(registry: Registry, spec: RunSpec) -> ResolvedComponents:
    """Check values, look names up, check addon needs and merge options: before any work."""
    from bench.run_checks import check_spec

    check_spec(spec)
    det_entry = registry.get("detector", spec.detector)
    addon_entries = [registry.get("addon", name) for name in spec.addons]
    if len(set(spec.addons)) != len(spec.addons):
        raise BenchError(f"addon listed twice: {' '.join(spec.addons)}")
    known = {spec.detector, *spec.addons}
    for component in spec.options:
        if component not in known:
            raise BenchError(
                f"--opt names '{component}', which is not part of this run "
                f"(components: {', '.join(sorted(known))})"
            )
    det_cls = det_entry.load()
    addon_classes = [entry.load() for entry in addon_entries]
    for name, cls in zip(spec.addons, addon_classes, strict=True):
        cls.check_compatible(name, spec.detector, det_cls)
    flags: dict[str, Any] = {}
    if spec.epochs is not None:
        flags["epochs"] = spec.epochs
    if spec.batch_size is not None:
        flags["batch_size"] = spec.batch_size
    defaults = det_entry.options(spec.preset)
    for key in list(flags):
        if key not in defaults:
            if det_cls.trainable:
                raise BenchError(f"detector '{spec.detector}' has no '{key}' option")
            flags.pop(key)
    det_options = merge_options(
        spec.detector,
        det_entry.specs,
        presets_layer(det_entry, spec.preset),
        spec.options.get(spec.detector, {}),
        flags,
    )
    addon_options = [
        merge_options(
            entry.name,
            entry.specs,
            presets_layer(entry, spec.preset),
            spec.options.get(entry.name, {}),
        )
        for entry in addon_entries
    ]
    if det_cls.trainable:
        from bench.run_checks import check_int

        for key in ("batch_size", "epochs"):
            if key in det_options:
                check_int(key, det_options[key])
    return ResolvedComponents(det_cls, det_options, addon_classes, addon_options)


def presets_layer(entry: Any, preset: str | None) -> dict[str, Any]:
    return dict(entry.presets.get(preset, {})) if preset else {}


def choose_device(requested: str) -> tuple[str, Any]:
    """ "auto" is CUDA (with bf16 autocast) when present, else the CPU."""
    import torch

    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {requested} asked for, but no CUDA device is available")
    if requested.startswith("cuda:") and int(requested[5:]) >= torch.cuda.device_count():
        raise BenchError(
            f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if requested == "mps" and not torch.backends.mps.is_available():
        raise BenchError("--device mps asked for, but MPS is not available")
    amp = torch.bfloat16 if requested.startswith("cuda") else None
    return requested, amp


def dataset_name(path: str) -> str:
    """A short name for a train set: its folder, with the parent for generic names.

    Undecodable bytes of a folder name show as ``\\xNN``: the name goes into text outputs.
    """
    from bench.fileio import readable_name

    p = Path(path).resolve()
    if p.name.lower() in {"train", "training", "val", "test"} and p.parent.name:
        return readable_name(f"{p.parent.name}/{p.name}")
    return readable_name(p.stem if p.is_file() else p.name)


def new_run_id(label: str, train_name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    safe = "".join(c if c.isalnum() or c in "+-_" else "-" for c in f"{label}_{train_name}")
    return f"{stamp}-{safe}-{os.urandom(2).hex()}"


def read_sets(spec: RunSpec) -> tuple[list, list]:
    from bench.data.layouts import read_dataset, sample_per_class

    train = read_dataset(spec.train, split="train") if spec.train else []
    test: list = []
    for path in spec.test:
        test.extend(read_dataset(path, split="val"))
    if spec.max_per_class:
        train = sample_per_class(train, spec.max_per_class, seed=spec.seed)
        test = sample_per_class(test, spec.max_per_class, seed=spec.seed)
    return train, test


def run(spec: RunSpec, registry: Registry) -> Path:
    """Run one benchmark and return its run folder; the leaderboard gains or updates a row."""
    from bench import leaderboard
    from bench.cache import cache_root
    from bench.run_checks import check_out

    resolved = resolve_components(registry, spec)
    if not spec.test:
        raise BenchError("nothing to evaluate: give --test PATH (or neither --train nor --test)")
    if resolved.detector_cls.trainable and not spec.train:
        raise BenchError(f"detector '{spec.detector}' must be trained: give --train PATH")
    check_out(spec.out)
    train_samples, test_samples = read_sets(spec)
    train_name = spec.train_name or (dataset_name(spec.train) if spec.train else "-")

    import torch

    from bench.data.pipeline import ReadLog, load_caption_sidecars, make_loader, recording
    from bench.interfaces import RunContext, TrainData
    from bench.training import check_losses, no_training_image

    device, amp = choose_device(spec.device)
    captions = load_caption_sidecars([p for p in [spec.train, *spec.test] if p])
    out = Path(spec.out)
    run_dir = out / "runs" / new_run_id(spec.label, train_name)
    run_dir.mkdir(parents=True, exist_ok=False)
    log = RunLog(run_dir / "log.txt", echo=spec.progress)
    workers = spec.workers if spec.workers is not None else min(4, os.cpu_count() or 1)
    config = {
        "label": spec.label,
        "train_name": train_name,
        "spec": asdict(spec),
        "detector": {"name": spec.detector, "options": resolved.detector_options},
        "addons": [
            {"name": n, "options": o}
            for n, o in zip(spec.addons, resolved.addon_options, strict=True)
        ],
        "device": device,
        "autocast": str(amp) if amp else None,
        "torch": torch.__version__,
        "n_train": len(train_samples),
        "n_test": len(test_samples),
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        write_json(run_dir / "config.json", config)
    except BaseException:  # not even the config fits: leave no empty run folder behind
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    read_log = ReadLog()
    splits = split_of_paths(train_samples, test_samples)
    try:
        log(
            f"run {run_dir.name}: {spec.label} on {device}; train {train_name} "
            f"({len(train_samples)} images), test {len(test_samples)} images"
        )
        torch.manual_seed(spec.seed)
        ctx = RunContext(
            device=device,
            amp_dtype=amp,
            seed=spec.seed,
            workers=workers,
            progress=spec.progress,
            run_dir=run_dir,
            cache_dir=cache_root(),
            captions=captions,
            log=log,
        )
        with recording(read_log):
            detector = resolved.detector_cls(resolved.detector_options)
            addons = [
                cls(opts)
                for cls, opts in zip(resolved.addon_classes, resolved.addon_options, strict=True)
            ]
            for addon in addons:
                addon.attach(detector)
            detector.setup(ctx)
            for key, value in detector.describe().items():
                log(f"{spec.detector}: {key} = {value}")
                config.setdefault("describe", {})[key] = value

            def factory(samples, chain, **kw):
                return make_loader(samples, chain, workers=workers, seed=spec.seed, **kw)

            train_data = None
            if train_samples:
                train_data = TrainData(
                    train_samples,
                    factory,
                    batch_size=int(resolved.detector_options.get("batch_size", 32)),
                    epochs=int(resolved.detector_options.get("epochs", 1)),
                )
            for addon in addons:
                addon.prepare(detector, train_data, ctx)
            if resolved.detector_cls.trainable and train_data is not None:
                t0 = time.perf_counter()
                try:
                    losses = detector.fit(train_data, ctx)
                except Exception:
                    no_training_image(read_log, train_samples)  # the real reason, if it is
                    raise
                config["train_seconds"] = round(time.perf_counter() - t0, 2)
                report_skipped(run_dir, read_log, splits, log, training=True)
                no_training_image(read_log, train_samples)
                check_losses(losses)
                config["loss_first"] = losses[0] if losses else None
                config["loss_last"] = losses[-1] if losses else None
            save_state(run_dir / "state.safetensors", detector, addons, config)
            t0 = time.perf_counter()
            evaluate(detector, test_samples, factory, run_dir, ctx, spec)
        report_skipped(run_dir, read_log, splits, log, training=False)
        config["eval_seconds"] = round(time.perf_counter() - t0, 2)
        config["status"] = "finished"
        config["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json(run_dir / "config.json", config)
    except BaseException as exc:
        record_failure(run_dir, config, exc, log, read_log, splits)
        raise
    leaderboard.record(out, spec.label, train_name, run_dir.name)
    paths = leaderboard.write(out, metric=spec.metric)
    log(f"leaderboard: {paths[0]} and {paths[1]}")
    return run_dir


def save_state(path: Path, detector: Any, addons: list, config: dict[str, Any]) -> None:
    """Only what training changed, as safetensors; the config rebuilds everything else."""
    tensors = {f"detector.{k}": v.contiguous() for k, v in detector.trainable_state().items()}
    for i, addon in enumerate(addons):
        for k, v in addon.state().items():
            tensors[f"addon{i}.{k}"] = v.detach().cpu().contiguous()
    write_state(path, tensors, metadata={"label": config["label"]})


def evaluate(detector, samples, factory, run_dir: Path, ctx, spec: RunSpec) -> None:
    """Stream predictions to predictions.csv, then write per-generator metrics.csv."""
    import torch
    from tqdm import tqdm

    from bench.metrics import per_generator_metrics
    from bench.training import autocast, to_device

    chain = detector.transforms(train=False)
    batch_size = int(
        detector.options.get("eval_batch_size", detector.options.get("batch_size", 32))
    )
    loader = factory(samples, chain, train=False, shuffle=False, batch_size=batch_size)
    generators, labels, probs, skipped = [], [], [], []
    detector.train_mode(False)
    with open(
        run_dir / "predictions.csv", "w", newline="", encoding="utf-8", errors=TEXT_ERRORS
    ) as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "generator", "label", "prob"])
        for batch in tqdm(loader, desc="evaluate", disable=not ctx.progress):
            skipped.extend(batch["skipped"])
            if batch["image"] is None:
                continue
            batch = to_device(batch, ctx.device)
            with torch.no_grad(), autocast(ctx):
                p = detector.predict_proba(batch).float().cpu()
            if p.shape != (len(batch["path"]),) or not torch.all((p >= 0) & (p <= 1)):
                raise BenchError(
                    f"detector returned invalid probabilities (shape {tuple(p.shape)})"
                )
            for path, gen, lab, prob in zip(
                batch["path"], batch["generator"], batch["label"].tolist(), p.tolist(), strict=True
            ):
                writer.writerow([path, gen, int(lab), f"{prob:.6f}"])
                generators.append(gen)
                labels.append(int(lab))
                probs.append(prob)
            fh.flush()
    if skipped:
        ctx.log(f"skipped {len(skipped)} unreadable test images (listed in skipped.txt)")
    if not probs:
        raise BenchError("no test image could be read")
    table = per_generator_metrics(generators, labels, probs)
    table.to_csv(run_dir / "metrics.csv", index=False, errors=TEXT_ERRORS)
    mean = table[table["generator"] == "mean"].iloc[0]
    ctx.log(
        f"mean over generators: acc {mean['acc']:.4f}  ap {mean['ap']:.4f}  auc {mean['auc']:.4f}"
    )
