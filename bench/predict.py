"""`bench predict`: p(fake) for single images from a finished run folder.

A run folder may come from someone else, so nothing in it is trusted: config.json is
checked against the catalogue like a new run's options, every tensor of
state.safetensors must have the name, shape and dtype the rebuilt detector expects and
finite values, and every prediction must be a probability. Anything else is one line
(exit status 2), never a traceback, a silent cast or a NaN score.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def _damaged(run_dir: Path, what: str) -> BenchError:
    return BenchError(f"run folder {run_dir} is damaged or not from this toolkit: {what}")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.json, with the shape `bench run` writes: detector name and options, addons."""
    from bench.fileio import open_regular

    config_file = run_dir / "config.json"
    state_file = run_dir / "state.safetensors"
    if not config_file.is_file() or not state_file.is_file():
        raise BenchError(
            f"{run_dir} is not a finished run folder (needs config.json and state.safetensors)"
        )
    try:
        with open_regular(config_file) as fh:
            config = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(run_dir, f"config.json cannot be read ({exc})") from None
    detector = config.get("detector") if isinstance(config, dict) else None
    addons = config.get("addons", []) if isinstance(config, dict) else None
    parts = [detector, *(addons if isinstance(addons, list) else [None])]
    if not all(
        isinstance(p, dict)
        and isinstance(p.get("name"), str)
        and isinstance(p.get("options"), dict)
        for p in parts
    ):
        raise _damaged(run_dir, "config.json lacks detector/addons with a name and options")
    spec = config.get("spec", {})
    seed = spec.get("seed", 0) if isinstance(spec, dict) else 0
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _damaged(run_dir, f"config.json has seed {seed!r}")
    return {"detector": detector, "addons": addons, "seed": seed}


def check_state(run_dir: Path, found: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Every tensor ``expected`` names, with its exact shape and dtype; all values finite.

    ``expected`` is the rebuilt component's own state before loading. Tensors it does not
    name yet are states fitted in training (a projector): the component's loader checks them.
    """
    import torch

    missing = sorted(set(expected) - set(found))
    if missing:
        more = " ..." if len(missing) > 3 else ""
        raise _damaged(run_dir, f"state.safetensors lacks {', '.join(missing[:3])}{more} ({what})")
    for key, want in expected.items():
        got = found[key]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise _damaged(
                run_dir,
                f"state.safetensors: {key} is {got.dtype} {tuple(got.shape)}, "
                f"{what} needs {want.dtype} {tuple(want.shape)}",
            )
    for key, got in found.items():
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise _damaged(run_dir, f"state.safetensors: {key} holds NaN or infinite values")


def load_state_checked(run_dir: Path, detector: Any, addons: list) -> None:
    """Load state.safetensors into the rebuilt detector and addons after checking every tensor."""
    from safetensors.torch import load

    from bench.fileio import open_regular

    try:
        with open_regular(run_dir / "state.safetensors") as fh:
            tensors = load(fh.read())
    except Exception as exc:  # safetensors raises its own error type for a damaged header
        raise _damaged(run_dir, f"state.safetensors cannot be read ({exc})") from None
    mine = {k[len("detector.") :]: v for k, v in tensors.items() if k.startswith("detector.")}
    check_state(run_dir, mine, detector.trainable_state(), "the detector")
    parts = []
    for i, addon in enumerate(addons):
        prefix = f"addon{i}."
        part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        check_state(run_dir, part, addon.state(), f"addon {i + 1}")
        parts.append(part)
    if len(mine) + sum(len(p) for p in parts) != len(tensors):
        raise _damaged(run_dir, "state.safetensors holds tensors no component of the run owns")
    try:
        detector.load_trainable_state(mine)
        for addon, part in zip(addons, parts, strict=True):
            addon.load_state(part)
    except BenchError as exc:
        raise _damaged(run_dir, str(exc)) from None
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise _damaged(run_dir, f"its state does not load: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def load_run(run_dir: Path, device: str = "auto"):  # noqa: ANN201
    """Rebuild the detector and its addons from config.json and load the checked state."""
    from bench.interfaces import RunContext
    from bench.options import merge_options
    from bench.plugins import get_registry
    from bench.run_checks import check_device
    from bench.runner import choose_device

    device = check_device(device)
    config = read_run_config(run_dir)
    registry = get_registry()
    try:  # names and options checked as for a new run, the run folder named in the error
        det_entry = registry.get("detector", config["detector"]["name"])
        options = merge_options(det_entry.name, det_entry.specs, config["detector"]["options"])
        det_cls = det_entry.load()
        detector = det_cls(options)
        addons = []
        for item in config["addons"]:
            entry = registry.get("addon", item["name"])
            cls = entry.load()
            cls.check_compatible(entry.name, det_entry.name, det_cls)
            addon = cls(merge_options(entry.name, entry.specs, item["options"]))
            addon.attach(detector)
            addons.append(addon)
    except BenchError as exc:
        raise BenchError(f"run folder {run_dir}: config.json: {exc}") from None
    dev, amp = choose_device(device)
    ctx = RunContext(device=dev, amp_dtype=amp, seed=config["seed"], log=lambda m: None)
    detector.setup(ctx)
    for addon in addons:
        addon.prepare(detector, None, ctx)
    load_state_checked(run_dir, detector, addons)
    detector.train_mode(False)
    return detector, ctx


def predict_images(
    run_dir: Path, images: list[str], device: str = "auto"
) -> Iterator[tuple[str, float | None]]:
    """(path, p(fake)) per image, as each is computed; (path, None) for an unreadable one."""
    import torch

    from bench.data.images import UnreadableImage, load_rgb
    from bench.training import autocast

    detector, ctx = load_run(run_dir, device)
    chain = detector.transforms(train=False)
    for path in images:
        try:
            image = load_rgb(path)
        except UnreadableImage as exc:
            print(f"bench: skipped {path}: {exc.reason}", file=sys.stderr)
            yield path, None
            continue
        tensor = chain(image, train=False, seed=0)[None].to(ctx.device)
        batch = {
            "image": tensor,
            "label": torch.zeros(1, device=ctx.device),
            "path": [str(Path(path).resolve())],
            "generator": ["-"],
        }
        try:
            with torch.no_grad(), autocast(ctx):
                p = detector.predict_proba(batch).float().cpu()
        except (RuntimeError, ValueError) as exc:  # e.g. a saved projector of the wrong size
            raise _damaged(run_dir, f"predicting failed: {_first_line(exc)}") from None
        if p.shape != (1,) or not bool(((p >= 0) & (p <= 1)).all()):
            raise BenchError(
                f"the detector of {run_dir} gave {p.flatten()[:1].tolist()} for {path}, not a "
                "probability (its saved state may be damaged)"
            )
        yield path, float(p[0])
