"""`bench predict`: p(fake) for single images from a finished run folder."""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError


def load_run(run_dir: Path, device: str = "auto"):  # noqa: ANN201
    """Rebuild the detector and its addons from config.json and load the saved state."""
    from bench.interfaces import RunContext
    from bench.plugins import get_registry
    from bench.runner import choose_device, load_state

    config_file = run_dir / "config.json"
    state_file = run_dir / "state.safetensors"
    if not config_file.is_file() or not state_file.is_file():
        raise BenchError(
            f"{run_dir} is not a finished run folder (needs config.json and state.safetensors)"
        )
    config = json.loads(config_file.read_text(encoding="utf-8"))
    registry = get_registry()
    det_cls = registry.get("detector", config["detector"]["name"]).load()
    detector = det_cls(config["detector"]["options"])
    addons = []
    for item in config.get("addons", []):
        cls = registry.get("addon", item["name"]).load()
        addon = cls(item["options"])
        addon.attach(detector)
        addons.append(addon)
    # a full-precision run predicts in full precision; a bf16 one as a new run would
    dev, amp = choose_device(device, "fp32" if config.get("precision") == "fp32" else "auto")
    ctx = RunContext(
        device=dev, amp_dtype=amp, seed=config["spec"].get("seed", 0), log=lambda m: None
    )
    detector.setup(ctx)
    for addon in addons:
        addon.prepare(detector, None, ctx)
    load_state(state_file, detector, addons)
    detector.train_mode(False)
    return detector, ctx


def predict_images(
    run_dir: Path, images: list[str], device: str = "auto"
) -> list[tuple[str, float | None]]:
    import torch
    from PIL import Image, UnidentifiedImageError

    from bench.data.layouts import Sample
    from bench.training import autocast

    detector, ctx = load_run(run_dir, device)
    chain = detector.transforms(train=False)
    # what a detector prepares before evaluating (NS-Net's caption/own readings caption
    # the images); each image is then scored on its own, in a batch of one
    readable = [str(Path(p).resolve()) for p in images if Path(p).is_file()]
    detector.plan_evaluation([Sample(p, 0, "-") for p in readable], ctx)
    results: list[tuple[str, float | None]] = []
    for path in images:
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            import sys

            print(f"bench: skipped {path}: {exc}", file=sys.stderr)
            results.append((path, None))
            continue
        tensor = chain(image, train=False, seed=0)[None].to(ctx.device)
        batch = {
            "image": tensor,
            "label": torch.zeros(1, device=ctx.device),
            "path": [str(Path(path).resolve())],
            "generator": ["-"],
        }
        with torch.no_grad(), autocast(ctx):
            results.append((path, float(detector.predict_proba(batch).float()[0])))
    return results
