"""What Patch Selection keeps of one image, for pictures (`bench show-patches`).

Uses the very selection the transform applies (``patch_selection.selection``, same seed
rule), and takes the tiled image from the transform itself, so the picture shows exactly
what the network receives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from nsnet_plugin.patch_selection import (
    _pil_to_tensor,
    _tensor_to_pil,
    content_seed,
    selection,
    split_counts,
)

if TYPE_CHECKING:
    from nsnet_plugin.patch_selection import PatchSelect


def explain_patch_select(
    step: PatchSelect, image: Any, *, train: bool = False, seed: int = 0
) -> dict[str, Any]:
    """The kept patches of ``image`` and the tiled output of ``step``.

    Returns "input" (the image the patches are cut from: mirror-padded when small),
    "boxes" ((left, top, right, bottom, group) per kept patch; group "highest" or "lowest"
    spectral entropy), "output" (the tiled image, from ``step`` itself), "tiles" (the
    group of each output tile, row-major), "tile_size" and a one-line "summary".
    """
    tensor, mode = _pil_to_tensor(image)
    pick_seed = seed if train else content_seed(tensor)
    try:
        grown, ranked, order = selection(
            tensor[None],
            step.out_size,
            step.patch_size,
            [pick_seed],
            small_image=step.small_image,
            odd_tile=step.odd_tile,
            shuffle=step.shuffle,
        )
    except ValueError as exc:
        raise BenchError(f"patch_select: {exc}") from None
    n = step.patch_size
    n_high, _ = split_counts((step.out_size // n) ** 2, step.odd_tile)
    group = {int(i): "highest" if r < n_high else "lowest" for r, i in enumerate(ranked[0])}
    cols = grown.shape[-1] // n
    boxes = [
        ((i % cols) * n, (i // cols) * n, (i % cols + 1) * n, (i // cols + 1) * n, g)
        for i, g in group.items()
    ]
    total = (grown.shape[-2] // n) * cols
    return {
        "input": _tensor_to_pil(grown[0], mode),
        "boxes": boxes,
        "output": step(image, train=train, seed=seed),
        "tiles": [group[int(i)] for i in order[0]],
        "tile_size": n,
        "summary": (
            f"{n_high} highest + {len(group) - n_high} lowest spectral-entropy patches of "
            f"{total} ({n} px), tiled to {step.out_size} px"
            + (", shuffled" if step.shuffle else "")
        ),
    }
