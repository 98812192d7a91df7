"""`bench show-patches IMAGE`: what a patch-selecting geometry step keeps, as one PNG.

Any registered transform with an ``explain(image, train=, seed=)`` method can be shown
(NS-Net's `patch_select` has one): left, the image with every kept patch outlined by its
group; right, the tiled image the network receives, each tile outlined the same way.
The core knows nothing about the method: it draws the boxes and groups the step reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchError

GROUP_COLOURS = {"highest": "#e66100", "lowest": "#1f6fd1"}  # orange / blue: colour-blind safe


def build_step(name: str, flags: list[str]) -> Any:
    """The registered transform ``name`` with its catalogue options and ``--opt`` overrides."""
    from bench.options import merge_options, parse_opt_flags
    from bench.plugins import get_registry

    entry = get_registry().get("transform", name)
    overrides = parse_opt_flags(flags)
    for component in overrides:
        if component != name:
            raise BenchError(f"--opt names '{component}'; here only '{name}.KEY=VALUE' applies")
    options = merge_options(name, entry.specs, overrides.get(name, {}))
    cls = entry.load()
    if not callable(getattr(cls, "explain", None)):
        raise BenchError(f"transform '{name}' cannot show what it selects (it has no explain())")
    return cls(**options)


def draw(explanation: dict[str, Any], path: Path, title: str) -> Path:
    """Input with the kept patches outlined | the tiled output with each tile outlined."""
    from matplotlib.patches import Patch, Rectangle

    from bench.plots import _save, pyplot

    plt = pyplot()
    image, output = explanation["input"], explanation["output"]
    widths = [image.size[0] / image.size[1], output.size[0] / output.size[1]]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(4.2 * sum(widths) + 0.6, 4.9), gridspec_kw={"width_ratios": widths}
    )
    left.imshow(image, interpolation="nearest")  # the pixels as they are, never smoothed
    n = explanation["tile_size"]
    kept = {(x0, y0) for x0, y0, *_ in explanation["boxes"]}
    width, height = image.size
    for y0 in range(0, height, n):  # what is not kept (and any remainder strip) is dimmed
        for x0 in range(0, width, n):
            if (x0, y0) not in kept:
                left.add_patch(
                    Rectangle((x0 - 0.5, y0 - 0.5), n, n, color="black", alpha=0.7, lw=0)
                )
    for x0, y0, x1, y1, group in explanation["boxes"]:
        left.add_patch(
            Rectangle(
                (x0 + 0.5, y0 + 0.5),
                x1 - x0 - 2,
                y1 - y0 - 2,
                fill=False,
                edgecolor=GROUP_COLOURS.get(group, "white"),
                linewidth=1.4,
            )
        )
    left.set_title(f"input {width}×{height}: kept patches (the rest dimmed)", fontsize=10)
    right.imshow(output, interpolation="nearest")
    cols = output.size[0] // n
    for k, group in enumerate(explanation["tiles"]):
        r, c = divmod(k, cols)
        right.add_patch(
            Rectangle(
                (c * n - 0.5 + 1, r * n - 0.5 + 1),
                n - 2,
                n - 2,
                fill=False,
                edgecolor=GROUP_COLOURS.get(group, "white"),
                linewidth=1.2,
            )
        )
    right.set_title(f"what the network receives ({output.size[0]}×{output.size[1]})", fontsize=10)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Patch(fill=False, edgecolor=c, linewidth=2, label=g) for g, c in GROUP_COLOURS.items()
    ]
    fig.legend(
        handles=handles,
        labels=["highest spectral entropy", "lowest spectral entropy"],
        loc="lower center",
        ncol=2,
        frameon=False,
        fontsize=9,
    )
    fig.suptitle(f"{title}\n{explanation['summary']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return _save(fig, path)


def show_patches(
    image_path: str,
    out: str | None = None,
    transform: str = "patch_select",
    flags: list[str] | None = None,
    train: bool = False,
    seed: int = 0,
) -> Path:
    """Draw ``transform``'s selection of one image; default output IMAGE_STEM.patches.png."""
    from PIL import Image, UnidentifiedImageError

    step = build_step(transform, flags or [])
    try:
        with Image.open(image_path) as im:
            image = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BenchError(f"cannot read image {image_path}: {exc}") from None
    explanation = step.explain(image, train=train, seed=seed)
    target = Path(out) if out else Path(f"{Path(image_path).stem}.patches.png")
    mode = f"training view, seed {seed}" if train else "evaluation view (seed from the pixels)"
    return draw(explanation, target, f"{transform}: {Path(image_path).name}, {mode}")
