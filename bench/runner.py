"""One benchmark run: build the detector with its addons, train, evaluate per generator, record.

Everything a run produces lands in OUT/runs/<run-id>/ as soon as it exists (config first,
predictions streamed), so a failure late in a run never loses what came before it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, interruption
from bench.evaluation import evaluate
from bench.options import merge_options
from bench.registry import Registry
from bench.run_files import (
    RunLog,
    finish_run,
    note_checkpoints,
    quiet,
    record_failure,
    report_skipped,
    split_of_paths,
    write_json,
    write_skipped,
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
    #: "bf16" or "fp32"; None: the detector's ``precision`` option, else bf16 on CUDA.
    precision: str | None = None
    progress: bool = True
    metric: str = "acc"
    train_name: str | None = None
    #: Leaderboard row label; default ``detector+addon1+addon2`` in the order given.
    name: str | None = None
    #: Test generators to mark as seen in training, besides those named like a training
    #: generator: ``NAME`` (any test set) or ``SET/NAME``.
    seen: list[str] = field(default_factory=list)
    #: Robustness sweep: perturbation name -> option overrides ("levels" among them).
    perturb: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Draw runs/<id>/plots/ at the end (the CLI turns it on; library calls stay fast).
    plots: bool = False
    #: Write a training checkpoint every N steps too (every epoch's end always has one).
    checkpoint_every: int | None = None
    #: Experiment tracker (bench.tracking): "tensorboard", "wandb", "mlflow"; None: off.
    log_with: str | None = None

    @property
    def label(self) -> str:
        return self.name or "+".join([self.detector, *self.addons])


@dataclass
class ResolvedComponents:
    detector_cls: type
    detector_options: dict[str, Any]
    addon_classes: list[type]
    addon_options: list[dict[str, Any]]
    sweep: Any = None  # bench.perturb.Sweep: the perturbations of a robustness sweep


def resolve_components(registry: Registry, spec: RunSpec) -> ResolvedComponents:
    """Check values, look names up, check addon needs and merge options: before any work."""
    from bench.run_checks import check_spec

    check_spec(spec)
    det_entry = registry.get("detector", spec.detector)
    addon_entries = [registry.get("addon", name) for name in spec.addons]
    if len(set(spec.addons)) != len(spec.addons):
        raise BenchError(f"addon listed twice: {' '.join(spec.addons)}")
    known = {spec.detector, *spec.addons, *spec.perturb}
    for component in spec.options:
        if component not in known:
            raise BenchError(
                f"--opt names '{component}', which is not part of this run "
                f"(components: {', '.join(sorted(known))})"
            )
    det_cls = det_entry.load()
    addon_classes = [entry.load() for entry in addon_entries]
    for name, cls in zip(spec.addons, addon_classes, strict=True):
        built_in = getattr(det_cls, "includes", {}).get(name)
        if built_in:
            raise BenchError(
                f"detector '{spec.detector}' already has {name} built in, so --addon {name} "
                f"would do nothing or do it twice: {built_in}"
            )
        cls.check_compatible(name, spec.detector, det_cls)
    flags: dict[str, Any] = {}
    if spec.epochs is not None:
        flags["epochs"] = spec.epochs
    if spec.batch_size is not None:
        flags["batch_size"] = spec.batch_size
    defaults = det_entry.options(spec.preset)
    if spec.precision is not None and "precision" in defaults:
        flags["precision"] = spec.precision  # the run-level flag wins, and is recorded
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
    from bench.perturb import resolve_sweep

    sweep = resolve_sweep(registry, spec.perturb, spec.options, spec.preset)
    return ResolvedComponents(det_cls, det_options, addon_classes, addon_options, sweep)


def presets_layer(entry: Any, preset: str | None) -> dict[str, Any]:
    return dict(entry.presets.get(preset, {})) if preset else {}


PRECISIONS = ("auto", "bf16", "fp32")


def choose_device(requested: str, precision: str | None = "auto") -> tuple[str, Any]:
    """(device, autocast dtype): "auto" is CUDA when present, else the CPU.

    precision "auto": bf16 autocast on CUDA, full precision on the CPU (bf16 there is slow
    and changes results); "bf16": autocast on any device; "fp32": none (the official
    UnivFD, SAFE and DGS-Net code all run in float32).
    """
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
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise BenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if requested.startswith("cuda") else "fp32"
    return requested, torch.bfloat16 if precision == "bf16" else None


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


def identity_of(spec: RunSpec, resolved: ResolvedComponents, test_sets: list) -> dict:
    """What decides this run's result (bench.run_identity); keys its leaderboard row."""
    from bench.run_identity import make_identity

    options = {spec.detector: resolved.detector_options}
    options.update(zip(spec.addons, resolved.addon_options, strict=True))
    identity = make_identity(
        spec.detector, spec.addons, options, spec.train, test_sets, spec.max_per_class
    )
    if spec.precision is not None and "precision" not in resolved.detector_options:
        # a detector with a precision option has it among its options already; for the
        # others --precision still changes the numbers, so it keys the row too
        identity["precision"] = spec.precision
    return identity


def run(spec: RunSpec, registry: Registry, resume: str | os.PathLike[str] | None = None) -> Path:
    """Run one benchmark and return its run folder; the leaderboard gains or updates a row.

    resume: a run folder that stopped: the run goes on there from its checkpoint.
    Under a launcher (several processes) every process runs this; process 0 alone writes.
    """
    from bench.cache import cache_root
    from bench.checkpoint import Checkpoints
    from bench.distributed import merge_read_logs, start
    from bench.run_checks import check_out
    from bench.run_data import listed_entries, log_listings, read_data, seen_columns
    from bench.run_identity import config_key
    from bench.run_resume import read_run_config
    from bench.tracking import Tracker

    previous = read_run_config(resume) if resume is not None else None
    resolved = resolve_components(registry, spec)
    if not spec.test:
        raise BenchError("nothing to evaluate: give --test PATH (or neither --train nor --test)")
    if resolved.detector_cls.trainable and not spec.train:
        raise BenchError(f"detector '{spec.detector}' must be trained: give --train PATH")
    check_out(spec.out)
    data = read_data(spec.train, spec.test, spec.max_per_class, spec.seed)
    train_samples, test_samples = data.train_samples, data.test_samples
    train_name = spec.train_name or (dataset_name(spec.train) if spec.train else "-")
    identity = identity_of(spec, resolved, data.test_sets)
    key = config_key(identity)
    if previous is not None and previous.get("config") != key:
        raise BenchError(
            f"--resume {resume}: its data or options changed since it started (configuration "
            f"{previous.get('config')}, now {key}); start a new run instead"
        )
    seen = seen_columns(data, spec.seen)

    import torch

    from bench.data.pipeline import (
        ReadLog,
        default_workers,
        load_caption_sidecars,
        make_loader,
        recording,
    )
    from bench.interfaces import RunContext, TrainData
    from bench.training import check_losses, no_training_image

    processes, device = start(spec.device)
    precision = spec.precision or resolved.detector_options.get("precision", "auto")
    device, amp = choose_device(device, precision)
    captions = load_caption_sidecars([p for p in [spec.train, *data_roots(data)] if p])
    out = Path(spec.out)
    run_dir, lock = open_run_dir(processes, out, resume, spec.label, train_name)
    log: Any = RunLog(run_dir / "log.txt", echo=spec.progress) if processes.main else quiet
    workers = spec.workers if spec.workers is not None else default_workers()
    config = {
        "label": spec.label,
        "train_name": train_name,
        "config": key,
        "seed": spec.seed,
        "identity": identity,
        "spec": asdict(spec),
        "detector": {"name": spec.detector, "options": resolved.detector_options},
        "addons": [
            {"name": n, "options": o}
            for n, o in zip(spec.addons, resolved.addon_options, strict=True)
        ],
        "test_sets": [
            {"name": t.name, "path": t.root, "layout": t.layout, "n": len(t.samples)}
            for t in data.tests
        ],
        "seen": [[t, g] for t, g in seen],
        "device": device,
        "precision": "bf16" if amp is not None else "fp32",
        "autocast": str(amp) if amp else None,
        "workers": workers,
        "torch": torch.__version__,
        "n_train": len(train_samples),
        "n_test": len(test_samples),
        "perturbations": [item.record() for item in resolved.sweep.items],
        "processes": processes.world,
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if previous is not None:
        config["started_at"] = previous.get("started_at", config["started_at"])
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        config["resumed"] = [*previous.get("resumed", []), now]
        log(f"resuming run {run_dir.name} (it stopped with status {previous.get('status')})")
    if processes.main:
        try:
            write_json(run_dir / "config.json", config)
        except BaseException:  # not even the config fits: leave no empty run folder behind
            lock.release()
            if previous is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    read_log = ReadLog()
    ctx = None
    tracker = None
    splits = split_of_paths(train_samples, test_samples)
    listed = listed_entries(data)
    try:
        log(
            f"run {run_dir.name}: {spec.label} (config {key}, seed {spec.seed}) on {device}; "
            f"train {train_name} ({len(train_samples)} images), test {len(test_samples)} "
            f"images in {len(data.tests)} set(s)"
        )
        log_listings(data, log)
        if processes.several:
            log(
                f"{processes.world} processes ({processes.backend}): each trains on its part "
                f"of every batch and scores one test batch in {processes.world}; "
                "process 0 writes"
            )
        if processes.main:
            write_skipped(run_dir, {}, splits, listed)
        if spec.log_with and processes.main:
            tracker = Tracker(spec.log_with, run_dir, spec.label, config)
        if seen:
            log(f"test generators seen in training: {', '.join(f'{t}/{g}' for t, g in seen)}")
        torch.manual_seed(spec.seed)
        ctx = RunContext(
            device=device,
            amp_dtype=amp,
            seed=spec.seed,
            workers=workers,
            progress=spec.progress and processes.main,  # one set of bars
            run_dir=run_dir,
            cache_dir=cache_root(),
            captions=captions,
            log=log,
            processes=processes,
            track=tracker.log if tracker is not None else None,
        )
        if resolved.detector_cls.trainable:
            ctx.checkpoints = Checkpoints(run_dir, spec.checkpoint_every, processes.main, log)
        with recording(read_log):
            detector = resolved.detector_cls(resolved.detector_options)
            addons = [
                cls(opts)
                for cls, opts in zip(resolved.addon_classes, resolved.addon_options, strict=True)
            ]
            for addon in addons:
                addon.attach(detector)
            detector.setup(ctx)
            for fact, value in detector.describe().items():
                log(f"{spec.detector}: {fact} = {value}")
                config.setdefault("describe", {})[fact] = value

            def factory(samples, chain, part=False, **kw):
                share = {"rank": processes.rank, "world": processes.world} if part else {}
                return make_loader(samples, chain, workers=workers, seed=spec.seed, **share, **kw)

            train_data = None
            if train_samples:
                train_data = TrainData(
                    train_samples,
                    factory,
                    batch_size=int(resolved.detector_options.get("batch_size", 32)),
                    epochs=int(resolved.detector_options.get("epochs", 1)),
                    root=spec.train,
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
                note_checkpoints(ctx.checkpoints, config, previous, log)
                if processes.several:  # every process evaluates process 0's state (as saved):
                    # parameters agree already; buffers (BatchNorm statistics) saw one part each
                    detector.load_trainable_state(processes.broadcast(detector.trainable_state()))
                merge_read_logs(processes, read_log)
                if processes.main:
                    report_skipped(run_dir, read_log, splits, log, training=True, listed=listed)
                no_training_image(read_log, train_samples)
                check_losses(losses)
                config["loss_first"] = losses[0] if losses else None
                config["loss_last"] = losses[-1] if losses else None
            if processes.main:
                save_state(run_dir / "state.safetensors", detector, addons, config)
            t0 = time.perf_counter()
            clean = evaluate(detector, test_samples, factory, run_dir, ctx)
        merge_read_logs(processes, read_log)
        if processes.main:
            report_skipped(run_dir, read_log, splits, log, training=False, listed=listed)
        config["eval_seconds"] = round(time.perf_counter() - t0, 2)
        if tracker is not None:
            tracker.log_metrics(clean.table)
        if resolved.sweep.items and processes.several:
            log("the robustness sweep runs in process 0 alone (it is not sharded)")
        if resolved.sweep.items and processes.main:
            from bench.robustness import run_sweep

            t0 = time.perf_counter()
            run_sweep(detector, clean.images, factory, run_dir, ctx, resolved.sweep, clean.plan)
            config["robustness_seconds"] = round(time.perf_counter() - t0, 2)
        config["notes"] = ctx.notes
        config["status"] = "finished"
        config["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if processes.main:
            write_json(run_dir / "config.json", config)
            if ctx.checkpoints is not None:
                ctx.checkpoints.remove()
    except BaseException as exc:
        if ctx is not None:
            config["notes"] = ctx.notes
        stop = interruption(exc)
        if processes.main:
            record_failure(run_dir, config, stop or exc, log, read_log, splits, listed=listed)
        if stop is not None and stop is not exc:
            raise stop from exc  # a stop, even when a dying worker's error came first
        raise
    finally:
        if tracker is not None:
            tracker.finish()
        if lock is not None:
            lock.release()
    if processes.main:
        finish_run(spec, out, key, train_name, run_dir, log)
    return run_dir


def open_run_dir(
    processes: Any, out: Path, resume: Any, label: str, train_name: str
) -> tuple[Path, Any]:
    """(the run folder, process 0's lock on it): a new folder, or the one to resume."""
    from bench.run_resume import RunLock

    lock, run_dir = None, None
    if processes.main:
        if resume is not None:
            run_dir = Path(resume)
        else:
            run_dir = out / "runs" / new_run_id(label, train_name)
            run_dir.mkdir(parents=True, exist_ok=False)
        lock = RunLock(run_dir).acquire()
    return Path(processes.broadcast(str(run_dir) if run_dir else None)), lock


def data_roots(data: Any) -> list[str]:
    """The test sets' folders (caption sidecars are looked for there)."""
    return [t.root for t in data.tests]


def save_state(path: Path, detector: Any, addons: list, config: dict[str, Any]) -> None:
    """Only what training changed, as safetensors; the config rebuilds everything else."""
    tensors = {f"detector.{k}": v.contiguous() for k, v in detector.trainable_state().items()}
    for i, addon in enumerate(addons):
        for k, v in addon.state().items():
            tensors[f"addon{i}.{k}"] = v.detach().cpu().contiguous()
    write_state(path, tensors, metadata={"label": config["label"]})
